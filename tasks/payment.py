"""Payment steps: authorize (undo: void) and capture, the pivot (undo: refund).

Provider calls happen while the order row is locked, so a cancel waits for the
call's outcome instead of racing it. Idempotency keys are derived from the
order and saga run: a redelivered step replays the same key and the provider
answers with the first result.
"""
from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from sqlalchemy import select, update

from config import get_settings
from models import HELD, Order, Payment, Reservation, unit_of_work, utcnow
from models import order as lifecycle
from models.payment import AUTHORIZATION, CAPTURE, DECLINED, REFUND, SUCCEEDED, VOID
from models.saga_log import FAILED
from payments import ProviderError, get_provider
from tasks import journal
from tasks.base import CompensationTask, Halt, SagaTask, lock_for_undo, start_compensation
from tasks.outbox import publish_after_commit


@shared_task(bind=True, base=SagaTask, name="saga.authorize_payment")
def authorize_payment(self, order_id: str, run: int) -> None:
    """Authorize the order total; a soft decline parks the order, a hard one compensates."""
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        if not journal.should_run(order, run, lifecycle.STOCK_RESERVED, Halt):
            return
        key = f"order-{order.id}-authorize-{run}"
        step = journal.start_step(session, order, "authorize_payment", self.step_kind, self.attempt)
        result = get_provider().authorize(key, str(order.id), order.payment_token, order.total,
                                          order.currency)
        session.add(Payment(order_id=order.id, kind=AUTHORIZATION, amount=order.total,
                            currency=order.currency, idempotency_key=key,
                            status=SUCCEEDED if result.approved else DECLINED,
                            provider_reference=result.reference, decline_code=result.decline_code))
        if result.approved:
            order.transition_to(lifecycle.PAYMENT_AUTHORIZED)
            journal.finish_step(session, order, step, "succeeded", f"authorized {order.total}")
            return
        journal.finish_step(session, order, step, FAILED,
                            error=f"{'soft' if result.soft else 'hard'} decline: {result.decline_code}")
        if result.soft:
            order.transition_to(lifecycle.AWAITING_PAYMENT)
            extend_holds(session, order)
        else:
            order.start_compensation("payment_declined")
            start_compensation(session, order)
        messages = session.info.get("outbox", [])
    publish_after_commit(messages)
    raise Halt()


@shared_task(bind=True, base=SagaTask, name="saga.capture_payment")
def capture_payment(self, order_id: str, run: int) -> None:
    """Capture the authorization: the pivot, after which the saga runs forward."""
    with unit_of_work() as session:
        order = journal.lock_order(session, order_id)
        if not journal.should_run(order, run, lifecycle.PAYMENT_AUTHORIZED, Halt):
            return
        authorization = _latest(session, order, AUTHORIZATION)
        step = journal.start_step(session, order, "capture_payment", self.step_kind, self.attempt)
        key = f"order-{order.id}-capture"
        result = get_provider().capture(key, authorization.provider_reference, order.total)
        if not result.approved:
            raise ProviderError(f"capture refused: {result.decline_code}")
        session.add(Payment(order_id=order.id, kind=CAPTURE, amount=order.total,
                            currency=order.currency, idempotency_key=key, status=SUCCEEDED,
                            provider_reference=result.reference, parent_id=authorization.id))
        order.transition_to(lifecycle.CONFIRMED)
        journal.finish_step(session, order, step, "succeeded", f"captured {order.total}")


@shared_task(bind=True, base=CompensationTask, name="saga.void_authorization")
def void_authorization(self, order_id: str) -> None:
    """Undo of authorize_payment: void every authorization that was not captured."""
    with unit_of_work() as session:
        order = lock_for_undo(session, order_id, "void_authorization")
        if order is None:
            return
        step = journal.start_step(session, order, "void_authorization", self.step_kind, self.attempt)
        for run in range(1, order.saga_run + 1):
            _recover(session, order, AUTHORIZATION, f"order-{order.id}-authorize-{run}", None)
        voided = 0
        for auth in _open_authorizations(session, order):
            key = f"order-{order.id}-void-{auth.id}"
            result = get_provider().void(key, auth.provider_reference)
            session.add(Payment(order_id=order.id, kind=VOID, amount=auth.amount, currency=auth.currency,
                                idempotency_key=key, status=SUCCEEDED,
                                provider_reference=result.reference, parent_id=auth.id))
            voided += 1
        journal.finish_step(session, order, step, "succeeded", f"{voided} authorization(s) voided")


@shared_task(bind=True, base=CompensationTask, name="saga.refund_payment")
def refund_payment(self, order_id: str) -> None:
    """Undo of capture_payment: refund the capture, once (a unique index forbids a second)."""
    with unit_of_work() as session:
        order = lock_for_undo(session, order_id, "refund_payment")
        if order is None:
            return
        step = journal.start_step(session, order, "refund_payment", self.step_kind, self.attempt)
        capture = _latest(session, order, CAPTURE) or _recover(
            session, order, CAPTURE, f"order-{order.id}-capture", _latest(session, order, AUTHORIZATION))
        if capture is not None and _latest(session, order, REFUND) is None:
            key = f"order-{order.id}-refund"
            result = get_provider().refund(key, capture.provider_reference, capture.amount)
            session.add(Payment(order_id=order.id, kind=REFUND, amount=capture.amount,
                                currency=capture.currency, idempotency_key=key, status=SUCCEEDED,
                                provider_reference=result.reference, parent_id=capture.id))
        journal.finish_step(session, order, step, "succeeded",
                            f"refunded {capture.amount}" if capture else "nothing captured")


def _recover(session, order: Order, kind: str, key: str, parent: Payment | None) -> Payment | None:
    """Record a provider operation that succeeded but whose row was lost.

    A worker killed after the provider answered, before its transaction
    committed, leaves the charge at the provider only; if the order is then
    cancelled before the step is redelivered, the undo must still see it.
    """
    if session.scalar(select(Payment.id).where(Payment.idempotency_key == key)) is not None:
        return None
    result = get_provider().find(key)
    if result is None or not result.approved:
        return None
    payment = Payment(order_id=order.id, kind=kind, amount=order.total, currency=order.currency,
                      idempotency_key=key, status=SUCCEEDED, provider_reference=result.reference,
                      parent_id=parent.id if parent else None)
    session.add(payment)
    session.flush()
    return payment


def _latest(session, order: Order, kind: str) -> Payment | None:
    return session.scalar(select(Payment).where(
        Payment.order_id == order.id, Payment.kind == kind, Payment.status == SUCCEEDED)
        .order_by(Payment.id.desc()).limit(1))


def _open_authorizations(session, order: Order) -> list[Payment]:
    settled = select(Payment.parent_id).where(Payment.order_id == order.id, Payment.parent_id.is_not(None),
                                              Payment.kind.in_((CAPTURE, VOID)))
    return list(session.scalars(select(Payment).where(
        Payment.order_id == order.id, Payment.kind == AUTHORIZATION, Payment.status == SUCCEEDED,
        Payment.id.not_in(settled.scalar_subquery()))))


def extend_holds(session, order) -> None:
    """A parked order's stock stays held for the whole payment window, each time it
    parks (``RESERVATION_HOLD_SECONDS`` from now; settings keep it longer than
    ``PAYMENT_WINDOW_SECONDS``)."""
    hold = timedelta(seconds=get_settings().reservation_hold_s)
    session.execute(update(Reservation).where(Reservation.order_id == order.id,
                                              Reservation.status == HELD)
                    .values(expires_at=utcnow() + hold))
