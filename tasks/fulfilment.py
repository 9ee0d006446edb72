"""Fulfilment steps: the confirmation email and one shipment per warehouse (run in
parallel after the capture), the shipments' undo, and the cancellation email.

An email is a row in the email outbox, unique per (order, template): claimed,
sent over SMTP, then marked sent; a redelivered task finds it sent and stops.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any, TypedDict

from celery import shared_task
from sqlalchemy import bindparam, func, insert, select, update

from config.failpoints import failpoint
from mail import outbox, templates
from mail.smtp import MailRefused
from models import OrderLine, Reservation, Shipment, utcnow
from models import order as lifecycle
from models.catalog import CONSUMED, HELD, change_on_hand, lock_stock, ship_all
from models.fulfilment import SHIPMENT_CANCELLED, SHIPMENT_CREATED
from models.saga_log import RUNNING, SUCCEEDED
from observability.logging import correlation_id
from tasks.base import CompensationTask, Halt, SagaTask, StepNotReady
from tasks.journal import SagaTx

CONFIRMABLE = (lifecycle.CONFIRMED, lifecycle.SHIPPED, lifecycle.COMPLETED)
CANCELLED_OR_FAILED = (lifecycle.CANCELLED, lifecycle.FAILED)
LINES, RESERVATIONS, SHIPMENTS = OrderLine.__table__, Reservation.__table__, Shipment.__table__
log = logging.getLogger(__name__)


_HELD_IN = (
    select(RESERVATIONS.c.id, RESERVATIONS.c.sku, RESERVATIONS.c.quantity)
    .join(LINES, LINES.c.id == RESERVATIONS.c.order_line_id)
    .where(
        RESERVATIONS.c.order_id == bindparam("b_id"),
        RESERVATIONS.c.status == HELD,
        LINES.c.warehouse == bindparam("b_wh"),
    )
)
_INSERT_SHIPMENT = insert(SHIPMENTS)
# Parcels the order still needs: its warehouses minus the shipments it has.
_PARCELS_TO_GO = select(
    select(func.count(func.distinct(LINES.c.warehouse)))
    .where(LINES.c.order_id == bindparam("b_id"))
    .scalar_subquery()
    - select(func.count())
    .select_from(SHIPMENTS)
    .where(SHIPMENTS.c.order_id == bindparam("b_id"))
    .scalar_subquery()
)


class _HaltBranch(Exception):
    """Inside a chord header a branch must not vanish; it reports ``halted`` instead."""


class FulfilmentResult(TypedDict, total=False):
    """What a fulfilment chord header returns to ``complete_order`` (JSON): ``halted``
    when the order moved on, else ``sent`` (the email) or ``shipped`` (a parcel)."""

    halted: bool
    sent: bool
    shipped: bool


class NotificationTask(SagaTask):
    """The confirmation email: it runs after the pivot (the capture), beside the
    parcels. If it fails for good (SMTP down past the retry budget) nothing is
    undone: the step stays failed, the order keeps its payment and parcels, and
    the safety net re-drives it (the email is tried again) after
    ``SAGA_REDRIVE_AFTER_SECONDS``. A refused address is not a failure at all, nor
    is an email suppressed by ``EMAIL_MAX_PER_ADDRESS_PER_HOUR`` (``_deliver``)."""

    abstract = True

    def after_failure(self, tx: SagaTx, exc: BaseException) -> None:
        return None


@shared_task(bind=True, base=NotificationTask, name="saga.send_confirmation_email")
def send_confirmation_email(self: NotificationTask, order_id: str, run: int) -> FulfilmentResult:
    """Email the customer that the order is confirmed (chord header; never halts the chord)."""
    sent = _deliver(self, order_id, templates.CONFIRMATION, "send_confirmation_email", CONFIRMABLE)
    return {"halted": True} if sent is None else {"sent": sent}


@shared_task(bind=True, base=CompensationTask, name="saga.send_cancellation_email")
def send_cancellation_email(self: CompensationTask, order_id: str) -> None:
    """Tell the customer the order was cancelled or failed (after compensation)."""
    if (
        _deliver(self, order_id, templates.CANCELLATION, "send_cancellation_email", CANCELLED_OR_FAILED)
        is None
    ):
        raise Halt()


def _deliver(
    task: SagaTask, order_id: str, template: str, step_name: str, statuses: tuple[str, ...]
) -> bool | None:
    """Claim, send and mark one email; False if it had been sent already (or was
    refused, or suppressed over its address's hourly limit), None if the
    order is not in ``statuses`` (checked under the order lock, in the claim's
    transaction, so a cancel cannot slip in between check and send)."""
    with task.locked(order_id) as tx:
        if tx.order.status not in statuses:
            return None
        try:
            message = outbox.claim(tx.conn, tx.order.id, template)
        except outbox.ClaimedElsewhere as exc:
            raise StepNotReady(str(exc)) from None
        if message is None:  # sent (or refused, or suppressed) before, e.g. in an earlier run
            tx.record_step(
                step_name, task.step_kind, task.attempt, SUCCEEDED, f"{template} sent before", event=False
            )
            return False
        if isinstance(message, outbox.Suppressed):
            # Over the address's hourly limit: an outcome, like a refusal; the saga goes on.
            log.warning("%s for order %s suppressed: %s", template, order_id, message)
            tx.record_step(
                step_name, task.step_kind, task.attempt, SUCCEEDED, f"{template} not sent: {message}"
            )
            return False
        tx.record_step(step_name, task.step_kind, task.attempt, RUNNING, event=False)
        correlation = correlation_id() or tx.order.correlation_id
    try:
        outbox.send_claimed(message, correlation)
    except MailRefused as refused:
        # A bounce, like a declined card: an outcome, not a fault. The email is
        # never tried again, and the saga goes on without it.
        log.warning("%s for order %s refused for good: %s", template, order_id, refused)
        with task.locked(order_id) as tx:
            outbox.mark_refused(tx.conn, message)
            tx.record_step(
                step_name, task.step_kind, task.attempt, SUCCEEDED, f"{template} not delivered: {refused}"
            )
        return False
    failpoint("email:after_smtp", str(message.id))
    with task.locked(order_id) as tx:
        outbox.mark_sent(tx.conn, message)
        tx.record_step(
            step_name, task.step_kind, task.attempt, SUCCEEDED, f"{template} sent to {message.to_address}"
        )
    return True


class ShipmentTask(SagaTask):
    abstract = True

    def step_name(self, args: tuple[Any, ...]) -> str:
        return f"create_shipment:{args[2]}"


@shared_task(bind=True, base=ShipmentTask, name="saga.create_shipment")
def create_shipment(self: ShipmentTask, order_id: str, run: int, warehouse: str) -> FulfilmentResult:
    """Hand the parcel of ``warehouse`` to the carrier: its reserved units leave stock
    (ledger: ``shipment``). The last parcel of the order moves it to ``shipped``.

    Returns ``{shipped: true}``, or ``{halted: true}`` when the order moved on.
    """
    name = self.step_name((order_id, run, warehouse))
    try:
        with self.claiming(order_id, run, halt=_HaltBranch, step=name) as tx:
            if tx is None or tx.step_seen == SUCCEEDED:
                return {"shipped": True}  # the order moved past, or a redelivered message
            order = tx.order
            held = tx.conn.execute(_HELD_IN, {"b_id": order.id, "b_wh": warehouse}).all()
            units: Counter[str] = Counter()
            for reservation in held:
                units[reservation.sku] += reservation.quantity
            now = utcnow()
            tracking = f"OR{uuid.uuid4().hex[:12].upper()}"
            shipment = dict(
                order_id=order.id,
                warehouse=warehouse,
                tracking_number=tracking,
                status=SHIPMENT_CREATED,
                carrier="orion-post",
                created_at=now,
                cancelled_at=None,
            )
            if tx.conn.dialect.name == "postgresql":
                _ship_postgresql(tx, units, [r.id for r in held], shipment)
            else:
                ship_all(tx, units, str(order.id))
                if held:
                    tx.conn.execute(
                        update(RESERVATIONS)
                        .where(RESERVATIONS.c.id.in_([r.id for r in held]))
                        .values(status=CONSUMED, closed_at=now)
                    )
                tx.conn.execute(_INSERT_SHIPMENT, shipment)
            tx.claim()  # from here the order is locked: the parcel count sees the others'
            if tx.conn.execute(_PARCELS_TO_GO, {"b_id": order.id}).scalar_one() <= 0:
                tx.transition_to(lifecycle.SHIPPED)
            tx.record_step(
                name,
                self.step_kind,
                self.attempt,
                SUCCEEDED,
                f"tracking {tracking} from {warehouse}",
                started_at=now,
            )
    except _HaltBranch:
        return {"halted": True}
    return {"shipped": True}


_SHIP_SQL: dict[int, str] = {}


def _ship_postgresql(tx: SagaTx, units: Counter[str], held: list[int], shipment: dict[str, Any]) -> None:
    """A parcel's effects in two statements: the stock rows locked in SKU order
    (``models.catalog.lock_stock``, so two parcels of the same SKUs cannot
    deadlock), then one statement of data-modifying CTEs: ``on_hand`` and
    ``reserved`` fall by ``units`` ({sku: units}), one ledger row (``shipment``)
    per SKU with the ``on_hand`` it left, the ``held`` reservations (ids)
    consumed, and the shipment row inserted. The same effects as
    ``models.catalog.ship_all`` and the two statements after it (the SQLite
    path), in 2 round trips instead of 5. The table's checks still hold
    (``on_hand >= reserved >= 0``: an IntegrityError, retried)."""
    skus = sorted(units)
    if skus:
        lock_stock(tx, skus)
    sql = _SHIP_SQL.get(len(skus))
    if sql is None:
        rows = ", ".join(f"(%(s{i})s::text, %(u{i})s::int)" for i in range(len(skus)))
        stock = (
            f"units (sku, n) AS (VALUES {rows}), "
            "inv AS (UPDATE inventory i SET on_hand = i.on_hand - units.n, reserved = i.reserved - units.n "
            "FROM units WHERE i.sku = units.sku RETURNING i.sku, i.on_hand), "
            "ledger AS (INSERT INTO inventory_ledger (sku, delta, on_hand_after, reason, reference, at) "
            "SELECT inv.sku, -units.n, inv.on_hand, 'shipment', %(reference)s, %(created_at)s "
            "FROM inv JOIN units ON units.sku = inv.sku), "
            if skus
            else ""
        )
        sql = _SHIP_SQL[len(skus)] = (
            f"WITH {stock}consumed AS (UPDATE reservations SET status = '{CONSUMED}', "
            "closed_at = %(created_at)s WHERE id = ANY(%(held)s)) "
            "INSERT INTO shipments (order_id, warehouse, tracking_number, status, carrier, created_at, "
            "cancelled_at) VALUES (%(order_id)s, %(warehouse)s, %(tracking_number)s, %(status)s, "
            "%(carrier)s, %(created_at)s, %(cancelled_at)s)"
        )
    params: dict[str, Any] = {**shipment, "reference": str(shipment["order_id"]), "held": held}
    for i, sku in enumerate(skus):
        params[f"s{i}"], params[f"u{i}"] = sku, units[sku]
    tx.conn.exec_driver_sql(sql, params)


@shared_task(bind=True, base=CompensationTask, name="saga.cancel_shipment")
def cancel_shipment(self: CompensationTask, order_id: str) -> None:
    """Undo of create_shipment: recall the order's parcels and put their units back on hand."""
    with self.undo(order_id) as tx:
        if tx is None:
            return
        conn, now = tx.conn, utcnow()
        shipments = conn.execute(
            select(SHIPMENTS.c.id).where(
                SHIPMENTS.c.order_id == tx.order.id, SHIPMENTS.c.status != SHIPMENT_CANCELLED
            )
        ).all()
        if not shipments:
            return
        consumed = conn.execute(
            select(RESERVATIONS.c.sku, RESERVATIONS.c.quantity)
            .where(RESERVATIONS.c.order_id == tx.order.id, RESERVATIONS.c.status == CONSUMED)
            .order_by(RESERVATIONS.c.sku)
        ).all()
        for reservation in consumed:
            change_on_hand(tx, reservation.sku, reservation.quantity, "shipment cancelled", str(tx.order.id))
        conn.execute(
            update(SHIPMENTS)
            .where(SHIPMENTS.c.id.in_([s.id for s in shipments]))
            .values(status=SHIPMENT_CANCELLED, cancelled_at=now)
        )
        tx.record_step(
            "cancel_shipment", self.step_kind, self.attempt, SUCCEEDED, f"{len(shipments)} parcel(s) recalled"
        )
