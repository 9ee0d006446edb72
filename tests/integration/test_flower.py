"""Flower as operators run it: ``celery -A worker flower`` with flowerconfig.py,
on RabbitMQ beside a real worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import requests

from tests.support.factories import customer, eventually, place, product, wait_for
from tests.support.processes import ARTIFACTS, REPO, stop

CREDENTIALS = ("ops", "flower secret 1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flower_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "flower",
        f"--conf={REPO / 'flowerconfig.py'}",
        f"--port={port}",
    ]


@pytest.fixture(scope="module")
def flower(worker):
    port = free_port()
    env = {**os.environ, "FLOWER_BASIC_AUTH": ":".join(CREDENTIALS)}
    ARTIFACTS.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        flower_command(port),
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=(ARTIFACTS / "flower.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(
            lambda: getattr(_get(f"{base}/healthcheck"), "status_code", None), timeout=60, interval=0.3
        )
        yield base
    finally:
        stop(proc)


def _get(url: str, **kwargs):
    try:
        return requests.get(url, timeout=5, **kwargs)
    except requests.ConnectionError:
        return None


def test_flower_refuses_to_start_without_credentials_outside_embedded():
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    result = subprocess.run(
        flower_command(free_port()), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH must be set" in result.stderr + result.stdout


def test_flower_answers_401_without_credentials_and_shows_saga_tasks_with_them(flower, uid):
    for path in ("/", "/tasks", "/api/tasks", "/api/workers"):
        assert requests.get(f"{flower}{path}", timeout=5).status_code == 401, path
    order_id = place(customer(uid), [(product(uid, 5), 1)])
    assert wait_for(order_id).status == "completed"

    def saga_tasks():
        tasks = requests.get(f"{flower}/api/tasks", auth=CREDENTIALS, timeout=5).json()
        mine = {t["name"] for t in tasks.values() if str(order_id) in (t.get("args") or "")}
        return mine if {"saga.collect_reservations", "saga.complete_order"} <= mine else None

    # Every message of the order's saga; the payment steps ran inline, in the
    # process of collect_reservations, with no message (docs/architecture.md).
    names = eventually(saga_tasks, timeout=30, interval=0.5)
    assert {
        "saga.validate_order",
        "saga.reserve_stock",
        "saga.send_confirmation_email",
        "saga.create_shipment",
    } <= names
