"""The operator command line, run as an operator runs it (``python -m tools ...``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy import func, select

from models import OrderEvent, User, unit_of_work
from tests.support.factories import customer, place, product
from tests.support.processes import ALL_QUEUES, REPO


def tools(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_create_operator_then_refuse_the_same_email(uid):
    email = f"ops-{uid}@test.orion.example"
    made = tools("create-operator", email, "--name", "Olive", ORION_USER_PASSWORD="operator pass 1")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["role"] == "operator"
    with unit_of_work() as session:
        assert session.scalar(select(User.role).where(User.email == email)) == "operator"
    again = tools("create-operator", email, "--name", "Olive", ORION_USER_PASSWORD="operator pass 1")
    assert again.returncode == 1 and email in again.stderr


def test_retry_redrives_a_stuck_saga_and_names_what_it_cannot(uid):
    order_id = place(customer(uid), [(product(uid, 5), 1)])  # no worker here: it stays pending
    subprocess.run([sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", ALL_QUEUES],
                   cwd=REPO, check=True, capture_output=True)
    done = tools("retry", str(order_id), "00000000-0000-0000-0000-000000000000")
    assert done.returncode == 1
    assert f"{order_id}: re-driven, now pending" in done.stdout
    assert "00000000-0000-0000-0000-000000000000: order not found" in done.stderr
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(OrderEvent).where(
            OrderEvent.order_id == order_id, OrderEvent.detail == "operator retry")) == 1
    subprocess.run([sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", ALL_QUEUES],
                   cwd=REPO, check=True, capture_output=True)


def test_unknown_commands_and_audit(uid):
    unknown = tools("frobnicate")
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr
    audit = tools("audit", "--json")
    assert "violations" in json.loads(audit.stdout)
