"""Schemas, cursors and problem fields, without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from marshmallow import ValidationError

from web.errors import field_errors
from web.order_schemas import OrderCreateSchema, OrderQuerySchema
from web.pagination import decode_cursor, encode_cursor

ADDRESS = {"name": "A", "line1": "1 Road", "city": "London", "postal_code": "N1", "country": "UK"}


def order(**changes) -> dict:
    return {
        "lines": [{"sku": "S1", "quantity": 1}],
        "shipping_address": dict(ADDRESS),
        "payment": {"token": "tok_visa"},
        **changes,
    }


def test_a_valid_order_loads_unchanged():
    assert OrderCreateSchema().load(order()) == order()


def test_unknown_fields_are_refused_at_every_depth():
    body = order(extra=1)
    body["lines"][0]["colour"] = "red"
    body["shipping_address"]["zip"] = "N1"
    with pytest.raises(ValidationError) as caught:
        OrderCreateSchema().load(body)
    assert field_errors(caught.value.messages) == {
        "extra": ["Unknown field."],
        "lines.0.colour": ["Unknown field."],
        "shipping_address.zip": ["Unknown field."],
    }


def test_field_errors_keep_whole_body_messages():
    assert field_errors(["Invalid input type."]) == {"_schema": ["Invalid input type."]}
    assert field_errors({"_schema": ["bad"]}) == {"_schema": ["bad"]}


def test_cursors_round_trip_and_are_opaque():
    token = encode_cursor("2025-01-01T00:00:00+00:00", "abc")
    assert "|" not in token and "=" not in token
    assert decode_cursor(token) == "2025-01-01T00:00:00+00:00|abc"
    with pytest.raises(ValueError):
        decode_cursor("%%%")


def test_an_order_cursor_loads_as_time_and_id():
    at, order_id = datetime(2025, 1, 1, tzinfo=UTC), uuid.uuid4()
    args = OrderQuerySchema().load({"cursor": encode_cursor(at.isoformat(), order_id)})
    assert args == {"limit": 20, "cursor": (at, order_id)}


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor("2025-01-01T00:00:00", uuid.uuid4()),  # no zone
        encode_cursor("yesterday", uuid.uuid4()),
        encode_cursor("2025-01-01T00:00:00+00:00"),
    ],
)
def test_a_forged_order_cursor_is_refused(cursor):
    with pytest.raises(ValidationError) as caught:
        OrderQuerySchema().load({"cursor": cursor})
    assert "cursor" in caught.value.messages


def test_passwords_hash_with_owasp_argon2id_parameters_and_old_hashes_still_verify():
    from argon2 import PasswordHasher

    from models import User

    user = User(email="a@b.c", name="A")
    user.set_password("correct horse battery")
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert user.check_password("correct horse battery") and not user.check_password("wrong")
    user.password_hash = PasswordHasher().hash("made with the library defaults")
    assert user.check_password("made with the library defaults")


@pytest.mark.parametrize(
    "address",
    [dict(ADDRESS), {**ADDRESS, "line2": "Flat 2"}, {**ADDRESS, "line2": None}],
    ids=["no-line2", "line2", "line2-null"],
)
def test_the_202_body_written_by_hand_is_the_order_schemas_dump(address):
    """``accepted_order`` (POST /orders' answer) stays what ``OrderSchema`` would write."""
    import json
    from decimal import Decimal

    from models import Order, OrderLine
    from web.order_reads import OrderView
    from web.order_schemas import OrderSchema, accepted_order

    at = datetime(2025, 1, 31, 9, 30, 0, 123456, tzinfo=UTC)
    order_id = uuid.uuid4()
    lines = [
        {"order_id": order_id, "line_no": n, "sku": sku, "name": f"Product {sku}", "unit_price": price,
         "quantity": qty, "warehouse": "north", "line_total": price * qty}
        for n, (sku, price, qty) in enumerate(
            [("S1", Decimal("2.55"), 2), ("S2", Decimal("10.00"), 1), ("S3", Decimal("0.5"), 3)], start=1
        )
    ]  # fmt: skip
    subtotal = sum((line["line_total"] for line in lines), Decimal("0.00"))
    row = {
        "id": order_id, "customer_id": 7, "status": "pending", "cancel_reason": None, "failure": None,
        "currency": "GBP", "subtotal": subtotal, "total": subtotal, "shipping_address": address,
        "payment_token": "tok_visa", "idempotency_key": None, "request_hash": "x", "saga_run": 1,
        "last_event_seq": 1, "correlation_id": "c", "created_at": at, "updated_at": at,
        "awaiting_payment_since": None, "finished_at": None,
    }  # fmt: skip
    orm = Order(**row)
    dumped = OrderSchema().dump(OrderView(orm, [OrderLine(**line) for line in lines], []))
    written = accepted_order(row, lines)
    assert json.dumps(written) == json.dumps(dumped)  # same keys, same order, same text
