"""Stock steps: reserve per warehouse (chord header), collect (chord join), release (undo)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any, NotRequired, TypedDict

from celery import shared_task
from sqlalchemy import bindparam, func, insert, select, update

from config import get_settings
from models import HELD, OrderLine, Reservation, SagaStep, utcnow
from models import order as lifecycle
from models.catalog import RELEASED, release_all, reserve_all
from models.saga_log import FAILED, SUCCEEDED
from tasks.base import CompensationTask, Halt, SagaTask, StepNotReady

LINES, RESERVATIONS, STEPS = OrderLine.__table__, Reservation.__table__, SagaStep.__table__


_LINES_OF = (
    select(LINES.c.id, LINES.c.sku, LINES.c.quantity)
    .where(LINES.c.order_id == bindparam("b_id"), LINES.c.warehouse == bindparam("b_wh"))
    .order_by(LINES.c.sku, LINES.c.id)
)
_INSERT_RESERVATIONS = insert(RESERVATIONS)
# This run's reservations that succeeded and failed, and how many warehouses the order has.
_RESERVED_PER_WAREHOUSE = select(
    func.count().filter(STEPS.c.status == SUCCEEDED),
    func.count().filter(STEPS.c.status == FAILED),
    select(func.count(func.distinct(LINES.c.warehouse)))
    .where(LINES.c.order_id == bindparam("b_id"))
    .scalar_subquery(),
).where(
    STEPS.c.order_id == bindparam("b_id"),
    STEPS.c.run == bindparam("b_run"),
    STEPS.c.name.like("reserve_stock:%"),
)


class _HaltBranch(Exception):
    """Inside a chord header a branch must not vanish; it reports ``halted`` instead."""


class Reserved(TypedDict):
    """What ``reserve_stock`` returns to the chord join (JSON)."""

    warehouse: str
    reserved: bool
    halted: NotRequired[bool]


class ReserveStockTask(SagaTask):
    abstract = True

    def step_name(self, args: tuple[Any, ...]) -> str:
        return f"reserve_stock:{args[2]}"


@shared_task(bind=True, base=ReserveStockTask, name="saga.reserve_stock")
def reserve_stock(self: ReserveStockTask, order_id: str, run: int, warehouse: str) -> Reserved:
    """Hold the units of every line of the order that ships from ``warehouse``,
    all or none, in one transaction (``models.catalog.reserve_all``).

    Returns ``{warehouse, reserved: bool}``, or ``{warehouse, halted: true}``
    when the order moved on. Short stock is a result, not an exception, so the
    chord always reaches its join. A redelivered message finds its step row
    and answers as the first delivery did; two deliveries at once cannot both
    hold stock (the second one's reservation rows collide, and it retries).
    The warehouses of one order run side by side: the order is claimed only
    when the step writes (``SagaTask.claiming``).
    """
    name = self.step_name((order_id, run, warehouse))
    try:
        with self.claiming(order_id, run, halt=_HaltBranch, step=name) as tx:
            if tx is None:
                return {"warehouse": warehouse, "reserved": True}
            done = tx.step_seen
            if done in (SUCCEEDED, FAILED):
                return {"warehouse": warehouse, "reserved": done == SUCCEEDED}
            started = utcnow()
            lines = tx.conn.execute(_LINES_OF, {"b_id": tx.order.id, "b_wh": warehouse}).all()
            wanted: Counter[str] = Counter()
            for line in lines:
                wanted[line.sku] += line.quantity
            short = reserve_all(tx, wanted)
            # A copy of this message running at the same time held the same rows
            # until it committed; a statement from here on sees its step row.
            done = tx.step_status(name)
            if done in (SUCCEEDED, FAILED):
                raise _DoneElsewhere(done)  # roll back what this copy did
            if short:
                tx.record_step(
                    name,
                    self.step_kind,
                    self.attempt,
                    FAILED,
                    started_at=started,
                    error=f"insufficient stock of {', '.join(short)} in {warehouse}",
                )
                return {"warehouse": warehouse, "reserved": False}
            expires = started + timedelta(seconds=get_settings().reservation_hold_s)
            tx.conn.execute(
                _INSERT_RESERVATIONS,
                [
                    {
                        "order_id": tx.order.id,
                        "order_line_id": line.id,
                        "run": run,
                        "sku": line.sku,
                        "quantity": line.quantity,
                        "status": HELD,
                        "expires_at": expires,
                        "created_at": started,
                    }
                    for line in lines
                ],
            )
            tx.record_step(
                name,
                self.step_kind,
                self.attempt,
                SUCCEEDED,
                started_at=started,
                detail=f"{sum(wanted.values())} unit(s) of {len(lines)} line(s) held in {warehouse}",
            )
    except _HaltBranch:
        return {"warehouse": warehouse, "reserved": False, "halted": True}
    except _DoneElsewhere as done:
        return {"warehouse": warehouse, "reserved": done.args[0] == SUCCEEDED}
    return {"warehouse": warehouse, "reserved": True}


class _DoneElsewhere(Exception):
    """Another delivery of the same reservation finished first (its step status)."""


@shared_task(bind=True, base=SagaTask, name="saga.collect_reservations")
def collect_reservations(self: SagaTask, results: list[Reserved], order_id: str, run: int) -> None:
    """Chord join: every warehouse held moves the order on; any short one compensates.

    Decides from the step log, not from ``results`` (a message could be forged
    or replayed); ``results`` only tells a halted branch early.
    """
    if any(r.get("halted") for r in results):
        raise Halt()
    with self.forward(order_id, run) as tx:
        if tx is None:
            return
        held, short, warehouses = tx.conn.execute(
            _RESERVED_PER_WAREHOUSE, {"b_id": tx.order.id, "b_run": run}
        ).one()
        if held == warehouses:
            tx.transition_to(lifecycle.STOCK_RESERVED)
            tx.record_step(
                "collect_reservations",
                self.step_kind,
                self.attempt,
                SUCCEEDED,
                f"stock held in {held} warehouse(s)",
            )
            return
        if not short:  # a reservation not recorded yet: decide when it is
            raise StepNotReady(f"{held} of {warehouses} warehouse reservation(s) recorded")
        tx.record_step(
            "collect_reservations",
            self.step_kind,
            self.attempt,
            FAILED,
            error=f"out of stock in {short} of {warehouses} warehouse(s)",
        )
        tx.start_compensation("out_of_stock")
    raise Halt()


@shared_task(bind=True, base=CompensationTask, name="saga.release_stock")
def release_stock(self: CompensationTask, order_id: str) -> None:
    """Undo of reserve_stock: return every held unit of the order to available stock."""
    with self.undo(order_id) as tx:
        if tx is None:
            return
        held = tx.conn.execute(
            select(RESERVATIONS.c.id, RESERVATIONS.c.sku, RESERVATIONS.c.quantity).where(
                RESERVATIONS.c.order_id == tx.order.id, RESERVATIONS.c.status == HELD
            )
        ).all()
        units: Counter[str] = Counter()
        for reservation in held:
            units[reservation.sku] += reservation.quantity
        release_all(tx, units)
        if held:
            tx.conn.execute(
                update(RESERVATIONS)
                .where(RESERVATIONS.c.id.in_([r.id for r in held]))
                .values(status=RELEASED, closed_at=utcnow())
            )
        tx.record_step(
            "release_stock",
            self.step_kind,
            self.attempt,
            SUCCEEDED,
            f"{sum(units.values())} unit(s) released",
            event=bool(held),
        )
