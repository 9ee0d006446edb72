"""Email templates: (subject, plain-text body) for an order."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Protocol

CONFIRMATION, CANCELLATION = "order_confirmation", "order_cancellation"
# No free text from the customer in any email (security issue, item 9): a
# "name" like "Win a prize at https://..." made every email a phishing relay.
GREETING = "Hello,\n\n"
PAYMENT_REMINDER = "payment_reminder"  # one template per reminder step: payment_reminder:1, :2, ...


def reminder(step: int) -> str:
    """The template name of reminder ``step`` (1, 2, ...)."""
    return f"{PAYMENT_REMINDER}:{step}"


_REASONS = {
    "out_of_stock": "some items are out of stock",
    "payment_declined": "the payment was declined",
    "payment_expired": "the payment was not completed in time",
    "customer_request": "you asked us to cancel it",
    "operator_request": "our team cancelled it",
    None: "we could not process it",
}


class Line(Protocol):
    """An order line as a template reads it."""

    @property
    def quantity(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def sku(self) -> str: ...
    @property
    def line_total(self) -> Decimal: ...


class Renderable(Protocol):
    """An order as a template reads it: an ``Order``, or the rows ``mail.outbox`` reads."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def total(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def cancel_reason(self) -> str | None: ...
    @property
    def lines(self) -> Sequence[Line]: ...


def render(template: str, order: Renderable) -> tuple[str, str]:
    """Subject and body for ``template``; raises KeyError for an unknown template.

    ``order`` has ``id``, ``total``, ``currency``, ``cancel_reason`` and ``lines``
    (each with ``quantity``, ``name``, ``sku``, ``line_total``): an ``Order`` or
    the rows ``mail.outbox`` reads."""
    if template.startswith(PAYMENT_REMINDER + ":"):
        return _payment_reminder(order)
    return _RENDERERS[template](order)


def _lines(order: Renderable) -> str:
    return "\n".join(
        f"  {line.quantity} x {line.name} ({line.sku}) {line.line_total} {order.currency}"
        for line in order.lines
    )


def _confirmation(order: Renderable) -> tuple[str, str]:
    subject = f"Your Orion order {order.id} is confirmed"
    body = (
        GREETING + f"Thank you for your order {order.id}. We have taken your payment "
        f"of {order.total} {order.currency} and are preparing:\n\n{_lines(order)}\n\n"
        "Orion Shop\n"
    )
    return subject, body


def _cancellation(order: Renderable) -> tuple[str, str]:
    subject = f"Your Orion order {order.id} was cancelled"
    why = _REASONS.get(order.cancel_reason, _REASONS[None])
    body = (
        GREETING + f"Your order {order.id} was cancelled because {why}. Any payment "
        f"taken has been returned, and nothing was shipped.\n\n{_lines(order)}\n\nOrion Shop\n"
    )
    return subject, body


def _payment_reminder(order: Renderable) -> tuple[str, str]:
    subject = f"Your Orion order {order.id} is waiting for payment"
    body = (
        GREETING + f"Your bank declined the payment of {order.total} {order.currency} "
        f"for order {order.id}. We are holding these items for you:\n\n{_lines(order)}\n\n"
        "Pay with another card from your orders page before the hold ends, or the order "
        "will be cancelled.\n\nOrion Shop\n"
    )
    return subject, body


_RENDERERS: dict[str, Callable[[Renderable], tuple[str, str]]] = {
    CONFIRMATION: _confirmation,
    CANCELLATION: _cancellation,
}
