"""A flood of unauthenticated WebSocket connections from one address, and what it
does to the API (the security issue's bar: 2,000 idle connections from one
address leave ``GET /api/v1/products`` answering within 1 s).

    python -m bench.socket_flood                       # 2,000 connections, 200 product reads
    python -m bench.socket_flood --connections 500 --reads 100

In one run against one web server (services mode, as ``./run.sh`` starts it):

- **quiet**: ``GET /api/v1/products`` latency with no flood (the reference);
- **flood**: the same reads while ``--connections`` WebSockets from 127.0.0.1
  are opened at once and held open without ever authenticating.

It reports how many flood connections the server admitted, refused (429 from
``web.transport_limit``) or closed later (``web.realtime.ConnectionGuard``'s
authentication deadline), and the read latencies (p50/p95/p99/max, timeouts),
with the flood's p99 as a ratio to the quiet one. Writes
``bench/results/socket-flood.json`` and ``.png``. Traffic goes to loopback only;
every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from bench.harness import finish, percentile, prepare, temp_dir, web_server

READ_TIMEOUT_S = 10.0


async def _reads(base: str, count: int, interval: float) -> list[float | None]:
    """``count`` sequential product reads, ``interval`` s apart; seconds each (None: timed out)."""
    out: list[float | None] = []
    timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for _ in range(count):
            start = time.perf_counter()
            try:
                async with http.get(f"{base}/api/v1/products?limit=20") as reply:
                    await reply.read()
                    out.append(time.perf_counter() - start if reply.status == 200 else None)
            except (TimeoutError, aiohttp.ClientError):
                out.append(None)
            await asyncio.sleep(interval)
    return out


async def _flood(base: str, connections: int, hold_s: float, outcome: dict) -> None:
    """Open ``connections`` WebSockets at once, never authenticate, hold up to ``hold_s``."""
    url = base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one() -> None:
            try:
                async with http.ws_connect(
                    url, timeout=aiohttp.ClientWSTimeout(ws_close=5), heartbeat=None
                ) as ws:
                    outcome["admitted"] += 1
                    deadline = time.monotonic() + hold_s
                    while time.monotonic() < deadline:
                        try:
                            message = await ws.receive(timeout=deadline - time.monotonic())
                        except TimeoutError:
                            break
                        if message.type in (
                            aiohttp.WSMsgType.CLOSE,
                            aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR,
                        ):
                            outcome["closed_by_server"] += 1
                            return
            except aiohttp.WSServerHandshakeError as exc:
                outcome["refused" if exc.status == 429 else "failed"] += 1
            except (TimeoutError, aiohttp.ClientError, OSError):
                outcome["failed"] += 1

        await asyncio.gather(*(one() for _ in range(connections)))


def _summary(latencies: list[float | None]) -> dict:
    done = [x * 1000 for x in latencies if x is not None]
    return {
        "reads": len(latencies),
        "timeouts": latencies.count(None),
        "p50_ms": percentile(done, 50),
        "p95_ms": percentile(done, 95),
        "p99_ms": percentile(done, 99),
        "max_ms": max(done) if done else None,
    }


async def _run(base: str, connections: int, reads: int, hold_s: float) -> dict:
    quiet = await _reads(base, reads, 0.02)
    outcome = {"admitted": 0, "refused": 0, "closed_by_server": 0, "failed": 0}
    flood = asyncio.create_task(_flood(base, connections, hold_s, outcome))
    await asyncio.sleep(1.0)  # the flood is under way
    during = await _reads(base, reads, 0.02)
    await flood
    return {"quiet": _summary(quiet), "flood": _summary(during), "flood_connections": outcome}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds each connection stays")
    parser.add_argument("--out", default="socket-flood")
    args = parser.parse_args(argv)
    _data_dir, env, _, _ = prepare("socket-flood", customers=1, skus=10)
    log_dir = temp_dir("socket-flood-logs")
    with web_server(env, log_dir) as web:
        result = asyncio.run(_run(web.base_url, args.connections, args.reads, args.hold))
    quiet, flood = result["quiet"], result["flood"]
    result |= {
        "connections": args.connections,
        "hold_s": args.hold,
        "p99_ratio": (flood["p99_ms"] / quiet["p99_ms"]) if quiet["p99_ms"] and flood["p99_ms"] else None,
    }
    rows = [{"phase": name, **result[name]} for name in ("quiet", "flood")]
    path = finish(args.out, result, _plot, rows)
    print(f"flood connections: {result['flood_connections']}")
    print(f"flood p99 / quiet p99: {result['p99_ratio']:.2f}" if result["p99_ratio"] else "no ratio")
    print(f"-> {path}")
    return 0


def _plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = ["quiet", "flood"]
    keys = ["p50_ms", "p95_ms", "p99_ms", "max_ms"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.2
    for i, key in enumerate(keys):
        ax.bar(
            [p + i * width for p in range(len(phases))],
            [result[phase][key] or 0 for phase in phases],
            width,
            label=key,
        )
    ax.set_xticks([p + 1.5 * width for p in range(len(phases))], phases)
    ax.set_ylabel("GET /api/v1/products latency (ms)")
    ax.set_title(
        f"{result['connections']} unauthenticated WebSockets from one address: "
        f"{result['flood_connections']['refused']} refused"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    raise SystemExit(main())
