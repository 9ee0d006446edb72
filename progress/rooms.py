"""Socket.IO room names (SPEC "Socket.IO"): one per user, one per order, and
one for operators, who receive every order's and every SKU's events."""

from __future__ import annotations

OPERATORS = "operators"


def user_room(user_id: int | str) -> str:
    return f"user:{user_id}"


def order_room(order_id: str) -> str:
    return f"order:{order_id}"
