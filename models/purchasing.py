"""Purchase orders to the (simulated) supplier, raised when stock runs low.

At most one open purchase order per SKU: a partial unique index, so two restock
runs at once (a second beat by mistake) cannot both raise one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, utcnow

OPEN, RECEIVED = "open", "received"


class PurchaseOrder(Base):
    __tablename__ = "purchase_orders"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="ck_purchase_orders_quantity"),
        Index(
            "uq_purchase_orders_one_open",
            "sku",
            unique=True,
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"))
    quantity: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=OPEN)
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime]
    received_at: Mapped[datetime | None]

    @property
    def reference(self) -> str:
        return f"PO-{self.id}"
