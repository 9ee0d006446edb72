"""The saga step log and the order event log (per-order ``seq``, for timelines and replay)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, Uuid, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db import Base, utcnow
from models.order import Order
from observability.logging import correlation_id
from progress import OPERATORS, Notification, order_room, queue_notification, user_room

FORWARD, COMPENSATION = "forward", "compensation"
RUNNING, RETRYING, SUCCEEDED, FAILED, SKIPPED = "running", "retrying", "succeeded", "failed", "skipped"


class SagaStep(Base):
    """One run of one saga step for an order: keyed on (order, step, run)."""

    __tablename__ = "saga_steps"
    __table_args__ = (UniqueConstraint("order_id", "name", "run", name="uq_saga_steps_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    run: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16), default=FORWARD)
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    attempt: Mapped[int] = mapped_column(default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "attempt": self.attempt,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
            "kind": self.kind,
        }


class OrderEvent(Base):
    """What happened to an order, numbered per order by ``seq`` (1, 2, 3, ...), with the
    correlation id of the request or task that made it happen (not sent to clients)."""

    __tablename__ = "order_events"
    __table_args__ = (UniqueConstraint("order_id", "seq", name="uq_order_events_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id"))
    seq: Mapped[int]
    status: Mapped[str] = mapped_column(String(24))
    step: Mapped[str | None] = mapped_column(String(64))
    step_status: Mapped[str | None] = mapped_column(String(16))
    attempt: Mapped[int | None]
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    correlation_id: Mapped[str | None] = mapped_column(String(64))

    def to_dict(self) -> dict[str, Any]:
        return event_payload(
            {
                "order_id": self.order_id,
                "seq": self.seq,
                "status": self.status,
                "step": self.step,
                "step_status": self.step_status,
                "attempt": self.attempt,
                "detail": self.detail,
                "at": self.at,
            }
        )


def event_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """An ``order_events`` row (a dict of its columns) as clients see it: the
    ``order.updated`` payload, without the correlation id."""
    return {
        "order_id": str(row["order_id"]),
        "seq": row["seq"],
        "status": row["status"],
        "step": row["step"],
        "step_status": row["step_status"],
        "attempt": row["attempt"],
        "detail": row["detail"],
        "at": _iso(row["at"]),
    }


def record_event(
    session: Session,
    order: Order,
    step: str | None = None,
    step_status: str | None = None,
    attempt: int | None = None,
    detail: str | None = None,
) -> OrderEvent:
    """Append an event with the order's next ``seq``, and queue its ``order.updated``.

    The counter is bumped with one UPDATE on the order row, which the database
    serializes, so concurrent steps of one order (a chord header) get distinct,
    gap-free numbers. The Socket.IO event goes out only when the session commits
    (``progress.hooks``), to the order's room, its owner's and the operators'.
    """
    session.flush()
    seq = session.execute(
        update(Order)
        .where(Order.id == order.id)
        .values(last_event_seq=Order.last_event_seq + 1)
        .returning(Order.last_event_seq)
    ).scalar_one()
    order.last_event_seq = seq
    event = OrderEvent(
        order_id=order.id,
        seq=seq,
        status=order.status,
        step=step,
        step_status=step_status,
        attempt=attempt,
        detail=detail,
        at=utcnow(),
        correlation_id=correlation_id() or order.correlation_id,
    )
    session.add(event)
    rooms = (order_room(str(order.id)), user_room(order.customer_id), OPERATORS)
    queue_notification(session, Notification("order.updated", event.to_dict(), rooms))
    return event


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
