"""A worker killed whole (main process and children) between a provider's answer
and the commit that records it. Its own module: no other worker may run beside it."""

from __future__ import annotations

import os
import signal

from services.ordering import Actor, cancel_order
from tests.integration.test_saga_faults import LATENCY_MS, kinds, provider_has, stock
from tests.support.factories import customer, eventually, place, product, wait_for
from tests.support.processes import celery_worker


def test_capture_lost_with_its_worker_is_still_refunded_after_a_cancel(inbox, uid):
    """The provider captured, the worker died before recording it, and the customer
    cancelled before any worker took the message again: the refund must still come."""
    from models import get_engine
    from payments.sandbox import SandboxBase

    SandboxBase.metadata.create_all(get_engine())
    user, sku = customer(uid), product(uid, on_hand=10)
    env = {"PAYMENT_LATENCY_MS": str(LATENCY_MS)}
    with celery_worker(env, queues="orion.saga,orion.notify") as doomed:
        order_id = place(user, [(sku, 1)])
        eventually(lambda: provider_has(order_id, "capture"), timeout=30)
        os.killpg(doomed.pid, signal.SIGKILL)  # main process and children: nothing is acked
        doomed.wait()
    assert kinds(order_id) == ["authorization"]  # the capture exists only at the provider
    cancel_order(order_id, Actor(user.id, "customer"))
    with celery_worker(env, queues="orion.saga,orion.notify", purge=False):
        order = wait_for(order_id, timeout=60)
    assert (order.status, order.cancel_reason) == ("cancelled", "customer_request")
    assert kinds(order_id) == ["authorization", "capture", "refund"]
    assert stock(sku) == (10, 0)
