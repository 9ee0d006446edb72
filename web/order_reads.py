"""Reading orders for the API: one order with its saga timeline, or a page of them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, selectinload

from models import Order, OrderLine, SagaStep, User, read_only
from services.errors import Forbidden
from services.ordering import Actor, load_visible_order
from web.pagination import encode_cursor, page


@dataclass(frozen=True)
class OrderView:
    """An order, its lines and its steps (``SagaStep.to_dict()`` in the order they ran),
    loaded inside a session so the schema can dump it afterwards."""

    order: Order
    lines: list[OrderLine]
    steps: list[dict]

    def __getattr__(self, name: str):
        return getattr(self.order, name)

    @property
    def totals(self) -> dict:
        return {"subtotal": self.order.subtotal, "total": self.order.total, "currency": self.order.currency}


def show_order(order_id: uuid.UUID, actor: Actor) -> OrderView:
    """The order as ``actor`` may see it; NotFound (404) for others' orders."""
    with read_only() as session:
        order = load_visible_order(session, order_id, actor)
        return OrderView(order, list(order.lines), _steps(session, [order.id])[order.id])


def list_orders(actor: Actor, args: dict) -> dict:
    """A page of orders, newest first by ``(created_at, id)``: the actor's own, or all
    for an operator. ``args``: ``{limit, status?, customer_email?, cursor?: (created_at, id)}``;
    ``customer_email`` (one customer's orders) is for operators only: Forbidden (403)."""
    query = (
        select(Order)
        .options(selectinload(Order.lines))
        .order_by(Order.created_at.desc(), Order.id.desc())
        .limit(args["limit"] + 1)
    )
    if not actor.is_operator:
        if "customer_email" in args:
            raise Forbidden("only operators may search other customers' orders")
        query = query.where(Order.customer_id == actor.user_id)
    if "customer_email" in args:
        email = User.normalize_email(args["customer_email"])
        query = query.where(Order.customer_id.in_(select(User.id).where(User.email == email)))
    if "status" in args:
        query = query.where(Order.status == args["status"])
    if "cursor" in args:
        query = query.where(tuple_(Order.created_at, Order.id) < tuple_(*args["cursor"]))
    with read_only() as session:
        orders = session.scalars(query).all()
        steps = _steps(session, [order.id for order in orders])
    views = [OrderView(order, list(order.lines), steps[order.id]) for order in orders]
    return page(views, args["limit"], _cursor)


def _steps(session: Session, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict]]:
    rows = (
        session.scalars(select(SagaStep).where(SagaStep.order_id.in_(order_ids)).order_by(SagaStep.id))
        if order_ids
        else []
    )
    steps: dict[uuid.UUID, list[dict]] = defaultdict(list)
    for step in rows:
        steps[step.order_id].append(step.to_dict())
    return steps


def _cursor(view: OrderView) -> str:
    created_at: datetime = view.created_at
    return encode_cursor(created_at.isoformat(), view.id)
