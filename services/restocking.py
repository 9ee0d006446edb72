"""Restocking from a simulated supplier.

A SKU whose available stock (``on_hand - reserved``) is below its reorder point
and has no open purchase order gets one for ``reorder_point - available +
reorder_quantity`` units, due ``SUPPLIER_LEAD_TIME_SECONDS`` later. A due order
is received: ``on_hand`` grows through the ledger (reason ``restock``, reference
``PO-<id>``), which also tells operators (``inventory.restocked``).

Safe to run twice at once: at most one open purchase order per SKU (a partial
unique index, inserted with ``ON CONFLICT DO NOTHING``), and receipts claim
their rows with ``FOR UPDATE SKIP LOCKED`` and re-check them.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import exists, select, text
from sqlalchemy.dialects import postgresql, sqlite

from models import Inventory, PurchaseOrder, unit_of_work, utcnow
from models.catalog import change_on_hand
from models.db import claim_rows, is_postgres
from models.purchasing import OPEN, RECEIVED


def receive_due(limit: int = 500) -> list[tuple[str, int]]:
    """Receive purchase orders whose lead time has passed; ``(sku, quantity)`` each."""
    with unit_of_work() as session:
        query = (
            select(PurchaseOrder)
            .where(PurchaseOrder.status == OPEN, PurchaseOrder.due_at <= utcnow())
            .order_by(PurchaseOrder.id)
            .limit(limit)
        )
        query = claim_rows(session, query)
        received = []
        for po in session.scalars(query):
            change_on_hand(session, po.sku, po.quantity, "restock", po.reference)
            po.status, po.received_at = RECEIVED, utcnow()
            received.append((po.sku, po.quantity))
        return received


def raise_purchase_orders(lead_time_s: float) -> list[tuple[str, int]]:
    """One purchase order per SKU below its reorder point without an open one; ``(sku, quantity)``."""
    available = Inventory.on_hand - Inventory.reserved
    with unit_of_work() as session:
        low = session.execute(
            select(Inventory.sku, (Inventory.reorder_point - available + Inventory.reorder_quantity))
            .where(
                available < Inventory.reorder_point,
                ~exists().where(PurchaseOrder.sku == Inventory.sku, PurchaseOrder.status == OPEN),
            )
            .order_by(Inventory.sku)
        ).all()
        due = utcnow() + timedelta(seconds=lead_time_s)
        insert = postgresql.insert if is_postgres(session) else sqlite.insert
        raised = []
        for sku, quantity in low:
            row = session.execute(
                insert(PurchaseOrder)
                .values(sku=sku, quantity=max(1, quantity), status=OPEN, raised_at=utcnow(), due_at=due)
                .on_conflict_do_nothing(index_elements=["sku"], index_where=text("status = 'open'"))
                .returning(PurchaseOrder.id)
            ).first()
            if row is not None:
                raised.append((sku, max(1, quantity)))
        return raised
