"""Order commands: place, cancel, pay again, retry. Each writes its outbox row in
the same transaction as its change; the outbox relay publishes it after commit."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg.types.json import Json
from sqlalchemy import JSON, Connection, Table, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config import get_settings
from models import (
    Order,
    OrderEvent,
    OrderLine,
    OutboxMessage,
    Payment,
    Product,
    User,
    record_event,
    unit_of_work,
    utcnow,
)
from models import order as lifecycle
from models.db import get_engine, pg_arrays, read_connection
from models.outbox import SAGA_COMPENSATE, SAGA_RESUME, SAGA_START, enqueue, outbox_row
from models.saga_log import event_payload
from progress import OPERATORS, Notification, order_room, user_room
from progress.hooks import emit_after_commit
from services.compensation import begin_compensation
from services.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TokenRefused,
    TooManyOpenOrders,
    TooManyUnitsHeld,
    UnknownSku,
)


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
    and, when it did, the order as committed: its ``orders`` row and its
    ``order_lines`` rows as inserted (column: value; no step run yet). Plain
    rows, not ORM objects: building those cost more than the API's answer made
    from the rows (``web.order_schemas.accepted_order``)."""

    order_id: uuid.UUID
    created: bool
    row: dict[str, Any] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)


def request_fingerprint(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of an order request (for Idempotency-Key checks)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def place_order(
    customer_id: int,
    body: Mapping[str, Any],
    idempotency_key: str | None,
    correlation_id: str | None = None,
    max_open: int | None = None,
    token_generation: int | None = None,
) -> Placed:
    """Store an order, its lines, its first event and its ``saga.start`` outbox row
    in one transaction.

    ``body`` is the validated request: ``{lines: [{sku, quantity}], shipping_address,
    payment: {token}}``. Raises UnknownSku (404); Conflict (409) when
    ``idempotency_key`` was used by this customer with another body;
    TooManyOpenOrders (429) when the customer already has ``max_open`` orders
    that are not final (default ``MAX_OPEN_ORDERS``, 20), TooManyUnitsHeld (429)
    when their lines and this order's would pass ``MAX_OPEN_UNITS``. A repeat with the same
    key and body returns the first order with ``created=False``.

    Two placements by one customer take turns on the customer's row (``FOR NO
    KEY UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serializes every
    writer), so concurrent requests cannot overshoot the limit. The statement
    that takes the lock also reads the customer's token generation: given the
    caller's token's ``token_generation`` (claim ``gen``), a token whose user is
    gone or has logged out everywhere since raises TokenRefused (401) before
    anything is read or written, a replay included. ``POST /orders`` relies on
    this instead of a user lookup of its own (``web.apidoc.authenticate``).

    The hot path of ``POST /orders``: a read of the products and one ``INSERT``
    of everything (PostgreSQL; one per table on SQLite) on a Core connection, no
    ORM session; nothing is published here (the outbox relay does that after
    the commit), and the ``order.updated`` event goes out after it.
    """
    fingerprint = request_fingerprint(body)
    try:
        with get_engine().begin() as conn:
            _lock_customer(conn, customer_id, token_generation)
            if idempotency_key:
                existing = conn.execute(
                    _BY_KEY, {"b_customer": customer_id, "b_key": idempotency_key}
                ).first()
                if existing is not None:
                    return _replayed(existing.id, existing.request_hash, fingerprint)
            limit = get_settings().max_open_orders if max_open is None else max_open
            order, lines = _new_order_rows(
                conn, customer_id, body, idempotency_key, fingerprint, correlation_id, limit
            )
            event = {
                "order_id": order["id"],
                "seq": 1,
                "status": order["status"],
                "step": None,
                "step_status": None,
                "attempt": None,
                "detail": "order placed",
                "at": order["created_at"],
                "correlation_id": correlation_id,
            }
            outbox = outbox_row(
                SAGA_START,
                {
                    "order_id": str(order["id"]),
                    "run": order["saga_run"],
                    "warehouses": sorted({line["warehouse"] for line in lines}),
                },
                correlation=correlation_id,
            )
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(*_insert_all_postgresql(order, lines, event, outbox))
            else:
                conn.execute(_INSERT_ORDER, order)
                conn.execute(_INSERT_LINES, lines)
                conn.execute(_INSERT_EVENT, event)
                conn.execute(_INSERT_OUTBOX, outbox)
    except IntegrityError:
        if not idempotency_key:
            raise
        with read_connection() as conn:  # lost a race with the same key
            existing = conn.execute(_BY_KEY, {"b_customer": customer_id, "b_key": idempotency_key}).first()
        if existing is None:
            raise
        return _replayed(existing.id, existing.request_hash, fingerprint)
    emit_after_commit(
        [
            Notification(
                "order.updated",
                event_payload(event),
                (order_room(str(order["id"])), user_room(customer_id), OPERATORS),
            )
        ]
    )
    return Placed(order["id"], True, order, lines)


_ORDERS, _LINES = Order.__table__, OrderLine.__table__
_BY_KEY = select(_ORDERS.c.id, _ORDERS.c.request_hash).where(
    _ORDERS.c.customer_id == bindparam("b_customer"), _ORDERS.c.idempotency_key == bindparam("b_key")
)
_LOCK_CUSTOMER = (
    select(User.__table__.c.token_generation)
    .where(User.__table__.c.id == bindparam("b_customer"))
    .with_for_update(key_share=True)
)  # FOR NO KEY UPDATE: FK checks still pass; SQLite renders no lock clause


def _lock_customer(conn: Connection, customer_id: int, token_generation: int | None) -> None:
    """Lock the customer's row for this placement; with ``token_generation`` (the
    token's ``gen``), raise TokenRefused unless the user exists and is still in
    that generation. The lock makes the check exact: ``/auth/logout-all`` moves
    the generation on this row, so it waits for a placement that holds the lock,
    and a placement after it sees the new generation."""
    generation = conn.execute(_LOCK_CUSTOMER, {"b_customer": customer_id}).scalar()
    if token_generation is not None and generation != token_generation:
        raise TokenRefused()


# The customer's open orders ride along with the products: no extra round trip.
_OPEN_ORDERS = (
    select(func.count())
    .select_from(_ORDERS)
    .where(
        _ORDERS.c.customer_id == bindparam("b_customer"),
        _ORDERS.c.status.not_in(sorted(lifecycle.FINAL_STATUSES)),
    )
    .scalar_subquery()
)
_OPEN_UNITS = (
    select(func.coalesce(func.sum(_LINES.c.quantity), 0))
    .select_from(_LINES.join(_ORDERS, _ORDERS.c.id == _LINES.c.order_id))
    .where(
        _ORDERS.c.customer_id == bindparam("b_customer"),
        _ORDERS.c.status.not_in(sorted(lifecycle.FINAL_STATUSES)),
    )
    .scalar_subquery()
)
_PRODUCTS = select(
    Product.sku,
    Product.name,
    Product.unit_price,
    Product.warehouse,
    _OPEN_ORDERS.label("open_orders"),
    _OPEN_UNITS.label("open_units"),
).where(Product.sku.in_(bindparam("b_skus", expanding=True)))
_INSERT_ORDER = _ORDERS.insert()
_INSERT_LINES = _LINES.insert()
_INSERT_EVENT = OrderEvent.__table__.insert()
_INSERT_OUTBOX = OutboxMessage.__table__.insert()


def _written(table: Table) -> list[str]:
    """The columns an ``INSERT`` names: all but a serial ``id`` (an order's id is a
    UUID made here)."""
    return [c.name for c in table.c if c.name != "id" or table is _ORDERS]


_LINE_ARRAYS = [name for name in _written(_LINES) if name != "order_id"]


def _insert_all_sql() -> str:
    """One PostgreSQL statement inserting an order, its lines (``unnest`` of one
    array per column), its first event and its outbox row: data-modifying CTEs
    run as one statement, so four inserts cost one round trip."""

    def insert(table: Table, prefix: str) -> str:
        names = _written(table)
        return (
            f"INSERT INTO {table.name} ({', '.join(names)}) "
            f"VALUES ({', '.join(f'%({prefix}{name})s' for name in names)})"
        )

    return (
        f"WITH new_order AS ({insert(_ORDERS, 'o_')}), "
        f"new_lines AS (INSERT INTO order_lines (order_id, {', '.join(_LINE_ARRAYS)}) "
        f"SELECT %(o_id)s, * FROM unnest({pg_arrays(_LINES, _LINE_ARRAYS, 'l_')})), "
        f"new_event AS ({insert(OrderEvent.__table__, 'e_')}) "
        f"{insert(OutboxMessage.__table__, 'x_')}"
    )


_INSERT_ALL_POSTGRESQL = _insert_all_sql()
_JSON_COLUMNS = {
    c.name
    for table in (_ORDERS, OrderEvent.__table__, OutboxMessage.__table__)
    for c in table.c
    if isinstance(c.type, JSON)
}


def _insert_all_postgresql(
    order: dict[str, Any], lines: list[dict[str, Any]], event: dict[str, Any], outbox: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {}
    for prefix, row in (("o_", order), ("e_", event), ("x_", outbox)):
        for name, value in row.items():
            params[prefix + name] = Json(value) if name in _JSON_COLUMNS and value is not None else value
    for name in _LINE_ARRAYS:
        params[f"l_{name}"] = [line[name] for line in lines]
    return _INSERT_ALL_POSTGRESQL, params


def _replayed(order_id: uuid.UUID, request_hash: str | None, fingerprint: str) -> Placed:
    if request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was already used with a different request body")
    return Placed(order_id, False)


def _new_order_rows(
    conn: Connection,
    customer_id: int,
    body: Mapping[str, Any],
    key: str | None,
    fingerprint: str,
    correlation_id: str | None,
    max_open: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``orders`` row (its first event already counted) and its ``order_lines``
    rows, priced from the catalog; raises UnknownSku for a SKU not in it,
    TooManyOpenOrders when the customer has ``max_open`` open orders and
    TooManyUnitsHeld past ``MAX_OPEN_UNITS``."""
    skus = sorted({line["sku"] for line in body["lines"]})
    products = {row.sku: row for row in conn.execute(_PRODUCTS, {"b_skus": skus, "b_customer": customer_id})}
    if products:
        first = next(iter(products.values()))
        if first.open_orders >= max_open:
            raise TooManyOpenOrders(max_open)
        asked, max_units = sum(line["quantity"] for line in body["lines"]), get_settings().max_open_units
        if first.open_units + asked > max_units:
            raise TooManyUnitsHeld(max_units, first.open_units, asked)
    order_id, now = uuid.uuid4(), utcnow()
    lines: list[dict[str, Any]] = []
    for line_no, line in enumerate(body["lines"], start=1):
        product = products.get(line["sku"])
        if product is None:
            raise UnknownSku(line["sku"])
        lines.append(
            {
                "order_id": order_id,
                "line_no": line_no,
                "sku": product.sku,
                "name": product.name,
                "unit_price": product.unit_price,
                "quantity": line["quantity"],
                "warehouse": product.warehouse,
                "line_total": product.unit_price * line["quantity"],
            }
        )
    subtotal = sum((line["line_total"] for line in lines), Decimal("0.00"))
    order = {
        "id": order_id,
        "customer_id": customer_id,
        "status": lifecycle.PENDING,
        "cancel_reason": None,
        "failure": None,
        "currency": "GBP",
        "subtotal": subtotal,
        "total": subtotal,
        "shipping_address": body["shipping_address"],
        "payment_token": body["payment"]["token"],
        "idempotency_key": key,
        "request_hash": fingerprint,
        "saga_run": 1,
        "last_event_seq": 1,
        "correlation_id": correlation_id,
        "created_at": now,
        "updated_at": now,
        "awaiting_payment_since": None,
        "finished_at": None,
    }
    return order, lines


def load_visible_order(
    session: Session, order_id: uuid.UUID | str, actor: Actor, *, lock: bool = False
) -> Order:
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


RETRYABLE = frozenset(
    {
        lifecycle.FAILED,
        lifecycle.COMPENSATION_FAILED,
        lifecycle.PENDING,
        lifecycle.STOCK_RESERVED,
        lifecycle.PAYMENT_AUTHORIZED,
        lifecycle.CONFIRMED,
        lifecycle.SHIPPED,
        lifecycle.COMPENSATING,
    }
)


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
    return (
        session.scalar(
            select(Payment.id).where(Payment.order_id == order.id, Payment.kind == "capture").limit(1)
        )
        is not None
    )


def redrive_message(order: Order) -> tuple[str, dict[str, Any]]:
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
