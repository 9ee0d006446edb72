"""Faults injected into a running Orion, and a checker that counts what was lost,
done twice or wrongly compensated (after the checker of Jepsen's RabbitMQ analysis).

    python -m bench.faults                                   # every fault in FAULTS
    python -m bench.faults --faults kill-children,redis-pause --rate 4

For each fault: a fresh database with a small catalog, and web, outbox relay,
worker, beat and SMTP sink started as ``./run.sh`` starts them in services mode
(on a RabbitMQ vhost, PostgreSQL database and Redis database of their own, with
the safety net's timeouts shortened so that it acts within the run). Orders of
2 lines, ``tok_visa`` and ample stock, are placed at ``--rate`` per second
through ``POST /api/v1/orders`` (open loop: a slow answer does not slow the
arrivals). After ``--before`` seconds the fault is injected; it is healed
``--duration`` seconds later; orders keep coming for ``--after`` seconds. Then
the run waits until every accepted order is final (``--quiet-timeout``) and checks:

- **lost**: an order answered 202 that is not final, or one in the run's database
  whose answer never reached the client (counted as "placed, not answered");
- **duplicated**: two approved captures or refunds at the payment provider for
  one order, one email received twice by the SMTP sink for one order and
  template, and the stock audit (``services.audit``: on-hand against the ledger,
  reserved against held reservations), whose violations are stock moved twice;
- **wrong**: an order that did not complete (every order here can: a refund or
  ``failed`` is a wrong compensation);
- **recovery**: seconds from the heal until the last order placed before it was final;
- **resent** (reported, not a violation): an email received again with the same
  Message-ID, the resend SMTP leaves possible when a worker dies between the
  server's 250 and "sent" being recorded.

Orders refused at the door during an outage (503) are counted, not lost: the
client was told. Writes ``bench/results/faults.json`` and prints the table that
``docs/reliability.md`` keeps.

The faults act on this machine's RabbitMQ, PostgreSQL and Redis (``rabbitmqctl``,
``redis-cli``, ``pg_terminate_backend`` of the run's own database), so run it on a
machine where nothing else depends on them for the few seconds of each fault.
"""

from __future__ import annotations

import argparse
import email
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import (
    BENCH_DB,
    BENCH_EMAILS_PER_HOUR,
    create_customers,
    fresh_database,
    login_all,
    services_env,
    spawn,
    start_relay,
    start_web,
    stop,
    table,
    temp_dir,
    wait_for_log,
    worker_command,
    write_results,
)
from bench.netfault import NetworkLink, available

SAFETY_NET = {  # the safety net within a run's minutes, not the production defaults
    "SAGA_REDRIVE_AFTER_SECONDS": "30",
    "SAGA_REDRIVE_EVERY_SECONDS": "5",
    "OUTBOX_STALE_SECONDS": "10",
    "OUTBOX_SWEEP_SECONDS": "5",
    "SAGA_STEP_MAX_RETRIES": "8",
    "SAGA_RETRY_BACKOFF_MAX": "8",
}
FINAL = ("completed", "cancelled", "failed")
# What the embedded default runs without: its faults are those of its own processes.
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "BROKER_URL",
    "RESULT_BACKEND",
    "REDIS_URL",
    "PAYMENT_SANDBOX_URL",
    "SOCKETIO_CHANNEL",
    "PROMETHEUS_MULTIPROC_DIR",
    "JWT_SECRET_KEY",
    "ORION_ENV",
)
EMBEDDED_FAULTS = (
    "kill-children",
    "kill-worker",
    "kill-relay",
    "kill-web",
    "restart-storm",
    "two-beats",
    "time-limit",
    "smtp-down",
    "smtp-refuse",
)


