"""Celery's own behaviour under Orion's settings, on the real RabbitMQ and Redis.

Uses the ``celery_app`` fixture of ``celery.contrib.pytest`` (re-exported by
pytest-celery) and Celery's ``start_worker``: a worker thread on the real
broker, never eager mode. (pytest-celery 1.x replaces the ``celery_worker``
fixture with a Docker container, and no Docker engine runs here.)
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from kombu import Queue

import celeryconfig
from tests.support.factories import eventually

ATTEMPTS: dict[str, list[float]] = {}


@pytest.fixture(scope="session")
def celery_config():
    names = [n for n in dir(celeryconfig) if n.islower() and not n.startswith("_")]
    config = {n: getattr(celeryconfig, n) for n in names}
    queue = f"orion.test.{uuid.uuid4().hex[:6]}"  # deleted by RabbitMQ when the worker stops
    config.update(
        task_default_queue=queue,
        task_default_routing_key=queue,
        task_queues=[Queue(queue, routing_key=queue, auto_delete=True)],
        task_routes={},
        task_create_missing_queues=False,
        beat_schedule={},
        task_ignore_result=False,
        worker_send_task_events=False,
    )
    return config


def test_retry_with_countdown_arrives(celery_app):
    """celery#9867: native delayed delivery on quorum queues dropped countdown
    messages before RabbitMQ 4.0.1. Orion uses classic queues; a 2 s countdown
    retry must be redelivered and run."""

    @celery_app.task(bind=True, name="test.retry_once", max_retries=3, ignore_result=True)
    def retry_once(self, key: str) -> None:
        ATTEMPTS.setdefault(key, []).append(time.monotonic())
        if len(ATTEMPTS[key]) == 1:
            raise self.retry(countdown=2)

    key = uuid.uuid4().hex
    # The worker runs in a thread of this process, so its attempts are visible here.
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        retry_once.delay(key)
        eventually(lambda: len(ATTEMPTS.get(key, [])) == 2, timeout=30)
    first, second = ATTEMPTS[key]
    assert second - first >= 1.9


def test_orion_queues_are_durable_classic_queues(celery_app):
    from worker import app

    with app.connection_for_write() as conn:  # declare them as a worker would
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "type", "durable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {line.split()[0]: line.split()[1:] for line in listing.splitlines() if line.strip()}
    for name in ("orion.saga", "orion.fulfilment", "orion.notify"):
        assert rows[name] == ["classic", "true"]


def test_queues_declared_without_priorities_are_redeclared_when_empty_and_kept_when_not(uid):
    import pytest
    from celery import Celery
    from kombu import Exchange, Queue

    from worker.queues import QueueUpgradeBlocked, ensure_queues

    exchange = Exchange("orion", type="direct", durable=True)
    old, busy = f"orion.test-old-{uid}", f"orion.test-busy-{uid}"
    app = Celery("upgrade", set_as_current=False)
    app.config_from_object("celeryconfig")
    with app.connection_for_write() as conn:
        channel = conn.channel()
        for name in (old, busy):  # as an older Orion declared them: no x-max-priority
            Queue(name, exchange, routing_key=name, durable=True)(channel).declare()
        with conn.Producer() as producer:
            producer.publish({"x": 1}, exchange=exchange, routing_key=busy)
    try:
        app.conf.task_queues = [Queue(old, exchange, routing_key=old, durable=True, max_priority=9)]
        assert ensure_queues(app) == [old]
        assert ensure_queues(app) == []  # now it matches
        app.conf.task_queues = [Queue(busy, exchange, routing_key=busy, durable=True, max_priority=9)]
        with pytest.raises(QueueUpgradeBlocked, match="1 message"):
            ensure_queues(app)
    finally:
        with app.connection_for_write() as conn:
            for name in (old, busy):
                conn.channel().queue_delete(name)
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True, check=True
    ).stdout
    assert old not in listing and busy not in listing
