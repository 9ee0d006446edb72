"""The saga's bookkeeping: order locks, step-log rows and order events.

Every step changes an order only while holding its row lock, so a step, a
cancel and a compensation of one order never interleave.
"""
from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Order, SagaStep, record_event, utcnow
from models.saga_log import FAILED, RETRYING, RUNNING, SUCCEEDED


def lock_order(session: Session, order_id: str) -> Order:
    """Load the order with ``SELECT ... FOR UPDATE``; raises NoResultFound if absent."""
    query = select(Order).where(Order.id == uuid.UUID(order_id)).with_for_update()
    return session.scalars(query).one()


def find_step(session: Session, order: Order, name: str, run: int | None = None) -> SagaStep | None:
    run = order.saga_run if run is None else run
    return session.scalar(select(SagaStep).where(
        SagaStep.order_id == order.id, SagaStep.name == name, SagaStep.run == run))


def start_step(session: Session, order: Order, name: str, kind: str, attempt: int) -> SagaStep:
    """The step-log row for (order, step, run), created or marked running again."""
    step = find_step(session, order, name)
    if step is None:
        step = SagaStep(order_id=order.id, name=name, run=order.saga_run, kind=kind,
                        attempt=attempt, status=RUNNING, started_at=utcnow())
        session.add(step)
    else:
        step.status, step.attempt = RUNNING, max(step.attempt, attempt)
    return step


def finish_step(session: Session, order: Order, step: SagaStep, status: str,
                detail: str | None = None, error: str | None = None) -> None:
    """Close a step as ``succeeded``/``failed``/``skipped`` and emit its event."""
    step.status, step.finished_at, step.error = status, utcnow(), error
    record_event(session, order, step=step.name, step_status=status, attempt=step.attempt,
                 detail=detail or error)


def complete_step(session: Session, order: Order, name: str, kind: str, attempt: int,
                  detail: str | None = None) -> None:
    """Start and succeed a step in one go (for steps that only touch the database)."""
    finish_step(session, order, start_step(session, order, name, kind, attempt), SUCCEEDED, detail)


def note_retry(session: Session, order: Order, name: str, kind: str, attempt: int,
               error: str) -> None:
    """Record that attempt ``attempt`` failed transiently and another is scheduled."""
    step = start_step(session, order, name, kind, attempt)
    step.status, step.error = RETRYING, error
    record_event(session, order, step=name, step_status=RETRYING, attempt=attempt, detail=error)


def note_failure(session: Session, order: Order, name: str, kind: str, attempt: int,
                 error: str) -> None:
    finish_step(session, order, start_step(session, order, name, kind, attempt), FAILED, error=error)


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


FORWARD_PATH = ("pending", "stock_reserved", "payment_authorized", "confirmed", "shipped", "completed")
_RANK = {status: i for i, status in enumerate(FORWARD_PATH)} | {"awaiting_payment": 1}


def should_run(order: Order, run: int, runs_in: str, halt) -> bool:
    """Decide a forward step's fate from the order's state.

    True: the order is in ``runs_in``, do the step. False: the order is already
    past it (a redelivered or duplicate message), pass through. Anything else
    (a stale run, compensating, parked, final) raises ``halt``.
    """
    if run != order.saga_run or order.status not in _RANK:
        raise halt()
    if order.status == runs_in:
        return True
    if _RANK[order.status] > _RANK[runs_in]:
        return False
    raise halt()


def already_succeeded(session: Session, order: Order, name: str) -> bool:
    step = find_step(session, order, name)
    return step is not None and step.status == SUCCEEDED
