"""Fixtures for tests that need Orion's processes: a real SMTP server, the outbox
relay and a real ``celery -A worker worker`` on RabbitMQ, PostgreSQL and Redis."""

from __future__ import annotations

import os

import pytest

from tests.support.processes import celery_worker, outbox_relay, smtp_server

FAST_RETRIES = {"SAGA_STEP_MAX_RETRIES": "3", "SAGA_RETRY_BACKOFF_MAX": "2"}


# Long enough that an order published within seconds shows the relay was woken
# by PostgreSQL's NOTIFY at commit, not by its poll.
RELAY_POLL_SECONDS = "60"


@pytest.fixture(scope="session")
def relay_process(database):
    """The outbox relay, as the launcher runs it, for the whole session: orders
    placed by the tests reach the broker through it."""
    with outbox_relay({"OUTBOX_POLL_SECONDS": RELAY_POLL_SECONDS}) as proc:
        yield proc


@pytest.fixture(autouse=True)
def _migrated(database, relay_process):
    """Every integration test runs against the migrated test database, its
    committed outbox rows published by the relay."""


@pytest.fixture(scope="session")
def inbox():
    with smtp_server(int(os.environ["SMTP_PORT"])) as received:
        yield received


@pytest.fixture(scope="module")
def worker(inbox):
    """A worker on every queue, with short retry backoffs."""
    with celery_worker(FAST_RETRIES) as proc:
        yield proc
