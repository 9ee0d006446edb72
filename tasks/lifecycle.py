"""The saga's first and last forward steps, and compensation's entry and end."""
from __future__ import annotations

from celery import shared_task
from sqlalchemy import select

from models import Order, SagaStep, unit_of_work
from models import order as lifecycle
from models.saga_log import COMPENSATION
from tasks import journal
from tasks.base import CompensationTask, Halt, SagaTask


class InvalidOrder(Exception):
    """The order breaks a rule the API should have enforced; not worth retrying."""


@shared_task(bind=True, base=SagaTask, name="saga.validate_order")
def validate_order(self, order_id: str, run: int) -> None:
    """Check the stored order (lines, quantities, totals) before anything is held."""
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        if not journal.should_run(order, run, lifecycle.PENDING, Halt):
            return
        if journal.already_succeeded(session, order, "validate_order"):
            return
        _check(order)
        journal.complete_step(session, order, "validate_order", self.step_kind, self.attempt,
                              f"{len(order.lines)} line(s), total {order.total} {order.currency}")


def _check(order: Order) -> None:
    if not 1 <= len(order.lines) <= 100:
        raise InvalidOrder(f"order has {len(order.lines)} lines; 1 to 100 allowed")
    if any(not 1 <= line.quantity <= 1000 for line in order.lines):
        raise InvalidOrder("a line quantity is outside 1..1000")
    if sum(line.line_total for line in order.lines) != order.total:
        raise InvalidOrder("order total does not match its lines")


@shared_task(bind=True, base=SagaTask, name="saga.complete_order")
def complete_order(self, header_results: list, order_id: str, run: int) -> None:
    """Chord join after the confirmation email and the shipment: the order is done."""
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        if not journal.should_run(order, run, lifecycle.SHIPPED, Halt):
            return
        if any(result and result.get("halted") for result in header_results):
            raise Halt()
        order.transition_to(lifecycle.COMPLETED)
        journal.complete_step(session, order, "complete_order", self.step_kind, self.attempt)


@shared_task(bind=True, base=CompensationTask, name="saga.compensate")
def compensate(self, order_id: str) -> None:
    """Entry of compensation: undo, latest first, every forward step that ran."""
    from tasks.saga import compensation_canvas
    from worker import app

    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        if order.status != lifecycle.COMPENSATING:
            return
        ran = set(session.scalars(select(SagaStep.name).where(
            SagaStep.order_id == order.id, SagaStep.kind == "forward")))
    short_names = {name.split(":", 1)[0] for name in ran}
    compensation_canvas(app, order_id, short_names).apply_async()


@shared_task(bind=True, base=CompensationTask, name="saga.finish_compensation")
def finish_compensation(self, order_id: str) -> None:
    """Every undo is done: the order ends ``cancelled`` (business) or ``failed`` (fault)."""
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        if order.status != lifecycle.COMPENSATING:
            return
        order.transition_to(order.outcome_after_compensation)
        journal.complete_step(session, order, "finish_compensation", COMPENSATION, self.attempt,
                              order.cancel_reason or order.failure)
