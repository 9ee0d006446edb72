"""Order schemas: the POST /orders body (SPEC limits: 1-100 lines, quantity
1-1000), the list query, and the order as the API shows it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, validate

from models.order import STATUSES
from web.pagination import Cursor, limit_field
from web.schemas import Money, StrictSchema, UTCDateTime, money_text, utc_text

MAX_LINES, MAX_QUANTITY = 100, 1000


def _text(low: int, high: int, **kwargs) -> fields.String:
    return fields.String(validate=validate.Length(min=low, max=high), **kwargs)


class LineInSchema(StrictSchema):
    sku = _text(1, 32, required=True)
    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_QUANTITY))


class AddressSchema(StrictSchema):
    name = _text(1, 200, required=True)
    line1 = _text(1, 200, required=True)
    line2 = _text(0, 200, allow_none=True)
    city = _text(1, 100, required=True)
    postal_code = _text(1, 20, required=True)
    country = _text(1, 100, required=True)


class PaymentSchema(StrictSchema):
    token = _text(1, 64, required=True, metadata={"example": "tok_visa"})


class OrderCreateSchema(StrictSchema):
    lines = fields.List(
        fields.Nested(LineInSchema), required=True, validate=validate.Length(min=1, max=MAX_LINES)
    )
    shipping_address = fields.Nested(AddressSchema, required=True)
    payment = fields.Nested(PaymentSchema, required=True)


class IdempotencyHeaderSchema(StrictSchema):
    idempotency_key = _text(
        1,
        255,
        data_key="Idempotency-Key",
        metadata={"description": "Repeat a POST safely: the same key and body return the first order"},
    )


def _order_key(created_at: str, order_id: str) -> tuple[datetime, uuid.UUID]:
    at = datetime.fromisoformat(created_at)
    if at.tzinfo is None:
        raise ValueError("cursor time lacks a zone")
    return at, uuid.UUID(order_id)


class OrderQuerySchema(StrictSchema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    customer_email = _text(
        1,
        254,
        metadata={
            "description": "Operators only (403 for customers): the orders of the customer with "
            "this email, matched exactly, case-insensitively"
        },
    )
    limit = limit_field()
    cursor = Cursor(parse=_order_key, parts=2)


class LineSchema(Schema):
    sku = fields.String()
    name = fields.String()
    unit_price = Money()
    quantity = fields.Integer()
    line_total = Money()


class TotalsSchema(Schema):
    subtotal = Money()
    total = Money()
    currency = fields.String()


class StepSchema(Schema):
    """One saga step run, as ``SagaStep.to_dict()`` gives it (compensations included)."""

    name = fields.String()
    status = fields.String()
    attempt = fields.Integer(metadata={"description": "Counts from 1"})
    started_at = fields.String(metadata={"format": "date-time"})
    finished_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    error = fields.String(allow_none=True)
    kind = fields.String(
        metadata={
            "enum": ["forward", "compensation"],
            "description": "A forward step or the compensation of one",
        }
    )


class OrderSchema(Schema):
    id = fields.UUID()
    status = fields.String(metadata={"enum": list(STATUSES)})
    cancel_reason = fields.String(allow_none=True)
    currency = fields.String()
    lines = fields.List(fields.Nested(LineSchema))
    totals = fields.Nested(TotalsSchema)
    shipping_address = fields.Nested(AddressSchema)
    created_at = UTCDateTime()
    updated_at = UTCDateTime()
    finished_at = UTCDateTime(allow_none=True)
    steps = fields.List(fields.Nested(StepSchema), metadata={"description": "The saga timeline"})
    last_event_seq = fields.Integer(
        metadata={
            "description": "The seq of the order's latest event; subscribe with after_seq set to it "
            "to receive only what happens next"
        }
    )


class OrderPageSchema(Schema):
    items = fields.List(fields.Nested(OrderSchema))
    next_cursor = fields.String(allow_none=True)


_ADDRESS_FIELDS = tuple(AddressSchema().fields)


def accepted_order(order: Mapping[str, Any], lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``OrderSchema().dump`` of an order just placed, written out from the rows
    ``place_order`` inserted (its ``orders`` row and ``order_lines`` rows): the
    body of ``POST /orders``' 202, on the API's hottest path. The schema would
    need the rows as ORM objects and walks its fields one by one, about 0.2 ms
    of CPU per request together; this is a few dictionaries. Same keys in the
    same order, same formats, no steps yet; ``tests/unit/test_web_schemas.py``
    holds it to the schema's own dump."""
    address = order["shipping_address"]
    return {
        "id": str(order["id"]),
        "status": order["status"],
        "cancel_reason": order["cancel_reason"],
        "currency": order["currency"],
        "lines": [
            {
                "sku": line["sku"],
                "name": line["name"],
                "unit_price": money_text(line["unit_price"]),
                "quantity": line["quantity"],
                "line_total": money_text(line["line_total"]),
            }
            for line in lines
        ],
        "totals": {
            "subtotal": money_text(order["subtotal"]),
            "total": money_text(order["total"]),
            "currency": order["currency"],
        },
        "shipping_address": {name: address[name] for name in _ADDRESS_FIELDS if name in address},
        "created_at": utc_text(order["created_at"]),
        "updated_at": utc_text(order["updated_at"]),
        "finished_at": utc_text(order["finished_at"]),
        "steps": [],
        "last_event_seq": order["last_event_seq"],
    }
