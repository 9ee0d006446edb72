"""The operator page's data (issue 11): GET /api/v1/operator/charts, and order
search (GET /api/v1/orders?customer_email=&status=&cursor=, GET /orders/{id})."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from models import Order, SagaStep, unit_of_work, utcnow
from tests.support.api import API, auth, problem
from tests.support.factories import customer, place, product
from web import create_app


@pytest.fixture(scope="module")
def client():
    return create_app().test_client()


@pytest.fixture
def operator(client, uid) -> dict:
    return auth(client, customer(uid, role="operator"))


def charts(client, headers) -> dict:
    reply = client.get(f"{API}/operator/charts", headers=headers)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply.get_json()


def finish(order_id, status: str, at) -> None:
    with unit_of_work() as session:
        session.execute(
            update(Order).where(Order.id == order_id).values(status=status, finished_at=at, updated_at=at)
        )


def test_charts_and_customer_email_search_are_for_operators_only(client, uid):
    headers = auth(client, customer(uid))
    problem(client.get(f"{API}/operator/charts", headers=headers), 403)
    problem(client.get(f"{API}/orders", query_string={"customer_email": "a@b.example"}, headers=headers), 403)
    problem(client.get(f"{API}/operator/charts"), 401)


def declare_queues() -> None:
    """Orion's queues on this broker (a worker declares them; none may have run yet)."""
    from worker import app as celery

    with celery.connection_for_write() as conn:
        for queue in celery.conf.task_queues:
            queue.bind(conn.default_channel).declare()


def test_charts_have_one_value_per_minute_of_the_last_hour(client, operator):
    declare_queues()
    body = charts(client, operator)
    assert len(body["minutes"]) == 60 and body["minutes"] == sorted(body["minutes"])
    assert body["minutes"][-1] == utcnow().strftime("%Y-%m-%dT%H:%M") or body["minutes"][-1] == (
        utcnow() - timedelta(minutes=1)
    ).strftime("%Y-%m-%dT%H:%M")
    assert set(body["outcomes"]) == {"completed", "cancelled", "failed"}
    assert all(len(series) == 60 for series in [*body["outcomes"].values(), body["retries"]])
    assert "orion.saga" in body["queues"]  # read from RabbitMQ
    assert set(body["queues"]["orion.saga"]) == {"messages", "consumers"}


def test_charts_count_outcomes_and_retries_in_their_minute(client, uid, operator):
    sku, user = product(uid, 10), customer(uid)
    done, declined, broken = (place(user, [(sku, 1)]) for _ in range(3))
    at = utcnow().replace(second=30, microsecond=0) - timedelta(minutes=20)
    minute = at.strftime("%Y-%m-%dT%H:%M")
    before = charts(client, operator)
    finish(done, "completed", at)
    finish(declined, "cancelled", at)
    finish(broken, "failed", at + timedelta(minutes=1))
    with unit_of_work() as session:  # a step that took three attempts, started in that minute
        session.add(
            SagaStep(
                order_id=done,
                name="authorize_payment",
                run=1,
                kind="forward",
                status="succeeded",
                attempt=3,
                started_at=at,
                finished_at=at + timedelta(seconds=2),
            )
        )

    after = charts(client, operator)
    i = after["minutes"].index(minute)
    j = before["minutes"].index(minute)
    assert after["outcomes"]["completed"][i] == before["outcomes"]["completed"][j] + 1
    assert after["outcomes"]["cancelled"][i] == before["outcomes"]["cancelled"][j] + 1
    assert after["outcomes"]["failed"][i + 1] == before["outcomes"]["failed"][j + 1] + 1
    assert after["retries"][i] == before["retries"][j] + 2


def test_step_duration_percentiles_by_nearest_rank_with_warehouses_merged(client, uid, operator):
    sku, user = product(uid, 10), customer(uid)
    order_id = place(user, [(sku, 1)])
    step = f"probe_{uid}"
    start = utcnow() - timedelta(minutes=5)
    with unit_of_work() as session:  # durations 1 ms .. 100 ms, split over two "warehouses"
        session.add_all(
            SagaStep(
                order_id=order_id,
                name=f"{step}:{'UK' if ms % 2 else 'EU'}",
                run=ms,
                kind="forward",
                status="succeeded",
                attempt=1,
                started_at=start,
                finished_at=start + timedelta(milliseconds=ms),
            )
            for ms in range(1, 101)
        )
        session.add(
            SagaStep(
                order_id=order_id,
                name=step,
                run=101,
                kind="forward",
                status="failed",
                attempt=1,
                started_at=start,
                finished_at=start + timedelta(hours=1),
            )
        )

    rows = {row["step"]: row for row in charts(client, operator)["step_durations"]}
    assert rows[step] == {"step": step, "runs": 100, "p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}


def test_operators_find_a_customers_orders_by_email_with_status_filter_and_paging(client, uid, operator):
    sku, alice, bob = product(uid, 20), customer(uid), customer(uid)
    alices = [place(alice, [(sku, 1)]) for _ in range(5)]
    place(bob, [(sku, 1)])
    finish(alices[0], "cancelled", utcnow())

    def search(**query):
        reply = client.get(f"{API}/orders", query_string=query, headers=operator)
        assert reply.status_code == 200, reply.get_data(as_text=True)
        return reply.get_json()

    first = search(customer_email=alice.email.upper(), limit=3)  # matched case-insensitively
    second = search(customer_email=alice.email, limit=3, cursor=first["next_cursor"])
    found = [o["id"] for o in first["items"] + second["items"]]
    assert found == [str(i) for i in reversed(alices)], "newest first, every order once"
    assert second["next_cursor"] is None
    cancelled = search(customer_email=alice.email, status="cancelled")["items"]
    assert [o["id"] for o in cancelled] == [str(alices[0])]
    assert search(customer_email=f"nobody-{uid}@test.orion.example")["items"] == []

    reply = client.get(f"{API}/orders/{alices[2]}", headers=operator)  # by id: any customer's
    assert reply.status_code == 200 and reply.get_json()["id"] == str(alices[2])


def test_customer_email_is_validated(client, operator):
    body = problem(
        client.get(f"{API}/orders", query_string={"customer_email": "x" * 255}, headers=operator), 422
    )
    assert "customer_email" in body["errors"]
