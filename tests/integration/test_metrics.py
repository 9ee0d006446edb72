"""/metrics on the real services: the web under gunicorn and a real worker share a
prometheus-client multiprocess folder, as the launcher runs them."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from config import get_settings
from models import Inventory, Order, unit_of_work, utcnow
from tests.support.factories import customer, eventually, order_body, place, product, wait_for
from tests.support.processes import web_server
from worker import app as celery_app

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def web(worker):
    with web_server() as base:
        yield base


def samples(base: str) -> dict[tuple[str, frozenset], float]:
    reply = requests.get(f"{base}/metrics", timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, frozenset(labels.items())))


def place_over_http(base: str, user, sku: str, token: str) -> str:
    tokens = requests.post(
        f"{base}/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    ).json()
    reply = requests.post(
        f"{base}/api/v1/orders",
        json=order_body([(sku, 1)], token),
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert reply.status_code == 202
    return reply.json()["id"]


def test_metrics_cover_http_orders_saga_steps_retries_and_outbox(web, uid):
    user, sku = customer(uid), product(uid, on_hand=10)
    order_id = place_over_http(web, user, sku, "tok_flaky")  # two retries of authorize_payment
    assert wait_for(order_id).status == "completed"
    found = eventually(
        lambda: (
            lambda f: (
                f
                if value(
                    f, "orion_saga_step_duration_seconds_count", step="saga.complete_order", outcome="success"
                )
                else None
            )
        )(samples(web)),
        timeout=15,
    )

    assert value(found, "orion_http_requests_total", route="/api/v1/orders", method="POST", status="202") >= 1
    assert (
        value(found, "orion_http_request_duration_seconds_count", route="/api/v1/orders", method="POST") >= 1
    )
    assert value(found, "orion_orders", status="completed") >= 1
    assert (
        value(found, "orion_saga_step_duration_seconds_count", step="saga.capture_payment", outcome="success")
        >= 1
    )
    assert (
        value(found, "orion_saga_step_duration_seconds_count", step="saga.authorize_payment", outcome="retry")
        >= 2
    )
    assert value(found, "orion_task_retries_total", task="saga.authorize_payment") >= 2
    assert value(found, "orion_outbox_backlog") is not None
    assert value(found, "orion_outbox_oldest_age_seconds") is not None
    # Queue depth from the broker: the test worker consumes every Orion queue.
    for queue in ("orion.saga", "orion.fulfilment", "orion.notify"):
        assert value(found, "orion_queue_consumers", queue=queue) >= 1
        assert value(found, "orion_queue_messages", queue=queue) >= 0


def test_the_inventory_audit_exposes_a_violation_as_a_metric(web, worker, uid):
    """Other tests may leave their own mismatches behind: compare with the count before."""
    sku = product(uid, on_hand=10)

    def run_audit() -> dict:
        return celery_app.send_task("scheduled.audit_inventory", ignore_result=False).get(timeout=60)

    before = run_audit()["reserved_mismatch"]
    assert value(samples(web), "orion_inventory_audit_violations", check="reserved_mismatch") == before
    try:
        with unit_of_work() as session:  # units reserved with no reservation behind them
            session.execute(update(Inventory).where(Inventory.sku == sku).values(reserved=2))
        assert run_audit()["reserved_mismatch"] == before + 1
        assert (
            value(samples(web), "orion_inventory_audit_violations", check="reserved_mismatch") == before + 1
        )
        assert f"'sku': '{sku}'" in worker.log_path.read_text(), "and a log event naming the sku"
    finally:
        with unit_of_work() as session:
            session.execute(update(Inventory).where(Inventory.sku == sku).values(reserved=0))
    assert run_audit()["reserved_mismatch"] == before
    assert value(samples(web), "orion_inventory_audit_violations", check="reserved_mismatch") == before


def test_stuck_sagas_are_the_running_orders_unchanged_for_stuck_after_seconds(web, uid):
    """The operator overview's definition: an order whose saga runs (forward or
    compensating) unchanged for STUCK_AFTER_SECONDS counts; a fresh one, one parked
    for payment and a final one do not. Compared with the count before, as other
    tests may leave stuck orders behind."""
    user, sku = customer(uid), product(uid, on_hand=10)
    orders = [place(user, [(sku, 1)]) for _ in range(5)]
    for order_id in orders:
        assert wait_for(order_id).status == "completed"
    before = value(samples(web), "orion_sagas_stuck")
    long_ago = utcnow() - timedelta(seconds=get_settings().stuck_after_s + 5)
    states = zip(
        orders,
        [
            ("confirmed", long_ago),
            ("compensating", long_ago),
            ("confirmed", utcnow()),
            ("awaiting_payment", long_ago),
            ("completed", long_ago),
        ],
        strict=False,
    )
    try:
        with unit_of_work() as session:
            for order_id, (status, updated_at) in states:
                session.execute(
                    update(Order).where(Order.id == order_id).values(status=status, updated_at=updated_at)
                )
        assert value(samples(web), "orion_sagas_stuck") == before + 2
    finally:
        with unit_of_work() as session:
            session.execute(update(Order).where(Order.id.in_(orders)).values(status="completed"))
    assert value(samples(web), "orion_sagas_stuck") == before