@dataclass
class Platform:
    """The run's processes; ``worker`` can be replaced by a fault's heal."""

    env: dict
    log_dir: Path
    duration: float = 0.0
    worker: subprocess.Popen | None = None
    saved: dict = field(default_factory=dict)  # what a fault's heal needs from its injection
    restarts: int = 0
    customers: list[str] = field(default_factory=list)  # their emails
    smtp: subprocess.Popen | None = None
    relay: subprocess.Popen | None = None
    web: subprocess.Popen | None = None
    starts: Counter = field(default_factory=Counter)  # per process name, for log file names
    supervised: int = 0  # workers started again by supervise_worker
    link: NetworkLink | None = None  # the worker's network, for the network faults

    def _log(self, name: str) -> Path:
        self.starts[name] += 1
        return self.log_dir / f"{name}-{self.starts[name] - 1}.log"

    def start_relay(self) -> None:
        """The outbox relay as the launcher starts it, once it is publishing."""
        self.relay = start_relay(self.env, self._log("relay"), timeout=120)

    def start_web(self) -> None:
        """gunicorn as the launcher starts it, once ``/healthz`` answers."""
        self.web = start_web(self.env, self._log("web"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['WEB_PORT']}"

    def start_worker(self, wait: bool = True, extra: tuple[str, ...] = (), **env: str) -> None:
        """A worker as the launcher starts it (``env``: variables added for this one;
        ``wait``: until it is consuming)."""
        log = self.log_dir / f"worker-{self.restarts}.log"
        cmd, worker_env = worker_command(concurrency=2, extra=extra), {**self.env, **env}
        if self.link is not None:  # inside the fault's namespace, its services through the link
            cmd = self.link.command(cmd)
            for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "REDIS_URL"):
                worker_env[name] = self.link.address(worker_env[name])
            worker_env["SMTP_HOST"] = self.link.host_address
        self.worker = spawn(cmd, worker_env, log)
        self.saved["worker_log"] = log
        self.restarts += 1
        if wait:
            wait_for_log(self.worker, log, b" ready.")

    def supervise_worker(self, stopping: threading.Event) -> None:
        """Start the worker again when it stops on its own with an error status, as
        the launcher's supervisor does (a worker whose pool may be wedged stops with
        70, ``worker.pool``); one killed by a fault is the fault's to restart."""
        while not stopping.wait(0.5):
            worker = self.worker
            if worker is not None and worker.poll() is not None and worker.returncode > 0:
                print(f"faults: the worker exited with {worker.returncode}; starting it again", flush=True)
                self.supervised += 1
                self.start_worker(wait=False)

    def replace_worker(self, wait: bool = True, extra: tuple[str, ...] = (), **env: str) -> None:
        """Stop the worker as an operator would (warm shutdown, then -9) and start another."""
        stop(self.worker, timeout=30)
        self.start_worker(wait, extra, **env)

    @property
    def refuse_file(self) -> Path:
        return self.log_dir / "smtp-refuse.txt"

    def start_smtp(self) -> None:
        self.smtp = spawn(
            [
                sys.executable,
                "-m",
                "bench.smtp_server",
                "--port",
                self.env["SMTP_PORT"],
                "--dir",
                str(self.log_dir / "mail"),
                "--refuse-file",
                str(self.refuse_file),
            ],
            self.env,
            self.log_dir / "smtp.log",
        )
        wait_for_log(self.smtp, self.log_dir / "smtp.log", b"SMTP server on")


# -- the fault catalogue: name -> (inject, heal) -----------------------------------
def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def _kill_children(p: Platform) -> None:
    import psutil

    for child in psutil.Process(p.worker.pid).children():
        child.send_signal(signal.SIGKILL)


def _kill_worker(p: Platform) -> None:
    os.killpg(p.worker.pid, signal.SIGKILL)
    p.worker.wait()


def _terminate_pg(p: Platform) -> None:
    _sh(
        "psql",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-Atc",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{BENCH_DB}' AND pid <> pg_backend_pid()",
    )


