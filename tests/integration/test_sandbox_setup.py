"""The payment sandbox creates its tables on first use: several worker processes
starting together on a fresh database must all come up (issue 9: with 6
processes one got ``DuplicateTable``, which is not transient, and its order failed)."""
from __future__ import annotations

import multiprocessing
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.conftest import TEST_DB

PROCESSES = 6


def _start_provider(url: str, barrier, results) -> None:
    from payments.sandbox import SandboxProvider

    barrier.wait(timeout=30)
    try:
        SandboxProvider(url)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}"[:300])


@pytest.fixture
def fresh_database():
    name = f"orion_sandbox_{uuid.uuid4().hex[:8]}"
    admin = create_engine(TEST_DB.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield TEST_DB.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("attempt", range(3))
def test_processes_starting_together_on_a_fresh_database_all_come_up(fresh_database, attempt):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=_start_provider, args=(fresh_database, barrier, results))
                 for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes == ["ok"] * PROCESSES
    engine = create_engine(fresh_database)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"sandbox_operations", "sandbox_call_counts"} <= tables
