"""Saga throughput against Celery's own ceiling, in the same run.

    python -m bench.saga_throughput                      # 1,000 orders of 3 lines
    python -m bench.saga_throughput --orders 300 --rounds 2 --concurrency 4

Services mode (RabbitMQ, PostgreSQL, Redis on this machine), on a fresh
``orion_bench`` database with the real catalog. Each round measures, one after
the other on the same broker and backend:

1. **reference**: the saga's canvas shape as Celery no-op tasks
   (``bench.noop_canvas``), ``--orders`` canvases published while no worker
   runs, then drained by a worker with Orion's Celery settings;
2. **reference+sql** (``--sql-reference``): the same, each task one small SQL
   transaction;
3. **orion**: ``--orders`` orders of ``--lines`` lines placed through
   ``POST /api/v1/orders`` while no worker runs (the outbox publishes each
   saga), then drained by ``celery -A worker worker`` as ``tools.launch``
   starts it, until every order is final.

Each drain is timed from the worker's "ready" to the last order final, with
the CPU seconds of every process group (worker, web, SMTP sink, RabbitMQ,
PostgreSQL, Redis) over the same window. The headline is Orion's orders/s
divided by the reference's. Writes ``bench/results/saga-throughput.json`` and
``.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import harness

FINAL = ("completed", "cancelled", "failed")


PROFILE: dict = {"seconds": 0}
# bench.scaling's memory sampler: DRAIN_HOOK["enter"](trees) is started with the
# drain's measurement and stopped with it, then left in DRAIN_HOOK["sampler"].
DRAIN_HOOK: dict = {}


def drain(
    env: dict,
    app: str,
    queues: str,
    done,
    total: int,
    concurrency: int | None,
    log_dir,
    label: str,
    extra_trees: dict | None = None,
    timeout: float = 1800,
) -> dict:
    """Start a worker on a published backlog and time it until ``done() >= total``.

    With ``--profile N``, py-spy samples the worker and its pool children for
    N seconds into ``<log dir>/profile-<label>.txt`` (collapsed stacks),
    starting ``--profile-after`` seconds into the drain (default 0; later
    leaves out the pool children's first compiles and connections).
    """
    log = log_dir / f"worker-{label}.log"
    proc = harness.spawn(harness.worker_command(app, concurrency, queues), env, log)
    try:
        if harness.LOGLEVEL["level"] == "info":
            harness.wait_for_log(proc, log, b" ready.")
        else:
            harness.wait_consuming(proc, queues.split(",")[0])
        trees = {"worker": proc.pid, **(extra_trees or {})}
        meter = harness.CpuMeter(trees=trees).start()
        sampler = DRAIN_HOOK["enter"](trees) if "enter" in DRAIN_HOOK else None
        spy: dict = {}
        if PROFILE["seconds"]:
            command = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--subprocesses",
                "--nonblocking",
                "--gil",
                "-r",
                "200",
                "-d",
                str(PROFILE["seconds"]),
                "-f",
                "raw",
                "-o",
                str(log_dir / f"profile-{label}.txt"),
                "-p",
                str(proc.pid),
            ]
            timer = threading.Timer(
                PROFILE.get("after", 0),
                lambda: spy.update(proc=harness.spawn(command, env, log_dir / f"py-spy-{label}.log")),
            )
            timer.start()
        started = time.monotonic()
        deadline = started + timeout
        finished = done()
        while finished < total and time.monotonic() < deadline:
            time.sleep(0.05)
            finished = done()
        elapsed = time.monotonic() - started
        cpu = meter.stop()
        if sampler is not None:
            sampler.__exit__(None, None, None)
            DRAIN_HOOK["sampler"] = sampler
        if PROFILE["seconds"]:
            timer.cancel()  # a drain shorter than the delay is not profiled
            if "proc" in spy:
                spy["proc"].wait(PROFILE["seconds"] + 30)
    finally:
        harness.stop(proc)
    text = log.read_text(errors="replace")
    # Every task run logs one line: "succeeded in", "succeeded inline in" (a step
    # run in the process of the one before it, no message: tasks.saga.Stage.inline)
    # or "ignored".
    info = harness.LOGLEVEL["level"] == "info"
    tasks = len(re.findall(r"succeeded in|ignored", text)) if info else 0
    inline = len(re.findall(r"succeeded inline in", text)) if info else 0
    return {
        "label": label,
        "orders": finished,
        "seconds": elapsed,
        "orders_per_s": finished / elapsed,
        "tasks": tasks,
        "tasks_per_s": tasks / elapsed,
        "messages": tasks - inline,
        "timed_out": finished < total,
        "cpu_s": cpu,
        "cpu_ms_per_order": {g: 1000 * s / max(finished, 1) for g, s in cpu.items()},
        "log": str(log),
    }


def run_reference(env: dict, orders: int, lines: int, concurrency: int | None, log_dir, sql: bool) -> dict:
    import redis

    from bench import noop_canvas

    label = "reference+sql" if sql else "reference"
    run_env = {**env, "BENCH_NOOP_SQL": "1" if sql else "0"}
    if sql:
        noop_canvas.prepare_sql(env["DATABASE_URL"])
    from worker.queues import ensure_queues

    ensure_queues(noop_canvas.app)  # the same queue arguments as Orion's (priorities)
    harness.purge_queues(env, noop_canvas.QUEUE)
    store = redis.Redis.from_url(env["RESULT_BACKEND"])
    store.delete(noop_canvas.DONE_KEY)
    for order in range(orders):
        noop_canvas.canvas(order, lines).apply_async()
    from worker.results import release_pending_results

    release_pending_results(noop_canvas.app)
    result = drain(
        run_env,
        "bench.noop_canvas",
        noop_canvas.QUEUE,
        lambda: int(store.get(noop_canvas.DONE_KEY) or 0),
        orders,
        concurrency,
        log_dir,
        label,
    )
    result["tasks_per_order"] = lines + 7
    return result


def invoice_bodies(count: int, skip: int = 0) -> list[dict]:
    """Order bodies of the dataset's sale invoices (``tools.replay.plan``: real SKUs,
    quantities and line counts, ``tok_visa``), skipping the first ``skip``."""
    from tools.replay.plan import OrderAction, plan
    from tools.retail_data import default_data_path, read_invoices

    actions, _ = plan(read_invoices(default_data_path()), 0, [("tok_visa", 1.0)])
    bodies = [a.body for a in actions if isinstance(a, OrderAction)][skip : skip + count]
    if len(bodies) < count:
        raise SystemExit(f"saga_throughput: the dataset has only {len(bodies)} sale invoices after {skip}")
    return bodies


def place_orders(
    base: str,
    tokens: list[str],
    skus: list[str],
    orders: int,
    lines: int,
    clients: int,
    seed: int,
    bodies: list[dict] | None = None,
) -> dict:
    """POST ``orders`` orders (``bodies``, else synthetic ones of ``lines`` lines over
    ``skus``) from ``clients`` threads; returns timings and ids."""
    import requests

    rng = random.Random(seed)
    bodies = bodies or [harness.order_body(skus, lines, rng) for _ in range(orders)]
    local = __import__("threading").local()

    def post(i: int):
        http = getattr(local, "http", None) or requests.Session()
        local.http = http
        started = time.perf_counter()
        reply = http.post(
            f"{base}/api/v1/orders",
            json=bodies[i],
            timeout=60,
            headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
        )
        if reply.status_code != 202:
            raise RuntimeError(f"POST /orders answered {reply.status_code}: {reply.text[:300]}")
        return time.perf_counter() - started, reply.json()["id"]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(post, range(orders)))
    elapsed = time.perf_counter() - started
    latencies = [d[0] * 1000 for d in done]
    return {
        "orders": orders,
        "seconds": elapsed,
        "req_per_s": orders / elapsed,
        "p50_ms": harness.percentile(latencies, 50),
        "p99_ms": harness.percentile(latencies, 99),
        "ids": [d[1] for d in done],
    }


def run_orion(
    env: dict,
    orders: int,
    lines: int,
    concurrency: int | None,
    log_dir,
    skus,
    emails,
    clients: int,
    seed: int,
    bodies: list[dict] | None = None,
) -> dict:
    import psycopg

    dsn = env["DATABASE_URL"].replace("postgresql+psycopg", "postgresql")
    harness.purge_queues(env)
    with (
        psycopg.connect(dsn, autocommit=True) as db,
        harness.smtp_sink(env, log_dir) as smtp,
        harness.web_server(env, log_dir) as web,
        harness.outbox_relay(env, log_dir) as relay,
    ):
        before = db.execute("SELECT count(*) FROM orders").fetchone()[0]
        tokens = harness.login_all(web.base_url, emails)
        placed = place_orders(web.base_url, tokens, skus, orders, lines, clients, seed, bodies)
        deadline = time.monotonic() + 120
        while db.execute("SELECT count(*) FROM outbox WHERE dispatched_at IS NULL").fetchone()[0]:
            if time.monotonic() > deadline:
                raise TimeoutError("outbox rows still unpublished after 120 s")
            time.sleep(0.2)

        def final() -> int:
            return (
                db.execute("SELECT count(*) FROM orders WHERE status = ANY(%s)", (list(FINAL),)).fetchone()[0]
                - before_final
            )

        before_final = db.execute(
            "SELECT count(*) FROM orders WHERE status = ANY(%s)", (list(FINAL),)
        ).fetchone()[0]
        result = drain(
            env,
            "worker",
            harness.QUEUES,
            final,
            orders,
            concurrency,
            log_dir,
            "orion",
            extra_trees={"web": web.pid, "relay": relay.pid, "smtp": smtp.pid},
            timeout=max(1800.0, orders / 4),
        )  # a 20,000-order backlog takes a while
        statuses = dict(db.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall())
        deciles = arrival_deciles(
            db.execute(
                "SELECT created_at, finished_at FROM orders WHERE finished_at IS NOT NULL "
                "ORDER BY created_at DESC LIMIT %s",
                (orders,),
            ).fetchall()
        )
        steps = db.execute("SELECT count(*) FROM saga_steps").fetchone()[0]
    placed.pop("ids")
    result.update(
        placed_via_api=placed,
        statuses=statuses,
        orders_before=before,
        finish_by_arrival_decile_s=deciles,
        step_rows=steps,
        tasks_per_order=result["tasks"] / max(result["orders"], 1),
        messages_per_order=result["messages"] / max(result["orders"], 1),
    )
    return result


def arrival_deciles(rows: list[tuple]) -> list[float]:
    """Median seconds from the drain's first finished order to each order's
    finish, per tenth of the orders by placement time (first placed first).
    Rising values mean orders end in the order they came; flat ones mean every
    order waits for the whole backlog."""
    rows = sorted(rows)  # by created_at
    if not rows:
        return []
    start = min(finished for _, finished in rows)
    tenth = max(1, len(rows) // 10)
    out = []
    for i in range(0, len(rows), tenth):
        part = [(finished - start).total_seconds() for _, finished in rows[i : i + tenth]]
        out.append(round(harness.percentile(part, 50), 2))
    return out[:10]


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['label']}\n(round {r['round']})" for r in runs]
    left.bar(
        labels,
        [r["orders_per_s"] for r in runs],
        color=["#888" if r["label"] != "orion" else "#2a6" for r in runs],
    )
    left.set_ylabel("orders/s")
    left.set_title(f"Drain of {result['orders']} orders, {result['lines']} lines")
    groups = sorted({g for r in runs for g in r["cpu_ms_per_order"]})
    bottom = [0.0] * len(runs)
    for group in groups:
        values = [r["cpu_ms_per_order"].get(group, 0.0) for r in runs]
        right.bar(labels, values, bottom=bottom, label=group)
        bottom = [b + v for b, v in zip(bottom, values, strict=False)]
    right.set_ylabel("CPU ms per order")
    right.legend(fontsize=8)
    if result["ratio"] is not None:
        right.set_title(f"orion / reference = {result['ratio']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=3, help="lines per Orion order (reference: 3)")
    parser.add_argument(
        "--invoices",
        action="store_true",
        help="Orion places the dataset's real invoices (their lines and quantities) "
        "instead of synthetic orders; the reference keeps its 3-line shape",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="worker processes, for Orion and the reference (default: as ./run.sh, WORKER_CONCURRENCY)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="reference and Orion measured alternately this many times"
    )
    parser.add_argument("--clients", type=int, default=16, help="threads placing orders")
    parser.add_argument(
        "--sql-reference",
        action="store_true",
        help="also run the reference with one SQL transaction per task",
    )
    parser.add_argument("--only-orion", action="store_true", help="skip the reference (no ratio)")
    parser.add_argument(
        "--loglevel",
        default="info",
        help="the workers' log level (./run.sh: info; warning drops the per-task lines)",
    )
    parser.add_argument("--out", default="saga-throughput")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="py-spy the workers for SECONDS of each drain (collapsed stacks)",
    )
    parser.add_argument(
        "--profile-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start the profile this long into the drain",
    )
    args = parser.parse_args(argv)
    PROFILE["seconds"], PROFILE["after"] = args.profile, args.profile_after
    harness.LOGLEVEL["level"] = args.loglevel

    data_dir = harness.temp_dir("saga-bench")
    env = harness.services_env(data_dir)
    os.environ.update(env)  # celeryconfig reads the broker and backend at import
    if args.concurrency is None:
        from config import Settings

        args.concurrency = Settings.from_env(env).worker_concurrency  # as ./run.sh starts it
    print(f"saga_throughput: preparing {harness.BENCH_DB} (catalog import) in {data_dir}", flush=True)
    harness.fresh_database(env)
    invoices = None
    if args.invoices:
        invoices = invoice_bodies(args.orders * args.rounds)
        wanted = sorted({line["sku"] for body in invoices for line in body["lines"]})
        skus = harness.stock_up(env, wanted, 10_000_000)  # throughput, not stock-outs
        invoices = [b for b in invoices if {line["sku"] for line in b["lines"]} <= set(skus)]
    else:
        skus = harness.stock_up(env, 300, 10_000_000)
    emails = harness.create_customers(env, max(args.clients, args.orders // 10))
    if not args.only_orion:
        # The first drain after the catalog import ran slower here (35 vs 55 orders/s
        # for the same reference): let PostgreSQL, RabbitMQ and the page cache settle.
        print("warm-up: 100 reference orders (not reported) ...", flush=True)
        run_reference(env, 100, 3, args.concurrency, data_dir, False)
    runs = []
    for rnd in range(1, args.rounds + 1):
        kinds = (
            ["orion"]
            if args.only_orion
            else ["reference"] + (["reference+sql"] if args.sql_reference else []) + ["orion"]
        )
        for kind in kinds:
            print(f"round {rnd}: {kind} ...", flush=True)
            if kind == "orion":
                batch = invoices[(rnd - 1) * args.orders : rnd * args.orders] if invoices else None
                r = run_orion(
                    env,
                    len(batch) if batch else args.orders,
                    args.lines,
                    args.concurrency,
                    data_dir,
                    skus,
                    emails,
                    args.clients,
                    seed=rnd,
                    bodies=batch,
                )
            else:
                r = run_reference(env, args.orders, 3, args.concurrency, data_dir, kind.endswith("sql"))
            r["round"] = rnd
            runs.append(r)
            print(
                f"  {r['orders_per_s']:.1f} orders/s, {r['tasks_per_s']:.0f} tasks/s, "
                f"worker {r['cpu_ms_per_order'].get('worker', 0):.1f} CPU ms/order",
                flush=True,
            )
    ref = [r["orders_per_s"] for r in runs if r["label"] == "reference"]
    orion = [r["orders_per_s"] for r in runs if r["label"] == "orion"]
    result = {
        "orders": args.orders,
        "lines": "invoices" if args.invoices else args.lines,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "ratio": (sum(orion) / len(orion)) / (sum(ref) / len(ref)) if ref else None,
        "runs": runs,
        "command": " ".join(["python -m bench.saga_throughput", *(argv or sys.argv[1:])]),
    }
    groups = sorted({g for r in runs for g in r["cpu_s"]})
    rows = [
        {
            "run": f"{r['label']} #{r['round']}",
            "orders/s": r["orders_per_s"],
            "tasks/s": r["tasks_per_s"],
            "tasks/order": r["tasks_per_order"],
            "messages/order": r.get("messages_per_order", r["tasks_per_order"]),
            **{f"{g} ms/order": r["cpu_ms_per_order"].get(g) for g in groups},
        }
        for r in runs
    ]
    path = harness.finish(args.out, result, plot, rows)
    for r in runs:
        if r.get("finish_by_arrival_decile_s"):
            print(
                f"orion #{r['round']}: median finish (s into the drain) by arrival decile: "
                f"{r['finish_by_arrival_decile_s']}"
            )
    if result["ratio"] is not None:
        print(f"orion / reference (orders/s): {result['ratio']:.2f}")
    print(f"-> {path}")
    bad = [r for r in runs if r["timed_out"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
