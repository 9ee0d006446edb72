"""Real Orion processes for tests: a Celery worker, the outbox relay, the web
server and a local SMTP server."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parents[2]
ALL_QUEUES = "orion.saga,orion.fulfilment,orion.notify"
ARTIFACTS = REPO / "artifacts"


@contextmanager
def celery_worker(
    env: dict[str, str] | None = None,
    queues: str = ALL_QUEUES,
    concurrency: int = 2,
    purge: bool = True,
    name: str | None = None,
) -> Iterator[subprocess.Popen]:
    """``celery -A worker worker`` as a user starts it, with ``env`` over the test
    environment, named ``name@<host>`` (default: a random name).

    Queues are purged first so leftovers of earlier tests are not consumed.
    The log goes to ``artifacts/worker-<name>.log``.
    """
    if purge:
        subprocess.run(
            [sys.executable, "-m", "celery", "-A", "worker", "purge", "-f", "-Q", ALL_QUEUES],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    name = name or f"test-{uuid.uuid4().hex[:6]}"
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"worker-{name}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "-l",
            "info",
            "-c",
            str(concurrency),
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_ready(proc, log_path)
        proc.log_path = log_path
        proc.node_name = f"{name}@{socket.gethostname()}"
        yield proc
    finally:
        stop(proc)


def _wait_ready(
    proc: subprocess.Popen, log_path: Path, timeout: float = 60, needle: bytes = b" ready."
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log_path.stem} exited with {proc.returncode}; see {log_path}")
        if needle in log_path.read_bytes():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{log_path.stem} not ready after {timeout}s; see {log_path}")


@contextmanager
def outbox_relay(env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``python -m worker.relay`` as the launcher starts it, with ``env`` over the
    test environment; the log goes to ``artifacts/relay-<name>.log``."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"relay-{uuid.uuid4().hex[:6]}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.relay"],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_ready(proc, log_path, needle=b"publishing the outbox")
        proc.log_path = log_path
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # a test may have paused it
        stop(proc)


@contextmanager
def paused(proc: subprocess.Popen) -> Iterator[None]:
    """SIGSTOP ``proc``'s process group for the block (as a hung or swapped-out
    process would be), SIGCONT after it."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    from tools.launch import stop_group

    stop_group(proc, timeout)


def pool_children(proc: subprocess.Popen) -> list[int]:
    """PIDs of a prefork worker's pool processes."""
    import psutil

    return [child.pid for child in psutil.Process(proc.pid).children(recursive=False)]


class Inbox:
    """What a real SMTP server (aiosmtpd) received, thread-safe."""

    def __init__(self) -> None:
        self._messages: list[Message] = []
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def refuse(self, address: str) -> None:
        """Answer ``RCPT TO`` for ``address`` with 550 from now on, as a real relay
        does for a mailbox that does not exist (RFC 5321 §4.2.2)."""
        with self._lock:
            self._refused.add(address.lower())

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self._lock:
            if address.lower() in self._refused:
                return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self._lock:
            raw = envelope.original_content or envelope.content
            self._messages.append(email.message_from_bytes(raw, policy=email.policy.default))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        with self._lock:
            return [m for m in self._messages if m["To"] == address]


@contextmanager
def smtp_server(port: int) -> Iterator[Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@contextmanager
def web_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """The web process as the launcher starts it (gunicorn, gthread), on a free port.

    Yields its base URL; the log goes to ``artifacts/web-<port>.log``.
    """
    from config import Settings
    from tools.launch import wait_healthy, web_command

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    full_env = {**os.environ, **(env or {}), "WEB_PORT": str(port), "WEB_THREADS": "1200"}
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"web-{port}.log"
    proc = subprocess.Popen(
        web_command(Settings.from_env(full_env)),
        cwd=REPO,
        env=full_env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, log_path)
        yield base
    finally:
        stop(proc)
