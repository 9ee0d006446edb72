"""The stalled-saga safety net (``scheduled.redrive_stalled_sagas``) on the real
services. Its own module: it kills whole workers, so no other worker may run beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

from sqlalchemy import func, select, update

from models import Order, OrderEvent, unit_of_work, utcnow
from services.safety_net import redrive_stalled_sagas
from tests.integration.test_saga_faults import LATENCY_MS, kinds, provider_has, stock
from tests.support.factories import customer, eventually, place, product, wait_for
from tests.support.processes import ALL_QUEUES, REPO, celery_worker
from worker import app as celery_app

SAFETY_NET = "safety net: re-driven"
# The sweeps cover the whole shared test database: a timeout longer than this
# session has run keeps them to the orders a test aged on purpose (by an hour).
AFTER_S = 3000


def age(order_id, seconds: float) -> None:
    """Pretend the order last changed ``seconds`` ago."""
    with unit_of_work() as session:
        session.execute(
            update(Order).where(Order.id == order_id).values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def redrives(order_id) -> int:
    with unit_of_work() as session:
        return session.scalar(
            select(func.count())
            .select_from(OrderEvent)
            .where(OrderEvent.order_id == order_id, OrderEvent.detail.startswith(SAFETY_NET))
        )


def purge() -> None:
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", ALL_QUEUES],
        cwd=REPO,
        check=True,
        capture_output=True,
    )


def test_a_saga_whose_worker_died_mid_step_with_its_message_is_finished(inbox, uid):
    """The worker is killed while authorizing and its message is lost (as a broker
    without the unacked copy, or the embedded transport, would lose it)."""
    from models import get_engine
    from payments.sandbox import SandboxBase

    SandboxBase.metadata.create_all(get_engine())
    user, sku = customer(uid), product(uid, on_hand=10)
    with celery_worker({"PAYMENT_LATENCY_MS": str(LATENCY_MS)}) as doomed:
        order_id = place(user, [(sku, 2)])
        eventually(lambda: provider_has(order_id, "authorize"), timeout=30)
        os.killpg(doomed.pid, signal.SIGKILL)  # mid-step: the provider answered, nothing committed
        doomed.wait()
    purge()
    with unit_of_work() as session:
        assert session.get(Order, order_id).status == "stock_reserved", "stalled in its step"
    age(order_id, 3600)
    with celery_worker():
        celery_app.send_task("scheduled.redrive_stalled_sagas", kwargs={"after_s": AFTER_S})
        order = wait_for(order_id, timeout=60)
    assert order.status == "completed"
    assert redrives(order_id) == 1
    assert kinds(order_id) == ["authorization", "capture"], "the lost authorization was found, not repeated"
    assert stock(sku) == (8, 0)


def test_two_sweepers_at_once_redrive_an_order_once(uid):
    user, sku = customer(uid), product(uid, on_hand=10)
    stalled, fresh = place(user, [(sku, 1)]), place(user, [(sku, 1)])  # no worker: both stay pending
    purge()
    age(stalled, 3600)
    results: list[list[str]] = []
    sweepers = [
        threading.Thread(target=lambda: results.append(redrive_stalled_sagas(AFTER_S))) for _ in range(2)
    ]
    for sweeper in sweepers:
        sweeper.start()
    for sweeper in sweepers:
        sweeper.join()
    assert sorted(str(stalled) in ids for ids in results) == [False, True]
    assert redrives(stalled) == 1 and redrives(fresh) == 0
    assert str(stalled) not in redrive_stalled_sagas(AFTER_S), "the re-drive counts as progress"
    assert redrives(stalled) == 1
    purge()


def test_a_hold_left_by_a_final_order_is_released(uid):
    """A reservation still held by a cancelled order (a leak) goes back to stock."""
    from models import HELD, Reservation
    from models.catalog import reserve_all
    from services.safety_net import release_lapsed_holds

    user, sku = customer(uid), product(uid, on_hand=10)
    order_id = place(user, [(sku, 1)])
    purge()
    with unit_of_work() as session:
        order = session.get(Order, order_id)
        assert reserve_all(session, {sku: 4}) == []
        session.add(
            Reservation(
                order_id=order_id,
                order_line_id=order.lines[0].id,
                run=1,
                sku=sku,
                quantity=4,
                status=HELD,
                expires_at=utcnow() - timedelta(seconds=1),
            )
        )
        order.status, order.cancel_reason = "cancelled", "customer_request"
    outcome = release_lapsed_holds()
    assert str(order_id) in outcome["released"]
    assert str(order_id) not in release_lapsed_holds()["released"], "once"
    assert stock(sku) == (10, 0)


def test_a_saga_whose_confirmation_email_ran_out_of_retries_is_finished(inbox, uid):
    """SMTP is down past the email step's retry budget: the order stays ``shipped``
    (after the pivot nothing is undone); the safety net finishes it once SMTP is back."""
    from tests.integration.conftest import FAST_RETRIES

    user, sku = customer(uid), product(uid, on_hand=10)
    with celery_worker({**FAST_RETRIES, "SMTP_PORT": "1"}):  # nothing listens on port 1
        order_id = place(user, [(sku, 1)])
        eventually(lambda: _step_status(order_id, "send_confirmation_email") == "failed", timeout=60)
    with unit_of_work() as session:
        assert session.get(Order, order_id).status == "shipped"
    age(order_id, 3600)
    with celery_worker():
        celery_app.send_task("scheduled.redrive_stalled_sagas", kwargs={"after_s": AFTER_S})
        assert wait_for(order_id, timeout=60).status == "completed"
    assert redrives(order_id) == 1
    assert len(eventually(lambda: inbox.to(user.email), timeout=10)) == 1
    assert stock(sku) == (9, 0)


def _step_status(order_id, name: str) -> str | None:
    from models import SagaStep

    with unit_of_work() as session:
        return session.scalar(
            select(SagaStep.status).where(SagaStep.order_id == order_id, SagaStep.name == name)
        )


def test_a_saga_re_driven_already_waits_three_timeouts_before_the_next(uid):
    """It may just be queued behind a backlog: each re-drive adds a chain of messages."""
    order_id = place(customer(uid), [(product(uid, on_hand=5), 1)])  # no worker: stays pending
    purge()
    age(order_id, 3600)
    assert str(order_id) in redrive_stalled_sagas(AFTER_S)
    with unit_of_work() as session:  # the re-drive's event, as if long ago but within 3 timeouts
        session.execute(
            update(OrderEvent)
            .where(OrderEvent.order_id == order_id, OrderEvent.detail.startswith(SAFETY_NET))
            .values(at=utcnow() - timedelta(seconds=2 * AFTER_S))
        )
    age(order_id, 2 * AFTER_S)
    assert str(order_id) not in redrive_stalled_sagas(AFTER_S)
    with unit_of_work() as session:
        session.execute(
            update(OrderEvent)
            .where(OrderEvent.order_id == order_id, OrderEvent.detail.startswith(SAFETY_NET))
            .values(at=utcnow() - timedelta(seconds=3 * AFTER_S + 1))
        )
    age(order_id, 3 * AFTER_S + 1)
    assert str(order_id) in redrive_stalled_sagas(AFTER_S)
    assert redrives(order_id) == 2
    purge()


def test_a_failed_compensation_is_retried_with_a_doubling_backoff(inbox, uid):
    """``compensation_failed`` used to wait for an operator for ever (issue 9): the
    sweep re-drives it after the timeout, then after twice that, and so on."""
    purge()
    user, sku = customer(uid), product(uid, on_hand=10)
    order_id = place(user, [(sku, 1)])  # no worker yet: it stays pending

    def fail_compensation(idle_s: float) -> None:
        with unit_of_work() as session:
            session.execute(
                update(Order)
                .where(Order.id == order_id)
                .values(
                    status="compensation_failed",
                    cancel_reason="customer_request",
                    updated_at=utcnow() - timedelta(seconds=idle_s),
                )
            )

    fail_compensation(AFTER_S + 10)
    assert str(order_id) in redrive_stalled_sagas(AFTER_S)
    with unit_of_work() as session:
        assert session.get(Order, order_id).status == "compensating"
    assert redrives(order_id) == 1

    fail_compensation(AFTER_S * 1.5)  # failed again: now it waits 2 × AFTER_S
    assert str(order_id) not in redrive_stalled_sagas(AFTER_S)
    fail_compensation(AFTER_S * 2 + 10)
    assert str(order_id) in redrive_stalled_sagas(AFTER_S)
    assert redrives(order_id) == 2

    with celery_worker(purge=False):  # the re-drives' saga.compensate messages wait in the queue
        order = wait_for(order_id, timeout=60)
    assert (order.status, order.cancel_reason) == ("cancelled", "customer_request")
    assert stock(sku) == (10, 0)
