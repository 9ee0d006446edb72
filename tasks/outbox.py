"""Outbox relay: publish outbox rows to the broker after their transaction commits,
and a beat job that republishes rows a crashed process left unsent.

Publishing twice is harmless (every saga step is idempotent); never publishing
would lose an order, so a row is marked dispatched only after the broker
confirmed the message.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import shared_task
from kombu.exceptions import KombuError, OperationalError as BrokerError
from sqlalchemy import select
from sqlalchemy.orm import Session

from config import get_settings
from models import Order, OrderLine, OutboxMessage, unit_of_work, utcnow
from models.outbox import SAGA_COMPENSATE, SAGA_RESUME, SAGA_START, publish_on_commit

log = logging.getLogger(__name__)
BROKER_ERRORS = (BrokerError, KombuError, ConnectionError, OSError)


def install() -> None:
    """Publish every process's committed outbox rows right after their COMMIT
    (``models.outbox.publish_on_commit``); the web app and the worker call it.

    Imports the Celery app now: importing it inside a commit hook would add
    Session listeners while SQLAlchemy iterates them.
    """
    import worker  # noqa: F401

    publish_on_commit(publish)


def publish(ids: list[int]) -> int:
    """Publish the undispatched rows among ``ids``; returns how many were sent.

    Each row is locked while it is sent, so the sweeper and a request never
    send the same row at once. Raises a broker error if the broker is down.
    """
    from worker import app
    from worker.results import release_pending_results

    sent = 0
    for message_id in ids:
        with unit_of_work() as session:
            row = session.scalar(select(OutboxMessage)
                                 .where(OutboxMessage.id == message_id,
                                        OutboxMessage.dispatched_at.is_(None))
                                 .with_for_update(skip_locked=True))
            if row is None:
                continue
            row.attempts += 1
            _signature_for(session, row).apply_async(headers=row.headers or None)
            row.dispatched_at = utcnow()
            sent += 1
    release_pending_results(app)
    return sent


def _signature_for(session: Session, row: OutboxMessage):
    from tasks.saga import forward_canvas
    from worker import app

    order_id = row.payload["order_id"]
    if row.topic == SAGA_COMPENSATE:
        return app.signature("saga.compensate", args=(order_id,), ignore_result=True)
    key = uuid.UUID(order_id)
    run = session.scalar(select(Order.saga_run).where(Order.id == key))
    warehouses = list(session.scalars(select(OrderLine.warehouse).where(OrderLine.order_id == key)
                                      .distinct()))
    from_task = None
    if row.topic == SAGA_RESUME and row.payload.get("from_step"):
        from_task = f"saga.{row.payload['from_step']}"
    elif row.topic != SAGA_START and row.topic != SAGA_RESUME:
        raise ValueError(f"unknown outbox topic {row.topic!r}")
    return forward_canvas(app, order_id, run, warehouses, from_task)


@shared_task(name="outbox.republish_unsent", ignore_result=True)
def republish_unsent(batch: int = 500, older_than: float | None = None) -> int:
    """Beat job: publish rows still unsent after ``older_than`` seconds
    (default ``OUTBOX_STALE_SECONDS``); returns how many were sent."""
    age = get_settings().outbox_stale_s if older_than is None else older_than
    cutoff = utcnow() - timedelta(seconds=age)
    with unit_of_work() as session:
        ids = list(session.scalars(select(OutboxMessage.id)
                                   .where(OutboxMessage.dispatched_at.is_(None),
                                          OutboxMessage.created_at < cutoff)
                                   .order_by(OutboxMessage.id).limit(batch)))
    sent = publish(ids) if ids else 0
    if sent:
        log.warning("outbox: republished %d unsent message(s)", sent)
    return sent
