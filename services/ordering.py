"""Order commands: place, cancel, pay again, retry. Each writes its outbox row in
the same transaction as its change; the outbox relay publishes it after commit."""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Order, OrderLine, Payment, Product, User, record_event, unit_of_work
from models import order as lifecycle
from models.outbox import SAGA_COMPENSATE, SAGA_RESUME, SAGA_START, enqueue
from services.compensation import begin_compensation
from services.errors import Conflict, Forbidden, NotFound, UnknownSku


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user id and role (from the access token)."""

    user_id: int
    role: str

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class Placed:
    """The outcome of ``place_order``: the order's id, whether this call created it,
    and, when it did, the order as committed (lines loaded, no step run yet)."""

    order_id: uuid.UUID
    created: bool
    order: Order | None = None


def request_fingerprint(body: dict) -> str:
    """SHA-256 of the canonical JSON of an order request (for Idempotency-Key checks)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def place_order(customer_id: int, body: dict, idempotency_key: str | None,
                correlation_id: str | None = None) -> Placed:
    """Store an order and its ``saga.start`` outbox row in one transaction.

    ``body`` is the validated request: ``{lines: [{sku, quantity}], shipping_address,
    payment: {token}}``. Raises UnknownSku (404); Conflict (409) when
    ``idempotency_key`` was used by this customer with another body. A repeat with
    the same key and body returns the first order with ``created=False``.
    """
    fingerprint = request_fingerprint(body)
    try:
        with unit_of_work() as session:
            if idempotency_key:
                existing = _by_idempotency_key(session, customer_id, idempotency_key)
                if existing is not None:
                    return _replayed(existing, fingerprint)
            order = _new_order(session, customer_id, body, idempotency_key, fingerprint, correlation_id)
            record_event(session, order, detail="order placed")
            enqueue(session, SAGA_START, {  # all the relay needs to build the saga's canvas
                "order_id": str(order.id), "run": order.saga_run,
                "warehouses": sorted({line.warehouse for line in order.lines})})
    except IntegrityError:
        if not idempotency_key:
            raise
        with unit_of_work() as session:  # lost a race with the same key
            existing = _by_idempotency_key(session, customer_id, idempotency_key)
            if existing is None:
                raise
            return _replayed(existing, fingerprint)
    return Placed(order.id, True, order)


def _by_idempotency_key(session: Session, customer_id: int, key: str) -> Order | None:
    return session.scalar(select(Order).where(Order.customer_id == customer_id,
                                              Order.idempotency_key == key))


def _replayed(order: Order, fingerprint: str) -> Placed:
    if order.request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was already used with a different request body")
    return Placed(order.id, False)


def _new_order(session: Session, customer_id: int, body: dict, key: str | None,
               fingerprint: str, correlation_id: str | None) -> Order:
    skus = {line["sku"] for line in body["lines"]}
    products = {p.sku: p for p in session.scalars(select(Product).where(Product.sku.in_(skus)))}
    order = Order(customer_id=customer_id, shipping_address=body["shipping_address"],
                  payment_token=body["payment"]["token"], idempotency_key=key,
                  request_hash=fingerprint, correlation_id=correlation_id)
    for line_no, line in enumerate(body["lines"], start=1):
        product = products.get(line["sku"])
        if product is None:
            raise UnknownSku(line["sku"])
        order.lines.append(OrderLine(
            line_no=line_no, sku=product.sku, name=product.name, unit_price=product.unit_price,
            quantity=line["quantity"], line_total=product.unit_price * line["quantity"],
            warehouse=product.warehouse))
    order.currency = "GBP"
    order.subtotal = sum((l.line_total for l in order.lines), Decimal("0.00"))
    order.total = order.subtotal
    session.add(order)
    session.flush()
    return order


def load_visible_order(session: Session, order_id: uuid.UUID | str, actor: Actor,
                       *, lock: bool = False) -> Order:
    """The order if ``actor`` owns it or is an operator; else NotFound (SPEC: 404, not 403)."""
    try:
        key = order_id if isinstance(order_id, uuid.UUID) else uuid.UUID(str(order_id))
    except ValueError:
        raise NotFound("order not found") from None
    query = select(Order).where(Order.id == key)
    if lock:
        query = query.with_for_update()
    order = session.scalar(query)
    if order is None or (order.customer_id != actor.user_id and not actor.is_operator):
        raise NotFound("order not found")
    return order


