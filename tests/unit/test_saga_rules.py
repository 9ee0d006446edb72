"""The saga's rules without I/O: the order state machine, the step gate, the
retry backoff, and the forward and compensation canvases."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import Celery

from models import order as lifecycle
from models.catalog import WAREHOUSES, warehouse_for
from models.order import InvalidTransition, Order
from tasks.journal import should_run
from tasks.saga import INLINE, ORDER_SAGA, RUNS_IN, Stage, Step, compensation_canvas, forward_canvas


class Halted(Exception):
    pass


def _order(status: str, run: int = 1):
    return SimpleNamespace(status=status, saga_run=run)


@pytest.mark.parametrize(
    "status,runs_in,expected",
    [
        ("pending", "pending", True),
        ("stock_reserved", "pending", False),  # a duplicate validate: pass through
        ("completed", "confirmed", False),
        ("shipped", "confirmed", False),  # every parcel shipped already
        ("awaiting_payment", "pending", False),
    ],
)
def test_should_run_runs_in_its_status_and_passes_through_later_ones(status, runs_in, expected):
    assert should_run(_order(status), 1, runs_in, Halted) is expected


@pytest.mark.parametrize(
    "status,run,runs_in",
    [
        ("compensating", 1, "stock_reserved"),
        ("cancelled", 1, "pending"),
        ("awaiting_payment", 1, "stock_reserved"),  # parked: wait for pay-again
        ("pending", 1, "stock_reserved"),  # not there yet
        ("stock_reserved", 2, "stock_reserved"),  # a stale run's message
    ],
)
def test_should_run_halts_stale_parked_cancelled_and_early_steps(status, run, runs_in):
    order = _order(status, run=1 if run == 2 else run)
    with pytest.raises(Halted):
        should_run(order, run, runs_in, Halted)


def test_every_forward_task_and_join_declares_the_status_it_runs_in():
    tasks = {step.task for stage in ORDER_SAGA for step in stage.steps}
    joins = {stage.join for stage in ORDER_SAGA if stage.join}
    assert set(RUNS_IN) == tasks | joins
    assert set(RUNS_IN.values()) <= set(lifecycle.STATUSES)


def test_only_the_payment_steps_run_inline_and_a_chord_cannot():
    assert {"saga.authorize_payment", "saga.capture_payment"} == INLINE
    with pytest.raises(ValueError, match="not a chord"):
        Stage((Step("saga.x", per_warehouse=True),), runs_in="pending", inline=True)
    with pytest.raises(ValueError, match="not a chord"):
        Stage((Step("saga.x"), Step("saga.y")), runs_in="pending", inline=True)


def test_the_state_machine_refuses_moves_the_lifecycle_does_not_allow():
    order = Order(status="shipped")
    with pytest.raises(InvalidTransition):
        order.transition_to("compensating")  # past the pivot nothing is undone
    order.transition_to("completed")
    assert order.is_final and order.finished_at is not None
    with pytest.raises(InvalidTransition):
        order.transition_to("pending")


def test_a_failed_order_can_start_a_new_run_and_a_cancelled_one_cannot():
    assert "pending" in lifecycle.TRANSITIONS["failed"]
    assert lifecycle.TRANSITIONS["cancelled"] == frozenset()


def test_backoff_is_equal_jitter_capped():
    from tasks.base import SagaTask

    task = SagaTask()
    task.backoff_cap = 30
    for retries, ceiling in [(0, 1), (1, 2), (3, 8), (10, 30)]:
        waits = [task.backoff(retries) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > 0  # jitter


def _app() -> Celery:
    app = Celery("rules", set_as_current=False)
    app.conf.result_backend = "redis://127.0.0.1:1/0"  # never contacted: only its chord support is read
    return app


def _tasks(sig) -> list[tuple[str, tuple]]:
    """(name, args) of every task in a canvas, in order (chord headers, then the body)."""
    if hasattr(sig, "tasks") and not hasattr(sig, "body"):
        return [t for part in sig.tasks for t in _tasks(part)]
    if hasattr(sig, "body"):
        return [t for part in sig.tasks for t in _tasks(part)] + _tasks(sig.body)
    return [(sig.task, tuple(sig.args))]


def test_the_forward_canvas_has_one_reservation_and_one_parcel_per_warehouse():
    tasks = _tasks(forward_canvas(_app(), "o1", 1, ["MAN", "LDN", "MAN"]))
    names = [name for name, _ in tasks]
    assert names == [
        "saga.validate_order",
        "saga.reserve_stock",
        "saga.reserve_stock",
        "saga.collect_reservations",
        "saga.authorize_payment",
        "saga.capture_payment",
        "saga.send_confirmation_email",
        "saga.create_shipment",
        "saga.create_shipment",
        "saga.complete_order",
    ]
    assert [args for name, args in tasks if name == "saga.reserve_stock"] == [
        ("o1", 1, "LDN"),
        ("o1", 1, "MAN"),
    ]


def test_tasks_per_order_do_not_grow_with_lines():
    every = sorted(WAREHOUSES)
    assert len(_tasks(forward_canvas(_app(), "o1", 1, every * 40))) == 2 * len(WAREHOUSES) + 6


def test_a_resumed_canvas_starts_at_the_step_asked_for():
    tasks = _tasks(forward_canvas(_app(), "o1", 2, ["LDN"], from_task="saga.authorize_payment"))
    assert tasks[0] == ("saga.authorize_payment", ("o1", 2))


def test_compensation_undoes_what_ran_latest_first_then_finishes():
    names = [
        n
        for n, _ in _tasks(
            compensation_canvas(
                _app(),
                "o1",
                {
                    "validate_order",
                    "reserve_stock",
                    "collect_reservations",
                    "authorize_payment",
                    "capture_payment",
                    "create_shipment",
                },
            )
        )
    ]
    assert names == [
        "saga.cancel_shipment",
        "saga.refund_payment",
        "saga.void_authorization",
        "saga.release_stock",
        "saga.finish_compensation",
        "saga.send_cancellation_email",
    ]


def test_compensation_also_undoes_the_external_step_after_the_last_recorded_one():
    # The worker may have died after the provider answered and before the step's row was written.
    names = [
        n
        for n, _ in _tasks(
            compensation_canvas(_app(), "o1", {"validate_order", "reserve_stock", "collect_reservations"})
        )
    ]
    assert names[:2] == ["saga.void_authorization", "saga.release_stock"]
    assert "saga.refund_payment" not in names


def test_compensation_of_a_step_that_undoes_nothing_runs_only_the_epilogue():
    names = [n for n, _ in _tasks(compensation_canvas(_app(), "o1", {"validate_order"}))]
    assert names == ["saga.finish_compensation", "saga.send_cancellation_email"]


def test_warehouses_are_stable_and_spread():
    skus = [f"{n}" for n in range(20000, 23000)]
    assert all(warehouse_for(s) == warehouse_for(s) for s in skus[:10])
    shares = {w: sum(warehouse_for(s) == w for s in skus) / len(skus) for w in WAREHOUSES}
    assert all(0.25 < share < 0.42 for share in shares.values())
