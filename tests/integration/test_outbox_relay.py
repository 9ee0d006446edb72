"""The outbox relay: rows published once their transaction committed and its
connection went back to the pool; rows of a rolled-back transaction never."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from models import OutboxMessage, unit_of_work
from models.db import get_engine
from models.outbox import SAGA_START, enqueue
from services.ordering import place_order
from tests.support.factories import count, customer, order_body, product


def _undispatched(order_id) -> int:
    return count(OutboxMessage, OutboxMessage.dispatched_at.is_(None),
                 OutboxMessage.payload["order_id"].as_string() == str(order_id))


def test_a_placed_order_is_published_after_its_commit(uid):
    user, sku = customer(uid), product(uid, on_hand=10)
    placed = place_order(user.id, order_body([(sku, 1)]), None)
    with unit_of_work() as session:
        row = session.scalar(select(OutboxMessage).where(
            OutboxMessage.payload["order_id"].as_string() == str(placed.order_id)))
    assert row.dispatched_at is not None and row.attempts == 1


def test_a_rolled_back_transaction_publishes_nothing(uid):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), unit_of_work() as session:
        message = enqueue(session, SAGA_START, {"order_id": f"rolled-back-{uid}"})
        session.flush()
        raise Boom
    assert message.id is not None
    assert count(OutboxMessage, OutboxMessage.payload["order_id"].as_string() == f"rolled-back-{uid}") == 0


def test_more_concurrent_placements_than_pooled_connections_all_succeed(uid):
    # Publishing inside the commit, while the request still held its connection,
    # needed a second one: with every pooled connection held by a request that
    # waited for another, requests failed after the pool's 30 s timeout.
    pool = get_engine().pool
    clients = pool.size() + pool._max_overflow + 6
    users = [customer(f"{uid}{i}") for i in range(clients)]
    sku = product(uid, on_hand=1000)
    with ThreadPoolExecutor(clients) as threads:
        placed = list(threads.map(lambda u: place_order(u.id, order_body([(sku, 1)]), None), users))
    assert len({p.order_id for p in placed}) == clients
    assert all(_undispatched(p.order_id) == 0 for p in placed)
