"""Restocking as beat runs it (tasks sent to a real worker): orders drive a SKU
below its reorder point, a purchase order is raised once, received once, and
the ledger explains every unit."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select, update

from models import Inventory, InventoryLedger, PurchaseOrder, unit_of_work, utcnow
from services import restocking
from tests.support.factories import customer, place, product, wait_for
from worker import app as celery_app


def run_restock(times: int = 1, lead_time_s: float = 3600) -> list[dict]:
    return [
        celery_app.send_task(
            "scheduled.restock_low_inventory", kwargs={"lead_time_s": lead_time_s}, ignore_result=False
        ).get(timeout=30)
        for _ in range(times)
    ]


def stocked(sku: str, reorder_point: int, reorder_quantity: int) -> None:
    with unit_of_work() as session:
        session.execute(
            update(Inventory)
            .where(Inventory.sku == sku)
            .values(reorder_point=reorder_point, reorder_quantity=reorder_quantity)
        )


def purchase_orders(sku: str) -> list[tuple[int, str]]:
    with unit_of_work() as session:
        return [
            (po.quantity, po.status)
            for po in session.scalars(
                select(PurchaseOrder).where(PurchaseOrder.sku == sku).order_by(PurchaseOrder.id)
            )
        ]


def ledger_explains(sku: str) -> bool:
    with unit_of_work() as session:
        total = session.scalar(select(func.sum(InventoryLedger.delta)).where(InventoryLedger.sku == sku))
        return total == session.get(Inventory, sku).on_hand


def test_orders_drive_a_sku_below_its_reorder_point_and_beat_restocks_it(worker, uid):
    sku, user = product(uid, on_hand=12), customer(uid)
    stocked(sku, reorder_point=5, reorder_quantity=20)
    for _ in range(4):  # 4 x 2 units shipped: 4 left, below the reorder point of 5
        assert wait_for(place(user, [(sku, 2)])).status == "completed"

    run_restock(times=2)  # a second run in the period raises nothing more
    assert purchase_orders(sku) == [(5 - 4 + 20, "open")]

    with unit_of_work() as session:  # the lead time passes
        session.execute(
            update(PurchaseOrder)
            .where(PurchaseOrder.sku == sku)
            .values(due_at=utcnow() - timedelta(seconds=1))
        )
    run_restock(times=2)
    assert purchase_orders(sku) == [(21, "received")]
    with unit_of_work() as session:
        stock = session.get(Inventory, sku)
        assert (stock.on_hand, stock.reserved) == (25, 0)
        reasons = list(
            session.execute(
                select(InventoryLedger.reason, InventoryLedger.delta)
                .where(InventoryLedger.sku == sku)
                .order_by(InventoryLedger.id)
            )
        )
    assert [tuple(r) for r in reasons] == [("initial stock", 12)] + [("shipment", -2)] * 4 + [("restock", 21)]
    assert ledger_explains(sku)


def test_a_restock_run_racing_an_uncommitted_one_raises_nothing(uid):
    """The first run's purchase order is inserted but not committed when the second
    run looks: the second sees no open order, inserts, waits on the unique index,
    and once the first commits does nothing (ON CONFLICT DO NOTHING)."""
    sku = product(uid, on_hand=3)
    stocked(sku, reorder_point=10, reorder_quantity=10)
    results: list = []
    with unit_of_work() as first:
        first.add(PurchaseOrder(sku=sku, quantity=17, due_at=utcnow() + timedelta(hours=1)))
        first.flush()  # the row and its unique-index entry exist, uncommitted
        second = threading.Thread(target=lambda: results.append(restocking.raise_purchase_orders(3600)))
        second.start()
        second.join(timeout=2)
        assert second.is_alive(), "the second run waits on the first one's index entry"
    second.join(timeout=30)
    assert not second.is_alive() and results, "the second run finished without an error"
    assert sku not in [raised_sku for raised_sku, _ in results[0]]
    assert purchase_orders(sku) == [(17, "open")]
