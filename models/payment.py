"""Payments: authorization, capture, void and refund, each with its provider idempotency key.

Partial unique indexes make a second capture or a second refund of one order
impossible at the database (SPEC guarantee 2).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, utcnow

AUTHORIZATION, CAPTURE, VOID, REFUND = "authorization", "capture", "void", "refund"
PENDING, SUCCEEDED, DECLINED, FAILED = "pending", "succeeded", "declined", "failed"


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        Index(
            "uq_payments_one_capture",
            "order_id",
            unique=True,
            postgresql_where=text("kind = 'capture'"),
            sqlite_where=text("kind = 'capture'"),
        ),
        Index(
            "uq_payments_one_refund",
            "order_id",
            unique=True,
            postgresql_where=text("kind = 'refund'"),
            sqlite_where=text("kind = 'refund'"),
        ),
        Index("ix_payments_order", "order_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    provider_reference: Mapped[str | None] = mapped_column(String(64))
    decline_code: Mapped[str | None] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
