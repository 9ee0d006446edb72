"""Steps declared ``inline`` (``tasks.saga.Stage.inline``: authorize and capture)
run in the process of the step before them, without a message of their own,
and fall back to their own message where running inline would change an
outcome (a transient fault: a retry with backoff, as from the queue)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from models import SagaStep, unit_of_work
from tests.integration.conftest import FAST_RETRIES
from tests.support.factories import customer, place, product, wait_for
from tests.support.logs import json_lines
from tests.support.processes import celery_worker

pytestmark = pytest.mark.usefixtures("inbox")


def task_lines(lines: list[dict], task: str, order_id) -> list[str]:
    """The log events of ``task`` for ``order_id``, and every line naming its task ids."""
    ids = {
        line["task_id"]
        for line in lines
        if line.get("task") == task and line.get("order_id") == str(order_id) and line.get("task_id")
    }
    return [line["event"] for line in lines if any(f"{task}[{i}]" in line.get("event", "") for i in ids)]


def attempts(order_id) -> dict[str, tuple[str, int]]:
    with unit_of_work() as session:
        rows = session.execute(
            select(SagaStep.name, SagaStep.status, SagaStep.attempt).where(SagaStep.order_id == order_id)
        ).all()
    return {name: (status, attempt) for name, status, attempt in rows}


def completed_order(uid: str, env: dict[str, str], token: str = "tok_visa") -> tuple[object, list[dict]]:
    """An order placed and completed on a worker started with ``env``; its id and
    the worker's log lines."""
    with celery_worker({**FAST_RETRIES, **env}) as worker:
        user, sku = customer(uid), product(uid, on_hand=5)
        order_id = place(user, [(sku, 1)], token=token)
        assert wait_for(order_id, timeout=60).status == "completed"
        return order_id, json_lines(worker.log_path)


def test_payment_steps_run_inline_without_messages_of_their_own(uid):
    order_id, lines = completed_order(uid, {})

    for task in ("saga.authorize_payment", "saga.capture_payment"):
        events = task_lines(lines, task, order_id)
        assert len(events) == 1 and re.fullmatch(rf"Task {task}\[.+\] succeeded inline in \S+s", events[0])
    # The steps before and after are messages, which Celery's tracer logs.
    assert any(" succeeded in " in e for e in task_lines(lines, "saga.validate_order", order_id))
    assert attempts(order_id)["capture_payment"] == ("succeeded", 1)


def test_without_inline_steps_every_step_is_a_message(uid):
    order_id, lines = completed_order(uid, {"SAGA_INLINE_STEPS": "false"})

    for task in ("saga.authorize_payment", "saga.capture_payment"):
        events = task_lines(lines, task, order_id)
        assert len(events) == 1 and re.fullmatch(rf"Task {task}\[.+\] succeeded in \S+: None", events[0])


def test_a_transient_fault_inline_is_retried_as_the_steps_own_message(uid):
    # tok_flaky: the first two authorization calls of an order time out. The
    # first is the inline attempt; the second and third come from the queue.
    order_id, lines = completed_order(uid, {}, token="tok_flaky")

    assert attempts(order_id)["authorize_payment"] == ("succeeded", 3)
    events = task_lines(lines, "saga.authorize_payment", order_id)
    # Attempt 1 (inline) published attempt 2 as a message; Celery's tracer logs
    # attempt 2's retry and attempt 3's success.
    assert [e.split("] ", 1)[1].split(" ", 1)[0] for e in events] == ["retry:", "succeeded"]
    assert " succeeded in " in events[1]
    # Its successor runs inline after the attempt that succeeded.
    assert any("succeeded inline" in e for e in task_lines(lines, "saga.capture_payment", order_id))
