"""Orders: place, show, list, cancel, pay again, retry (SPEC "HTTP API").

Another customer's order answers 404 as if it did not exist. Commands return
202: the saga does the work in the background.
"""

from __future__ import annotations

import uuid

import structlog
from flask import Blueprint, current_app, g, url_for
from flask_jwt_extended import get_jwt, get_jwt_identity

from models.user import CUSTOMER
from services.ordering import cancel_order, pay_again, place_order, retry_saga
from web.apidoc import (
    Serialized,
    arguments,
    authenticate,
    body,
    current_actor,
    links,
    other_responses,
    request_headers,
    response,
)
from web.extensions import limiter
from web.order_reads import list_orders, show_order
from web.order_schemas import (
    IdempotencyHeaderSchema,
    OrderCreateSchema,
    OrderPageSchema,
    OrderQuerySchema,
    OrderSchema,
    PaymentSchema,
    accepted_order,
)

bp = Blueprint("orders", __name__)
log = structlog.get_logger(__name__)
order_schema = OrderSchema()
ACCEPTED = "Accepted: the order as it stands; its saga runs in the background"


def _order_rate() -> str:
    return current_app.config["ORDER_RATE_LIMIT"]


def _per_user() -> str:
    return f"user:{get_jwt_identity()}"


@bp.post("/orders")
@authenticate(role=CUSTOMER, user_read_by_command=True)  # place_order checks the user
@limiter.limit(_order_rate, key_func=_per_user)
@request_headers(IdempotencyHeaderSchema())
@body(OrderCreateSchema())
@response(order_schema, 202, ACCEPTED, headers={"Location": "The order's URL"})
@links(
    GetOrder="orders_get_order",
    CancelOrder="orders_cancel",
    PayAgain="orders_pay",
    RetryOrder="orders_retry",
)
@other_responses(
    {
        404: "Unknown sku",
        409: "Idempotency-Key already used with another body",
        429: "Too many orders; see Retry-After",
    }
)
def create_order(headers: dict, body: dict):
    """Place an order; a repeat with the same Idempotency-Key and body returns the first order."""
    actor = current_actor()
    placed = place_order(
        actor.user_id,
        body,
        headers.get("idempotency_key"),
        g.correlation_id,
        token_generation=get_jwt().get("gen", 0),
    )
    log.info("order placed", order_id=str(placed.order_id), customer_id=actor.user_id)
    location = url_for(".get_order", order_id=placed.order_id)
    if placed.row is not None:  # answered from what was just committed: no second read
        return Serialized(accepted_order(placed.row, placed.lines)), {"Location": location}
    return show_order(placed.order_id, actor), {"Location": location}


@bp.get("/orders")
@authenticate()
@arguments(OrderQuerySchema())
@response(OrderPageSchema())
@other_responses({403: "customer_email given by a customer"})
def get_orders(args: dict):
    """List orders newest first: a customer's own, or all for an operator.

    Operators may narrow the list to one customer with customer_email; status
    filters by status; next_cursor pages on (SPEC paging rules)."""
    return list_orders(current_actor(), args)


@bp.get("/orders/<uuid:order_id>")
@authenticate()
@response(order_schema)
@links(CancelOrder="orders_cancel", PayAgain="orders_pay", RetryOrder="orders_retry")
@other_responses({404: "No such order"})
def get_order(order_id: uuid.UUID):
    """Show an order with its lines, totals and saga timeline (steps)."""
    return show_order(order_id, current_actor())


@bp.post("/orders/<uuid:order_id>/cancel")
@authenticate()
@response(order_schema, 202, ACCEPTED)
@links(GetOrder="orders_get_order")
@other_responses({404: "No such order", 409: "Already shipped, compensating or final"})
def cancel(order_id: uuid.UUID):
    """Cancel an order not yet shipped; its saga compensates."""
    cancel_order(order_id, current_actor())
    return show_order(order_id, current_actor())


@bp.post("/orders/<uuid:order_id>/payment")
@authenticate()
@body(PaymentSchema())
@response(order_schema, 202, ACCEPTED)
@links(GetOrder="orders_get_order", CancelOrder="orders_cancel")
@other_responses({404: "No such order of yours", 409: "The order is not awaiting payment"})
def pay(order_id: uuid.UUID, body: dict):
    """Pay again with a new token for an order in awaiting_payment (owner only); the saga resumes."""
    pay_again(order_id, current_actor(), body["token"])
    return show_order(order_id, current_actor())


@bp.post("/orders/<uuid:order_id>/retry")
@authenticate()
@response(order_schema, 202, ACCEPTED)
@links(GetOrder="orders_get_order", CancelOrder="orders_cancel")
@other_responses({403: "Operators only", 404: "No such order", 409: "Final or awaiting payment"})
def retry(order_id: uuid.UUID):
    """Re-drive a failed or stuck saga from its last completed step (operators)."""
    retry_saga(order_id, current_actor())
    return show_order(order_id, current_actor())
