"""Orders parked in ``awaiting_payment`` (a soft decline): reminder emails at
configured ages, then, when the payment window closes, cancellation with reason
``payment_expired``, which compensates (the held stock goes back) and tells the
customer.

Both are safe to run twice: a reminder is an email-outbox row unique per
(order, reminder step), so each step goes out once per order; expiry re-checks
the status under the order's row lock (rows claimed ``FOR UPDATE SKIP LOCKED``),
so a second run finds the order ``compensating`` and leaves it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from mail import outbox, templates
from mail.smtp import MailRefused
from models import Order, record_event, unit_of_work, utcnow
from models import order as lifecycle
from models.db import claim_rows
from models.order import lock_order
from observability.logging import correlation_id
from services.compensation import begin_compensation

log = logging.getLogger(__name__)


def due_reminders(ages_s: tuple[float, ...], window_s: float) -> list[tuple[str, int]]:
    """``(order id, reminder step)`` for every parked order past its first reminder age
    and still inside the window; the step is the latest one due (1-based)."""
    now = utcnow()
    with unit_of_work() as session:
        parked = session.execute(
            select(Order.id, Order.awaiting_payment_since).where(
                Order.status == lifecycle.AWAITING_PAYMENT,
                Order.awaiting_payment_since > now - timedelta(seconds=window_s),
            )
        ).all()
    due: list[tuple[str, int]] = []

    for order_id, since in parked:
        assert since is not None  # the WHERE clause leaves out orders without one
        step = sum(1 for age in ages_s if now - since >= timedelta(seconds=age))
        if step:
            due.append((str(order_id), step))
    return due


def send_reminder(order_id: str, step: int) -> bool:
    """Send reminder ``step`` unless it went out already or the order moved on.

    True when sent; False also when the mail server refused it for good
    (``smtp.MailRefused``: the row is marked refused) or when its address is at
    ``EMAIL_MAX_PER_ADDRESS_PER_HOUR`` (recorded ``suppressed``, never sent). Raises one of
    ``smtp.TRANSIENT_SMTP_ERRORS`` (the claim is given back, so the next run tries again).
    """
    with unit_of_work() as session:
        order = lock_order(session, order_id)
        if order.status != lifecycle.AWAITING_PAYMENT:
            return False
        try:
            message = outbox.claim(session, order.id, templates.reminder(step))
        except outbox.ClaimedElsewhere:
            return False
        if message is None:
            return False
        if isinstance(message, outbox.Suppressed):  # over the address's hourly limit
            log.warning("payment reminder %d for order %s suppressed: %s", step, order_id, message)
            record_event(session, order, detail=f"payment reminder {step} not sent: {message}")
            return False
    try:
        outbox.send_claimed(message, correlation_id() or order.correlation_id)
    except MailRefused as refused:  # for good: never tried again, the sweep goes on
        with unit_of_work() as session:
            order = lock_order(session, order_id)
            outbox.mark_refused(session, message)
            record_event(session, order, detail=f"payment reminder {step} not delivered: {refused}")
        return False
    with unit_of_work() as session:
        order = lock_order(session, order_id)
        outbox.mark_sent(session, message)
        record_event(session, order, detail=f"payment reminder {step} sent to {message.to_address}")
    return True


def expire_unpaid(window_s: float, limit: int = 500) -> list[str]:
    """Cancel (``payment_expired``) orders parked longer than ``window_s``; their ids."""
    cutoff = utcnow() - timedelta(seconds=window_s)
    with unit_of_work() as session:
        query = (
            select(Order)
            .where(Order.status == lifecycle.AWAITING_PAYMENT, Order.awaiting_payment_since <= cutoff)
            .order_by(Order.awaiting_payment_since)
            .limit(limit)
        )
        query = claim_rows(session, query)
        orders = session.scalars(query).all()
        for order in orders:
            begin_compensation(session, order, "payment_expired", "payment window closed (payment_expired)")
        ids = [str(order.id) for order in orders]
    return ids
