"""Stock steps: reserve each line (chord header), collect (chord join), release (undo)."""
from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from sqlalchemy import select

from config import get_settings
from models import HELD, OrderLine, Reservation, unit_of_work, utcnow
from models import order as lifecycle
from models.catalog import RELEASED, try_reserve, unreserve
from models.saga_log import FAILED
from tasks import journal
from tasks.base import CompensationTask, Halt, SagaTask, lock_for_undo, start_compensation
from tasks.outbox import publish_after_commit


class _HaltLine(Exception):
    """Inside a chord header a branch must not vanish; it reports ``halted`` instead."""


class ReserveStockTask(SagaTask):
    abstract = True

    def step_name(self, args: tuple) -> str:
        with unit_of_work() as session:
            line = session.get(OrderLine, args[2])
            return f"reserve_stock:{line.line_no}:{line.sku}"


@shared_task(bind=True, base=ReserveStockTask, name="saga.reserve_stock")
def reserve_stock(self, order_id: str, run: int, line_id: int) -> dict:
    """Hold one line's units with one conditional UPDATE.

    Returns ``{line_id, reserved: bool}``, or ``{line_id, halted: true}`` when
    the order moved on. Short stock is a result, not an exception, so the
    chord always reaches its join.
    """
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        try:
            if not journal.should_run(order, run, lifecycle.PENDING, _HaltLine):
                return {"line_id": line_id, "reserved": True}
        except _HaltLine:
            return {"line_id": line_id, "reserved": False, "halted": True}
        line = session.get(OrderLine, line_id)
        if _held(session, line_id) is not None:
            return {"line_id": line_id, "reserved": True}
        name = f"reserve_stock:{line.line_no}:{line.sku}"
        step = journal.start_step(session, order, name, self.step_kind, self.attempt)
        if not try_reserve(session, line.sku, line.quantity):
            journal.finish_step(session, order, step, FAILED,
                                error=f"insufficient stock: {line.quantity} x {line.sku} wanted")
            return {"line_id": line_id, "reserved": False}
        hold = timedelta(seconds=get_settings().reservation_hold_s)
        session.add(Reservation(order_id=order.id, order_line_id=line_id, run=run, sku=line.sku,
                                quantity=line.quantity, status=HELD, expires_at=utcnow() + hold))
        journal.finish_step(session, order, step, "succeeded", f"{line.quantity} x {line.sku} held")
    return {"line_id": line_id, "reserved": True}


def _held(session, line_id: int) -> Reservation | None:
    return session.scalar(select(Reservation).where(Reservation.order_line_id == line_id,
                                                    Reservation.status == HELD))


@shared_task(bind=True, base=SagaTask, name="saga.collect_reservations")
def collect_reservations(self, results: list, order_id: str, run: int) -> None:
    """Chord join: all lines held moves the order on; any short line compensates."""
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        if not journal.should_run(order, run, lifecycle.PENDING, Halt):
            return
        if any(r.get("halted") for r in results):
            raise Halt()
        short = [r["line_id"] for r in results if not r["reserved"]]
        if not short:
            order.transition_to(lifecycle.STOCK_RESERVED)
            journal.complete_step(session, order, "collect_reservations", self.step_kind,
                                  self.attempt, f"{len(results)} line(s) held")
            return
        journal.note_failure(session, order, "collect_reservations", self.step_kind, self.attempt,
                             f"out of stock on {len(short)} of {len(results)} line(s)")
        order.start_compensation("out_of_stock")
        start_compensation(session, order)
        messages = session.info["outbox"]
    publish_after_commit(messages)
    raise Halt()


@shared_task(bind=True, base=CompensationTask, name="saga.release_stock")
def release_stock(self, order_id: str) -> None:
    """Undo of reserve_stock: return every held unit of the order to available stock."""
    with unit_of_work() as session:
        order = lock_for_undo(session, order_id, "release_stock")
        if order is None:
            return
        held = list(session.scalars(select(Reservation).where(
            Reservation.order_id == order.id, Reservation.status == HELD)))
        for reservation in held:
            unreserve(session, reservation.sku, reservation.quantity)
            reservation.status, reservation.closed_at = RELEASED, utcnow()
        journal.complete_step(session, order, "release_stock", self.step_kind, self.attempt,
                              f"{sum(r.quantity for r in held)} unit(s) released")
