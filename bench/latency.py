"""Latency under load: open-loop arrivals at fractions of the measured maximum.

    python -m bench.latency                          # 25/50/75/90 % of max, 30 s each
    python -m bench.latency --levels 50 --seconds 60

Services mode, a fresh ``orion_bench`` database with the real catalog, the
platform as ``./run.sh`` starts it (web, worker with its default processes, SMTP
sink; no beat), ``PAYMENT_LATENCY_MS`` as set (default 20).

1. **Maximum**: a burst of ``--burst`` 3-line orders placed at once; the rate at
   which they become final is the platform's maximum.
2. **Levels**: for each fraction, orders are placed at a fixed rate for
   ``--seconds`` seconds, *open loop*: each POST leaves at its scheduled time
   whatever happened to the ones before (a pool of threads sends them), so
   queueing shows in the figures instead of slowing the client down.

Per level it reports p50/p95/p99 of 202 -> final (the orders' own ``created_at``
and ``finished_at``) and of commit -> Socket.IO event (an operator's client
receives every ``order.updated``; arrival minus the event's ``at``, stamped just
before the step's COMMIT, one clock). Then the burst's median finish time by
arrival decile. Writes ``bench/results/latency.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from bench import harness
from bench.saga_throughput import FINAL, arrival_deciles


def _post_all(
    base: str, tokens: list[str], bodies: list[dict], rate: float | None, clients: int
) -> list[str]:
    """POST ``bodies``: all at once (``rate`` None) or one every 1/``rate`` s, open loop."""
    import requests

    local = threading.local()
    ids: list[str] = []
    lock = threading.Lock()

    def post(i: int) -> None:
        http = getattr(local, "http", None) or requests.Session()
        local.http = http
        reply = http.post(
            f"{base}/api/v1/orders",
            json=bodies[i],
            timeout=60,
            headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
        )
        if reply.status_code != 202:
            raise RuntimeError(f"POST /orders answered {reply.status_code}: {reply.text[:200]}")
        with lock:
            ids.append(reply.json()["id"])

    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        futures = []
        for i in range(len(bodies)):
            if rate:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            futures.append(pool.submit(post, i))
        for future in futures:
            future.result()
    return ids


def _wait_final(db, ids: list[str], timeout: float) -> list[tuple[datetime, datetime]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = db.execute(
            "SELECT created_at, finished_at, status FROM orders WHERE id::text = ANY(%s)", (ids,)
        ).fetchall()
        if sum(1 for r in rows if r[2] in FINAL) == len(ids) or time.monotonic() > deadline:
            return [(r[0], r[1]) for r in rows if r[1] is not None]
        time.sleep(0.2)


# An order's way to its final state in four legs, each ending at the commit
# of a step (its event's ``at``): where a slow order lost its time.
LEGS = (
    ("202 -> validated", "validate_order"),
    ("-> stock reserved", "collect_reservations"),
    ("-> confirmed (payment)", "capture_payment"),
    ("-> final", None),
)


def _legs(db, ids: list[str]) -> dict:
    """p50/p95/p99 ms of each leg of ``LEGS`` over the orders ``ids`` that completed."""
    rows = db.execute(
        "SELECT o.created_at, "
        + ", ".join(
            f"min(e.at) FILTER (WHERE e.step = '{step}' AND e.step_status = 'succeeded')"
            for _, step in LEGS
            if step
        )
        + ", o.finished_at FROM orders o JOIN order_events e ON e.order_id = o.id "
        "WHERE o.id::text = ANY(%s) AND o.status = 'completed' GROUP BY o.id",
        (ids,),
    ).fetchall()
    legs: dict = {}
    for i, (name, _) in enumerate(LEGS):
        gaps = [(r[i + 1] - r[i]).total_seconds() * 1000 for r in rows if r[i] and r[i + 1]]
        legs[name] = _percentiles(gaps) if gaps else {}
    return legs


def _percentiles(values: list[float]) -> dict:
    return {f"p{q}": harness.percentile(values, q) for q in (50, 95, 99)}


class EventClock:
    """An operator's Socket.IO client: commit -> arrival for every ``order.updated``."""

    def __init__(self, base: str, token: str):
        import socketio

        self.samples: list[float] = []
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        self.client.on("order.updated", self._on_event)
        self.client.connect(base, auth={"token": token}, transports=["websocket"], wait_timeout=10)

    def _on_event(self, event: dict) -> None:
        at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
        with self._lock:
            self.samples.append((time.time() - at) * 1000)

    def take(self) -> list[float]:
        with self._lock:
            samples, self.samples = self.samples, []
        return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--levels", type=float, nargs="+", default=[25, 50, 75, 90], help="percent of the measured maximum"
    )
    parser.add_argument("--seconds", type=float, default=30, help="arrivals per level")
    parser.add_argument("--burst", type=int, default=400, help="orders in the maximum's burst")
    parser.add_argument("--lines", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32, help="threads that send the POSTs")
    parser.add_argument("--out", default="latency")
    args = parser.parse_args(argv)

    import psycopg

    need = args.burst + int(sum(args.levels) / 100 * args.seconds * 60) + 100
    data_dir, env, skus, emails = harness.prepare("latency", max(args.clients, need // 10))
    from config import Settings

    concurrency = Settings.from_env(env).worker_concurrency
    operator = harness.create_customers(env, 1, role="operator")
    rng = random.Random(7)
    dsn = env["DATABASE_URL"].replace("postgresql+psycopg", "postgresql")
    worker_log = data_dir / "worker.log"
    result: dict = {
        "levels": [],
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
        "payment_latency_ms": Settings.from_env(env).payment_latency_ms,
        "command": " ".join(["python -m bench.latency", *(argv or sys.argv[1:])]),
    }
    with (
        psycopg.connect(dsn, autocommit=True) as db,
        harness.smtp_sink(env, data_dir),
        harness.web_server(env, data_dir) as web,
        harness.outbox_relay(env, data_dir),
    ):
        worker = harness.spawn(harness.worker_command("worker", concurrency), env, worker_log)
        try:
            harness.wait_for_log(worker, worker_log, b" ready.")
            tokens = harness.login_all(web.base_url, emails)
            clock = EventClock(web.base_url, harness.login_all(web.base_url, operator)[0])

            print(f"maximum: a burst of {args.burst} orders ...", flush=True)
            bodies = [harness.order_body(skus, args.lines, rng) for _ in range(args.burst)]
            ids = _post_all(web.base_url, tokens, bodies, None, args.clients)
            rows = _wait_final(db, ids, 900)
            first, last = min(c for c, _ in rows), max(f for _, f in rows)
            maximum = len(rows) / (last - first).total_seconds()
            clock.take()
            result["maximum_orders_per_s"] = maximum
            result["burst"] = {
                "orders": len(rows),
                "finish_by_arrival_decile_s": arrival_deciles(rows),
                **_percentiles([(f - c).total_seconds() * 1000 for c, f in rows]),
            }
            print(
                f"  {maximum:.1f} orders/s; median finish by arrival decile "
                f"{result['burst']['finish_by_arrival_decile_s']}",
                flush=True,
            )

            for level in args.levels:
                rate = maximum * level / 100
                count = max(1, int(rate * args.seconds))
                print(f"{level:g} %: {rate:.1f} orders/s for {args.seconds:g} s ...", flush=True)
                bodies = [harness.order_body(skus, args.lines, rng) for _ in range(count)]
                ids = _post_all(web.base_url, tokens, bodies, rate, args.clients)
                rows = _wait_final(db, ids, 600)
                time.sleep(0.5)  # the last events' arrival
                final = [(f - c).total_seconds() * 1000 for c, f in rows]
                events = clock.take()
                entry = {
                    "percent": level,
                    "rate": rate,
                    "orders": count,
                    "final": len(rows),
                    "placed_to_final_ms": _percentiles(final),
                    "commit_to_event_ms": _percentiles(events),
                    "events": len(events),
                    "legs_ms": _legs(db, ids),
                }
                result["levels"].append(entry)
                print(
                    f"  202 -> final p50/p95/p99 {entry['placed_to_final_ms']['p50']:.0f} / "
                    f"{entry['placed_to_final_ms']['p95']:.0f} / {entry['placed_to_final_ms']['p99']:.0f} ms;"
                    f" commit -> event p99 {entry['commit_to_event_ms']['p99']:.1f} ms",
                    flush=True,
                )
                print(
                    "    legs p50/p99 ms: "
                    + "; ".join(
                        f"{name} {leg['p50']:.0f} / {leg['p99']:.0f}"
                        for name, leg in entry["legs_ms"].items()
                        if leg
                    ),
                    flush=True,
                )
            clock.client.disconnect()
        finally:
            harness.stop(worker)
    rows = [
        {
            "load": f"{e['percent']:g} %",
            "orders/s": e["rate"],
            "orders": e["orders"],
            **{f"final {k} ms": v for k, v in e["placed_to_final_ms"].items()},
            **{f"event {k} ms": v for k, v in e["commit_to_event_ms"].items()},
        }
        for e in result["levels"]
    ]
    path = harness.finish(args.out, result, _plot, rows)
    print(f"maximum {result['maximum_orders_per_s']:.1f} orders/s -> {path}")
    return 0


def _plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    x = [e["percent"] for e in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for q, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
        left.plot(x, [e["placed_to_final_ms"][q] for e in levels], style, label=q)
        right.plot(x, [e["commit_to_event_ms"][q] for e in levels], style, label=q)
    left.set_title(f"202 -> final (max {result['maximum_orders_per_s']:.1f} orders/s)")
    right.set_title("commit -> Socket.IO event")
    for ax in (left, right):
        ax.set_xlabel("% of the maximum rate")
        ax.set_ylabel("ms")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
