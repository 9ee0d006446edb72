"""Keyset pagination: opaque cursors and ``{items, next_cursor}`` pages.

A cursor is the urlsafe base64 (unpadded) of the last item's sort key, its
parts joined by ``|``. Clients must treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence

from marshmallow import ValidationError, fields, validate

DEFAULT_LIMIT, MAX_LIMIT = 20, 100


def encode_cursor(*parts: object) -> str:
    raw = "|".join(str(part) for part in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> str:
    """The text inside ``token``; ValueError when it is not urlsafe base64 of UTF-8."""
    padded = token + "=" * (-len(token) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor") from exc


class Cursor(fields.String):
    """A query-string cursor, loaded as ``parse(*parts)`` (the decoded text split on ``|``)."""

    def __init__(self, parse: Callable[..., object] = lambda text: text, parts: int = 1, **kwargs):
        kwargs.setdefault("metadata", {"description": "Opaque: the next_cursor of the previous page"})
        super().__init__(validate=validate.Length(max=512), **kwargs)
        self.parse, self.parts = parse, parts

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            pieces = decode_cursor(text).split("|", self.parts - 1)
            if len(pieces) != self.parts:
                raise ValueError("wrong number of parts")
            return self.parse(*pieces)
        except ValueError:
            raise ValidationError("Not a valid cursor.") from None


def limit_field() -> fields.Integer:
    return fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Page size, 1 to {MAX_LIMIT}"},
    )


def page(rows: Sequence, limit: int, cursor_of: Callable[[object], str]) -> dict:
    """``{items, next_cursor}`` from ``rows`` fetched with ``LIMIT limit + 1``."""
    items = list(rows[:limit])
    next_cursor = cursor_of(items[-1]) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}
