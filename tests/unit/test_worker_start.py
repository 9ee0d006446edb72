"""A worker whose queues cannot be upgraded stops at start instead of running
without them: Celery's signal dispatch logs a receiver's exception and goes on,
so the refusal must get through it (worker.signals._ensure_queues)."""

import pytest
from celery.signals import worker_init

import worker.queues
from worker.signals import _ensure_queues


class Sender:
    """What worker_init is sent with: the worker, which has ``app``."""

    app = object()


def test_a_blocked_queue_upgrade_stops_the_worker_through_celery_s_dispatch(monkeypatch):
    def blocked(app):
        raise worker.queues.QueueUpgradeBlocked("queue orion.saga ... still has 3 message(s)")

    monkeypatch.setattr(worker.queues, "ensure_queues", blocked)
    sender = Sender()
    worker_init.connect(_ensure_queues, weak=False)  # as worker.signals.connect_signals does
    try:
        with pytest.raises(SystemExit) as stopped:
            worker_init.send(sender=sender)
    finally:
        worker_init.disconnect(_ensure_queues)
    assert stopped.value.code == 1


def test_a_broker_that_is_down_does_not_stop_it(monkeypatch):
    def down(app):
        raise OSError("connection refused")

    monkeypatch.setattr(worker.queues, "ensure_queues", down)
    with pytest.raises(OSError):  # Celery's dispatch logs this one and goes on
        _ensure_queues(sender=Sender())
