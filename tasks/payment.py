"""Payment steps: authorize (undo: void) and capture, the pivot (undo: refund).

Provider calls happen while the order row is locked, so a cancel waits for the
call's outcome instead of racing it. Idempotency keys are derived from the
order and saga run: a redelivered step replays the same key and the provider
answers with the first result.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import TypeAlias

from celery import shared_task
from sqlalchemy import Connection, Row, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.util.typing import TupleAny, Unpack

from config import get_settings
from models import HELD, Payment, Reservation, utcnow
from models import order as lifecycle
from models.payment import AUTHORIZATION, CAPTURE, DECLINED, REFUND, SUCCEEDED, VOID
from models.saga_log import FAILED
from payments import ProviderError, get_provider
from tasks.base import CompensationTask, Halt, SagaTask
from tasks.journal import LockedOrder

PAYMENTS, RESERVATIONS = Payment.__table__, Reservation.__table__
PaymentRow: TypeAlias = "Row[Unpack[TupleAny]]"  # a row of ``PAYMENTS``, every column
_INSERT_PAYMENT = insert(PAYMENTS)
_LATEST_AUTHORIZATION = (
    select(PAYMENTS.c.id, PAYMENTS.c.provider_reference)
    .where(
        PAYMENTS.c.order_id == bindparam("b_id"),
        PAYMENTS.c.kind == AUTHORIZATION,
        PAYMENTS.c.status == SUCCEEDED,
    )
    .order_by(PAYMENTS.c.id.desc())
    .limit(1)
)


@shared_task(bind=True, base=SagaTask, name="saga.authorize_payment")
def authorize_payment(self: SagaTask, order_id: str, run: int) -> None:
    """Authorize the order total; a soft decline parks the order, a hard one compensates."""
    with self.forward(order_id, run) as tx:
        if tx is None:
            return
        order, started = tx.order, utcnow()
        key = f"order-{order.id}-authorize-{run}"
        result = get_provider().authorize(
            key, str(order.id), order.payment_token, order.total, order.currency
        )
        tx.conn.execute(
            _INSERT_PAYMENT,
            dict(
                parent_id=None,
                order_id=order.id,
                kind=AUTHORIZATION,
                amount=order.total,
                currency=order.currency,
                idempotency_key=key,
                status=SUCCEEDED if result.approved else DECLINED,
                provider_reference=result.reference,
                decline_code=result.decline_code,
            ),
        )
        if result.approved:
            tx.transition_to(lifecycle.PAYMENT_AUTHORIZED)
            tx.record_step(
                "authorize_payment",
                self.step_kind,
                self.attempt,
                SUCCEEDED,
                f"authorized {order.total}",
                started_at=started,
            )
            return
        tx.record_step(
            "authorize_payment",
            self.step_kind,
            self.attempt,
            FAILED,
            started_at=started,
            error=f"{'soft' if result.soft else 'hard'} decline: {result.decline_code}",
        )
        if result.soft:
            tx.transition_to(lifecycle.AWAITING_PAYMENT)
            extend_holds(tx.conn, order)
        else:
            tx.start_compensation("payment_declined")
    raise Halt()


@shared_task(bind=True, base=SagaTask, name="saga.capture_payment")
def capture_payment(self: SagaTask, order_id: str, run: int) -> None:
    """Capture the authorization: the pivot, after which the saga runs forward."""
    with self.forward(order_id, run) as tx:
        if tx is None:
            return
        order, started = tx.order, utcnow()
        authorization = tx.conn.execute(_LATEST_AUTHORIZATION, {"b_id": order.id}).one()
        key = f"order-{order.id}-capture"
        result = get_provider().capture(key, authorization.provider_reference, order.total)
        if not result.approved:
            raise ProviderError(f"capture refused: {result.decline_code}")
        tx.conn.execute(
            _INSERT_PAYMENT,
            dict(
                decline_code=None,
                order_id=order.id,
                kind=CAPTURE,
                amount=order.total,
                currency=order.currency,
                idempotency_key=key,
                status=SUCCEEDED,
                provider_reference=result.reference,
                parent_id=authorization.id,
            ),
        )
        tx.transition_to(lifecycle.CONFIRMED)
        tx.record_step(
            "capture_payment",
            self.step_kind,
            self.attempt,
            SUCCEEDED,
            f"captured {order.total}",
            started_at=started,
        )


@shared_task(bind=True, base=CompensationTask, name="saga.void_authorization")
def void_authorization(self: CompensationTask, order_id: str) -> None:
    """Undo of authorize_payment: void every authorization that was not captured."""
    with self.undo(order_id) as tx:
        if tx is None:
            return
        conn, order, started = tx.conn, tx.order, utcnow()
        for run in range(1, order.saga_run + 1):
            _recover(conn, order, AUTHORIZATION, f"order-{order.id}-authorize-{run}", None)
        voided = 0
        for auth in _open_authorizations(conn, order):
            key = f"order-{order.id}-void-{auth.id}"
            result = get_provider().void(key, auth.provider_reference)
            _record(conn, order, VOID, key, result.reference, auth.id, auth.amount, auth.currency)
            voided += 1
        # An undo that found nothing to undo stays in the step log only: in the
        # customer's timeline it read as money having moved.
        tx.record_step(
            "void_authorization",
            self.step_kind,
            self.attempt,
            SUCCEEDED,
            f"{voided} authorization(s) voided",
            started_at=started,
            event=voided > 0,
        )


@shared_task(bind=True, base=CompensationTask, name="saga.refund_payment")
def refund_payment(self: CompensationTask, order_id: str) -> None:
    """Undo of capture_payment: refund the capture, once (a unique index forbids a second)."""
    with self.undo(order_id) as tx:
        if tx is None:
            return
        conn, order, started = tx.conn, tx.order, utcnow()
        capture = _latest(conn, order, CAPTURE) or _recover(
            conn, order, CAPTURE, f"order-{order.id}-capture", _latest(conn, order, AUTHORIZATION)
        )
        if capture is not None and _latest(conn, order, REFUND) is None:
            key = f"order-{order.id}-refund"
            result = get_provider().refund(key, capture.provider_reference, capture.amount)
            _record(conn, order, REFUND, key, result.reference, capture.id, capture.amount, capture.currency)
        tx.record_step(
            "refund_payment",
            self.step_kind,
            self.attempt,
            SUCCEEDED,
            f"refunded {capture.amount}" if capture else "nothing captured",
            started_at=started,
            event=capture is not None,
        )


def _record(
    conn: Connection,
    order: LockedOrder,
    kind: str,
    key: str,
    reference: str | None,
    parent_id: int | None,
    amount: Decimal,
    currency: str,
) -> PaymentRow:
    """Insert a succeeded payment row; returns it (``PAYMENTS`` columns)."""
    return conn.execute(
        _INSERT_PAYMENT.returning(*PAYMENTS.c),
        dict(
            order_id=order.id,
            kind=kind,
            amount=amount,
            currency=currency,
            idempotency_key=key,
            status=SUCCEEDED,
            provider_reference=reference,
            decline_code=None,
            parent_id=parent_id,
        ),
    ).one()


def _recover(
    conn: Connection, order: LockedOrder, kind: str, key: str, parent: PaymentRow | None
) -> PaymentRow | None:
    """Record a provider operation that succeeded but whose row was lost; returns
    the row (``PAYMENTS`` columns), or None when there was nothing to recover.

    A worker killed after the provider answered, before its transaction
    committed, leaves the charge at the provider only; if the order is then
    cancelled before the step is redelivered, the undo must still see it.
    """
    if conn.scalar(select(PAYMENTS.c.id).where(PAYMENTS.c.idempotency_key == key)) is not None:
        return None
    result = get_provider().find(key)
    if result is None or not result.approved:
        return None
    return _record(
        conn, order, kind, key, result.reference, parent.id if parent else None, order.total, order.currency
    )


def _latest(conn: Connection, order: LockedOrder, kind: str) -> PaymentRow | None:
    return conn.execute(
        select(PAYMENTS)
        .where(PAYMENTS.c.order_id == order.id, PAYMENTS.c.kind == kind, PAYMENTS.c.status == SUCCEEDED)
        .order_by(PAYMENTS.c.id.desc())
        .limit(1)
    ).first()


def _open_authorizations(conn: Connection, order: LockedOrder) -> Sequence[PaymentRow]:
    settled = select(PAYMENTS.c.parent_id).where(
        PAYMENTS.c.order_id == order.id,
        PAYMENTS.c.parent_id.is_not(None),
        PAYMENTS.c.kind.in_((CAPTURE, VOID)),
    )
    return conn.execute(
        select(PAYMENTS)
        .where(
            PAYMENTS.c.order_id == order.id,
            PAYMENTS.c.kind == AUTHORIZATION,
            PAYMENTS.c.status == SUCCEEDED,
            PAYMENTS.c.id.not_in(settled.scalar_subquery()),
        )
        .order_by(PAYMENTS.c.id)
    ).all()


def extend_holds(conn: Connection | Session, order: LockedOrder) -> None:
    """A parked order's stock stays held for the whole payment window, each time it
    parks (``RESERVATION_HOLD_SECONDS`` from now; settings keep it longer than
    ``PAYMENT_WINDOW_SECONDS``). ``conn``: a connection or session in the order's transaction."""
    hold = timedelta(seconds=get_settings().reservation_hold_s)
    conn.execute(
        update(RESERVATIONS)
        .where(RESERVATIONS.c.order_id == order.id, RESERVATIONS.c.status == HELD)
        .values(expires_at=utcnow() + hold)
    )
