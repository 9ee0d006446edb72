"""Celery's own ceiling: the order saga's canvas shape as no-op tasks.

    celery -A bench.noop_canvas worker -Q bench.noop ...   (bench.saga_throughput starts it)

The app takes every setting of Orion's worker from ``celeryconfig`` (broker,
result backend, acks late, prefetch, task events, serializer, time limits) and
only its queue differs, so the difference between this and Orion's saga is
Orion's own work. The canvas is the one ``tasks.saga`` builds for a 3-line
order::

    validate -> chord(reserve x lines) -> collect -> authorize -> capture
             -> chord(email, shipment) -> complete

``BENCH_NOOP_SQL=1`` gives every task one small SQL transaction (an UPDATE of
one row in PostgreSQL), the floor for a task that records anything durably.
``complete`` adds one to a Redis counter, which the benchmark polls.
"""

from __future__ import annotations

import os

import redis
from celery import Celery, chain, chord
from celery.canvas import Signature
from kombu import Exchange, Queue

import celeryconfig

QUEUE = "bench.noop"
DONE_KEY = "bench:noop:done"

app = Celery("orion_noop")
app.config_from_object(celeryconfig)
app.conf.update(
    task_queues=[
        Queue(
            QUEUE,
            Exchange("orion", type="direct", durable=True),
            routing_key=QUEUE,
            durable=True,
            max_priority=celeryconfig.MAX_PRIORITY,
        )
    ],
    task_default_queue=QUEUE,
    task_default_routing_key=QUEUE,
    task_routes={},
    beat_schedule={},
)

_SQL = os.environ.get("BENCH_NOOP_SQL") == "1"
_engine = None
_redis = None


def _touch() -> None:
    """One small transaction when ``BENCH_NOOP_SQL=1``, else nothing."""
    global _engine
    if not _SQL:
        return
    if _engine is None:
        from sqlalchemy import create_engine

        _engine = create_engine(os.environ["DATABASE_URL"], pool_size=2)
    with _engine.begin() as conn:
        conn.exec_driver_sql("UPDATE bench_noop SET n = n + 1 WHERE id = 1")


@app.task(name="noop.step", ignore_result=True)
def step(order: int) -> None:
    _touch()


@app.task(name="noop.header", ignore_result=True)
def header(order: int) -> dict:
    _touch()
    return {"ok": True}


@app.task(name="noop.join", ignore_result=True)
def join(results: list, order: int) -> None:
    _touch()


@app.task(name="noop.complete", ignore_result=True)
def complete(results: list, order: int) -> None:
    global _redis
    _touch()
    if _redis is None:
        _redis = redis.Redis.from_url(app.conf.result_backend)
    _redis.incr(DONE_KEY)


def canvas(order: int, lines: int = 3) -> Signature:
    """The saga's shape for one order of ``lines`` lines (``lines`` + 7 tasks)."""

    def sig(name: str) -> Signature:
        return app.signature(name, args=(order,), immutable=True, ignore_result=True)

    def body(name: str) -> Signature:  # a chord body receives its header's results
        return app.signature(name, args=(order,), ignore_result=True)

    return chain(
        sig("noop.step"),  # validate
        chord([sig("noop.header") for _ in range(lines)], body("noop.join")),  # reserve, collect
        sig("noop.step"),
        sig("noop.step"),  # authorize, capture
        chord([sig("noop.header"), sig("noop.header")], body("noop.complete")),
    )


def prepare_sql(database_url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS bench_noop (id int PRIMARY KEY, n bigint)")
        conn.exec_driver_sql("INSERT INTO bench_noop VALUES (1, 0) ON CONFLICT DO NOTHING")
    engine.dispose()
