"""Fulfilment steps: the confirmation email and the shipment (run in parallel after
the capture), the shipment's undo, and the cancellation email.

An email is a row in the email outbox, unique per (order, template): claimed,
sent over SMTP, then marked sent; a redelivered task finds it sent and stops.
"""
from __future__ import annotations

import uuid

from celery import shared_task
from sqlalchemy import select

from mail import outbox, templates
from observability.logging import correlation_id
from models import Order, Reservation, Shipment, unit_of_work, utcnow
from models import order as lifecycle
from models.catalog import CONSUMED, HELD, change_on_hand
from models.fulfilment import SHIPMENT_CANCELLED
from tasks import journal
from tasks.base import CompensationTask, Halt, SagaTask, StepNotReady, lock_for_undo

CONFIRMABLE = (lifecycle.CONFIRMED, lifecycle.SHIPPED, lifecycle.COMPLETED)
CANCELLED_OR_FAILED = (lifecycle.CANCELLED, lifecycle.FAILED)


@shared_task(bind=True, base=SagaTask, name="saga.send_confirmation_email")
def send_confirmation_email(self, order_id: str, run: int) -> dict:
    """Email the customer that the order is confirmed (chord header; never halts the chord)."""
    sent = _deliver(self, order_id, templates.CONFIRMATION, "send_confirmation_email", CONFIRMABLE)
    return {"halted": True} if sent is None else {"sent": sent}


@shared_task(bind=True, base=CompensationTask, name="saga.send_cancellation_email")
def send_cancellation_email(self, order_id: str) -> None:
    """Tell the customer the order was cancelled or failed (after compensation)."""
    if _deliver(self, order_id, templates.CANCELLATION, "send_cancellation_email",
                CANCELLED_OR_FAILED) is None:
        raise Halt()


def _deliver(task, order_id: str, template: str, step_name: str, statuses) -> bool | None:
    """Claim, send and mark one email; False if it had been sent already, None if the
    order is not in ``statuses`` (checked under the order lock, in the claim's
    transaction, so a cancel cannot slip in between check and send)."""
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        if order.status not in statuses:
            return None
        try:
            message = outbox.claim(session, order, template)
        except outbox.ClaimedElsewhere as exc:
            raise StepNotReady(str(exc)) from None
        if message is None:
            return False
        step = journal.start_step(session, order, step_name, task.step_kind, task.attempt)
    outbox.send_claimed(message, correlation_id() or order.correlation_id)
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        row = outbox.mark_sent(session, message.id)
        step = journal.find_step(session, order, step_name)
        journal.finish_step(session, order, step, "succeeded", f"{template} sent to {row.to_address}")
    return True


@shared_task(bind=True, base=SagaTask, name="saga.create_shipment")
def create_shipment(self, order_id: str, run: int) -> dict:
    """Hand the order to the carrier: reserved units leave stock (ledger: ``shipment``)."""
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        try:
            if not journal.should_run(order, run, lifecycle.CONFIRMED, Halt):
                return {"shipped": True}
        except Halt:
            return {"halted": True}
        shipment = Shipment(order_id=order.id, tracking_number=f"OR{uuid.uuid4().hex[:12].upper()}")
        session.add(shipment)
        for reservation in _reservations(session, order, HELD):
            change_on_hand(session, reservation.sku, -reservation.quantity, "shipment",
                           str(order.id), release_reserved=reservation.quantity)
            reservation.status, reservation.closed_at = CONSUMED, utcnow()
        order.transition_to(lifecycle.SHIPPED)
        journal.complete_step(session, order, "create_shipment", self.step_kind, self.attempt,
                              f"tracking {shipment.tracking_number}")
    return {"shipped": True}


@shared_task(bind=True, base=CompensationTask, name="saga.cancel_shipment")
def cancel_shipment(self, order_id: str) -> None:
    """Undo of create_shipment: recall the parcel and put its units back on hand."""
    with unit_of_work() as session:
        order = lock_for_undo(session, order_id, "cancel_shipment")
        if order is None:
            return
        shipment = session.scalar(select(Shipment).where(Shipment.order_id == order.id))
        if shipment is None or shipment.status == SHIPMENT_CANCELLED:
            return
        for reservation in _reservations(session, order, CONSUMED):
            change_on_hand(session, reservation.sku, reservation.quantity, "shipment cancelled",
                           str(order.id))
        shipment.status, shipment.cancelled_at = SHIPMENT_CANCELLED, utcnow()
        journal.complete_step(session, order, "cancel_shipment", self.step_kind, self.attempt)


def _reservations(session, order: Order, status: str) -> list[Reservation]:
    return list(session.scalars(select(Reservation).where(Reservation.order_id == order.id,
                                                          Reservation.status == status)))
