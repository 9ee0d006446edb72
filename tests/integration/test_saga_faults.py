"""Cancels racing the saga, a worker child killed mid-step, replayed messages.

The worker here answers payments slowly (PAYMENT_LATENCY_MS) and does not
consume ``orion.fulfilment``, so an order waits in ``confirmed`` after its
capture, the window in which a customer can still cancel a paid order.
"""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select, text

from models import Inventory, Payment, Shipment, unit_of_work
from services.ordering import Actor, cancel_order
from tests.support.factories import count, customer, eventually, place, product, wait_for
from tests.support.processes import celery_worker

LATENCY_MS = 2500


@pytest.fixture(scope="module")
def slow_worker(inbox):
    from models import get_engine
    from payments.sandbox import SandboxBase

    SandboxBase.metadata.create_all(get_engine())  # the tests read the provider's records
    env = {"PAYMENT_LATENCY_MS": str(LATENCY_MS), "SAGA_RETRY_BACKOFF_MAX": "2"}
    with celery_worker(env, queues="orion.saga,orion.notify") as proc:
        yield proc


def provider_has(order_id, operation: str) -> bool:
    """The sandbox recorded ``operation`` for the order (it answers LATENCY_MS later)."""
    with unit_of_work() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM sandbox_operations WHERE operation = :op AND "
                    "(target = :order OR target IN (SELECT result->>'reference' FROM sandbox_operations "
                    "WHERE target = :order))"
                ),
                {"op": operation, "order": str(order_id)},
            )
        )


def kinds(order_id) -> list[str]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(Payment.kind).where(Payment.order_id == order_id)))


def stock(sku):
    with unit_of_work() as session:
        inv = session.get(Inventory, sku)
        return inv.on_hand, inv.reserved


def test_cancel_while_authorizing_voids_the_authorization(slow_worker, uid, inbox):
    user, sku = customer(uid), product(uid, on_hand=10)
    order_id = place(user, [(sku, 3)])
    eventually(lambda: provider_has(order_id, "authorize"), timeout=30)
    cancel_order(order_id, Actor(user.id, "customer"))  # waits for the in-flight call
    order = wait_for(order_id)
    assert (order.status, order.cancel_reason) == ("cancelled", "customer_request")
    assert kinds(order_id) == ["authorization", "void"]
    assert stock(sku) == (10, 0)
    eventually(lambda: inbox.to(user.email))


def test_cancel_after_capture_refunds_once_and_ships_nothing(slow_worker, uid, inbox):
    user, sku = customer(uid), product(uid, on_hand=10)
    order_id = place(user, [(sku, 2)])
    wait_for(order_id, ("confirmed",))
    eventually(lambda: inbox.to(user.email))  # the confirmation
    cancel_order(order_id, Actor(user.id, "customer"))
    order = wait_for(order_id)
    assert (order.status, order.cancel_reason) == ("cancelled", "customer_request")
    assert kinds(order_id) == ["authorization", "capture", "refund"]
    assert stock(sku) == (10, 0)
    subjects = [
        m["Subject"] for m in eventually(lambda: len(inbox.to(user.email)) == 2 and inbox.to(user.email))
    ]
    assert any("confirmed" in s for s in subjects) and any("cancelled" in s for s in subjects)
    # The shipment message still waits in orion.fulfilment; when a worker takes
    # it, the order is cancelled and nothing ships.
    with celery_worker(queues="orion.fulfilment", purge=False) as fulfilment:
        eventually(lambda: b"saga.create_shipment" in fulfilment.log_path.read_bytes(), timeout=30)
        eventually(
            lambda: (
                b"ignored" in fulfilment.log_path.read_bytes()
                or b"succeeded" in fulfilment.log_path.read_bytes()
            ),
            timeout=30,
        )
    assert count(Shipment, Shipment.order_id == order_id) == 0
    assert stock(sku) == (10, 0)


def test_cancel_is_refused_once_shipped(uid, inbox):
    from services.errors import Conflict
    from tests.integration.conftest import FAST_RETRIES

    with celery_worker(FAST_RETRIES):
        user, sku = customer(uid), product(uid, on_hand=10)
        order_id = place(user, [(sku, 1)])
        assert wait_for(order_id).status == "completed"
        with pytest.raises(Conflict):
            cancel_order(order_id, Actor(user.id, "customer"))


def test_worker_child_killed_mid_capture_redelivers_without_second_capture(slow_worker, uid):
    from worker import app

    user, sku = customer(uid), product(uid, on_hand=10)
    order_id = place(user, [(sku, 1)])
    eventually(lambda: provider_has(order_id, "capture"), timeout=30)
    # The provider has captured and is answering slowly; kill the child that waits.
    # The capture runs inline (tasks.saga.Stage.inline), in the process of the
    # task that ran the step before it, whichever of the order's tasks that is.
    inspector = app.control.inspect(destination=[slow_worker.node_name], limit=1, timeout=5)
    active = inspector.active() or {}
    [pid] = [
        task["worker_pid"]
        for tasks in active.values()
        for task in tasks
        if task["name"].startswith("saga.") and str(order_id) in task["args"]
    ]
    os.kill(pid, signal.SIGKILL)
    order = wait_for(order_id, ("confirmed",), timeout=60)  # redelivered and finished
    assert order.status == "confirmed"
    assert kinds(order_id) == ["authorization", "capture"]
    with unit_of_work() as session:
        captures = session.scalar(
            text(
                "SELECT count(*) FROM sandbox_operations WHERE operation = 'capture' AND target IN "
                "(SELECT result->>'reference' FROM sandbox_operations WHERE target = :o)"
            ),
            {"o": str(order_id)},
        )
    assert captures == 1
    assert b"WorkerLostError" in slow_worker.log_path.read_bytes()
