"""Starting compensation from a request or a beat job (saga tasks use
``tasks.journal.SagaTx.start_compensation``, the same three writes in Core)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from models import Order, record_event
from models.outbox import SAGA_COMPENSATE, enqueue


def begin_compensation(
    session: Session, order: Order, cancel_reason: str | None, detail: str, failure: str | None = None
) -> None:
    """Move the locked ``order`` to ``compensating`` (raises InvalidTransition where the
    lifecycle forbids it), record an event with ``detail``, and queue
    ``saga.compensate`` through the outbox in the same transaction.

    ``cancel_reason`` is a business reason (the order ends ``cancelled``);
    ``failure`` a technical one (it ends ``failed``).
    """
    order.start_compensation(cancel_reason, failure)
    record_event(session, order, detail=detail)
    enqueue(session, SAGA_COMPENSATE, {"order_id": str(order.id)}, correlation=order.correlation_id)
