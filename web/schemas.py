"""Marshmallow schemas shared by the blueprints: a strict base, money, UTC
timestamps, problems, and the auth and product shapes (order shapes live in
``web/order_schemas.py``).

Every input schema rejects unknown fields (``RAISE``), nested ones included,
so a misspelt field at any depth is a 422 rather than silently dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from marshmallow import RAISE, Schema, fields, validate

from web.pagination import Cursor, limit_field


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class Money(fields.Decimal):
    """A decimal string with two places (``"12.50"``); never a float (SPEC)."""

    def __init__(self, **kwargs):
        super().__init__(places=2, as_string=True, **kwargs)


class UTCDateTime(fields.DateTime):
    """ISO-8601 in UTC with a ``Z`` suffix: ``2025-01-31T09:30:00.123456Z``."""

    def _serialize(self, value, attr, obj, **kwargs):
        return utc_text(value)


CENTS = Decimal("0.01")


def money_text(value: Decimal) -> str:
    """``Money``'s output: two places, as text (``Decimal("5.1")`` → ``"5.10"``)."""
    return format(value.quantize(CENTS), "f")


def utc_text(value: datetime | None) -> str | None:
    """``UTCDateTime``'s output (None stays None)."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error response carries them."""

    type = fields.String(metadata={"example": "about:blank"})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "On 422 only: messages by field path"},
    )


# --- auth -------------------------------------------------------------------


class RegisterSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=8, max=1024))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class LoginSchema(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=1024))


class LogoutSchema(StrictSchema):
    refresh_token = fields.String(
        validate=validate.Length(min=1, max=4096), metadata={"description": "Also revoke this refresh token"}
    )


class UserSchema(Schema):
    id = fields.Integer()
    email = fields.String()
    name = fields.String()
    role = fields.String(metadata={"enum": ["customer", "operator"]})


class AccessTokenSchema(Schema):
    access_token = fields.String()
    expires_in = fields.Integer(metadata={"description": "Seconds until the access token expires"})


class TokensSchema(AccessTokenSchema):
    refresh_token = fields.String()
    token_type = fields.String(metadata={"example": "Bearer"})


# --- products ---------------------------------------------------------------


class ProductQuerySchema(StrictSchema):
    q = fields.String(
        validate=validate.Length(min=1, max=100),
        metadata={"description": "Matches sku or name, case-insensitively"},
    )
    limit = limit_field()
    cursor = Cursor()


class ProductSchema(Schema):
    sku = fields.String()
    name = fields.String()
    unit_price = Money()
    currency = fields.String(metadata={"example": "GBP"})
    available = fields.Integer(metadata={"description": "on_hand - reserved; 0 without stock"})


class ProductPageSchema(Schema):
    items = fields.List(fields.Nested(ProductSchema))
    next_cursor = fields.String(allow_none=True)
