"""What every benchmark here shares: a fresh services-mode environment, the
platform's processes started as ``tools.launch`` starts them, customers and
stock for synthetic orders, CPU accounting per process group, and output
(JSON, a PNG plot, a printed table).

Benchmarks run their reference in the same run as the thing measured, so a
headline is a ratio that holds on a noisy machine (absolute times drift 20 %
or more between runs here).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUEUES = "orion.saga,orion.fulfilment,orion.notify"
BENCH_DB = "orion_bench"
BENCH_VHOST = "orion_bench"
PASSWORD = "bench password 1"

# Process groups whose CPU a benchmark reports: name -> test on a process.
GROUPS = {
    "rabbitmq": lambda p, names: names[0] in ("beam.smp", "erl_child_setup", "epmd", "inet_gethost"),
    "postgresql": lambda p, names: names[0] in ("postgres", "postmaster"),
    "redis": lambda p, names: names[0].startswith("redis-server"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_broker_url(vhost: str = BENCH_VHOST) -> str:
    """``amqp://`` on RabbitMQ's ``vhost`` (made here with ``rabbitmqctl`` if
    missing), so the tests' queue purges never reach a benchmark's messages;
    the default vhost if ``rabbitmqctl`` is not allowed here."""
    made = subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], capture_output=True, text=True)
    if made.returncode == 0 or "already exists" in made.stderr:
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            capture_output=True,
            check=True,
        )
        return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    print(f"bench: no vhost {vhost} ({made.stderr.strip()[:200]}); using the default one", file=sys.stderr)
    return "amqp://guest:guest@127.0.0.1:5672//"


# High enough that no benchmark's customer reaches it (EMAIL_MAX_PER_ADDRESS_PER_HOUR).
BENCH_EMAILS_PER_HOUR = "10000000"


def services_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a services-mode platform on its own database, Redis
    database, RabbitMQ vhost and Socket.IO channel, so a benchmark never meets a
    test's rows or messages."""
    env = {
        **os.environ,
        "ORION_MODE": "services",
        "ORION_DATA_DIR": str(data_dir),
        "BROKER_URL": bench_broker_url(),
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{BENCH_DB}",
        "RESULT_BACKEND": "redis://127.0.0.1:6379/4",
        "REDIS_URL": "redis://127.0.0.1:6379/4",
        "SOCKETIO_CHANNEL": "orion-bench",
        "PROMETHEUS_MULTIPROC_DIR": str(data_dir / "metrics"),
        "WEB_PORT": str(free_port()),
        "SMTP_PORT": str(free_port()),
        # Beat's sweeps would publish work of their own in the middle of a measurement.
        "OUTBOX_STALE_SECONDS": "3600",
        "SAGA_REDRIVE_AFTER_SECONDS": "3600",
        # Benchmarks register thousands of customers from one address.
        "REGISTER_LIMIT": "1000000 per hour",
        # ... and place many orders per customer within the hour: every email is
        # sent, as before the per-address limit (security issue item 9).
        "EMAIL_MAX_PER_ADDRESS_PER_HOUR": BENCH_EMAILS_PER_HOUR,
        # Services mode needs a signing key of its own (config.settings.jwt_secret).
        "JWT_SECRET_KEY": os.environ.get("JWT_SECRET_KEY") or secrets.token_urlsafe(48),
    }
    env.pop("PAYMENT_SANDBOX_URL", None)
    env.update(extra)
    (data_dir / "metrics").mkdir(parents=True, exist_ok=True)
    return env


