"""Inventory for operators (SPEC): stock levels, and adjustments through the ledger."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from models import Inventory, read_only
from models.user import OPERATOR
from services.inventory import adjust_stock, stock_level
from web.apidoc import arguments, authenticate, body, current_actor, other_responses, response
from web.pagination import Cursor, encode_cursor, limit_field, page
from web.schemas import StrictSchema

bp = Blueprint("inventory", __name__)


class InventoryQuerySchema(StrictSchema):
    below_reorder = fields.Boolean(
        metadata={"description": "true keeps SKUs whose available is below reorder_point"}
    )
    limit = limit_field()
    cursor = Cursor()


class StockLevelSchema(Schema):
    sku = fields.String()
    on_hand = fields.Integer()
    reserved = fields.Integer()
    available = fields.Integer(metadata={"description": "on_hand - reserved"})
    reorder_point = fields.Integer()


class StockPageSchema(Schema):
    items = fields.List(fields.Nested(StockLevelSchema))
    next_cursor = fields.String(allow_none=True)


class AdjustmentSchema(StrictSchema):
    delta = fields.Integer(
        required=True,
        strict=True,
        validate=[
            validate.Range(min=-1_000_000, max=1_000_000),
            validate.NoneOf([0], error="delta must not be 0"),
        ],
        metadata={"description": "Units to add (negative: remove); not 0", "not": {"enum": [0]}},
    )
    reason = fields.String(
        required=True,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Why; written to the inventory ledger"},
    )


@bp.get("/inventory")
@authenticate(role=OPERATOR)
@arguments(InventoryQuerySchema())
@response(StockPageSchema())
def list_inventory(args: dict):
    """List stock levels by sku; below_reorder=true keeps SKUs below their reorder point."""
    query = select(Inventory).order_by(Inventory.sku).limit(args["limit"] + 1)
    if args.get("below_reorder"):
        query = query.where(Inventory.on_hand - Inventory.reserved < Inventory.reorder_point)
    if "cursor" in args:
        query = query.where(Inventory.sku > args["cursor"])
    with read_only() as session:
        rows = [stock_level(stock) for stock in session.scalars(query)]
    return page(rows, args["limit"], lambda row: encode_cursor(row["sku"]))


@bp.post("/inventory/<sku>/adjustments")
@authenticate(role=OPERATOR)
@body(AdjustmentSchema())
@response(StockLevelSchema(), 201, "Created: the new stock level")
@other_responses({404: "No such sku", 409: "on_hand + delta would fall below reserved"})
def adjust(sku: str, body: dict):
    """Adjust a SKU's on_hand by delta, with a ledger row giving the reason."""
    return adjust_stock(sku, body["delta"], body["reason"], current_actor())
