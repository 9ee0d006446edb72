"""A message that kills its worker process on every delivery: RabbitMQ's classic
queues redeliver it for ever, so Orion counts the deliveries and fails the step
for good past ``SAGA_MAX_DELIVERIES``, keeping a copy in the dead-letter queue
(issue 9). Its own module: no other worker may run beside this one."""

from __future__ import annotations

import time

import psutil

from models import Order, unit_of_work
from tests.integration.test_dead_letter import dlq, listed
from tests.integration.test_saga_faults import kinds, stock
from tests.support.factories import customer, place, product, wait_for
from tests.support.processes import celery_worker


def status(order_id) -> str:
    with unit_of_work() as session:
        return session.get(Order, order_id).status


def test_a_step_that_crashes_its_worker_every_time_fails_after_the_delivery_limit(inbox, uid):
    from models import get_engine
    from payments.sandbox import SandboxBase

    SandboxBase.metadata.create_all(get_engine())
    user, sku = customer(uid), product(uid, on_hand=10)
    # Each delivery of the authorization waits 4 s on the provider: long enough to
    # be killed every time, as a message that crashes the interpreter would be.
    env = {"PAYMENT_LATENCY_MS": "4000", "SAGA_MAX_DELIVERIES": "3"}
    with celery_worker(env, queues="orion.saga,orion.notify") as worker:
        order_id = place(user, [(sku, 1)])
        kills, last_kill, deadline = 0, 0.0, time.monotonic() + 150
        while time.monotonic() < deadline:
            now_status = status(order_id)
            if now_status not in ("pending", "stock_reserved"):
                break
            if now_status == "stock_reserved" and time.monotonic() - last_kill > 1.5:
                for child in psutil.Process(worker.pid).children():
                    child.kill()
                kills, last_kill = kills + 1, time.monotonic()
            time.sleep(0.3)
        order = wait_for(order_id, timeout=60)
        log = worker.log_path.read_text()
    assert kills >= 3
    assert (order.status, order.failure) == (
        "failed",
        "saga.authorize_payment: step crashed its worker repeatedly",
    )
    assert "delivered again (delivery 3 of at most 3)" in log
    assert kinds(order_id) in (["authorization", "void"], [])  # the hold, if any, voided
    assert stock(sku) == (10, 0)
    # A copy of the message is kept in the dead-letter queue for the operator.
    copies = [
        row for row in listed() if row["task"] == "saga.authorize_payment" and str(order_id) in row["args"]
    ]
    assert [row["reason"] for row in copies] == ["poison"]
    assert copies[0]["routing_key"] == "orion.saga"
    assert dlq("purge", copies[0]["id"]).returncode == 0
