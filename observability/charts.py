"""The operator page's charts, read from the database in a few aggregate
statements (no per-row loops): orders by outcome and retries per minute over
the last hour, and step duration percentiles.

Portable between PostgreSQL (services mode) and SQLite (the embedded default):
the two expressions that differ, a timestamp's UTC minute and the milliseconds
between two timestamps, are SQL constructs compiled per dialect; percentiles use
window functions, which both have (SQLite since 3.25).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Float, String, case, func, select
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from models import Order, SagaStep
from models.order import CANCELLED, COMPLETED, FAILED
from models.saga_log import FORWARD, SUCCEEDED

OUTCOMES = (COMPLETED, CANCELLED, FAILED)
PERCENTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}
MINUTE_FORMAT = "%Y-%m-%dT%H:%M"  # what minute_of() yields, as strftime writes it


class minute_of(FunctionElement):
    """A UTC timestamp's minute as text, ``YYYY-MM-DDTHH:MM``."""

    type = String()
    inherit_cache = True


class milliseconds_between(FunctionElement):
    """``end - start`` in milliseconds, a float: to the microsecond on PostgreSQL,
    to the nearest millisecond on SQLite, whose ``julianday`` keeps no more."""

    type = Float()
    inherit_cache = True


class step_of(FunctionElement):
    """A step log name without its warehouse (``create_shipment:UK`` -> ``create_shipment``)."""

    type = String()
    inherit_cache = True


def _args(element, compiler, **kw) -> list[str]:
    return [compiler.process(arg, **kw) for arg in element.clauses]


@compiles(minute_of, "postgresql")
def _minute_pg(element, compiler, **kw):
    (at,) = _args(element, compiler, **kw)
    return f"to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')"


@compiles(minute_of, "sqlite")  # stored as UTC text (models.db.UTCDateTime)
def _minute_sqlite(element, compiler, **kw):
    (at,) = _args(element, compiler, **kw)
    return f"strftime('{MINUTE_FORMAT}', {at})"


@compiles(milliseconds_between, "postgresql")
def _ms_pg(element, compiler, **kw):
    start, end = _args(element, compiler, **kw)
    return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) * 1000 AS DOUBLE PRECISION)"


@compiles(milliseconds_between, "sqlite")
def _ms_sqlite(element, compiler, **kw):
    start, end = _args(element, compiler, **kw)
    return f"((julianday({end}) - julianday({start})) * 86400000.0)"


@compiles(step_of, "postgresql")
def _step_pg(element, compiler, **kw):
    (name,) = _args(element, compiler, **kw)
    return f"split_part({name}, ':', 1)"


@compiles(step_of, "sqlite")
def _step_sqlite(element, compiler, **kw):
    (name,) = _args(element, compiler, **kw)
    return (
        f"(CASE WHEN instr({name}, ':') > 0 THEN substr({name}, 1, instr({name}, ':') - 1) ELSE {name} END)"
    )


@compiles(minute_of)
@compiles(milliseconds_between)
@compiles(step_of)
def _unsupported(element, compiler, **kw):
    raise CompileError(f"{type(element).__name__} is written for PostgreSQL and SQLite only")


def minutes(since: datetime, count: int) -> list[str]:
    """The ``count`` minute keys from ``since`` (a UTC minute) on, as minute_of() writes them."""
    return [(since + timedelta(minutes=i)).strftime(MINUTE_FORMAT) for i in range(count)]


def outcomes_per_minute(session: Session, since: datetime) -> dict[tuple[str, str], int]:
    """``{(minute, status): orders}`` for orders that reached completed, cancelled
    or failed at or after ``since``, by the minute of their ``finished_at``."""
    minute = minute_of(Order.finished_at)
    rows = session.execute(
        select(minute, Order.status, func.count())
        .where(Order.finished_at >= since, Order.status.in_(OUTCOMES))
        .group_by(minute, Order.status)
    )
    return {(at, status): n for at, status, n in rows}


def retries_per_minute(session: Session, since: datetime) -> dict[str, int]:
    """``{minute: retries}``: each step run that started at or after ``since``
    counts ``attempt - 1`` retries in the minute it started (the step log keeps a
    run's highest attempt, not the time of each retry)."""
    minute = minute_of(SagaStep.started_at)
    rows = session.execute(
        select(minute, func.sum(SagaStep.attempt - 1))
        .where(SagaStep.started_at >= since, SagaStep.attempt > 1)
        .group_by(minute)
    )
    return {at: int(n) for at, n in rows}


def step_durations(session: Session, since: datetime) -> list[dict]:
    """Per forward step that succeeded at or after ``since`` (warehouses merged):
    ``{step, runs, p50_ms, p95_ms, p99_ms}``, by step name. A duration runs from
    the step's first attempt to its success, so retries and their backoff count.
    Percentiles by nearest rank: the smallest duration whose rank is at least
    ``p * runs``."""
    step = step_of(SagaStep.name)
    took = milliseconds_between(SagaStep.started_at, SagaStep.finished_at)
    ranked = (
        select(
            step.label("step"),
            took.label("ms"),
            func.row_number().over(partition_by=step, order_by=took).label("rank"),
            func.count().over(partition_by=step).label("runs"),
        )
        .where(SagaStep.kind == FORWARD, SagaStep.status == SUCCEEDED, SagaStep.finished_at >= since)
        .subquery()
    )
    percentiles = [
        func.min(case((ranked.c.rank >= p * ranked.c.runs, ranked.c.ms))).label(key)
        for key, p in PERCENTILES.items()
    ]
    rows = session.execute(
        select(ranked.c.step, ranked.c.runs, *percentiles)
        .group_by(ranked.c.step, ranked.c.runs)
        .order_by(ranked.c.step)
    )
    return [{**row._asdict(), **{key: round(row._mapping[key], 1) for key in PERCENTILES}} for row in rows]
