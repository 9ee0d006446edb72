"""The transactional outbox: messages written in the same transaction as the change
that calls for them, published to the broker after commit, republished by a sweeper
if a process died in between."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from sqlalchemy import JSON, Index, String, event
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db import Base, utcnow
from observability.logging import CORRELATION_HEADER, correlation_id

SAGA_START, SAGA_RESUME, SAGA_COMPENSATE = "saga.start", "saga.resume", "saga.compensate"
_KEY, _COMMITTED = "orion.outbox", "orion.outbox.committed"
log = logging.getLogger(__name__)


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_undispatched", "dispatched_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    headers: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)


def enqueue(session: Session, topic: str, payload: dict, headers: dict | None = None,
            correlation: str | None = None) -> OutboxMessage:
    """Add an outbox row to ``session``'s transaction; it is published after commit.

    The row's message headers carry the current correlation id (else
    ``correlation``, e.g. the order's own for a beat job acting on it), so a
    message the sweeper republishes later still belongs to what caused it.
    """
    headers = dict(headers or {})
    current = correlation_id() or correlation
    if current:
        headers.setdefault(CORRELATION_HEADER, current)
    message = OutboxMessage(topic=topic, payload=payload, headers=headers)
    session.add(message)
    session.info.setdefault(_KEY, []).append(message)
    return message


_publisher: Callable[[list[int]], object] | None = None


def publish_on_commit(publisher: Callable[[list[int]], object]) -> None:
    """Have every ``Session`` of this process hand the ids of the outbox rows it
    committed to ``publisher`` (e.g. ``tasks.outbox.publish``) right after the
    transaction ends, once its connection is back in the pool (the publisher
    takes one of its own: publishing while holding the first would let a burst
    of requests exhaust the pool). A rolled-back transaction's rows are
    forgotten with it.

    The one place where outbox rows are published: a command only calls
    ``enqueue``. A publisher that raises loses nothing: the row stays unsent
    and the sweeper (``outbox.republish_unsent``) publishes it later.
    """
    global _publisher
    if _publisher is None:
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", _after_rollback)
        event.listen(Session, "after_transaction_end", _after_transaction_end)
    _publisher = publisher


def _after_commit(session: Session) -> None:
    messages = session.info.pop(_KEY, None)
    if messages:
        session.info.setdefault(_COMMITTED, []).extend(message.id for message in messages)


def _after_transaction_end(session: Session, transaction) -> None:
    if transaction.parent is not None:
        return
    ids = session.info.pop(_COMMITTED, None)
    if not ids or _publisher is None:
        return
    try:
        _publisher(ids)
    except Exception as exc:  # noqa: BLE001 - the commit stands; the sweeper retries
        log.warning("outbox: publish after commit failed, left for the sweeper: %s", exc)


def _after_rollback(session: Session, previous_transaction) -> None:
    if not previous_transaction.nested:
        session.info.pop(_KEY, None)
