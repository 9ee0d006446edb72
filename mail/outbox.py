"""The email outbox: one row per (order, template), so an email goes out once.

A sender claims the row (``claim``) in the transaction that checked the order,
sends it over SMTP after commit, then marks it sent (``mark_sent``). A claim
older than ``CLAIM_TIMEOUT`` belongs to an attempt that died and may be retaken.
An email whose address already had ``EMAIL_MAX_PER_ADDRESS_PER_HOUR`` emails in
the last hour is recorded ``suppressed`` and never sent (``Suppressed``).

Written in SQLAlchemy Core: ``db`` is a Connection or a Session in the caller's
transaction (both execute Core statements), so a saga step that works on a
bare connection and a beat job that works on a session share the code.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, Row, bindparam, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.util.typing import TupleAny, Unpack

from config import get_settings
from mail import smtp, templates
from models import EmailMessage, Order, OrderLine, User, unit_of_work, utcnow
from models.fulfilment import EMAIL_REFUSED, EMAIL_SENDING, EMAIL_SENT, EMAIL_SUPPRESSED

# smtp.send gives up after 10 s; a claim older than this belongs to a dead attempt.
CLAIM_TIMEOUT = timedelta(seconds=15)
RATE_WINDOW = timedelta(hours=1)  # EMAIL_MAX_PER_ADDRESS_PER_HOUR's hour
FINISHED = (EMAIL_SENT, EMAIL_REFUSED, EMAIL_SUPPRESSED)  # never tried again

EMAILS, ORDERS, LINES, USERS = (EmailMessage.__table__, Order.__table__, OrderLine.__table__, User.__table__)
# The order and its customer, with the email row when it exists: one statement
# whether the email is new (render it) or not (claim or skip it).
_FIND = (
    select(
        ORDERS.c.id.label("o_id"),
        ORDERS.c.total,
        ORDERS.c.currency,
        ORDERS.c.cancel_reason,
        USERS.c.email,
        *(c.label(f"m_{c.name}") for c in EMAILS.c),
    )
    .select_from(
        ORDERS.join(USERS, USERS.c.id == ORDERS.c.customer_id).outerjoin(
            EMAILS, (EMAILS.c.order_id == ORDERS.c.id) & (EMAILS.c.template == bindparam("b_template"))
        )
    )
    .where(ORDERS.c.id == bindparam("b_id"))
)
_LINES = (
    select(LINES.c.quantity, LINES.c.name, LINES.c.sku, LINES.c.line_total)
    .where(LINES.c.order_id == bindparam("b_id"))
    .order_by(LINES.c.id)
)
_INSERT = insert(EMAILS).returning(EMAILS.c.id)
# Emails an address was sent or is being sent in the window, counted up to the
# limit only (an index range on ix_email_outbox_to_address_created, at most
# ``b_limit`` rows however many orders its customer places).
_SENT_LATELY = select(func.count()).select_from(
    select(EMAILS.c.id)
    .where(
        EMAILS.c.to_address == bindparam("b_to"),
        EMAILS.c.created_at > bindparam("b_since"),
        EMAILS.c.status != EMAIL_SUPPRESSED,
    )
    .limit(bindparam("b_limit"))
    .subquery()
)
_CLAIM = (
    update(EMAILS)
    .where(EMAILS.c.id == bindparam("b_id"))
    .values(status=EMAIL_SENDING, claimed_at=bindparam("b_now"), attempts=EMAILS.c.attempts + 1)
)
_RELEASE = update(EMAILS).where(EMAILS.c.id == bindparam("b_id")).values(claimed_at=None)
_MARK_SENT = (
    update(EMAILS)
    .where(EMAILS.c.id == bindparam("b_id"))
    .values(status=EMAIL_SENT, sent_at=bindparam("b_now"))
)
_MARK_REFUSED = update(EMAILS).where(EMAILS.c.id == bindparam("b_id")).values(status=EMAIL_REFUSED)


class ClaimedElsewhere(Exception):
    """Another attempt is sending this email right now; try again later."""


@dataclass(frozen=True)
class Suppressed:
    """An email recorded ``suppressed``: its address already had ``limit`` emails in
    the last hour. It is never sent; like a refused one, the saga goes on."""

    id: int
    to_address: str
    limit: int

    def __str__(self) -> str:
        return f"too many emails to this address ({self.limit} in the last hour)"


@dataclass(frozen=True)
class OutgoingEmail:
    """A claimed email-outbox row: what ``smtp.send`` needs."""

    id: int
    order_id: uuid.UUID
    template: str
    to_address: str
    subject: str
    body: str
    message_id: str


@dataclass(frozen=True)
class _OrderView:
    """What a template reads of an order (``templates.render``)."""

    id: uuid.UUID
    total: Decimal
    currency: str
    cancel_reason: str | None
    lines: Sequence[Row[Unpack[TupleAny]]]


def claim(db: Connection | Session, order_id: uuid.UUID, template: str) -> OutgoingEmail | Suppressed | None:
    """The email ``template`` of order ``order_id``, rendered on first use and claimed;
    Suppressed when, at first use, its address had ``EMAIL_MAX_PER_ADDRESS_PER_HOUR``
    emails in the last hour (the row is recorded ``suppressed``, not claimed); None
    when it was sent already (or refused or suppressed). Raises ClaimedElsewhere when
    another attempt claimed it less than ``CLAIM_TIMEOUT`` ago, KeyError for an
    unknown template."""
    now = utcnow()
    row = db.execute(_FIND, {"b_id": order_id, "b_template": template}).one()
    if row.m_id is None:
        return _render(db, row, template, now)
    if row.m_status in FINISHED:
        return None
    if row.m_claimed_at is not None and now - row.m_claimed_at < CLAIM_TIMEOUT:
        raise ClaimedElsewhere(f"{template} for {order_id} is being sent by another attempt")
    db.execute(_CLAIM, {"b_id": row.m_id, "b_now": now})
    return OutgoingEmail(
        row.m_id,
        row.m_order_id,
        row.m_template,
        row.m_to_address,
        row.m_subject,
        row.m_body,
        row.m_message_id,
    )


def release(db: Connection | Session, message_id: int) -> None:
    """Give a claim back after a failed send, so the next attempt need not wait."""
    db.execute(_RELEASE, {"b_id": message_id})


def send_claimed(message: OutgoingEmail, correlation: str | None) -> None:
    """Send a claimed row over SMTP; on a transient fault give the claim back and re-raise
    (one of ``mail.smtp.TRANSIENT_SMTP_ERRORS``)."""
    try:
        smtp.send(message, correlation)
    except smtp.TRANSIENT_SMTP_ERRORS:
        with unit_of_work() as session:
            release(session, message.id)
        raise


def mark_sent(db: Connection | Session, message: OutgoingEmail) -> None:
    db.execute(_MARK_SENT, {"b_id": message.id, "b_now": utcnow()})


def mark_refused(db: Connection | Session, message: OutgoingEmail) -> None:
    """The SMTP server refused ``message`` for good (``mail.smtp.MailRefused``): it is
    never sent again (``claim`` answers None)."""
    db.execute(_MARK_REFUSED, {"b_id": message.id})


def _render(
    db: Connection | Session, order: Row[Unpack[TupleAny]], template: str, now: datetime
) -> OutgoingEmail | Suppressed:
    """Render and insert the row of ``order`` (a ``_FIND`` row), already claimed
    (status ``sending``, attempt 1), or ``suppressed`` when its address is at the
    limit. Two first attempts for one address at once may both pass the count, so
    an address can get as many emails more in an hour as email steps run at once."""
    limit = get_settings().email_max_per_address_per_hour
    recent = db.execute(
        _SENT_LATELY, {"b_to": order.email, "b_since": now - RATE_WINDOW, "b_limit": limit}
    ).scalar_one()
    suppressed = recent >= limit
    lines = db.execute(_LINES, {"b_id": order.o_id}).all()
    view = _OrderView(order.o_id, order.total, order.currency, order.cancel_reason, lines)
    subject, body = templates.render(template, view)
    message_id = f"<{order.o_id}.{template.replace(':', '-')}@orion.example>"
    new_id = db.execute(
        _INSERT,
        {
            "order_id": order.o_id,
            "template": template,
            "to_address": order.email,
            "subject": subject,
            "body": body,
            "message_id": message_id,
            "status": EMAIL_SUPPRESSED if suppressed else EMAIL_SENDING,
            "attempts": 0 if suppressed else 1,
            "claimed_at": None if suppressed else now,
            "created_at": now,
            "sent_at": None,
        },
    ).scalar_one()
    if suppressed:
        return Suppressed(new_id, order.email, limit)
    return OutgoingEmail(new_id, order.o_id, template, order.email, subject, body, message_id)
