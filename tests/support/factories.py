"""Rows and orders for tests, each made unique by the caller's ``uid``."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

from sqlalchemy import func, select

from models import Inventory, Order, Product, User, unit_of_work
from models.catalog import change_on_hand
from services.ordering import place_order

FINAL = ("completed", "cancelled", "failed")
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "United Kingdom",
}


def customer(uid: str, role: str = "customer") -> User:
    with unit_of_work() as session:
        user = User(
            email=f"{role}-{uid}-{uuid.uuid4().hex[:4]}@test.orion.example", name=f"Test {uid}", role=role
        )
        user.set_password("correct horse battery")
        session.add(user)
    return user


def product(uid: str, on_hand: int, price: str = "2.55", suffix: str = "") -> str:
    sku = f"T{uid}{suffix}"[:32]
    with unit_of_work() as session:
        session.add(Product(sku=sku, name=f"Test product {sku}", unit_price=Decimal(price)))
        session.flush()
        session.add(Inventory(sku=sku, on_hand=0, reorder_point=0, reorder_quantity=0))
        session.flush()
        change_on_hand(session, sku, on_hand, "initial stock", "test")
    return sku


def order_body(lines: list[tuple[str, int]], token: str = "tok_visa") -> dict:
    return {
        "lines": [{"sku": sku, "quantity": qty} for sku, qty in lines],
        "shipping_address": dict(ADDRESS),
        "payment": {"token": token},
    }


def place(
    user: User, lines: list[tuple[str, int]], token: str = "tok_visa", key: str | None = None
) -> uuid.UUID:
    return place_order(user.id, order_body(lines, token), key).order_id


def wait_for(order_id: uuid.UUID, statuses=FINAL, timeout: float = 60) -> Order:
    """Poll the order until its status is in ``statuses``; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with unit_of_work() as session:
            order = session.get(Order, order_id)
            if order.status in statuses:
                return order
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} still {order.status!r} after {timeout}s")
        time.sleep(0.1)


def count(model, *where) -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def eventually(check, timeout: float = 30, interval: float = 0.1):
    """Call ``check`` until it returns a truthy value; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met after {timeout}s: {check}")
        time.sleep(interval)
