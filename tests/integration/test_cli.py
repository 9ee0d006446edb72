"""The operator command line, run as an operator runs it (``orion ...``, the console
script of pyproject.toml, and ``python -m tools ...``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models import OrderEvent, User, unit_of_work
from tests.support.factories import customer, place, product
from tests.support.processes import ALL_QUEUES, REPO


def tools(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


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
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", ALL_QUEUES],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    done = tools("retry", str(order_id), "00000000-0000-0000-0000-000000000000")
    assert done.returncode == 1
    assert f"{order_id}: re-driven, now pending" in done.stdout
    assert "00000000-0000-0000-0000-000000000000: order not found" in done.stderr
    with unit_of_work() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(OrderEvent)
                .where(OrderEvent.order_id == order_id, OrderEvent.detail == "operator retry")
            )
            == 1
        )
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", ALL_QUEUES],
        cwd=REPO,
        check=True,
        capture_output=True,
    )


ORION = Path(sys.executable).with_name("orion")  # pip install -e . (./run.sh does it)
COMMANDS = (
    "up",
    "create-operator",
    "create-customer",
    "catalog",
    "replay",
    "audit",
    "retry",
    "migrate",
    "dlq",
)


def orion(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ORION), *args], cwd="/", capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_the_orion_console_script_lists_its_commands_and_each_has_help():
    assert ORION.exists(), "pip install -e . installs the orion command"
    listing = orion("--help")
    assert listing.returncode == 0
    for name in COMMANDS:
        assert f"  {name}" in listing.stdout
    for name in COMMANDS:
        help_text = orion(name, "--help")
        assert help_text.returncode == 0, help_text.stderr
        assert help_text.stdout.startswith(f"Usage: orion {name} ")


@pytest.mark.parametrize(
    "args, message",
    [
        (("replay", "--tokens", "tok_visa=nope"), "Invalid value for '--tokens'"),
        (("replay", "--concurrency", "0"), "Invalid value for '--concurrency'"),
        (("retry",), "Missing argument 'ORDER_ID...'"),
        (("create-operator", "someone@example.com"), "Missing option '--name'"),
    ],
)
def test_bad_arguments_are_named_and_exit_2(args, message):
    done = orion(*args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_create_operator_through_the_console_script_from_another_folder(uid):
    email = f"ops-cli-{uid}@test.orion.example"
    made = orion("create-operator", email, "--name", "Otto", ORION_USER_PASSWORD="operator pass 1")
    assert made.returncode == 0, made.stderr
    with unit_of_work() as session:
        assert session.scalar(select(User.role).where(User.email == email)) == "operator"


def test_unknown_commands_and_audit(uid):
    unknown = tools("frobnicate")
    assert unknown.returncode == 2 and "No such command 'frobnicate'" in unknown.stderr
    audit = tools("audit", "--json")
    assert "violations" in json.loads(audit.stdout)