def run_py(env: dict[str, str], code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    return done.stdout


def fresh_database(env: dict[str, str], catalog: bool = True) -> None:
    """Drop and re-create the benchmark database, migrate it, import the catalog."""
    run_py(
        env,
        "import os; from tools.dbsetup import ensure_database, upgrade; "
        "u = os.environ['DATABASE_URL']; ensure_database(u, fresh=True); upgrade(u)",
    )
    if catalog:
        subprocess.run(
            [sys.executable, "-m", "tools.catalog"], env=env, cwd=ROOT, check=True, capture_output=True
        )
    purge_queues(env)


def purge_queues(env: dict[str, str], queues: str = QUEUES) -> None:
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", queues],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def stock_up(env: dict[str, str], skus: int | list[str], units: int) -> list[str]:
    """Give the ``skus`` first SKUs (or the SKUs listed) ``units`` more units on hand
    (through the ledger, so the audit still balances); returns those SKUs."""
    pick = (
        f"select(Inventory.sku).where(Inventory.sku.in_({list(skus)!r}))"
        if isinstance(skus, list)
        else f"select(Inventory.sku).order_by(Inventory.sku).limit({skus})"
    )
    code = f"""
import json
from sqlalchemy import select
from models import unit_of_work
from models.catalog import Inventory, change_on_hand
with unit_of_work() as s:
    skus = list(s.scalars({pick}))
    for sku in skus:
        change_on_hand(s, sku, {units}, "benchmark stock", "bench")
print(json.dumps(skus))
"""
    return json.loads(run_py(env, code).strip().splitlines()[-1])


def create_customers(env: dict[str, str], count: int, role: str = "customer") -> list[str]:
    """``count`` users (customers, or operators with ``role="operator"``) sharing one
    password hash (argon2 is slow on purpose); returns their emails."""
    prefix = uuid.uuid4().hex[:8]
    code = f"""
import json
from models import unit_of_work
from models.user import User
u = User(email="x@example.com", name="x", role={role!r}); u.set_password({PASSWORD!r})
emails = [f"bench-{role}-{prefix}-{{i}}@example.com" for i in range({count})]
with unit_of_work() as s:
    s.add_all([User(email=e, name=f"Bench {{i}}", role={role!r}, password_hash=u.password_hash)
               for i, e in enumerate(emails)])
print(json.dumps(emails))
"""
    return json.loads(run_py(env, code).strip().splitlines()[-1])


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    from tools.launch import stop_group

    stop_group(proc, timeout)


def wait_for_log(proc: subprocess.Popen, log: Path, needle: bytes, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}; see {log}")
        if needle in log.read_bytes():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{needle!r} not in {log} after {timeout}s")


LOGLEVEL = {"level": "info"}  # the launcher's; benchmarks may lower it to measure logging's cost


def wait_consuming(proc: subprocess.Popen, queue: str, timeout: float = 90) -> None:
    """Wait until ``queue`` has a consumer (a worker whose log level hides "ready")."""
    from worker import app

    deadline = time.monotonic() + timeout
    with app.connection_for_write() as conn:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")
            if conn.default_channel.queue_declare(queue, passive=True).consumer_count:
                return
            time.sleep(0.1)
    raise TimeoutError(f"no consumer on {queue} after {timeout}s")


def worker_command(
    app: str = "worker", concurrency: int | None = None, queues: str = QUEUES, extra: tuple[str, ...] = ()
) -> list[str]:
    """``celery worker`` with the launcher's flags (``tools.launch``)."""
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-l",
        LOGLEVEL["level"],
        "-Q",
        queues,
        "-n",
        f"bench-{uuid.uuid4().hex[:6]}@%h",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]
    if concurrency is not None:
        cmd += ["-c", str(concurrency)]
    return cmd


