"""The transactional outbox: messages written in the same transaction as the change
that calls for them. The relay (``python -m worker.relay``, ``tasks.outbox``)
publishes them to the broker once they are committed; on PostgreSQL an insert
wakes it at commit (``NOTIFY orion_outbox``, migration 0004)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db import Base, utcnow
from observability.logging import CORRELATION_HEADER, correlation_id

SAGA_START, SAGA_RESUME, SAGA_COMPENSATE = "saga.start", "saga.resume", "saga.compensate"
# The cancellation email of a final order, sent again (services.safety_net).
CANCELLATION_EMAIL = "saga.send_cancellation_email"


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_undispatched", "dispatched_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)


def enqueue(
    session: Session,
    topic: str,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    correlation: str | None = None,
) -> OutboxMessage:
    """Add an outbox row to ``session``'s transaction; the relay publishes it after commit.

    The row's message headers carry the current correlation id (else
    ``correlation``, e.g. the order's own for a beat job acting on it), so a
    message the sweeper republishes later still belongs to what caused it.
    """
    message = OutboxMessage(**outbox_row(topic, payload, headers, correlation))
    session.add(message)
    return message


def outbox_row(
    topic: str, payload: dict[str, Any], headers: dict[str, str] | None = None, correlation: str | None = None
) -> dict[str, Any]:
    """The ``outbox`` row ``enqueue`` adds, as a dict for a Core ``INSERT``."""
    headers = dict(headers or {})
    current = correlation_id() or correlation
    if current:
        headers.setdefault(CORRELATION_HEADER, current)
    return {
        "topic": topic,
        "payload": payload,
        "headers": headers,
        "created_at": utcnow(),
        "dispatched_at": None,
        "attempts": 0,
    }
