"""Notifications leave a process only after their transaction committed (and
never when it rolled back), checked on the real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models import Order, OrderEvent, read_only, record_event, unit_of_work
from progress import hooks
from tests.support.factories import customer, place, product


class RecordingRelay:
    """Stands in for the Socket.IO relay; notes what another connection could see
    at the moment each batch is emitted."""

    def __init__(self) -> None:
        self.batches: list[tuple[list, int]] = []

    def emit_all(self, notifications) -> None:
        order_id = notifications[0].payload["order_id"]
        with read_only() as session:  # a separate connection: sees committed rows only
            visible = session.scalar(
                select(func.count()).select_from(OrderEvent).where(OrderEvent.order_id == order_id)
            )
        self.batches.append((notifications, visible))


@pytest.fixture
def relay(monkeypatch):
    """Installed after the test's order exists, so only the test's own events pass."""
    hooks.install()
    recorder = RecordingRelay()
    monkeypatch.setattr(hooks, "get_relay", lambda: recorder)
    return recorder


@pytest.fixture
def order_id(uid):
    return place(customer(uid), [(product(uid, 5), 1)])


def test_events_are_emitted_after_their_commit(order_id, relay):
    with unit_of_work() as session:
        order = session.get(Order, order_id)
        record_event(session, order, step="test_step", step_status="succeeded", attempt=1)
        record_event(session, order, step="test_step_2", step_status="succeeded", attempt=1)
        assert relay.batches == [], "nothing leaves before the commit"
    [(notifications, visible)] = relay.batches
    assert [n.payload["step"] for n in notifications] == ["test_step", "test_step_2"]
    assert visible == notifications[-1].payload["seq"], "emitted once the rows were visible"
    assert notifications[0].rooms[0] == f"order:{order_id}"


def test_a_rolled_back_transaction_emits_nothing(order_id, relay):
    with pytest.raises(RuntimeError), unit_of_work() as session:
        record_event(session, session.get(Order, order_id), step="doomed")
        raise RuntimeError("step failed")
    with unit_of_work() as session:
        record_event(session, session.get(Order, order_id), step="after")
    [(notifications, _)] = relay.batches
    assert [n.payload["step"] for n in notifications] == ["after"]
