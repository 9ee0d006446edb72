"""The email outbox: one row per (order, template), so an email goes out once.

A sender claims the row (``claim``) in the transaction that checked the order,
sends it over SMTP after commit, then marks it sent (``mark_sent``). A claim
older than ``CLAIM_TIMEOUT`` belongs to an attempt that died and may be retaken.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mail import smtp, templates
from models import EmailMessage, Order, User, unit_of_work, utcnow
from models.fulfilment import EMAIL_SENDING, EMAIL_SENT

# smtp.send gives up after 10 s; a claim older than this belongs to a dead attempt.
CLAIM_TIMEOUT = timedelta(seconds=15)


class ClaimedElsewhere(Exception):
    """Another attempt is sending this email right now; try again later."""


def claim(session: Session, order: Order, template: str) -> EmailMessage | None:
    """The row to send, claimed; None when it was sent already. Raises ClaimedElsewhere."""
    message = session.scalar(select(EmailMessage).where(EmailMessage.order_id == order.id,
                                                        EmailMessage.template == template))
    if message is None:
        message = _render(session, order, template)
    if message.status == EMAIL_SENT:
        return None
    if message.claimed_at is not None and utcnow() - message.claimed_at < CLAIM_TIMEOUT:
        raise ClaimedElsewhere(f"{template} for {order.id} is being sent by another attempt")
    message.status, message.claimed_at = EMAIL_SENDING, utcnow()
    message.attempts += 1
    session.flush()
    return message


def release(session: Session, message_id: int) -> None:
    """Give a claim back after a failed send, so the next attempt need not wait."""
    session.get(EmailMessage, message_id).claimed_at = None


def send_claimed(message: EmailMessage, correlation: str | None) -> None:
    """Send a claimed row over SMTP; on a transient fault give the claim back and re-raise
    (one of ``mail.smtp.TRANSIENT_SMTP_ERRORS``)."""
    try:
        smtp.send(message, correlation)
    except smtp.TRANSIENT_SMTP_ERRORS:
        with unit_of_work() as session:
            release(session, message.id)
        raise


def mark_sent(session: Session, message_id: int) -> EmailMessage:
    row = session.get(EmailMessage, message_id)
    row.status, row.sent_at = EMAIL_SENT, utcnow()
    return row


def _render(session: Session, order: Order, template: str) -> EmailMessage:
    customer = session.get(User, order.customer_id)
    subject, body = templates.render(template, order, customer.name)
    message = EmailMessage(order_id=order.id, template=template, to_address=customer.email,
                           subject=subject, body=body,
                           message_id=f"<{order.id}.{template.replace(':', '-')}@orion.example>",
                           attempts=0)
    session.add(message)
    return message
