"""Replay real invoices through a freshly started platform and report its figures.

    python -m bench.replay_bench --mode embedded --limit 2000 --concurrency 8
    python -m bench.replay_bench --mode services --limit 2000 --concurrency 8
    python -m bench.replay_bench --mode services --limit 500 --speed 1500   # paced
    python -m bench.replay_bench --mode services --limit 0 --speed 20000    # the whole year

Starts ``tools.launch`` (web, worker, beat, SMTP sink; no Flower) on a fresh data
dir (embedded) or a fresh ``orion_replay`` database, Redis database 5 and
RabbitMQ vhost ``orion_replay`` (services; the other benchmarks and the tests
use their own, so they may run meanwhile, at the cost of sharing the CPU), waits for
``/readyz``, runs ``tools.replay``, then ``tools.audit``, stops the platform and
writes ``bench/results/replay-<mode>-<limit>.json`` with the replay summary, the
audit, the run's duration and the machine's CPU count.

With ``--speed N`` restocking runs on the replay's clock too: the suppliers'
lead time (``--lead-time-days``, 2) and an hourly reorder check are divided by
N, as the invoices' gaps are. (At the settings' defaults, a 10-minute lead time
against a year replayed in half an hour, most late orders ran out of stock.)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def restocking(speed: float, lead_time_days: float) -> dict[str, str]:
    """Restocking on the replay's clock: a supplier's ``lead_time_days`` and an
    hourly reorder check, both compressed ``speed`` times like the invoices'
    gaps (the check no more often than every 2 s); the settings' defaults when
    the replay is not paced."""
    if not speed:
        return {}
    lead = lead_time_days * 86400 / speed
    return {"SUPPLIER_LEAD_TIME_SECONDS": f"{lead:g}", "RESTOCK_EVERY_SECONDS": f"{max(2.0, 3600 / speed):g}"}


def environment(
    mode: str, data_dir: Path, port: int, speed: float = 0.0, lead_time_days: float = 2.0
) -> dict[str, str]:
    env = {
        **os.environ,
        "ORION_MODE": mode,
        "ORION_DATA_DIR": str(data_dir),
        "WEB_PORT": str(port),
        "SMTP_PORT": str(port + 25),
        **restocking(speed, lead_time_days),
        # A compressed year piles up one wholesaler's orders faster than any
        # real customer could: the per-customer cap would throttle the replay.
        # Every customer registers from this machine.
        "MAX_OPEN_ORDERS": "100000",
        "MAX_OPEN_UNITS": "100000000",
        # ... and would reach the per-address email limit as fast.
        "EMAIL_MAX_PER_ADDRESS_PER_HOUR": "10000000",
        "REGISTER_LIMIT": "1000000 per hour",
        "JWT_SECRET_KEY": os.environ.get("JWT_SECRET_KEY") or secrets.token_urlsafe(48),
    }
    if mode == "services":
        from bench.harness import bench_broker_url

        env.update(
            DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/orion_replay",
            RESULT_BACKEND="redis://127.0.0.1:6379/5",
            REDIS_URL="redis://127.0.0.1:6379/5",
            SOCKETIO_CHANNEL="orion-replay-bench",
            BROKER_URL=bench_broker_url("orion_replay"),
        )
    env.pop("PAYMENT_SANDBOX_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the launcher makes its own
    for name in ("DATABASE_URL", "RESULT_BACKEND", "REDIS_URL", "BROKER_URL"):
        if mode == "embedded":
            env.pop(name, None)
    return env


def fresh_services(env: dict[str, str]) -> None:
    code = (
        "from tools.dbsetup import ensure_database; import os; "
        "ensure_database(os.environ['DATABASE_URL'], fresh=True)"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "purge", "-f"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def wait_ready(port: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"platform not ready on port {port} after {timeout}s")


def run(args: argparse.Namespace) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix=f"orion-bench-{args.mode}-"))
    env = environment(args.mode, data_dir, args.port, args.speed, args.lead_time_days)
    if args.mode == "services":
        fresh_services(env)
    started = time.monotonic()
    log = (data_dir / "platform.log").open("wb")
    platform = subprocess.Popen(
        [sys.executable, "-m", "tools.launch", "--no-flower"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_ready(args.port)
        summary_path = data_dir / "replay.json"
        replay = subprocess.run(
            [
                sys.executable,
                "-m",
                "tools.replay",
                "--base-url",
                f"http://127.0.0.1:{args.port}",
                "--limit",
                str(args.limit),
                "--concurrency",
                str(args.concurrency),
                "--speed",
                str(args.speed),
                "--timeout",
                str(args.timeout),
                "--json-out",
                str(summary_path),
            ],
            cwd=ROOT,
            env=env,
        )
        audit = subprocess.run(
            [sys.executable, "-m", "tools.audit", "--json"], cwd=ROOT, env=env, capture_output=True, text=True
        )
    finally:
        os.killpg(platform.pid, signal.SIGTERM)
        platform.wait(60)
    elapsed = time.monotonic() - started
    return {
        "mode": args.mode,
        "limit": args.limit,
        "concurrency": args.concurrency,
        "speed": args.speed,
        "seconds": round(elapsed, 1),
        "restocking": restocking(args.speed, args.lead_time_days),
        "cpus": os.cpu_count(),
        "replay_exit": replay.returncode,
        "replay": json.loads(summary_path.read_text()) if summary_path.exists() else None,
        "audit_exit": audit.returncode,
        "audit": json.loads(audit.stdout or "null"),
        "data_dir": str(data_dir),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("embedded", "services"), default="embedded")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--speed", type=float, default=0.0, help="compress the invoices' real time gaps N times (0: a burst)"
    )
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--lead-time-days",
        type=float,
        default=2.0,
        help="suppliers' lead time on the replay's clock (with --speed)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds to wait for final states once every invoice is sent",
    )
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    pace = f"-speed{args.speed:g}" if args.speed else ""
    out = RESULTS / f"replay-{args.mode}-{args.limit or 'all'}{pace}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in ("mode", "replay_exit", "audit_exit")}), f"-> {out}")
    return 0 if result["replay_exit"] == 0 and result["audit_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