def cancel_order(order_id: uuid.UUID | str, actor: Actor) -> Order:
    """Start compensation for an order not yet shipped.

    Raises NotFound; Conflict (409) when the order is shipped, compensating or final.
    The running step, if any, finishes; the saga sees ``compensating`` and stops.
    """
    with unit_of_work() as session:
        order = load_visible_order(session, order_id, actor, lock=True)
        if order.status not in lifecycle.CANCELLABLE:
            raise Conflict(f"an order in status {order.status!r} cannot be cancelled")
        reason = "customer_request" if order.customer_id == actor.user_id else "operator_request"
        begin_compensation(session, order, reason, f"cancel requested ({reason})")
    return order


def pay_again(order_id: uuid.UUID | str, actor: Actor, token: str) -> Order:
    """Resume an order parked in ``awaiting_payment`` with a new payment token.

    Only the owner may (others get NotFound); Conflict (409) in any other status.
    """
    with unit_of_work() as session:
        order = load_visible_order(session, order_id, actor, lock=True)
        if order.customer_id != actor.user_id:
            raise NotFound("order not found")
        if order.status != lifecycle.AWAITING_PAYMENT:
            raise Conflict(f"an order in status {order.status!r} is not awaiting payment")
        order.payment_token = token
        order.saga_run += 1
        order.transition_to(lifecycle.STOCK_RESERVED)
        record_event(session, order, detail="payment resubmitted")
        enqueue(session, SAGA_RESUME, {"order_id": str(order.id), "from_step": "authorize_payment"})
    return order


RETRYABLE = frozenset({lifecycle.FAILED, lifecycle.COMPENSATION_FAILED, lifecycle.PENDING,
                       lifecycle.STOCK_RESERVED, lifecycle.PAYMENT_AUTHORIZED,
                       lifecycle.CONFIRMED, lifecycle.SHIPPED, lifecycle.COMPENSATING})


def retry_saga(order_id: uuid.UUID | str, actor: Actor) -> Order:
    """Operator re-drive: a ``failed`` order starts a new run; a stuck one resumes.

    ``compensation_failed`` and stuck ``compensating`` orders re-run compensation;
    orders in a forward state re-drive from their last completed step (every
    step is idempotent, so finished steps pass through). Raises Forbidden (403)
    for customers, NotFound, Conflict (409) for final or awaiting-payment orders.
    """
    if not actor.is_operator:
        raise Forbidden("only operators may retry a saga")
    with unit_of_work() as session:
        order = load_visible_order(session, order_id, actor, lock=True)
        if order.status not in RETRYABLE:
            raise Conflict(f"an order in status {order.status!r} cannot be retried")
        if order.status == lifecycle.FAILED and _was_captured(session, order):
            # SPEC guarantee 2: one capture per order, ever; a new run could not pay.
            raise Conflict("this order's payment was captured and refunded; place a new order")
        topic, payload = redrive_message(order)
        record_event(session, order, detail="operator retry")
        enqueue(session, topic, payload)
    return order


def _was_captured(session: Session, order: Order) -> bool:
    return session.scalar(select(Payment.id).where(Payment.order_id == order.id,
                                                   Payment.kind == "capture").limit(1)) is not None


def redrive_message(order: Order) -> tuple[str, dict]:
    """The outbox topic and payload that re-drive ``order`` (moving it first where
    a re-drive starts from another state: ``failed`` → ``pending`` with a new run,
    ``compensation_failed`` → ``compensating``)."""
    if order.status == lifecycle.COMPENSATION_FAILED:
        order.transition_to(lifecycle.COMPENSATING)
    if order.status == lifecycle.COMPENSATING:
        return SAGA_COMPENSATE, {"order_id": str(order.id)}
    if order.status == lifecycle.FAILED:
        order.transition_to(lifecycle.PENDING)
        order.saga_run += 1
        order.failure = None
    return SAGA_RESUME, {"order_id": str(order.id), "from_step": None}


def actor_for(user: User) -> Actor:
    return Actor(user.id, user.role)
