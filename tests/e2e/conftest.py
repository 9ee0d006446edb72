"""End-to-end: Orion started as a user starts it (``python -m tools.launch``, what
``./run.sh`` runs) on the embedded default, with its own data dir and ports,
driven over HTTP, Socket.IO and a real browser."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.factories import eventually

REPO = Path(__file__).resolve().parents[2]
DATASET = REPO.parent / "shared" / "data" / "online_retail.csv.gz"
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "BROKER_URL",
    "RESULT_BACKEND",
    "REDIS_URL",
    "PAYMENT_SANDBOX_URL",
    "ORION_MODE",
    "PROMETHEUS_MULTIPROC_DIR",
)  # the launcher makes its own under the data dir
OPERATOR_EMAIL, OPERATOR_PASSWORD = "operator@e2e.orion.example", "operator password 1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def platform(tmp_path_factory):
    """The whole platform on the embedded default, with an operator account."""
    if not DATASET.exists():
        pytest.skip(f"dataset not found at {DATASET}")
    data_dir = tmp_path_factory.mktemp("embedded")
    web, smtp, flower = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(
        ORION_DATA_DIR=str(data_dir),
        WEB_PORT=str(web),
        SMTP_PORT=str(smtp),
        FLOWER_PORT=str(flower),
        PAYMENT_LATENCY_MS="0",
        RESTOCK_EVERY_SECONDS="2",
        SUPPLIER_LEAD_TIME_SECONDS="3",
    )  # restocks within a test
    log = (REPO / "artifacts").resolve()
    log.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.launch"],
        cwd=REPO,
        env=env,
        stdout=(log / "e2e-embedded-platform.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        eventually(lambda: _ready(base, proc), timeout=180, interval=0.5)
        operator = subprocess.run(
            [
                sys.executable,
                "-m",
                "tools.users",
                "create-operator",
                OPERATOR_EMAIL,
                "--name",
                "Olive Operator",
            ],
            cwd=REPO,
            env={**env, "ORION_USER_PASSWORD": OPERATOR_PASSWORD},
            capture_output=True,
            text=True,
            check=True,
        )
        yield {
            "base": base,
            "data_dir": data_dir,
            "flower": flower,
            "proc": proc,
            "env": env,
            "operator": json.loads(operator.stdout),
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def _ready(base: str, proc: subprocess.Popen) -> bool:
    assert proc.poll() is None, "the launcher exited; see artifacts/e2e-embedded-platform.log"
    try:
        return requests.get(f"{base}/readyz", timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or still booting
        return False


@pytest.fixture(scope="module")
def services_platform(tmp_path_factory):
    """The whole platform in services mode on this machine's PostgreSQL (a fresh
    database of its own), RabbitMQ and Redis; module-scoped, so its worker is gone
    before other tests use the same queues."""
    if not DATASET.exists():
        pytest.skip(f"dataset not found at {DATASET}")
    from tools.dbsetup import ensure_database

    data_dir = tmp_path_factory.mktemp("services")
    web, smtp = free_port(), free_port()
    database = "postgresql+psycopg://postgres@127.0.0.1:5432/orion_e2e"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        ORION_MODE="services",
        ORION_DATA_DIR=str(data_dir),
        DATABASE_URL=database,
        PAYMENT_SANDBOX_URL=database,
        REDIS_URL="redis://127.0.0.1:6379/2",
        RESULT_BACKEND="redis://127.0.0.1:6379/2",
        SOCKETIO_CHANNEL="orion-socketio-e2e",
        WEB_PORT=str(web),
        SMTP_PORT=str(smtp),
        PAYMENT_LATENCY_MS="0",
        RESTOCK_EVERY_SECONDS="2",
        SUPPLIER_LEAD_TIME_SECONDS="3",
    )
    ensure_database(database, fresh=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "purge",
            "-f",
            "-Q",
            "orion.saga,orion.fulfilment,orion.notify",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    log = (REPO / "artifacts").resolve()
    log.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.launch", "--no-flower"],
        cwd=REPO,
        env=env,
        stdout=(log / "e2e-services-platform.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        eventually(lambda: _ready(base, proc), timeout=180, interval=0.5)
        yield {"base": base, "data_dir": data_dir, "proc": proc, "env": env, "database": database}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
