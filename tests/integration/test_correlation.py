"""One correlation id, followed from an HTTP request through every task of its
saga: JSON log lines of the web and the worker, the order's events, the email."""

from __future__ import annotations

import uuid

import pytest
import requests
from sqlalchemy import select

from models import OrderEvent, SagaStep, unit_of_work
from tests.support.factories import customer, eventually, order_body, product, wait_for
from tests.support.logs import json_lines
from tests.support.processes import ARTIFACTS, web_server

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def web(worker):
    with web_server() as base:
        yield base


def test_a_request_id_follows_the_saga_through_logs_events_and_email(web, worker, inbox, uid):
    user, sku = customer(uid), product(uid, on_hand=10)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    token = requests.post(
        f"{web}/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    ).json()["access_token"]
    reply = requests.post(
        f"{web}/api/v1/orders",
        json=order_body([(sku, 1)]),
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
    )
    assert reply.status_code == 202 and reply.headers["X-Request-ID"] == request_id
    order_id = reply.json()["id"]
    assert wait_for(uuid.UUID(order_id)).status == "completed"

    web_log = ARTIFACTS / f"web-{web.rsplit(':', 1)[1]}.log"
    placed = [
        line
        for line in json_lines(web_log)
        if line.get("event") == "order placed" and line.get("order_id") == order_id
    ]
    assert placed and placed[0]["correlation_id"] == request_id

    with unit_of_work() as session:
        steps = set(session.scalars(select(SagaStep.name).where(SagaStep.order_id == uuid.UUID(order_id))))
        events = list(
            session.scalars(
                select(OrderEvent.correlation_id).where(OrderEvent.order_id == uuid.UUID(order_id))
            )
        )
    assert events and set(events) == {request_id}

    def task_lines():
        lines = [line for line in json_lines(worker.log_path) if line.get("order_id") == order_id]
        ran = {line["task"] for line in lines}
        return lines if "saga.complete_order" in ran else None

    lines = eventually(task_lines, timeout=10)
    assert {line["correlation_id"] for line in lines} == {request_id}
    ran = {line["task"] for line in lines}
    expected = {f"saga.{name.split(':')[0]}" for name in steps}  # reserve_stock:1:SKU -> saga.reserve_stock
    assert expected <= ran, expected - ran

    email = eventually(lambda: inbox.to(user.email), timeout=10)[0]
    assert email["X-Request-ID"] == request_id


def test_a_pay_again_request_carries_its_own_id_through_the_resumed_saga(web, worker, inbox, uid):
    """The order keeps the id of the request that placed it; what a later request
    (pay again) starts carries that request's id, which only travels in the task
    headers: the events, task logs and email after it show the new id."""
    user, sku = customer(uid), product(uid, on_hand=10)
    placing, paying = f"place-{uuid.uuid4().hex[:10]}", f"pay-{uuid.uuid4().hex[:10]}"
    token = requests.post(
        f"{web}/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    order_id = requests.post(
        f"{web}/api/v1/orders",
        json=order_body([(sku, 1)], "tok_chargeDeclinedInsufficientFunds"),
        headers={**auth, "X-Request-ID": placing},
    ).json()["id"]
    wait_for(uuid.UUID(order_id), statuses=("awaiting_payment",))
    reply = requests.post(
        f"{web}/api/v1/orders/{order_id}/payment",
        json={"token": "tok_visa"},
        headers={**auth, "X-Request-ID": paying},
    )
    assert reply.status_code == 202
    assert wait_for(uuid.UUID(order_id)).status == "completed"

    with unit_of_work() as session:
        events = [
            (e.detail, e.step, e.correlation_id)
            for e in session.scalars(
                select(OrderEvent).where(OrderEvent.order_id == uuid.UUID(order_id)).order_by(OrderEvent.seq)
            )
        ]
    resumed = next(i for i, (detail, _, _) in enumerate(events) if detail == "payment resubmitted")
    assert {cid for _, _, cid in events[:resumed]} == {placing}
    assert {cid for _, _, cid in events[resumed:]} == {paying}, events[resumed:]
    after = [
        line
        for line in json_lines(worker.log_path)
        if line.get("order_id") == order_id
        and line.get("task") in ("saga.capture_payment", "saga.complete_order")
    ]
    assert after and {line["correlation_id"] for line in after} == {paying}
    email = eventually(lambda: inbox.to(user.email), timeout=10)[0]
    assert email["X-Request-ID"] == paying
