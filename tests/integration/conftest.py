"""Fixtures for tests that need Orion's worker: a real SMTP server and a real
``celery -A worker worker`` on RabbitMQ, PostgreSQL and Redis."""
from __future__ import annotations

import os

import pytest

from tests.support.processes import celery_worker, smtp_server

FAST_RETRIES = {"SAGA_STEP_MAX_RETRIES": "3", "SAGA_RETRY_BACKOFF_MAX": "2"}


@pytest.fixture(autouse=True)
def _migrated(database):
    """Every integration test runs against the migrated test database."""


@pytest.fixture(scope="session")
def inbox():
    with smtp_server(int(os.environ["SMTP_PORT"])) as received:
        yield received


@pytest.fixture(scope="module")
def worker(inbox):
    """A worker on every queue, with short retry backoffs."""
    with celery_worker(FAST_RETRIES) as proc:
        yield proc
