"""The chart queries of ``observability.charts`` on SQLite, the embedded default's
database, in memory (the same checks run on PostgreSQL in
tests/integration/test_api_operator_tools.py), and their SQL per dialect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.exc import CompileError
from sqlalchemy.orm import Session

from models import Base, Order, SagaStep, User
from observability import charts

SINCE = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        user = User(email="c@example.com", name="C", password_hash="x")
        session.add(user)
        session.flush()
        session.info["customer"] = user.id
        yield session


def order(session, status: str, finished_at: datetime | None) -> Order:
    row = Order(
        customer_id=session.info["customer"],
        status=status,
        subtotal=Decimal("1.00"),
        total=Decimal("1.00"),
        shipping_address={},
        payment_token="tok_visa",
        finished_at=finished_at,
    )
    session.add(row)
    session.flush()
    return row


def step(
    session,
    order_id,
    name: str,
    ms: float,
    *,
    run: int,
    attempt: int = 1,
    status: str = "succeeded",
    kind: str = "forward",
    start: datetime = SINCE,
) -> None:
    session.add(
        SagaStep(
            order_id=order_id,
            name=name,
            run=run,
            kind=kind,
            status=status,
            attempt=attempt,
            started_at=start,
            finished_at=start + timedelta(milliseconds=ms),
        )
    )


def test_outcomes_are_counted_by_utc_minute_and_status_within_the_window(session):
    at = SINCE + timedelta(minutes=7, seconds=59)
    order(session, "completed", at)
    order(session, "completed", at)
    order(session, "cancelled", at + timedelta(seconds=1))  # the next minute
    order(session, "completed", SINCE - timedelta(seconds=1))  # before the window
    order(session, "compensation_failed", None)
    assert charts.outcomes_per_minute(session, SINCE) == {
        ("2026-01-02T09:07", "completed"): 2,
        ("2026-01-02T09:08", "cancelled"): 1,
    }


def test_retries_count_attempts_after_the_first_in_the_minute_the_step_started(session):
    paid = order(session, "completed", SINCE)
    step(session, paid.id, "authorize_payment", 10, run=1, attempt=3, start=SINCE + timedelta(minutes=2))
    step(session, paid.id, "capture_payment", 10, run=1, attempt=2, start=SINCE + timedelta(minutes=2))
    step(session, paid.id, "reserve_stock:LDN", 10, run=1, attempt=1, start=SINCE + timedelta(minutes=3))
    assert charts.retries_per_minute(session, SINCE) == {"2026-01-02T09:02": 3}


def test_percentiles_by_nearest_rank_per_step_with_warehouses_merged(session):
    done = order(session, "completed", SINCE)
    for ms in range(1, 21):  # 1 ms .. 20 ms, in two warehouses
        step(session, done.id, f"reserve_stock:{'LDN' if ms % 2 else 'MAN'}", ms, run=ms)
    step(session, done.id, "reserve_stock:EDI", 10_000, run=99, status="failed")  # not a success
    step(session, done.id, "release_stock", 10_000, run=1, kind="compensation")  # not forward
    step(session, done.id, "validate_order", 3.75, run=1)  # SQLite keeps whole ms: 4
    assert charts.step_durations(session, SINCE) == [
        {"step": "reserve_stock", "runs": 20, "p50_ms": 10.0, "p95_ms": 19.0, "p99_ms": 20.0},
        {"step": "validate_order", "runs": 1, "p50_ms": 4.0, "p95_ms": 4.0, "p99_ms": 4.0},
    ]


def test_minute_keys_match_what_the_database_writes():
    assert charts.minutes(SINCE, 3) == ["2026-01-02T09:00", "2026-01-02T09:01", "2026-01-02T09:02"]


def test_the_sql_is_written_per_dialect_and_refused_elsewhere():
    query = select(
        charts.minute_of(Order.finished_at),
        charts.step_of(SagaStep.name),
        charts.milliseconds_between(SagaStep.started_at, SagaStep.finished_at),
    )
    sql = str(query.compile(dialect=postgresql.dialect()))
    assert "to_char(orders.finished_at AT TIME ZONE 'UTC'" in sql
    assert "split_part(saga_steps.name, ':', 1)" in sql and "EXTRACT(EPOCH FROM" in sql
    with pytest.raises(CompileError):
        str(query.compile(dialect=mysql.dialect()))
