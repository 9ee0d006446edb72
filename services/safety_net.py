"""Safety net for sagas that stopped moving: a message lost with a killed worker,
a retry that could not be published, a step that timed out, a post-pivot step
whose retries ran out, a database outage longer than the retry budget.

An order in a forward state or ``compensating`` that has not changed for
``SAGA_REDRIVE_AFTER_SECONDS`` is re-driven the way an operator's retry would:
forward from its last completed step (finished steps pass through, every effect
is keyed), or its compensation run again. The re-drive writes an order event,
which moves ``updated_at``, so one order is re-driven at most once per timeout
however many sweeps run; rows are claimed with ``FOR UPDATE SKIP LOCKED``, so
two sweepers at once (a second beat by mistake) never take the same order.
``failed``, ``compensation_failed`` and ``awaiting_payment`` orders are left to
operators and to the payment window.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from models import Order, record_event, unit_of_work, utcnow
from models import order as lifecycle
from models.db import is_postgres
from models.outbox import enqueue
from services.ordering import redrive_message
from tasks.outbox import publish_after_commit

STALLABLE = (lifecycle.PENDING, lifecycle.STOCK_RESERVED, lifecycle.PAYMENT_AUTHORIZED,
             lifecycle.CONFIRMED, lifecycle.SHIPPED, lifecycle.COMPENSATING)


def redrive_stalled_sagas(after_s: float, limit: int = 100) -> list[str]:
    """Re-drive up to ``limit`` orders unchanged for ``after_s`` seconds; their ids."""
    cutoff = utcnow() - timedelta(seconds=after_s)
    with unit_of_work() as session:
        query = (select(Order).where(Order.status.in_(STALLABLE), Order.updated_at < cutoff)
                 .order_by(Order.updated_at).limit(limit).with_for_update())
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)
        orders = session.scalars(query).all()
        for order in orders:
            idle = int((utcnow() - order.updated_at).total_seconds())
            topic, payload = redrive_message(order)
            record_event(session, order, detail=f"safety net: re-driven after {idle} s without progress")
            enqueue(session, topic, payload)
        ids = [str(order.id) for order in orders]
        messages = session.info.get("outbox", [])
    publish_after_commit(messages)
    return ids
