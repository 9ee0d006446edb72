"""Safety net for sagas that stopped moving: a message lost with a killed worker,
a retry that could not be published, a step that timed out, a post-pivot step
whose retries ran out, a database outage longer than the retry budget.

An order in a forward state or ``compensating`` that has not changed for
``SAGA_REDRIVE_AFTER_SECONDS`` is re-driven the way an operator's retry would:
forward from its last completed step (finished steps pass through, every effect
is keyed), or its compensation run again. The re-drive writes an order event,
which moves ``updated_at``, so one order is re-driven at most once per timeout
however many sweeps run (and a second time only after three more: a saga
queued behind a broker backlog should not get ever more copies of its chain);
rows are claimed with ``FOR UPDATE SKIP LOCKED``, so two sweepers at once (a
second beat by mistake) never take the same order.
``compensation_failed`` orders are re-driven too, with a doubling backoff;
``failed`` and ``awaiting_payment`` orders are left to operators and to the
payment window.

Reservations whose hold lapsed (``release_lapsed_holds``) are the other net.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import HELD, Order, OrderEvent, Reservation, SagaStep, record_event, unit_of_work, utcnow
from models import order as lifecycle
from models.catalog import RELEASED, release_all
from models.db import claim_rows
from models.outbox import CANCELLATION_EMAIL, enqueue
from models.saga_log import SUCCEEDED
from services.compensation import begin_compensation
from services.ordering import redrive_message

log = logging.getLogger(__name__)
REDRIVE_DETAIL = "safety net: re-driven"
REPEAT_FACTOR = 3  # a re-driven saga that stalls again waits 3 timeouts for the next one
STALLABLE = (
    lifecycle.PENDING,
    lifecycle.STOCK_RESERVED,
    lifecycle.PAYMENT_AUTHORIZED,
    lifecycle.CONFIRMED,
    lifecycle.SHIPPED,
    lifecycle.COMPENSATING,
)


COMPENSATION_BACKOFF_MAX = timedelta(hours=24)


def redrive_stalled_sagas(after_s: float, limit: int = 100) -> list[str]:
    """Re-drive up to ``limit`` orders unchanged for ``after_s`` seconds; their ids.

    ``compensation_failed`` orders too, with a backoff: after ``after_s`` ×
    2^(re-drives so far) of quiet, at most ``COMPENSATION_BACKOFF_MAX`` (an undo
    that failed for good, e.g. a provider down for hours, is tried again without
    waiting for an operator, and without a loop that hammers the provider)."""
    cutoff = utcnow() - timedelta(seconds=after_s)
    with unit_of_work() as session:
        query = (
            select(Order)
            .where(Order.status.in_((*STALLABLE, lifecycle.COMPENSATION_FAILED)), Order.updated_at < cutoff)
            .order_by(Order.updated_at)
            .limit(limit)
        )
        query = claim_rows(session, query)
        orders = [
            order
            for order in session.scalars(query)
            if not (
                _compensation_backing_off(session, order, after_s)
                if order.status == lifecycle.COMPENSATION_FAILED
                else _redriven_lately(session, order, after_s)
            )
        ]
        for order in orders:
            idle = int((utcnow() - order.updated_at).total_seconds())
            topic, payload = redrive_message(order)
            record_event(session, order, detail=f"{REDRIVE_DETAIL} after {idle} s without progress")
            enqueue(session, topic, payload, correlation=order.correlation_id)
        ids = [str(order.id) for order in orders]
    return ids


EMAIL_RESENT_DETAIL = "safety net: cancellation email sent again"
EMAIL_LOOKBACK = timedelta(days=7)  # older final orders are not emailed any more


def resend_cancellation_emails(after_s: float, limit: int = 100) -> list[str]:
    """Queue the cancellation email again for up to ``limit`` orders that ended
    ``cancelled`` or ``failed`` more than ``after_s`` seconds (and less than
    ``EMAIL_LOOKBACK``) ago without it: their ``send_cancellation_email`` ran out
    of retries (the mail server down longer than the budget), and a final order
    is no saga for ``redrive_stalled_sagas``. Each gets an order event; one
    that got one within ``REPEAT_FACTOR`` timeouts is left alone. Returns their ids.
    The email outbox row (one per order and template) keeps it from going twice."""
    now = utcnow()
    succeeded = select(SagaStep.id).where(
        SagaStep.order_id == Order.id,
        SagaStep.run == Order.saga_run,
        SagaStep.name == "send_cancellation_email",
        SagaStep.status == SUCCEEDED,
    )
    with unit_of_work() as session:
        query = (
            select(Order)
            .where(
                Order.status.in_((lifecycle.CANCELLED, lifecycle.FAILED)),
                Order.finished_at < now - timedelta(seconds=after_s),
                Order.finished_at > now - EMAIL_LOOKBACK,
                ~succeeded.exists(),
            )
            .order_by(Order.finished_at)
            .limit(limit)
        )
        query = claim_rows(session, query)
        orders = [
            order
            for order in session.scalars(query)
            if not _event_within(session, order, EMAIL_RESENT_DETAIL, after_s)
        ]
        for order in orders:
            record_event(session, order, detail=EMAIL_RESENT_DETAIL)
            enqueue(
                session, CANCELLATION_EMAIL, {"order_id": str(order.id)}, correlation=order.correlation_id
            )
        ids = [str(order.id) for order in orders]
    return ids


def _event_within(session: Session, order: Order, detail: str, after_s: float) -> bool:
    """The order has an event whose detail starts with ``detail`` in the last
    ``REPEAT_FACTOR`` × ``after_s`` seconds (the re-sent email's own retry events
    may have come after it)."""
    since = utcnow() - timedelta(seconds=after_s * REPEAT_FACTOR)
    return (
        session.scalar(
            select(OrderEvent.id)
            .where(
                OrderEvent.order_id == order.id, OrderEvent.detail.startswith(detail), OrderEvent.at >= since
            )
            .limit(1)
        )
        is not None
    )


def _compensation_backing_off(session: Session, order: Order, after_s: float) -> bool:
    """A ``compensation_failed`` order re-driven n times already waits ``after_s`` × 2^n."""
    redrives = session.execute(
        select(func.count())
        .select_from(OrderEvent)
        .where(OrderEvent.order_id == order.id, OrderEvent.detail.startswith(REDRIVE_DETAIL))
    ).scalar_one()

    wait = min(timedelta(seconds=after_s * 2 ** min(redrives, 30)), COMPENSATION_BACKOFF_MAX)
    return utcnow() - order.updated_at < wait


def _redriven_lately(session: Session, order: Order, after_s: float) -> bool:
    """The order's last event is a re-drive that has not had ``REPEAT_FACTOR`` times the
    timeout to work: its saga may just be queued behind a backlog, and another whole
    chain of messages would only add to that backlog."""
    last = session.scalar(
        select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.seq.desc()).limit(1)
    )
    return (
        last is not None
        and (last.detail or "").startswith(REDRIVE_DETAIL)
        and utcnow() - last.at < timedelta(seconds=after_s * REPEAT_FACTOR)
    )


def release_lapsed_holds(limit: int = 500) -> dict[str, list[str]]:
    """Reservations held past ``expires_at``: ``{"expired": [...], "released": [...]}`` order ids.

    An order still ``awaiting_payment`` is cancelled with ``payment_expired``
    (compensation returns its units). An order already final keeps no claim on
    stock: a reservation left held there is a leak, released here and logged.
    Orders in flight are the stalled-saga net's business (their saga will
    consume or release the hold), so they are left alone.
    """
    with unit_of_work() as session:
        order_ids = list(
            session.scalars(
                select(Reservation.order_id)
                .where(Reservation.status == HELD, Reservation.expires_at < utcnow())
                .distinct()
                .limit(limit)
            )
        )
    outcome: dict[str, list[str]] = {"expired": [], "released": []}
    for order_id in order_ids:
        kind = _release_lapsed(order_id)
        if kind:
            outcome[kind].append(str(order_id))
    return outcome


def _release_lapsed(order_id: uuid.UUID) -> str | None:
    with unit_of_work() as session:
        # The reservation's foreign key guarantees the order exists.
        order = session.execute(select(Order).where(Order.id == order_id).with_for_update()).scalar_one()
        if order.status == lifecycle.AWAITING_PAYMENT:
            begin_compensation(session, order, "payment_expired", "stock hold lapsed (payment_expired)")
            kind = "expired"
        elif order.status in lifecycle.FINAL_STATUSES:
            held = list(
                session.scalars(
                    select(Reservation).where(Reservation.order_id == order.id, Reservation.status == HELD)
                )
            )
            units: Counter[str] = Counter()

            for reservation in held:
                units[reservation.sku] += reservation.quantity
                reservation.status, reservation.closed_at = RELEASED, utcnow()
            release_all(session, units)
            log.warning(
                "released %d reservation(s) left held by %s order %s", len(held), order.status, order.id
            )
            kind = "released"
        else:
            return None
    return kind
