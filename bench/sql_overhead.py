"""What one statement costs in the worker's own CPU, by the way it is sent.

    python -m bench.sql_overhead            # after any services benchmark (uses orion_bench)

Reads one order by primary key (the saga's ``SagaTx`` read) 3,000 times in one
transaction, as a SQLAlchemy Core statement built once, as text through
``exec_driver_sql``, and through the psycopg connection directly; then the
same read in a transaction of its own (``engine.begin()``, as every saga step
does). Prints CPU microseconds per statement (``time.process_time``: this
process only, not PostgreSQL's).
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import create_engine, text

from bench.harness import BENCH_DB


def main(argv: list[str] | None = None) -> int:
    from tasks.journal import _READ

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--database", default=f"postgresql+psycopg://postgres@127.0.0.1:5432/{BENCH_DB}")
    args = parser.parse_args(argv)
    engine = create_engine(args.database)
    with engine.connect() as conn:
        order_id = conn.execute(text("SELECT id FROM orders LIMIT 1")).scalar()
    if order_id is None:
        parser.error(f"no order in {args.database}; run a services benchmark first")
    raw = (
        "SELECT id, status, saga_run, customer_id, last_event_seq, total, currency, "
        "payment_token, correlation_id, cancel_reason, failure FROM orders WHERE id = %(b_id)s"
    )
    ways = {
        "core": lambda conn: conn.execute(_READ, {"b_id": order_id}).one(),
        "exec_driver_sql": lambda conn: conn.exec_driver_sql(raw, {"b_id": order_id}).one(),
        "psycopg": lambda conn: conn.connection.driver_connection.execute(raw, {"b_id": order_id}).fetchone(),
    }
    for name, read in ways.items():
        with engine.begin() as conn:
            for _ in range(200):
                read(conn)
            start = time.process_time()
            for _ in range(args.runs):
                read(conn)
            spent = time.process_time() - start
        print(f"{name:>16}: {spent / args.runs * 1e6:6.0f} µs CPU per statement")
    start = time.process_time()
    for _ in range(args.runs // 3):
        with engine.begin() as conn:
            ways["core"](conn)
    spent = time.process_time() - start
    print(f"{'core + BEGIN/COMMIT':>16}: {spent / (args.runs // 3) * 1e6:6.0f} µs CPU per transaction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
