"""Orders, their lines, and the order state machine from SPEC's "Order lifecycle"."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ColumnElement, ForeignKey, Index, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.db import Base, utcnow

PENDING = "pending"
STOCK_RESERVED = "stock_reserved"
AWAITING_PAYMENT = "awaiting_payment"
PAYMENT_AUTHORIZED = "payment_authorized"
CONFIRMED = "confirmed"
SHIPPED = "shipped"
COMPLETED = "completed"
COMPENSATING = "compensating"
CANCELLED = "cancelled"
FAILED = "failed"
COMPENSATION_FAILED = "compensation_failed"

STATUSES = (
    PENDING,
    STOCK_RESERVED,
    AWAITING_PAYMENT,
    PAYMENT_AUTHORIZED,
    CONFIRMED,
    SHIPPED,
    COMPLETED,
    COMPENSATING,
    CANCELLED,
    FAILED,
    COMPENSATION_FAILED,
)
FINAL_STATUSES = frozenset({COMPLETED, CANCELLED, FAILED})
CANCEL_REASONS = (
    "out_of_stock",
    "payment_declined",
    "payment_expired",
    "customer_request",
    "operator_request",
)

# Allowed moves; anything else raises InvalidTransition.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({STOCK_RESERVED, COMPENSATING}),
    STOCK_RESERVED: frozenset({PAYMENT_AUTHORIZED, AWAITING_PAYMENT, COMPENSATING}),
    AWAITING_PAYMENT: frozenset({STOCK_RESERVED, COMPENSATING}),
    PAYMENT_AUTHORIZED: frozenset({CONFIRMED, COMPENSATING}),
    CONFIRMED: frozenset({SHIPPED, COMPENSATING}),
    SHIPPED: frozenset({COMPLETED}),
    COMPLETED: frozenset(),
    COMPENSATING: frozenset({CANCELLED, FAILED, COMPENSATION_FAILED}),
    CANCELLED: frozenset(),
    FAILED: frozenset({PENDING}),  # operator retry starts a new saga run
    COMPENSATION_FAILED: frozenset({COMPENSATING}),  # operator retry re-runs compensation
}
CANCELLABLE = frozenset({PENDING, STOCK_RESERVED, AWAITING_PAYMENT, PAYMENT_AUTHORIZED, CONFIRMED})
# Where the forward saga has a next step to run (not parked for payment, not final).
IN_FLIGHT = frozenset({PENDING, STOCK_RESERVED, PAYMENT_AUTHORIZED, CONFIRMED, SHIPPED})
# Where a saga runs forward or backward; such an order unchanged for long is stuck.
SAGA_RUNNING = IN_FLIGHT | {COMPENSATING}


class InvalidTransition(Exception):
    """An order was asked to move where its state machine does not allow."""

    def __init__(self, current: str, target: str):
        super().__init__(f"cannot move an order from {current!r} to {target!r}")
        self.current, self.target = current, target


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("customer_id", "idempotency_key", name="uq_orders_idempotency_key"),
        Index("ix_orders_customer_created", "customer_id", "created_at"),
        Index("ix_orders_status", "status"),
        CheckConstraint(
            "cancel_reason IS NULL OR cancel_reason IN ('out_of_stock', "
            "'payment_declined', 'payment_expired', 'customer_request', "
            "'operator_request')",
            name="ck_orders_cancel_reason",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(24), default=PENDING)
    cancel_reason: Mapped[str | None] = mapped_column(String(24))
    # What made compensation start: a business reason (cancel_reason) or a fault.
    failure: Mapped[str | None] = mapped_column(String(500))
    currency: Mapped[str] = mapped_column(String(3), default="GBP")
    subtotal: Mapped[Decimal]
    total: Mapped[Decimal]
    shipping_address: Mapped[dict[str, Any]] = mapped_column(JSON)
    payment_token: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Bumped on every re-drive (pay again, operator retry of a failed order);
    # step rows, reservations and payment idempotency keys are keyed on it.
    saga_run: Mapped[int] = mapped_column(default=1)
    last_event_seq: Mapped[int] = mapped_column(default=0)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    awaiting_payment_since: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.line_no", cascade="all, delete-orphan"
    )

    def transition_to(self, target: str) -> None:
        """Move to ``target``; raises InvalidTransition if the lifecycle forbids it."""
        if target not in TRANSITIONS[self.status]:
            raise InvalidTransition(self.status, target)
        self.status = target
        self.finished_at = utcnow() if target in FINAL_STATUSES else None
        self.awaiting_payment_since = utcnow() if target == AWAITING_PAYMENT else None

    def start_compensation(self, cancel_reason: str | None, failure: str | None = None) -> None:
        """Begin undoing the saga: a business ``cancel_reason`` or a technical ``failure``."""
        self.transition_to(COMPENSATING)
        self.cancel_reason = cancel_reason
        self.failure = failure

    @property
    def outcome_after_compensation(self) -> str:
        """``cancelled`` for a business reason, ``failed`` for a fault (SPEC lifecycle)."""
        return CANCELLED if self.cancel_reason else FAILED

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class OrderLine(Base):
    """One line; name and unit price are copied from the catalog at order time."""

    __tablename__ = "order_lines"
    __table_args__ = (
        UniqueConstraint("order_id", "line_no", name="uq_order_lines_line_no"),
        Index("ix_order_lines_order", "order_id"),
        CheckConstraint("quantity BETWEEN 1 AND 1000", name="ck_order_lines_quantity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id"))
    line_no: Mapped[int]
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"))
    name: Mapped[str] = mapped_column(String(200))
    unit_price: Mapped[Decimal]
    quantity: Mapped[int]
    line_total: Mapped[Decimal]
    warehouse: Mapped[str] = mapped_column(String(8))  # the product's, at order time

    order: Mapped[Order] = relationship(back_populates="lines")


def stuck(now: datetime, after_s: int) -> ColumnElement[bool]:
    """SQL condition: the order's saga runs (``SAGA_RUNNING``) but the order has not
    changed for ``after_s`` seconds before ``now``. The operator overview lists these
    orders and ``/metrics`` counts them (``orion_sagas_stuck``)."""
    return Order.status.in_(sorted(SAGA_RUNNING)) & (Order.updated_at < now - timedelta(seconds=after_s))


def lock_order(session: Session, order_id: uuid.UUID | str) -> Order:
    """The order with ``SELECT ... FOR UPDATE``; raises NoResultFound if absent."""
    from sqlalchemy import select

    key = order_id if isinstance(order_id, uuid.UUID) else uuid.UUID(str(order_id))
    return session.scalars(select(Order).where(Order.id == key).with_for_update()).one()
