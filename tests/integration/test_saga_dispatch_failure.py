"""A step that commits, and then the saga's next message cannot be sent: here the
worker's result backend is a Redis that does not answer, so the chord that
follows ``validate_order`` cannot be set up (issue 9: a Redis outage after a
capture refunded a healthy order). Nothing may be undone: the order keeps what
it did, and goes on once messages flow again. Its own module: no other worker
may run beside the broken one."""

from __future__ import annotations

from sqlalchemy import select

from models import OrderEvent, OutboxMessage, unit_of_work
from models.outbox import SAGA_RESUME
from services.safety_net import redrive_stalled_sagas
from tasks.base import NOT_SENT
from tests.integration.test_saga_faults import kinds, stock
from tests.support.factories import customer, eventually, place, product, wait_for
from tests.support.processes import celery_worker

NOBODY_LISTENS = "redis://127.0.0.1:1/0"


def events(order_id) -> list[tuple[str, str | None]]:
    with unit_of_work() as session:
        return [
            (e.status, e.detail)
            for e in session.scalars(
                select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.seq)
            )
        ]


def resumes(order_id) -> list[OutboxMessage]:
    with unit_of_work() as session:
        return [
            row
            for row in session.scalars(select(OutboxMessage).where(OutboxMessage.topic == SAGA_RESUME))
            if row.payload.get("order_id") == str(order_id)
        ]


def test_a_step_whose_successor_cannot_be_sent_is_resumed_not_compensated(inbox, uid):
    user, sku = customer(uid), product(uid, on_hand=10)
    with celery_worker({"RESULT_BACKEND": NOBODY_LISTENS}) as broken:
        order_id = place(user, [(sku, 2)])
        stalls = eventually(
            lambda: [d for _, d in events(order_id) if d and d.startswith(NOT_SENT)], timeout=90
        )
        assert stalls[0].startswith(f"{NOT_SENT} after validate_order")
        # The relay publishes the resumption; the broken worker fails to send the
        # next step again, and this time leaves the order to the safety net.
        eventually(lambda: broken.log_path.read_bytes().count(b"the next step was not sent") >= 2, timeout=90)
    history = events(order_id)
    assert [d for _, d in history if d and d.startswith(NOT_SENT)] == stalls[:1]
    assert len(resumes(order_id)) == 1
    assert all(status == "pending" for status, _ in history)  # nothing compensated
    assert kinds(order_id) == [] and stock(sku) == (10, 0)

    with celery_worker():
        assert str(order_id) in redrive_stalled_sagas(after_s=0)
        order = wait_for(order_id, timeout=60)
    assert (order.status, order.failure) == ("completed", None)
    assert kinds(order_id) == ["authorization", "capture"]
    assert stock(sku) == (8, 0)
    eventually(lambda: inbox.to(user.email))
    assert len(inbox.to(user.email)) == 1  # the worker has stopped: nothing more can come
