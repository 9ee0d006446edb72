"""The HTTP API against a trivial endpoint on the same server, in the same run.

    python -m bench.api_throughput                        # 2,000 requests per endpoint
    python -m bench.api_throughput --requests 500 --clients 8

Services mode, a fresh ``orion_bench`` database with the real catalog, the web
process as ``./run.sh`` starts it (gunicorn gthread, one process), the outbox
relay, and no worker (placed orders wait in RabbitMQ; the queues are purged at
the end). ``--clients``
threads send, each on its own keep-alive connection, as fast as answers come
(a closed loop: this measures capacity, not latency under a given load):

1. ``GET /healthz``: the trivial endpoint (no I/O; the same request hooks:
   correlation id, metrics, security headers);
2. ``POST /api/v1/orders`` (3 lines, ``tok_visa``): validation and one
   transaction (the relay publishes the outbox row after it);
3. ``GET /api/v1/orders/{id}`` of the orders just placed.

Each reports requests/s, latency percentiles and the CPU ms per request of the
web process and of the relay; the headline is each endpoint's requests/s divided by ``/healthz``'s.
Writes ``bench/results/api-throughput.json`` and ``.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench import harness


def _drive(base: str, requests_: list[tuple[str, str, dict | None, dict]], clients: int) -> dict:
    """Send ``requests_`` ((method, path, body, headers)) from ``clients`` threads."""
    host, port = base.replace("http://", "").split(":")
    local = threading.local()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def send(item) -> None:
        method, path, body, headers = item
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        payload = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        conn.request(
            method,
            path,
            body=payload,
            headers={**headers, **({"Content-Type": "application/json"} if payload else {})},
        )
        reply = conn.getresponse()
        data = reply.read()
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed * 1000)
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            if reply.status >= 400 and statuses[reply.status] == 1:
                print(f"  {method} {path} answered {reply.status}: {data[:200]!r}", file=sys.stderr)
        if method == "POST" and reply.status == 202:
            with lock:
                _placed.append(json.loads(data)["id"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, requests_))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(requests_),
        "seconds": elapsed,
        "req_per_s": len(requests_) / elapsed,
        "statuses": statuses,
        **{f"p{q}_ms": harness.percentile(latencies, q) for q in (50, 95, 99)},
    }


_placed: list[str] = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per endpoint")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--lines", type=int, default=3)
    parser.add_argument("--out", default="api-throughput")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="py-spy the web process during the first SECONDS of each endpoint",
    )
    args = parser.parse_args(argv)

    # The per-customer order limits (SPEC) must not be what is measured.
    data_dir, env, skus, emails = harness.prepare("api", max(args.clients, args.requests // 10))
    rng = random.Random(1)
    runs = []
    # The relay runs as deployed: publishing what POST commits costs this machine's CPU too.
    with harness.web_server(env, data_dir) as web, harness.outbox_relay(env, data_dir) as relay:
        tokens = harness.login_all(web.base_url, emails)
        auth = [{"Authorization": f"Bearer {t}"} for t in tokens]
        plans = {
            "GET /healthz": [("GET", "/healthz", None, {})] * args.requests,
            "POST /api/v1/orders": [
                ("POST", "/api/v1/orders", harness.order_body(skus, args.lines, rng), auth[i % len(auth)])
                for i in range(args.requests)
            ],
        }
        for name, plan in plans.items():
            print(f"{name} ...", flush=True)
            meter = harness.CpuMeter(trees={"web": web.pid, "relay": relay.pid}).start()
            spy = _profile(web.pid, args.profile, data_dir, name) if args.profile else None
            result = _drive(web.base_url, plan, args.clients)
            cpu = meter.stop()
            if spy is not None:
                spy.wait(args.profile + 30)
            runs.append(
                {
                    "endpoint": name,
                    **result,
                    "cpu_ms_per_request": {g: 1000 * s / args.requests for g, s in cpu.items()},
                }
            )
        print("GET /api/v1/orders/{id} ...", flush=True)
        placed = list(_placed)
        owner = _owners(env, placed, emails, auth)  # each order read by its owner
        get_plan = [("GET", f"/api/v1/orders/{oid}", None, owner[oid]) for oid in placed]
        get_plan = get_plan[: args.requests]
        meter = harness.CpuMeter(trees={"web": web.pid}).start()
        result = _drive(web.base_url, get_plan, args.clients)
        cpu = meter.stop()
        runs.append(
            {
                "endpoint": "GET /api/v1/orders/{id}",
                **result,
                "cpu_ms_per_request": {g: 1000 * s / max(1, len(get_plan)) for g, s in cpu.items()},
            }
        )
    harness.purge_queues(env)
    trivial = runs[0]["req_per_s"]
    for r in runs:
        r["ratio_to_trivial"] = r["req_per_s"] / trivial
    result = {
        "requests": args.requests,
        "clients": args.clients,
        "cpus": os.cpu_count(),
        "runs": runs,
        "command": " ".join(["python -m bench.api_throughput", *(argv or sys.argv[1:])]),
    }
    rows = [
        {
            "endpoint": r["endpoint"],
            "req/s": r["req_per_s"],
            "x /healthz": r["ratio_to_trivial"],
            "p50 ms": r["p50_ms"],
            "p95 ms": r["p95_ms"],
            "p99 ms": r["p99_ms"],
            "web CPU ms/req": r["cpu_ms_per_request"].get("web"),
            "relay CPU ms/req": r["cpu_ms_per_request"].get("relay"),
            "statuses": r["statuses"],
        }
        for r in runs
    ]
    path = harness.finish(args.out, result, _plot, rows)
    print(f"-> {path}")
    return 0 if all(set(r["statuses"]) <= {200, 202} for r in runs) else 1


def _profile(pid: int, seconds: int, folder, name: str):
    """py-spy (GIL samples) of the web process tree into ``folder`` as collapsed stacks."""
    from pathlib import Path

    label = name.split()[1].strip("/").replace("/", "-") or "root"
    return harness.spawn(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--subprocesses",
            "--nonblocking",
            "--gil",
            "-r",
            "200",
            "-d",
            str(seconds),
            "-f",
            "raw",
            "-o",
            str(folder / f"profile-{name.split()[0]}-{label}.txt"),
            "-p",
            str(pid),
        ],
        os.environ.copy(),
        folder / f"py-spy-{label}.log",
    )


def _owners(env: dict, order_ids: list[str], emails: list[str], auth: list[dict]) -> dict[str, dict]:
    """The Authorization header of each order's owner."""
    import psycopg

    by_email = dict(zip(emails, auth, strict=False))
    dsn = env["DATABASE_URL"].replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as db:
        rows = db.execute(
            "SELECT o.id::text, u.email FROM orders o JOIN users u ON u.id = o.customer_id "
            "WHERE o.id::text = ANY(%s)",
            (order_ids,),
        ).fetchall()
    return {oid: by_email[email] for oid, email in rows}


def _plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["endpoint"].replace(" /api/v1", "\n/api/v1") for r in runs]
    left.bar(names, [r["req_per_s"] for r in runs], color=["#888", "#2a6", "#26a"])
    left.set_ylabel("requests/s")
    left.set_title(f"{result['clients']} clients, closed loop")
    for q, style in ((50, "o-"), (95, "s--"), (99, "^:")):
        right.plot(names, [r[f"p{q}_ms"] for r in runs], style, label=f"p{q}")
    right.set_ylabel("latency ms")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
