"""The saga's first and last forward steps, and compensation's entry and end."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from celery import shared_task
from sqlalchemy import bindparam, func, select

from models import OrderLine, SagaStep
from models import order as lifecycle
from models.saga_log import COMPENSATION, FORWARD, SUCCEEDED
from tasks.base import CompensationTask, Halt, SagaTask

if TYPE_CHECKING:
    from tasks.fulfilment import FulfilmentResult

LINES, STEPS = OrderLine.__table__, SagaStep.__table__
# Lines, quantities out of range, their total, and this run's validate_order step.
_VALIDATE = select(
    func.count(),
    func.count().filter(~LINES.c.quantity.between(1, 1000)),
    func.coalesce(func.sum(LINES.c.line_total), 0),
    select(STEPS.c.status)
    .where(
        STEPS.c.order_id == bindparam("b_id"),
        STEPS.c.name == "validate_order",
        STEPS.c.run == bindparam("b_run"),
    )
    .scalar_subquery(),
).where(LINES.c.order_id == bindparam("b_id"))


class InvalidOrder(Exception):
    """The order breaks a rule the API should have enforced; not worth retrying."""


@shared_task(bind=True, base=SagaTask, name="saga.validate_order")
def validate_order(self: SagaTask, order_id: str, run: int) -> None:
    """Check the stored order (lines, quantities, totals) before anything is held.

    Raises InvalidOrder (no retry: the order fails and compensates).
    """
    with self.forward(order_id, run) as tx:
        if tx is None:
            return
        count, bad, total, status = tx.conn.execute(_VALIDATE, {"b_id": tx.order.id, "b_run": run}).one()
        if status == SUCCEEDED:  # a redelivered message
            return
        _check(count, bad, total, tx.order.total)
        tx.record_step(
            "validate_order",
            self.step_kind,
            self.attempt,
            SUCCEEDED,
            f"{count} line(s), total {tx.order.total} {tx.order.currency}",
        )


def _check(lines: int, bad_quantities: int, lines_total: Decimal, order_total: Decimal) -> None:
    if not 1 <= lines <= 100:
        raise InvalidOrder(f"order has {lines} lines; 1 to 100 allowed")
    if bad_quantities:
        raise InvalidOrder("a line quantity is outside 1..1000")
    if lines_total != order_total:
        raise InvalidOrder("order total does not match its lines")


@shared_task(bind=True, base=SagaTask, name="saga.complete_order")
def complete_order(
    self: SagaTask, header_results: list[FulfilmentResult | None], order_id: str, run: int
) -> None:
    """Chord join after the confirmation email and the shipments: the order is done."""
    if any(result and result.get("halted") for result in header_results):
        raise Halt()
    with self.forward(order_id, run) as tx:
        if tx is None:
            return
        tx.transition_to(lifecycle.COMPLETED)
        tx.record_step("complete_order", self.step_kind, self.attempt, SUCCEEDED)


@shared_task(bind=True, base=CompensationTask, name="saga.compensate")
def compensate(self: CompensationTask, order_id: str) -> None:
    """Entry of compensation: undo, latest first, every forward step that ran."""
    from tasks.saga import compensation_canvas
    from worker import app

    with self.locked(order_id) as tx:
        if tx.order.status != lifecycle.COMPENSATING:
            return
        ran = set(
            tx.conn.execute(
                select(SagaStep.__table__.c.name).where(
                    SagaStep.__table__.c.order_id == tx.order.id, SagaStep.__table__.c.kind == FORWARD
                )
            ).scalars()
        )
    short_names = {name.split(":", 1)[0] for name in ran}
    compensation_canvas(app, order_id, short_names).apply_async()


@shared_task(bind=True, base=CompensationTask, name="saga.finish_compensation")
def finish_compensation(self: CompensationTask, order_id: str) -> None:
    """Every undo is done: the order ends ``cancelled`` (business) or ``failed`` (fault)."""
    with self.locked(order_id) as tx:
        if tx.order.status != lifecycle.COMPENSATING:
            return
        tx.transition_to(lifecycle.CANCELLED if tx.order.cancel_reason else lifecycle.FAILED)
        tx.record_step(
            "finish_compensation",
            COMPENSATION,
            self.attempt,
            SUCCEEDED,
            tx.order.cancel_reason or tx.order.failure,
        )
