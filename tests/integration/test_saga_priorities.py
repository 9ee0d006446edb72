"""Under a backlog, orders finish in the order they came: later saga stages go first."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import select

from models import Order, SagaStep, unit_of_work
from tests.integration.conftest import FAST_RETRIES
from tests.support.factories import customer, place, product, wait_for
from tests.support.processes import ALL_QUEUES, REPO, celery_worker


def test_a_backlog_drains_order_by_order_with_one_worker_process(uid, inbox):
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", ALL_QUEUES],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    skus = [product(uid, on_hand=100, suffix=str(i)) for i in range(3)]
    users = [customer(f"{uid}{i}") for i in range(6)]
    # Placed while no worker runs: every saga's first message waits in the queue.
    order_ids = [place(user, [(sku, 1) for sku in skus]) for user in users]

    with celery_worker(FAST_RETRIES, concurrency=1, purge=False):
        orders = [wait_for(order_id, timeout=90) for order_id in order_ids]

    assert [o.status for o in orders] == ["completed"] * len(orders)
    with unit_of_work() as session:
        validated = {
            step.order_id: step.started_at
            for step in session.scalars(
                select(SagaStep).where(SagaStep.order_id.in_(order_ids), SagaStep.name == "validate_order")
            )
        }
        finished = {
            o.id: o.finished_at for o in session.scalars(select(Order).where(Order.id.in_(order_ids)))
        }
    # One process, prefetch 1 per queue: an order in flight goes before new ones,
    # chord joins included (Celery publishes those itself). While the first
    # order's email and parcels wait on their own queues the process validates
    # the next order, but the first is done long before the last one starts.
    # (With the joins sent at priority 0 every order was validated and reserved
    # before any was collected, and all finished together at the end.)
    assert finished[order_ids[0]] < validated[order_ids[-1]]
    assert finished[order_ids[1]] < validated[order_ids[-1]]
    assert sorted(order_ids, key=finished.get) == order_ids


def test_a_beat_job_goes_before_a_backlog_of_sagas(uid, inbox):
    """Beat's safety nets are sent with an expiry of one period: queued behind a
    backlog at priority 0 they expired unrun (issue 9). At the top priority they
    run next, whatever waits."""
    from worker import app as celery_app

    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", ALL_QUEUES],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    sku = product(uid, on_hand=100)
    order_ids = [place(customer(f"{uid}{i}"), [(sku, 1)]) for i in range(8)]
    job = celery_app.send_task("scheduled.audit_inventory", ignore_result=False, expires=60)

    with celery_worker(FAST_RETRIES, concurrency=1, purge=False):
        assert job.get(timeout=60) is not None
        orders = [wait_for(order_id, timeout=90) for order_id in order_ids]
    assert [o.status for o in orders] == ["completed"] * len(orders)
    with unit_of_work() as session:
        validated = sorted(
            session.scalars(
                select(SagaStep.started_at).where(
                    SagaStep.order_id.in_(order_ids), SagaStep.name == "validate_order"
                )
            )
        )
    # The job ran before the backlog's second order was even validated (the
    # first may be in the worker's hands already).
    assert job.date_done < validated[1]
