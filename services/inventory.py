"""Stock commands for operators (SPEC ``POST /inventory/{sku}/adjustments``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from models import Inventory, unit_of_work
from models.catalog import change_on_hand
from services.errors import Conflict, Forbidden, NotFound
from services.ordering import Actor


def adjust_stock(sku: str, delta: int, reason: str, actor: Actor) -> dict[str, Any]:
    """Add ``delta`` units (negative: remove) to ``on_hand`` with a ledger row.

    Returns the new level ``{sku, on_hand, reserved, available, reorder_point}``.
    Raises Forbidden for non-operators, NotFound for an unknown sku, Conflict (409)
    when ``on_hand + delta`` would fall below ``reserved`` (units promised to
    orders cannot be counted away) or below zero.
    """
    if not actor.is_operator:
        raise Forbidden("only operators may adjust stock")
    with unit_of_work() as session:
        stock = session.scalar(select(Inventory).where(Inventory.sku == sku).with_for_update())
        if stock is None:
            raise NotFound(f"no stock record for sku {sku!r}")
        if stock.on_hand + delta < stock.reserved:
            raise Conflict(
                f"on_hand {stock.on_hand} {delta:+d} would fall below the {stock.reserved} unit(s) reserved"
            )
        change_on_hand(session, sku, delta, reason, f"adjustment by operator {actor.user_id}")
        session.refresh(stock)
        return stock_level(stock)


def stock_level(stock: Inventory) -> dict[str, Any]:
    return {
        "sku": stock.sku,
        "on_hand": stock.on_hand,
        "reserved": stock.reserved,
        "available": stock.available,
        "reorder_point": stock.reorder_point,
    }
