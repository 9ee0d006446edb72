"""Outbox publishing: the relay's batch (``publish_batch``), which the relay
process (``python -m worker.relay``) runs whenever rows are committed, and a
beat job that runs it for rows the relay has left unsent too long.

Publishing twice is harmless (every saga step is idempotent); never publishing
would lose an order, so a row is marked dispatched only after the broker
confirmed its message (publisher confirms, see ``celeryconfig``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.canvas import Signature
from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.util.typing import TupleAny, Unpack

from config import get_settings
from models import Order, OrderLine, OutboxMessage, utcnow
from models.db import get_engine
from models.outbox import CANCELLATION_EMAIL, SAGA_COMPENSATE, SAGA_RESUME, SAGA_START

log = logging.getLogger(__name__)
BROKER_ERRORS = (BrokerError, KombuError, ConnectionError, OSError)
_outbox = OutboxMessage.__table__


def publish_batch(limit: int = 200, older_than: float | None = None) -> int:
    """Publish up to ``limit`` unsent outbox rows, oldest first; returns how many were sent.

    The rows are locked (``FOR UPDATE SKIP LOCKED``) from the read until they
    are marked dispatched, so relays and the sweeper never send one row at once.
    ``older_than`` (seconds) skips rows younger than that (the sweeper's view).
    A broker error stops the batch: the rows sent before it are marked
    dispatched, the rest stay unsent, and the error is raised after the commit.
    A row that cannot be turned into a message (an unknown topic, an order that
    is gone) is logged, counted in ``attempts`` and left unsent, and the batch
    goes on: one bad row must not hold every order behind it.
    """
    from worker import app
    from worker.results import release_pending_results

    query = (
        select(_outbox.c.id, _outbox.c.topic, _outbox.c.payload, _outbox.c.headers)
        .where(_outbox.c.dispatched_at.is_(None))
        .order_by(_outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if older_than:
        query = query.where(_outbox.c.created_at < utcnow() - timedelta(seconds=older_than))
    failure: BaseException | None = None
    with get_engine().begin() as conn:
        rows = conn.execute(query).all()
        sent: list[int] = []
        tried: list[int] = []
        for row in rows:
            tried.append(row.id)
            try:
                signature = _signature_for(conn, row)
            except (LookupError, ValueError, TypeError) as exc:  # the row, not a service
                log.error("outbox: row %s (%s) cannot be published, left unsent: %s", row.id, row.topic, exc)
                continue
            try:
                # celery-types allows only a dict here; Celery takes None for "no headers".
                signature.apply_async(headers=row.headers or None)  # type: ignore[arg-type]
            except BROKER_ERRORS as exc:
                failure = exc
                break
            sent.append(row.id)
        if tried:
            conn.execute(
                update(_outbox).where(_outbox.c.id.in_(tried)).values(attempts=_outbox.c.attempts + 1)
            )
        if sent:
            conn.execute(update(_outbox).where(_outbox.c.id.in_(sent)).values(dispatched_at=utcnow()))
    release_pending_results(app)
    if failure is not None:
        raise failure
    return len(sent)


def _signature_for(conn: Connection, row: Row[Unpack[TupleAny]]) -> Signature[Any]:
    """The message an outbox row stands for. A ``saga.start`` row written by
    ``place_order`` carries the run and warehouses; other rows read them."""
    from tasks.saga import forward_canvas
    from worker import app

    payload = row.payload
    order_id = payload["order_id"]
    if row.topic == SAGA_COMPENSATE:
        return app.signature("saga.compensate", args=(order_id,), ignore_result=True)
    if row.topic == CANCELLATION_EMAIL:
        return app.signature(CANCELLATION_EMAIL, args=(order_id,), ignore_result=True)
    if row.topic not in (SAGA_START, SAGA_RESUME):
        raise ValueError(f"unknown outbox topic {row.topic!r}")
    run, warehouses = payload.get("run"), payload.get("warehouses")
    if run is None or warehouses is None:
        key = uuid.UUID(order_id)
        run = conn.scalar(select(Order.saga_run).where(Order.id == key))
        if run is None:
            raise LookupError(f"no order {order_id}")
        warehouses = list(
            conn.scalars(select(OrderLine.warehouse).where(OrderLine.order_id == key).distinct())
        )
    from_task = None
    if row.topic == SAGA_RESUME and payload.get("from_step"):
        from_task = f"saga.{payload['from_step']}"
    return forward_canvas(app, order_id, run, sorted(warehouses), from_task)


@shared_task(name="outbox.republish_unsent", ignore_result=True)
def republish_unsent(batch: int = 500, older_than: float | None = None) -> int:
    """Beat job, the safety net behind the relay: publish rows still unsent after
    ``older_than`` seconds (default ``OUTBOX_STALE_SECONDS``); returns how many were sent."""
    age = get_settings().outbox_stale_s if older_than is None else older_than
    sent = publish_batch(batch, older_than=age)
    if sent:
        log.warning("outbox: republished %d message(s) the relay had left unsent", sent)
    return sent