@contextmanager
def web_server(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """gunicorn as the launcher starts it; yields the process, with ``base_url``,
    once ``/healthz`` answers."""
    proc = start_web(env, log_dir / "web.log")
    try:
        yield proc
    finally:
        stop(proc)


def start_web(env: dict[str, str], log: Path) -> subprocess.Popen:
    """gunicorn as the launcher starts it, once ``/healthz`` answers; the process
    carries its ``base_url``."""
    from config import Settings
    from tools.launch import wait_healthy, web_command

    proc = spawn(web_command(Settings.from_env(env)), env, log)
    proc.base_url = f"http://127.0.0.1:{env['WEB_PORT']}"
    try:
        wait_healthy(proc, proc.base_url, log)
    except BaseException:
        stop(proc)
        raise
    return proc


@contextmanager
def outbox_relay(env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen]:
    """``python -m worker.relay`` as the launcher starts it, once it is publishing."""
    proc = start_relay(env, log_dir / "relay.log")
    try:
        yield proc
    finally:
        stop(proc)


def start_relay(env: dict[str, str], log: Path, timeout: float = 90) -> subprocess.Popen:
    """``python -m worker.relay`` as the launcher starts it, once it is publishing."""
    proc = spawn([sys.executable, "-m", "worker.relay"], env, log)
    try:
        wait_for_log(proc, log, b"publishing the outbox", timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


@contextmanager
def smtp_sink(env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen]:
    log = log_dir / "smtp.log"
    proc = spawn([sys.executable, "-m", "tools.smtp_sink"], env, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", int(env["SMTP_PORT"]))) == 0:
                break
        time.sleep(0.1)
    try:
        yield proc
    finally:
        stop(proc)


@dataclass
class CpuMeter:
    """CPU seconds (user + system) per process group between ``start`` and ``stop``.

    Groups: RabbitMQ, PostgreSQL and Redis by process name, plus every process
    tree given in ``trees`` (e.g. ``{"worker": pid}``). Processes are sampled
    every ``interval`` seconds, so one that starts and ends between two samples
    is missed (PostgreSQL backends live as long as their pooled connection).
    """

    trees: dict[str, int] = field(default_factory=dict)
    interval: float = 0.5
    _first: dict[int, float] = field(default_factory=dict)
    _last: dict[int, tuple[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _group(self, proc: psutil.Process, tree_pids: dict[int, str]) -> str | None:
        if proc.pid in tree_pids:
            return tree_pids[proc.pid]
        try:
            names = [proc.name()]
        except psutil.Error:
            return None
        return next((g for g, test in GROUPS.items() if test(proc, names)), None)

    def _tree_pids(self) -> dict[int, str]:
        pids: dict[int, str] = {}
        for group, root in self.trees.items():
            try:
                top = psutil.Process(root)
                for proc in [top, *top.children(recursive=True)]:
                    pids[proc.pid] = group
            except psutil.Error:
                pass
        return pids

    def sample(self, first: bool = False) -> None:
        tree_pids = self._tree_pids()
        for proc in psutil.process_iter():
            group = self._group(proc, tree_pids)
            if group is None:
                continue
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            used = times.user + times.system
            if first:
                self._first[proc.pid] = used
            elif proc.pid not in self._first:
                self._first[proc.pid] = 0.0  # started during the measurement
            self._last[proc.pid] = (group, used)

    def start(self) -> CpuMeter:
        self.sample(first=True)
        self._stop.clear()

        def loop():
            while not self._stop.wait(self.interval):
                self.sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """Seconds of CPU per group since ``start``."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()
        totals: dict[str, float] = {}
        for pid, (group, used) in self._last.items():
            totals[group] = totals.get(group, 0.0) + max(0.0, used - self._first.get(pid, 0.0))
        return totals


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def order_body(skus: list[str], lines: int, rng: random.Random) -> dict:
    return {
        "lines": [{"sku": sku, "quantity": 1} for sku in rng.sample(skus, lines)],
        "shipping_address": {
            "name": "Bench Customer",
            "line1": "1 Load Street",
            "city": "London",
            "postal_code": "E1 6AN",
            "country": "GB",
        },
        "payment": {"token": "tok_visa"},
    }


def login_all(base: str, emails: list[str]) -> list[str]:
    """Access tokens, one per customer."""
    import requests

    tokens = []
    with requests.Session() as http:
        for email in emails:
            reply = http.post(
                f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30
            )
            reply.raise_for_status()
            tokens.append(reply.json()["access_token"])
    return tokens


def prepare(name: str, customers: int, skus: int = 300) -> tuple[Path, dict, list[str], list[str]]:
    """A benchmark's start: a data folder, a services environment (also set in
    ``os.environ``: celeryconfig reads it at import), a fresh database with the real
    catalog, ``skus`` SKUs with ample stock and ``customers`` customers.

    Returns ``(data_dir, env, skus, customer_emails)``.
    """
    data_dir = temp_dir(f"{name}-bench")
    env = services_env(data_dir)
    os.environ.update(env)
    print(f"{name}: preparing {BENCH_DB} (catalog import) in {data_dir}", flush=True)
    fresh_database(env)
    stocked = stock_up(env, skus, 10_000_000)
    return data_dir, env, stocked, create_customers(env, customers)


def finish(name: str, result: dict, plot, rows: list[dict]) -> Path:
    """Write ``result`` as JSON and ``plot(result, png_path)`` beside it, print ``rows``
    as a table; returns the JSON's path."""
    path = write_results(name, result)
    try:
        plot(result, path.with_suffix(".png"))
    except ImportError:
        print(f"{name}: no plot (pip install -r bench/requirements.txt)", file=sys.stderr)
    print(table(rows, [(k, k) for k in rows[0]]))
    return path


def write_results(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A plain-text table of ``rows`` with ``columns`` as (key, heading)."""

    def cell(value):
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
        return "" if value is None else str(value)

    cells = [[heading for _, heading in columns]] + [[cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=False)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"orion-{prefix}-"))
