"""The outbox relay (``python -m worker.relay``): committed rows published once,
woken by PostgreSQL's NOTIFY; rows of a rolled-back transaction never; rows a
stalled relay left behind published by the sweeper or by a relay started later."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from models import OutboxMessage, unit_of_work
from models.catalog import warehouse_for
from models.outbox import SAGA_START, enqueue
from services.ordering import place_order
from tests.support.factories import count, customer, eventually, order_body, product
from tests.support.processes import outbox_relay, paused


def _undispatched(order_id) -> int:
    return count(
        OutboxMessage,
        OutboxMessage.dispatched_at.is_(None),
        OutboxMessage.payload["order_id"].as_string() == str(order_id),
    )


def _row(order_id) -> OutboxMessage | None:
    with unit_of_work() as session:
        return session.scalar(
            select(OutboxMessage).where(OutboxMessage.payload["order_id"].as_string() == str(order_id))
        )


def test_a_placed_order_is_published_once_by_the_relay_woken_at_commit(uid):
    user, sku = customer(uid), product(uid, on_hand=10)
    placed = place_order(user.id, order_body([(sku, 1)]), None)
    # The session's relay polls once a minute: published within seconds means
    # PostgreSQL's NOTIFY (migration 0004) woke it at commit.
    row = eventually(lambda: (r := _row(placed.order_id)).dispatched_at and r, timeout=10)
    assert row.attempts == 1
    assert row.payload["run"] == 1 and row.payload["warehouses"] == [warehouse_for(sku)]


def test_a_rolled_back_transaction_publishes_nothing(uid):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), unit_of_work() as session:
        message = enqueue(session, SAGA_START, {"order_id": f"rolled-back-{uid}"})
        session.flush()
        raise Boom
    assert message.id is not None
    assert count(OutboxMessage, OutboxMessage.payload["order_id"].as_string() == f"rolled-back-{uid}") == 0


def test_concurrent_placements_are_each_published_once(uid):
    clients = 24
    users = [customer(f"{uid}{i}") for i in range(clients)]
    sku = product(uid, on_hand=1000)
    with ThreadPoolExecutor(8) as threads:
        placed = list(threads.map(lambda u: place_order(u.id, order_body([(sku, 1)]), None), users))
    assert len({p.order_id for p in placed}) == clients
    eventually(lambda: all(_undispatched(p.order_id) == 0 for p in placed), timeout=20)
    assert {_row(p.order_id).attempts for p in placed} == {1}


def test_rows_left_unsent_by_a_stalled_relay_go_out_through_the_sweeper(uid, relay_process):
    from tasks.outbox import republish_unsent

    user, sku = customer(uid), product(uid, on_hand=10)
    with paused(relay_process):
        placed = place_order(user.id, order_body([(sku, 1)]), None)
        time.sleep(0.5)
        assert _undispatched(placed.order_id) == 1
        republish_unsent(older_than=60)  # too young for the sweeper yet
        assert _undispatched(placed.order_id) == 1
        assert republish_unsent(older_than=0) >= 1
        assert _undispatched(placed.order_id) == 0
    time.sleep(0.5)  # the relay, resumed, finds nothing left to send
    assert _row(placed.order_id).attempts == 1


def test_a_relay_started_after_the_commit_publishes_what_is_waiting(uid, relay_process):
    user, sku = customer(uid), product(uid, on_hand=10)
    with paused(relay_process):
        placed = place_order(user.id, order_body([(sku, 1)]), None)
        time.sleep(0.3)
        assert _undispatched(placed.order_id) == 1
        with outbox_relay({"OUTBOX_POLL_SECONDS": "60"}):  # its first look, before any NOTIFY
            eventually(lambda: _undispatched(placed.order_id) == 0, timeout=10)
    assert _row(placed.order_id).attempts == 1


def test_a_row_that_cannot_become_a_message_does_not_hold_the_ones_behind_it(uid):
    # An unknown topic, and a saga.start for an order that does not exist: each is
    # logged and left unsent; the order committed after them goes out all the same.
    with unit_of_work() as session:
        bad = [
            enqueue(session, "saga.unknown", {"order_id": f"bad-topic-{uid}"}),
            enqueue(session, SAGA_START, {"order_id": "00000000-0000-0000-0000-000000000000"}),
        ]
    user, sku = customer(uid), product(uid, on_hand=10)
    placed = place_order(user.id, order_body([(sku, 1)]), None)
    eventually(lambda: _undispatched(placed.order_id) == 0, timeout=10)
    with unit_of_work() as session:
        left = [session.get(OutboxMessage, row.id) for row in bad]
        assert all(row.dispatched_at is None and row.attempts >= 1 for row in left)
        for row in left:  # out of the way of the tests that follow
            row.dispatched_at = row.created_at