def _pg_cluster(action: str, *extra: str) -> None:
    (version,) = sorted(os.listdir("/etc/postgresql"))[-1:]
    _sh("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *extra)


def _redis_shutdown(p: Platform) -> None:
    """Note how this Redis runs, then stop it without saving (its data is lost)."""

    def get(name: str) -> str:
        out = subprocess.run(
            ["redis-cli", "CONFIG", "GET", name], check=True, capture_output=True, text=True, timeout=30
        ).stdout.split("\n")
        return out[1] if len(out) > 1 else ""

    p.saved["redis"] = {name: get(name) for name in ("port", "bind", "dir", "logfile")}
    subprocess.run(["redis-cli", "SHUTDOWN", "NOSAVE"], capture_output=True, timeout=30)


def _redis_start(p: Platform) -> None:
    conf = p.saved["redis"]
    _sh(
        "redis-server",
        "--daemonize",
        "yes",
        "--port",
        conf["port"] or "6379",
        "--bind",
        *(conf["bind"] or "127.0.0.1").split(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        conf["dir"] or "/tmp",
        "--logfile",
        conf["logfile"],
    )
    deadline = time.monotonic() + 30
    while subprocess.run(["redis-cli", "PING"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not come back")
        time.sleep(0.2)


def _memory_alarm(p: Platform) -> None:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    p.saved["watermark"] = out if out.replace(".", "", 1).isdigit() else "0.4"
    _sh("rabbitmqctl", "-q", "set_vm_memory_high_watermark", "0")


def beat_command(schedule: Path) -> list[str]:
    """``celery beat`` as the launcher starts it, keeping its schedule in ``schedule``."""
    return [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "info", "-s", str(schedule)]


def _second_beat(p: Platform) -> None:
    p.saved["beat"] = spawn(
        beat_command(p.log_dir / "celerybeat-schedule-2"), p.env, p.log_dir / "beat-2.log"
    )


def _restart_storm(p: Platform) -> None:
    """kill -9 of the whole worker and a new one, every few seconds, for --duration seconds."""
    deadline = time.monotonic() + p.duration
    while time.monotonic() < deadline:
        _kill_worker(p)
        p.start_worker()
        time.sleep(2)


# Crash points (config.failpoints) while the fault lasts: each fires at most once per message.
CRASH_POINTS = "provider.*:before=0.1,provider.*:after=0.1,saga.*:after_commit=0.05,email:after_smtp=0.1"
SMTP_DOWN_S = 75.0  # past the confirmation email's retry budget under SAFETY_NET (~50 s)


def _smtp_down(p: Platform) -> None:
    """The mail server gone for longer than an email's retries last."""
    stop(p.smtp)
    time.sleep(max(p.duration, SMTP_DOWN_S))


def _broker_down_at_start(p: Platform) -> None:
    """RabbitMQ stopped, and a new worker started while it is down."""
    _sh("rabbitmqctl", "-q", "stop_app")
    os.killpg(p.worker.pid, signal.SIGKILL)
    p.worker.wait()
    p.start_worker(wait=False)


def _broker_up(p: Platform) -> None:
    _sh("rabbitmqctl", "-q", "start_app")
    wait_for_log(p.worker, p.saved["worker_log"], b" ready.", timeout=120)


def _kill_and_restart(p: Platform, name: str) -> None:
    """kill -9 of one of the platform's processes, every few seconds for --duration
    seconds, each time started again at once (as the launcher's supervisor does)."""
    deadline = time.monotonic() + max(p.duration, 1.0)
    while time.monotonic() < deadline:
        proc = getattr(p, name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        getattr(p, f"start_{name}")()
        time.sleep(3)


FAULTS: dict[str, tuple[Callable[[Platform], None], Callable[[Platform], None], str]] = {
    "kill-children": (
        _kill_children,
        lambda p: None,
        "kill -9 of the worker's pool processes (Celery starts new ones)",
    ),
    "kill-worker": (
        _kill_worker,
        lambda p: p.start_worker(),
        "kill -9 of the whole worker (main process and pool); a new one is started",
    ),
    "pg-terminate": (
        _terminate_pg,
        lambda p: None,
        "pg_terminate_backend of every connection to the run's database",
    ),
    "redis-kill": (
        lambda p: _sh("redis-cli", "CLIENT", "KILL", "TYPE", "normal"),
        lambda p: None,
        "Redis CLIENT KILL of every client connection",
    ),
    # The pause ends by itself: Redis 7.0 holds even a new client's CLIENT UNPAUSE.
    "redis-pause": (
        lambda p: _sh("redis-cli", "CLIENT", "PAUSE", str(int(p.duration * 1000)), "ALL"),
        lambda p: None,
        "Redis answers no one for --duration seconds (CLIENT PAUSE ... ALL)",
    ),
    "rabbitmq-restart": (
        lambda p: _sh("rabbitmqctl", "-q", "stop_app"),
        lambda p: _sh("rabbitmqctl", "-q", "start_app"),
        "RabbitMQ's application stopped for --duration seconds, then started",
    ),
    "rabbitmq-close-connections": (
        lambda p: _sh("rabbitmqctl", "-q", "close_all_connections", "the fault suite closes it"),
        lambda p: None,
        "RabbitMQ closes every client connection (rabbitmqctl close_all_connections)",
    ),
    "rabbitmq-memory-alarm": (
        _memory_alarm,
        lambda p: _sh("rabbitmqctl", "-q", "set_vm_memory_high_watermark", p.saved["watermark"]),
        "RabbitMQ blocks every publisher for --duration seconds (memory "
        "high watermark 0), then its watermark is put back",
    ),
    "redis-restart": (
        _redis_shutdown,
        _redis_start,
        "Redis shut down without saving for --duration seconds, then started "
        "empty (chord counters and revocations lost)",
    ),
    "pg-stop": (
        lambda p: _pg_cluster("stop", "-m", "immediate"),
        lambda p: _pg_cluster("start"),
        "PostgreSQL stopped (immediate mode) for --duration seconds, then started",
    ),
    "two-beats": (
        _second_beat,
        lambda p: stop(p.saved["beat"]),
        "a second beat process for --duration seconds (every job sent twice)",
    ),
    "restart-storm": (
        _restart_storm,
        lambda p: None,
        "the worker killed (-9) and started again, over and over, for --duration seconds",
    ),
    "kill-relay": (
        lambda p: _kill_and_restart(p, "relay"),
        lambda p: None,
        "kill -9 of the outbox relay (between reading rows, publishing them and marking them "
        "sent), started again at once, every few seconds for --duration seconds",
    ),
    "kill-web": (
        lambda p: _kill_and_restart(p, "web"),
        lambda p: None,
        "kill -9 of the web server (between an order's commit and its answer), started again "
        "at once, every few seconds for --duration seconds",
    ),
    "crash-points": (
        lambda p: p.replace_worker(ORION_FAILPOINTS=CRASH_POINTS),
        lambda p: p.replace_worker(),
        "worker processes kill themselves (-9) at the saga's crash points: around "
        "provider calls, after a step's commit, after SMTP took an email "
        f"({CRASH_POINTS})",
    ),
    "time-limit": (
        lambda p: p.replace_worker(
            TASK_TIME_LIMIT_SECONDS="2", TASK_SOFT_TIME_LIMIT_SECONDS="0", PAYMENT_LATENCY_MS="3000"
        ),
        lambda p: p.replace_worker(),
        "payment calls take 3 s under a hard time limit of 2 s: the pool process "
        "running a step is killed by the time limit",
    ),
    "broker-down-at-start": (
        _broker_down_at_start,
        _broker_up,
        "RabbitMQ stopped, the worker killed (-9) and a new one started while "
        "it is down; RabbitMQ started after --duration seconds",
    ),
    "smtp-down": (
        _smtp_down,
        lambda p: p.start_smtp(),
        f"the SMTP server stopped for {SMTP_DOWN_S:g} s (past an email's retries), then started",
    ),
    "smtp-refuse": (
        lambda p: p.refuse_file.write_text("\n".join(p.customers) + "\n"),
        lambda p: p.refuse_file.unlink(),
        "the SMTP server refuses every customer's address (550 5.1.1) for --duration "
        "seconds: their emails are refused for good, their orders must complete",
    ),
}
# Messages no worker can ever run, published straight onto the saga queue (as a
# buggy or hostile publisher would): a body that is not JSON, a pickle (not an
# accepted content type), a task this worker does not have, arguments that do not
# fit the task. (A message that kills its worker on every delivery is
# tests/integration/test_poison_message.py, which needs one worker to itself.)
POISON: tuple[tuple[bytes, str, str], ...] = (
    (b"{not json", "saga.validate_order", "application/json"),
    (b"\x80\x04K\x01.", "saga.validate_order", "application/x-python-serialize"),
    (b'[["00000000-0000-0000-0000-000000000000", 1], {}, {}]', "saga.no_such_step", "application/json"),
    (b'[["DROP TABLE orders", 1, 2, 3], {}, {}]', "saga.validate_order", "application/json"),
)


def _poison_messages(p: Platform) -> None:
    """Every 2 s for --duration seconds, one of each ``POISON`` message on ``orion.saga``."""
    from kombu import Connection, Exchange

    exchange, sent = Exchange("orion", type="direct", durable=True), p.saved.setdefault("poison", [])
    deadline = time.monotonic() + max(p.duration, 1.0)
    with Connection(p.env["BROKER_URL"]) as conn:
        producer = conn.Producer()
        while time.monotonic() < deadline:
            for body, task, content_type in POISON:
                task_id = str(uuid.uuid4())
                headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key="orion.saga",
                    headers=headers,
                    content_type=content_type,
                    content_encoding="utf-8",
                    serializer=None,
                    delivery_mode=2,
                )
                sent.append(task_id)
            time.sleep(2)


def _dead_lettered(ids: list[str]) -> list[str]:
    """Those of ``ids`` (task ids) in the run's dead-letter queue (``orion dlq list``)."""
    done = subprocess.run(
        [sys.executable, "-m", "tools", "dlq", "list", "--limit", "10000", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = {row["id"] for row in json.loads(done.stdout)}
    return [task_id for task_id in ids if task_id in found]


NETWORK_DELAY_S = 0.05  # each way: 100 ms more per round trip, a long-distance link


def _network_delay(p: Platform, delay_s: float) -> None:
    assert p.link is not None
    p.link.delay_s = delay_s


NETWORK_FAULTS = {
    "network-partition": (
        lambda p: p.link.partition(True),
        lambda p: p.link.partition(False),
        "the worker's network (a namespace of the suite's own, linked by veth) cut for "
        "--duration seconds: every packet to PostgreSQL, RabbitMQ, Redis and SMTP dropped",
    ),
    "network-delay": (
        lambda p: _network_delay(p, NETWORK_DELAY_S),
        lambda p: _network_delay(p, 0.0),
        f"every byte between the worker and its services held {NETWORK_DELAY_S * 1000:g} ms "
        "each way for --duration seconds (the suite's relay at the host end of the link)",
    ),
}
FAULTS.update(NETWORK_FAULTS)
FAULTS["poison-messages"] = (
    _poison_messages,
    lambda p: None,
    "messages no worker can run (not JSON, a pickle, an unknown task, arguments that do not "
    "fit) published on the saga queue every 2 s for --duration seconds: each must reach the "
    "dead-letter queue, and the worker must go on",
)
SELF_TIMED = (
    "poison-messages",
    "restart-storm",
    "smtp-down",
    "kill-relay",
    "kill-web",
)  # faults that last as long as they need themselves


# -- load ----------------------------------------------------------------------------
@dataclass
class Load:
    """Open-loop order placement at ``rate`` per second until stopped."""

    base: str
    tokens: list[str]
    skus: list[str]
    rate: float
    accepted: list[tuple[str, float]] = field(default_factory=list)  # (order id, placed at)
    refused: Counter = field(default_factory=Counter)  # status or exception name
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import requests

        rng, pool = random.Random(7), ThreadPoolExecutor(32)
        lock = threading.Lock()

        def place(i: int) -> None:
            body = {
                "lines": [{"sku": sku, "quantity": 1} for sku in rng.sample(self.skus, 2)],
                "shipping_address": {
                    "name": "Fault Customer",
                    "line1": "1 Fault Street",
                    "city": "London",
                    "postal_code": "E1 6AN",
                    "country": "GB",
                },
                "payment": {"token": "tok_visa"},
            }
            headers = {
                "Authorization": f"Bearer {self.tokens[i % len(self.tokens)]}",
                "Idempotency-Key": f"fault-{os.getpid()}-{i}",
            }
            placed = time.time()
            try:
                reply = requests.post(f"{self.base}/api/v1/orders", json=body, headers=headers, timeout=30)
                outcome = reply.status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with lock:
                if outcome == 202:
                    self.accepted.append((reply.json()["id"], placed))
                else:
                    self.refused[str(outcome)] += 1

        start, i = time.monotonic(), 0
        while not self._stop.is_set():
            due = start + i / self.rate
            if time.monotonic() < due:
                time.sleep(min(0.05, due - time.monotonic()))
                continue
            pool.submit(place, i)
            i += 1
        pool.shutdown(wait=True)

    def stop(self) -> None:
        self._stop.set()


# -- the checker -------------------------------------------------------------------------
def check(env: dict, mail_dir: Path, accepted: list[tuple[str, float]], heal_at: float) -> dict:
    """Lost, duplicated and wrong orders among ``accepted`` and every other order in
    the run's (fresh) database: one whose 202 never reached the client (the web
    killed after the commit, a request timed out) must end well too. Recovery is
    measured after ``heal_at``. Portable SQL: the embedded default keeps orders and
    the payment sandbox in SQLite files of their own."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from config import Settings
    from models import Order
    from payments.sandbox import OPERATIONS
    from services.audit import STOCK_CHECKS, audit

    ids = [order_id for order_id, _ in accepted]
    settings = Settings.from_env(env)
    engine = create_engine(settings.database_url)
    sandbox = create_engine(settings.sandbox_database_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(select(Order.id, Order.status, Order.finished_at)).all()
        rows = [(str(order_id), status, finished) for order_id, status, finished in found]
        unanswered = [row[0] for row in rows if row[0] not in set(ids)]
        ids += unanswered
        with sandbox.connect() as conn:
            operations = conn.execute(
                select(
                    OPERATIONS.c.operation, OPERATIONS.c.target, OPERATIONS.c.reference, OPERATIONS.c.result
                )
            ).all()
        with Session(engine) as session:
            violations = audit(session, checks=STOCK_CHECKS)["violations"]
    finally:
        engine.dispose()
        sandbox.dispose()
    doubled = _doubled_at_provider(operations, set(ids))
    status = {row[0]: row[1] for row in rows}
    before_heal = {order_id for order_id, placed in accepted if placed < heal_at}
    finished = [row[2] for row in rows if row[0] in before_heal and row[2] is not None]
    emails: dict[tuple[str, str], list[str]] = {}
    for path in mail_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes())
        emails.setdefault((message["X-Orion-Order"], message["X-Orion-Template"]), []).append(
            message["Message-ID"]
        )
    lost = [order_id for order_id in ids if status.get(order_id) not in FINAL]
    wrong = [order_id for order_id in ids if status.get(order_id) in ("cancelled", "failed")]
    # Two different emails for one order and template are a duplicate; the same
    # message (one Message-ID) received again after a crash between the server's
    # 250 and "sent" being recorded is the resend SMTP allows, counted apart.
    twice = [key for key, ids_ in emails.items() if len(set(ids_)) > 1 and key[0] in status]
    resent = [
        key for key, ids_ in emails.items() if len(ids_) > 1 and len(set(ids_)) == 1 and key[0] in status
    ]
    recovery = (max(finished).timestamp() - heal_at) if finished and not lost else None
    return {
        "orders": len(accepted),
        "unanswered": len(unanswered),
        "lost": len(lost),
        "duplicated": len(doubled) + len(twice),
        "wrong": len(wrong),
        "audit": sum(len(v) for v in violations.values()),
        "resent": len(resent),
        "recovery_s": None if recovery is None else round(max(recovery, 0.0), 1),
        "lost_ids": lost[:20],
        "wrong_ids": wrong[:20],
        "duplicates": [list(d) for d in doubled][:20] + [list(k) for k in twice][:20],
        "violations": {k: v[:5] for k, v in violations.items() if v},
    }


def _doubled_at_provider(operations: list, orders: set[str]) -> list[tuple[str, str, int]]:
    """``(order id, operation, count)`` for each order with more than one approved
    capture, or more than one approved refund, at the payment provider.

    ``operations`` are the sandbox's rows ``(operation, target, reference, result)``:
    an authorization targets the order, a capture the authorization's reference,
    a refund the capture's reference."""
    order_of: dict[str, str] = {}
    for operation, target, reference, _ in operations:
        if operation == "authorize" and reference and target in orders:
            order_of[reference] = target
    for operation, target, reference, _ in operations:
        if operation == "capture" and reference and target in order_of:
            order_of[reference] = order_of[target]
    counts: Counter = Counter()
    for operation, target, _, result in operations:
        if operation in ("capture", "refund") and target in order_of and (result or {}).get("approved"):
            counts[(order_of[target], operation)] += 1
    return [(order, operation, n) for (order, operation), n in counts.items() if n > 1]


def _catalog(env: dict, skus: int) -> list[str]:
    """``skus`` products with ample stock (on hand through the ledger, so the audit balances)."""
    from bench.harness import run_py

    code = f"""
import json
from decimal import Decimal
from models import unit_of_work
from models.catalog import Inventory, Product, change_on_hand
skus = [f"FAULT{{i:03d}}" for i in range({skus})]
with unit_of_work() as s:
    s.add_all([Product(sku=sku, name=f"Fault product {{sku}}", unit_price=Decimal("2.50"))
               for sku in skus])
    s.flush()
    s.add_all([Inventory(sku=sku, on_hand=0, reserved=0) for sku in skus])
    s.flush()
    for sku in skus:
        change_on_hand(s, sku, 1_000_000, "fault-suite stock", "faults")
print(json.dumps(skus))
"""
    return json.loads(run_py(env, code).strip().splitlines()[-1])


def _wait_final(env: dict, ids: list[str], timeout: float) -> None:
    from sqlalchemy import create_engine, func, select

    from config import Settings
    from models import Order

    engine = create_engine(Settings.from_env(env).database_url)
    keys = [uuid.UUID(i) for i in ids]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    open_ = conn.scalar(
                        select(func.count())
                        .select_from(Order)
                        .where(Order.id.in_(keys), Order.status.not_in(FINAL))
                    )
                if open_ == 0:
                    return
            except Exception:  # noqa: BLE001 - the database may be the fault
                pass
            time.sleep(1)
    finally:
        engine.dispose()


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The embedded default (SQLite, kombu's filesystem broker, no Redis) in
    ``data_dir``, on ports of its own."""
    from bench.harness import free_port

    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(
        ORION_MODE="embedded",
        ORION_DATA_DIR=str(data_dir),
        WEB_PORT=str(free_port()),
        SMTP_PORT=str(free_port()),
        PROMETHEUS_MULTIPROC_DIR=str(data_dir / "metrics"),
        REGISTER_LIMIT="1000000 per hour",
        EMAIL_MAX_PER_ADDRESS_PER_HOUR=BENCH_EMAILS_PER_HOUR,
    )
    env.update(extra)
    (data_dir / "metrics").mkdir(parents=True, exist_ok=True)
    from config import Settings

    env["DATABASE_URL"] = Settings.from_env(env).database_url  # read by the harness's helpers
    return env


def _service_ports(env: dict) -> list[int]:
    from urllib.parse import urlsplit

    urls = (env["DATABASE_URL"], env["BROKER_URL"], env["REDIS_URL"], env["RESULT_BACKEND"])
    return [urlsplit(url).port for url in urls if urlsplit(url).port] + [int(env["SMTP_PORT"])]


def run_fault(name: str, args: argparse.Namespace) -> dict:
    inject, heal, _ = FAULTS[name]
    data_dir = temp_dir(f"faults-{args.mode}-{name}")
    limits = {
        **SAFETY_NET,
        "MAX_OPEN_ORDERS": "100000",
        "MAX_OPEN_UNITS": "100000000",
        # 40 customers place every order of the run: each email must go out (the
        # checker counts them), as before the per-address limit.
        "EMAIL_MAX_PER_ADDRESS_PER_HOUR": BENCH_EMAILS_PER_HOUR,
    }
    if args.mode == "embedded":
        env = embedded_env(data_dir, **limits)
        for variable in SERVICE_VARIABLES:  # celeryconfig and the checker read os.environ too
            os.environ.pop(variable, None)
    else:
        env = services_env(data_dir, **limits)
    os.environ.update(env)
    print(f"faults: {name}: preparing a fresh database in {data_dir} ({args.mode})", flush=True)
    fresh_database(env, catalog=False)
    skus = _catalog(env, 40)
    customers = create_customers(env, 40)
    platform = Platform(env, data_dir, duration=args.duration, customers=customers)
    with ExitStack() as stack:
        if name in NETWORK_FAULTS:
            platform.link = NetworkLink(_service_ports(env))
            platform.link.up()
            stack.callback(platform.link.down)
        platform.start_smtp()
        stack.callback(lambda: platform.smtp and stop(platform.smtp))
        platform.start_relay()
        stack.callback(lambda: platform.relay and stop(platform.relay))
        platform.start_web()
        stack.callback(lambda: platform.web and stop(platform.web))
        beat = spawn(
            beat_command(data_dir / "celerybeat-schedule"),
            env,
            data_dir / "beat.log",
        )
        stack.callback(stop, beat)
        platform.start_worker()
        stack.callback(lambda: platform.worker and stop(platform.worker))
        stopping = threading.Event()
        threading.Thread(target=platform.supervise_worker, args=(stopping,), daemon=True).start()
        stack.callback(stopping.set)
        load = Load(platform.base_url, login_all(platform.base_url, customers), skus, args.rate)
        loader = threading.Thread(target=load.run, daemon=True)
        loader.start()
        time.sleep(args.before)
        print(f"faults: {name}: inject", flush=True)
        healed: list[bool] = []

        def heal_once() -> None:  # also on the way out if anything below fails
            if not healed:
                healed.append(True)
                heal(platform)

        stack.callback(heal_once)
        inject(platform)
        if name not in SELF_TIMED:
            time.sleep(args.duration)
        heal_once()
        heal_at = time.time()
        print(f"faults: {name}: healed", flush=True)
        time.sleep(args.after)
        load.stop()
        loader.join(timeout=60)
        ids = [order_id for order_id, _ in load.accepted]
        _wait_final(env, ids, args.quiet_timeout)
        result = check(env, data_dir / "mail", load.accepted, heal_at)
        if "poison" in platform.saved:
            sent = platform.saved["poison"]
            found = _dead_lettered(sent)
            result["poison"] = f"{len(found)}/{len(sent)} dead-lettered"
            result["poison_missing"] = sorted(set(sent) - set(found))
    result.update(
        fault=name, refused=dict(load.refused), log_dir=str(data_dir), worker_restarts=platform.supervised
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--faults",
        default=None,
        help=f"comma-separated (default: all of the mode's), of: {', '.join(FAULTS)}",
    )
    parser.add_argument("--rate", type=float, default=4.0, help="orders per second")
    parser.add_argument("--before", type=float, default=8.0, help="seconds of load before the fault")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds the fault lasts (for faults that are healed)"
    )
    parser.add_argument("--after", type=float, default=8.0, help="seconds of load after the heal")
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=240.0,
        help="seconds to wait for every accepted order to be final",
    )
    parser.add_argument(
        "--mode",
        choices=("services", "embedded"),
        default="services",
        help="the platform under test: services mode, or the embedded default "
        f"(faults {', '.join(EMBEDDED_FAULTS)} only)",
    )
    parser.add_argument("--out", default="faults")
    args = parser.parse_args(argv)
    default = ",".join(FAULTS) if args.mode == "services" else ",".join(EMBEDDED_FAULTS)
    names = [n.strip() for n in (args.faults or default).split(",") if n.strip()]
    known = FAULTS if args.mode == "services" else EMBEDDED_FAULTS
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(
            f"unknown fault(s) for {args.mode} mode: {', '.join(unknown)}; known: {', '.join(known)}"
        )
    results = []
    no_netns = available() if any(n in NETWORK_FAULTS for n in names) else None
    for name in names:
        if name in NETWORK_FAULTS and no_netns:
            print(f"faults: {name}: skipped: {no_netns}", file=sys.stderr, flush=True)
            continue
        try:
            results.append(run_fault(name, args))
        except Exception as exc:  # noqa: BLE001 - one fault's harness failing ends not the rest
            print(
                f"faults: {name}: the run itself failed: {type(exc).__name__}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            results.append({"fault": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        print(
            json.dumps(
                {
                    k: results[-1][k]
                    for k in ("fault", "orders", "lost", "duplicated", "wrong", "audit", "recovery_s")
                }
            ),
            flush=True,
        )
        write_results(args.out, {"at": datetime.now(UTC).isoformat(), "args": vars(args), "results": results})
    write_results(args.out, {"at": datetime.now(UTC).isoformat(), "args": vars(args), "results": results})
    print(
        table(
            results,
            [
                ("fault", "fault"),
                ("orders", "orders"),
                ("refused", "refused at the door"),
                ("unanswered", "placed, not answered"),
                ("lost", "lost"),
                ("duplicated", "duplicated"),
                ("wrong", "wrong"),
                ("audit", "audit violations"),
                ("resent", "emails resent"),
                ("poison", "poison messages"),
                ("recovery_s", "recovery s"),
                ("error", "error"),
            ],
        )
    )
    broken = ("error", "lost", "duplicated", "wrong", "audit", "poison_missing")
    bad = [r["fault"] for r in results if any(r.get(key) for key in broken)]
    if bad:
        print(
            f"faults: guarantees broken under {', '.join(bad)} (details in bench/results/{args.out}.json)",
            file=sys.stderr,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
