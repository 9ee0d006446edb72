"""Test settings: services mode on the machine's real PostgreSQL, RabbitMQ and Redis.

The database ``orion_test`` (override with ``ORION_TEST_DATABASE_URL``) is made
afresh and migrated to head once per session; within a session tests use
unique ids instead of truncating tables.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid

import pytest
import redis

TEST_DB = os.environ.get("ORION_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/orion_test")
os.environ.setdefault("ORION_MODE", "services")
os.environ["DATABASE_URL"] = TEST_DB
os.environ.setdefault("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
os.environ.setdefault("RESULT_BACKEND", "redis://127.0.0.1:6379/1")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
os.environ.setdefault("PAYMENT_LATENCY_MS", "0")
# Tests and their replays register many customers from 127.0.0.1; the per-address
# limit has tests of its own (test_api_auth), with the app's config lowered.
os.environ.setdefault("REGISTER_LIMIT", "100000 per hour")
# Services mode signs tokens with a key of its own (config.settings.jwt_secret);
# one per test run, inherited by every process the tests start.
os.environ.setdefault("JWT_SECRET_KEY", secrets.token_urlsafe(48))
os.environ.setdefault("SMTP_PORT", "8026")
# Redis pub/sub ignores the database number: keep the tests' Socket.IO events
# off a platform that may be running on the same Redis.
os.environ.setdefault("SOCKETIO_CHANNEL", "orion-socketio-test")
# prometheus-client's multiprocess mode, as the launcher runs it: this process and
# the workers and web servers the tests start write their metrics here.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="orion-test-metrics-")


@pytest.fixture(scope="session")
def database():
    """Create and migrate the test database once per session."""
    from tools.dbsetup import ensure_database, upgrade

    ensure_database(TEST_DB, fresh=True)
    # Rate-limit keys and revoked tokens name user ids, which a fresh database reuses.
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    upgrade(TEST_DB)
    yield TEST_DB


@pytest.fixture
def uid() -> str:
    """A short unique id for names, emails and SKUs made by one test."""
    return uuid.uuid4().hex[:10]
