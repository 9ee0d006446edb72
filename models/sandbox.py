"""The payment sandbox's own records: what a real provider would keep on its side.

Kept in Orion's database so every worker process sees the same provider state.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, utcnow


class SandboxCharge(Base):
    """A completed provider operation, keyed by the caller's idempotency key."""

    __tablename__ = "sandbox_charges"

    idempotency_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    operation: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal]
    result: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxCall(Base):
    """How many times an operation was called for an order (drives ``tok_flaky``)."""

    __tablename__ = "sandbox_calls"

    order_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
