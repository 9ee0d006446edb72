"""Two deliveries of one chord header at once (acks-late redelivery, a re-drive on
the same run): the second must not hold stock again nor overwrite the first's
step row. The task bodies are called in this process, on the real database."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import Reservation, SagaStep, unit_of_work
from models.catalog import warehouse_for
from models.saga_log import FORWARD, RETRYING, SUCCEEDED
from tasks.journal import SagaTx
from tasks.stock import reserve_stock
from tests.support.factories import count, customer, place, product


def _stock(sku: str) -> tuple[int, int]:
    from models import Inventory

    with unit_of_work() as session:
        inv = session.get(Inventory, sku)
        return inv.on_hand, inv.reserved


def _step(order_id, name: str) -> SagaStep:
    with unit_of_work() as session:
        return session.scalar(select(SagaStep).where(SagaStep.order_id == order_id, SagaStep.name == name))


def test_a_copy_that_read_before_the_first_committed_rolls_back_and_answers_as_it(uid, monkeypatch):
    user, sku = customer(uid), product(uid, on_hand=5)
    order_id = place(user, [(sku, 2)])
    warehouse = warehouse_for(sku)
    assert reserve_stock(str(order_id), 1, warehouse) == {"warehouse": warehouse, "reserved": True}
    assert _stock(sku) == (5, 2)

    # The second copy read the order and its step before the first committed: no row.
    real_read, real_status = SagaTx.read.__func__, SagaTx.step_status
    calls = {"n": 0}

    def stale_read(cls, conn, order_id, step=None):
        tx = real_read(cls, conn, order_id, step)
        tx.step_seen = None
        return tx

    def counted_status(self, name, run=None):
        calls["n"] += 1
        return real_status(self, name, run)

    monkeypatch.setattr(SagaTx, "read", classmethod(stale_read))
    monkeypatch.setattr(SagaTx, "step_status", counted_status)
    assert reserve_stock(str(order_id), 1, warehouse) == {"warehouse": warehouse, "reserved": True}
    assert calls["n"] == 1  # it looked again once it held the stock rows
    assert _stock(sku) == (5, 2)  # held once
    assert count(Reservation, Reservation.order_id == order_id) == 1
    assert _step(order_id, f"reserve_stock:{warehouse}").status == SUCCEEDED


@pytest.mark.parametrize("late", [RETRYING, "failed"])
def test_a_succeeded_step_is_never_written_back_to_retrying_or_failed(uid, late):
    user, sku = customer(uid), product(uid, on_hand=5)
    order_id = place(user, [(sku, 1)])
    name = f"reserve_stock:{warehouse_for(sku)}"
    with unit_of_work() as session:
        tx = SagaTx.lock(session, str(order_id))
        tx.record_step(name, FORWARD, 1, SUCCEEDED, "held")
        tx.flush()
    with unit_of_work() as session:  # a late copy's retry or short-stock outcome
        tx = SagaTx.lock(session, str(order_id))
        tx.record_step(name, FORWARD, 2, late, error="duplicate")
        tx.flush()
    step = _step(order_id, name)
    assert (step.status, step.error) == (SUCCEEDED, None)


def test_a_forged_chord_join_cannot_move_an_order_on_with_nothing_held(uid):
    """Security issue item 8: ``saga.collect_reservations`` decides from the step
    log, never from the header results in its message: a forged join that claims
    every warehouse held leaves the order ``pending`` with nothing reserved."""
    from models import Order
    from tasks.base import StepNotReady
    from tasks.stock import collect_reservations

    user, sku = customer(uid), product(uid, on_hand=5)
    order_id = place(user, [(sku, 2)])
    forged = [{"warehouse": warehouse_for(sku), "reserved": True}]
    with pytest.raises(StepNotReady):  # no reservation recorded: decide later
        collect_reservations(forged, str(order_id), 1)
    with unit_of_work() as session:
        assert session.get(Order, order_id).status == "pending"
    assert _stock(sku) == (5, 0)
    assert count(Reservation, Reservation.order_id == order_id) == 0
