"""The payment sandbox's tables: made by the migrations in services mode, and still
on first use where they are missing (a sandbox database of its own), where several
worker processes starting together must all come up (issue 9: with 6 processes one
got ``DuplicateTable``, which is not transient, and its order failed)."""

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
    processes = [
        context.Process(target=_start_provider, args=(fresh_database, barrier, results))
        for _ in range(PROCESSES)
    ]
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


def test_the_migrations_create_the_sandbox_tables_as_the_sandbox_declares_them(fresh_database):
    """In services mode the sandbox's tables are made by ``orion migrate`` (Alembic
    0006), before any worker starts, in the shape ``payments.sandbox`` declares."""
    from payments.sandbox import SandboxBase
    from tools.dbsetup import upgrade

    upgrade(fresh_database, "0005")
    engine = create_engine(fresh_database)
    try:
        assert "sandbox_operations" not in inspect(engine).get_table_names()
        upgrade(fresh_database)
        found = inspect(engine)
        for table in SandboxBase.metadata.sorted_tables:
            assert {c["name"] for c in found.get_columns(table.name)} == set(table.columns.keys())
            assert {tuple(i["column_names"]) for i in found.get_indexes(table.name)} == {
                tuple(c.name for c in i.columns) for i in table.indexes
            }
    finally:
        engine.dispose()
