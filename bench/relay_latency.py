"""Latency of the progress relay: from a saga step's commit to the event's arrival
at a connected Socket.IO client, with 1, 100 and 1,000 idle clients connected.

    python -m bench.relay_latency --mode embedded
    python -m bench.relay_latency --mode services

Starts ``tools.launch`` (web, worker, SMTP sink; no beat, no Flower) on a fresh
data dir (embedded) or database (services), registers a buyer and an idle user,
and for each level connects that many idle clients (the idle user's: they get
no order events, they only load the server), plus one watcher as the buyer.
It then places ``--orders`` one-line orders, paced ``--interval`` seconds apart
so the saga never queues, and for every ``order.updated`` the watcher receives
takes ``arrival - at``. ``at`` is stamped inside the step's transaction just
before it commits, so each figure is an upper bound on commit-to-arrival, by
the rest of that transaction (the COMMIT itself). Client and server share this
machine's clock. Writes ``bench/results/relay-<mode>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import aiohttp
import psutil
import socketio

from bench.replay_bench import environment, fresh_services, wait_ready

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PASSWORD = "bench password 1"
ADDRESS = {
    "name": "Bench",
    "line1": "1 Bench Street",
    "city": "London",
    "postal_code": "E1 6AN",
    "country": "United Kingdom",
}


async def account(http: aiohttp.ClientSession, base: str, name: str) -> str:
    email = f"{name}-{uuid.uuid4().hex[:8]}@bench.orion.example"
    async with http.post(
        f"{base}/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": name}
    ) as reply:
        assert reply.status == 201, await reply.text()
    async with http.post(f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD}) as reply:
        return (await reply.json())["access_token"]


async def connect_idle(base: str, token: str, count: int, batch: int = 50) -> list[socketio.AsyncClient]:
    clients: list[socketio.AsyncClient] = []
    for start in range(0, count, batch):
        group = [socketio.AsyncClient(reconnection=False) for _ in range(min(batch, count - start))]
        await asyncio.gather(
            *(
                c.connect(base, auth={"token": token}, transports=["websocket"], wait_timeout=30)
                for c in group
            )
        )
        clients.extend(group)
    return clients


async def measure(
    base: str, http: aiohttp.ClientSession, buyer: str, sku: str, orders: int, interval: float
) -> list[float]:
    latencies: list[float] = []
    finals: set[str] = set()
    watcher = socketio.AsyncClient(reconnection=False)

    @watcher.on("order.updated")
    async def on_event(event):
        arrived = time.time()
        at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
        latencies.append((arrived - at) * 1000)
        if event["status"] in ("completed", "cancelled", "failed"):
            finals.add(event["order_id"])

    await watcher.connect(base, auth={"token": buyer}, transports=["websocket"], wait_timeout=30)
    placed = []
    for _ in range(orders):
        body = {
            "lines": [{"sku": sku, "quantity": 1}],
            "shipping_address": ADDRESS,
            "payment": {"token": "tok_visa"},
        }
        async with http.post(
            f"{base}/api/v1/orders", json=body, headers={"Authorization": f"Bearer {buyer}"}
        ) as reply:
            assert reply.status == 202, await reply.text()
            placed.append((await reply.json())["id"])
        await asyncio.sleep(interval)
    deadline = time.monotonic() + 120
    while len(finals) < len(placed) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # trailing events (emails) of the last order
    await watcher.disconnect()
    if len(finals) < len(placed):
        raise RuntimeError(f"only {len(finals)} of {len(placed)} orders finished")
    return latencies


def summarize(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {
        "events": len(ordered),
        "p50_ms": pick(0.50),
        "p90_ms": pick(0.90),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


def web_worker(port: int) -> psutil.Process:
    """The gunicorn worker process serving ``port`` (the child of its master)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "gunicorn" in cmdline and f":{port}" in cmdline and proc.children():
            return proc.children()[0]
    raise RuntimeError(f"no gunicorn worker serving port {port}")


def server_load(worker: psutil.Process, cpu_before: float) -> dict:
    """What the web worker holds while the level runs: threads, open sockets, memory, CPU."""
    with worker.oneshot():
        return {
            "web_threads": worker.num_threads(),
            "web_tcp_connections": len(worker.net_connections(kind="tcp")),
            "web_rss_mb": round(worker.memory_info().rss / 2**20, 1),
            "web_cpu_s": round(sum(worker.cpu_times()[:2]) - cpu_before, 2),
        }


async def bench(base: str, levels: list[int], orders: int, interval: float) -> dict:
    async with aiohttp.ClientSession() as http:
        buyer, idle = await account(http, base, "buyer"), await account(http, base, "idle")
        async with http.get(f"{base}/api/v1/products", params={"limit": "100"}) as reply:
            items = (await reply.json())["items"]
        sku = max(items, key=lambda p: p["available"])["sku"]
        results = {}
        worker = web_worker(int(base.rsplit(":", 1)[1]))
        for level in levels:
            idle_clients = await connect_idle(base, idle, level - 1)  # the watcher is one of them
            cpu_before = sum(worker.cpu_times()[:2])
            latencies = await measure(base, http, buyer, sku, orders, interval)
            results[str(level)] = summarize(latencies) | server_load(worker, cpu_before)
            print(f"{level:>5} clients: {results[str(level)]}", flush=True)
            await asyncio.gather(*(c.disconnect() for c in idle_clients))
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("embedded", "services"), default="embedded")
    parser.add_argument("--levels", default="1,100,1000", help="connected clients per run")
    parser.add_argument("--orders", type=int, default=30, help="orders per level")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between orders")
    parser.add_argument("--port", type=int, default=8300)
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix=f"orion-relay-{args.mode}-"))
    env = environment(args.mode, data_dir, args.port) | {"PAYMENT_LATENCY_MS": "0"}
    if args.mode == "services":
        fresh_services(env)
    log = (data_dir / "platform.log").open("wb")
    platform = subprocess.Popen(
        [sys.executable, "-m", "tools.launch", "--no-flower", "--no-beat"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_ready(args.port)
        levels = [int(level) for level in args.levels.split(",")]
        base = f"http://127.0.0.1:{args.port}"
        results = asyncio.run(bench(base, levels, args.orders, args.interval))
    finally:
        os.killpg(platform.pid, signal.SIGTERM)
        platform.wait(60)
    report = {
        "mode": args.mode,
        "orders_per_level": args.orders,
        "interval_s": args.interval,
        "cpus": os.cpu_count(),
        "command": "python -m bench.relay_latency " + " ".join(argv or sys.argv[1:]),
        "levels": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"relay-{args.mode}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
