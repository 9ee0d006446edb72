"""Two ``celery -A worker beat`` processes at once (the mistake SPEC guarantee 5
must survive), every job due each second, beside a real worker: each job's
effect happens once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from models import EmailMessage, Inventory, Order, OrderEvent, PurchaseOrder, unit_of_work, utcnow
from tests.support.factories import customer, eventually, place, product, wait_for
from tests.support.processes import ARTIFACTS, REPO, celery_worker, stop

EVERY_SECOND = {
    "PAYMENT_SWEEP_EVERY_SECONDS": "1",
    "RESTOCK_EVERY_SECONDS": "1",
    "SAGA_REDRIVE_EVERY_SECONDS": "1",
    "INVENTORY_AUDIT_EVERY_SECONDS": "1",
    "OUTBOX_SWEEP_SECONDS": "1",
    "SUPPLIER_LEAD_TIME_SECONDS": "3600",
    # Longer than this session has run: only this test's aged order is stalled.
    "SAGA_REDRIVE_AFTER_SECONDS": "3000",
}


def beat(name: str, tmp_path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "beat",
            "-l",
            "info",
            "-s",
            str(tmp_path / f"{name}-schedule"),
        ],
        cwd=REPO,
        env={**os.environ, **EVERY_SECOND},
        start_new_session=True,
        stdout=(ARTIFACTS / f"beat-{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def count(model, *where) -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_two_beats_at_once_do_nothing_twice(inbox, uid, tmp_path):
    from models import get_engine
    from payments.sandbox import SandboxBase

    SandboxBase.metadata.create_all(get_engine())
    user = customer(uid)
    low_sku, parked_sku = product(uid, on_hand=3, suffix="L"), product(uid, on_hand=10, suffix="P")
    with unit_of_work() as session:
        session.execute(
            update(Inventory).where(Inventory.sku == low_sku).values(reorder_point=10, reorder_quantity=10)
        )
    stalled = place(user, [(parked_sku, 1)])  # its message is purged as the worker starts
    with unit_of_work() as session:
        session.execute(
            update(Order).where(Order.id == stalled).values(updated_at=utcnow() - timedelta(hours=1))
        )
    with celery_worker(EVERY_SECOND):
        parked = place(user, [(parked_sku, 1)], token="tok_chargeDeclinedInsufficientFunds")
        wait_for(parked, statuses=("awaiting_payment",))
        with unit_of_work() as session:  # past the first reminder age, inside the window
            session.execute(
                update(Order)
                .where(Order.id == parked)
                .values(awaiting_payment_since=utcnow() - timedelta(hours=2))
            )
        beats = [beat("a", tmp_path), beat("b", tmp_path)]
        try:
            eventually(lambda: count(PurchaseOrder, PurchaseOrder.sku == low_sku) >= 1, timeout=30)
            eventually(lambda: len(inbox.to(user.email)) >= 2, timeout=30)  # reminder, confirmation
            assert wait_for(stalled, timeout=30).status == "completed"
            time.sleep(5)  # some more rounds of both beats
        finally:
            for proc in beats:
                stop(proc)
    assert all(
        b"Sending due task scheduled.restock_low_inventory" in (ARTIFACTS / f"beat-{n}.log").read_bytes()
        for n in ("a", "b")
    ), "both beats were sending"
    assert count(PurchaseOrder, PurchaseOrder.sku == low_sku) == 1
    assert (
        count(
            EmailMessage,
            EmailMessage.order_id == parked,
            EmailMessage.template.startswith("payment_reminder"),
        )
        == 1
    )
    assert (
        count(OrderEvent, OrderEvent.order_id == parked, OrderEvent.detail.startswith("payment reminder"))
        == 1
    )
    assert (
        count(
            OrderEvent, OrderEvent.order_id == stalled, OrderEvent.detail.startswith("safety net: re-driven")
        )
        == 1
    )
    assert len(inbox.to(user.email)) == 2, "one reminder, one confirmation"
