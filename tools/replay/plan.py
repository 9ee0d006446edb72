"""Planning, pure: invoices -> order and cancel actions, in file order."""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tools.retail_data import Invoice, is_product_code, sale_lines

DEFAULT_TOKENS = (
    "tok_visa=0.9,tok_mastercard=0.05,tok_chargeDeclined=0.02,"
    "tok_chargeDeclinedInsufficientFunds=0.02,tok_flaky=0.01"
)
GUEST_EMAIL = "guest@replay.orion.example"
MAX_CANDIDATES = 10  # a cancellation checks at most this many matching orders
CITIES = {
    "Australia": "Canberra",
    "Austria": "Vienna",
    "Bahrain": "Manama",
    "Belgium": "Brussels",
    "Brazil": "Brasilia",
    "Canada": "Ottawa",
    "Channel Islands": "St Helier",
    "Cyprus": "Nicosia",
    "Czech Republic": "Prague",
    "Denmark": "Copenhagen",
    "EIRE": "Dublin",
    "Finland": "Helsinki",
    "France": "Paris",
    "Germany": "Berlin",
    "Greece": "Athens",
    "Hong Kong": "Hong Kong",
    "Iceland": "Reykjavik",
    "Israel": "Jerusalem",
    "Italy": "Rome",
    "Japan": "Tokyo",
    "Lebanon": "Beirut",
    "Lithuania": "Vilnius",
    "Malta": "Valletta",
    "Netherlands": "Amsterdam",
    "Norway": "Oslo",
    "Poland": "Warsaw",
    "Portugal": "Lisbon",
    "RSA": "Pretoria",
    "Saudi Arabia": "Riyadh",
    "Singapore": "Singapore",
    "Spain": "Madrid",
    "Sweden": "Stockholm",
    "Switzerland": "Bern",
    "USA": "Washington",
    "United Arab Emirates": "Abu Dhabi",
    "United Kingdom": "London",
}


# ---------------------------------------------------------------- planning (pure)


def parse_tokens(spec: str) -> list[tuple[str, float]]:
    """``"tok_a=0.9,tok_b=0.1"`` -> ``[(token, cumulative share)]``; shares are normalised to 1.

    Raises ValueError naming the bad item (missing ``=``, not a number, not positive).
    """
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        token, sep, weight = item.partition("=")
        try:
            share = float(weight) if sep and token.strip() else -1.0
        except ValueError:
            share = -1.0
        if not share > 0 or math.isinf(share):
            raise ValueError(f"bad token share {item!r}: expected token=positive number")
        pairs.append((token.strip(), share))
    if not pairs:
        raise ValueError("empty token mix")
    total, running, mix = sum(s for _, s in pairs), 0.0, []
    for token, share in pairs:
        running += share / total
        mix.append((token, running))
    return mix


def choose_token(invoice_no: str, mix: list[tuple[str, float]]) -> str:
    """The payment token for an invoice: its number's SHA-256 as a fraction in [0, 1)
    picks from the cumulative ``mix`` (same invoice, same token, on every run)."""
    fraction = int.from_bytes(hashlib.sha256(invoice_no.encode()).digest()[:8], "big") / 2**64
    return next((token for token, upto in mix if fraction < upto), mix[-1][0])


def customer_email(customer_id: str | None) -> str:
    return f"customer-{customer_id}@replay.orion.example" if customer_id else GUEST_EMAIL


def shipping_address(customer_id: str | None, country: str) -> dict:
    """A plausible address in the invoice's country (its capital; the country name if unknown)."""
    return {
        "name": f"Customer {customer_id}" if customer_id else "Guest customer",
        "line1": "1 High Street",
        "city": CITIES.get(country, country or "Unknown"),
        "postal_code": "00000",
        "country": country or "Unspecified",
    }


@dataclass(frozen=True)
class OrderAction:
    """``POST /orders`` for one sale invoice; ``index`` is its position in the plan."""

    index: int
    invoice: str
    key: str
    email: str
    at: datetime
    skus: frozenset[str]
    body: dict


@dataclass(frozen=True)
class CancelAction:
    """A ``C`` invoice: cancel the first still-cancellable order among ``candidates``
    (indices of earlier OrderActions by the same customer sharing a sku, most recent first)."""

    index: int
    invoice: str
    email: str
    at: datetime
    candidates: tuple[int, ...]


def order_action(invoice: Invoice, index: int, mix, stats: Counter) -> OrderAction | None:
    """The order request for a sale invoice, or None when no product line is left.

    Adds to ``stats``: rows skipped (non-product, not priced, negative quantity),
    quantities clamped, invoices truncated to 100 lines and the lines dropped.
    """
    sale = sale_lines(invoice)
    stats.update(
        rows_non_product=sale.non_product,
        rows_not_priced=sale.not_priced,
        rows_negative_quantity=sale.negative_quantity,
        quantities_clamped=sale.clamped,
        lines_dropped=sale.dropped,
        invoices_truncated=bool(sale.dropped),
    )
    if not sale.lines:
        return None
    key = f"invoice-{invoice.number}" + (f"-{invoice.part}" if invoice.part > 1 else "")
    body = {
        "lines": [{"sku": sku, "quantity": qty} for sku, qty in sale.lines],
        "shipping_address": shipping_address(invoice.customer_id, invoice.country),
        "payment": {"token": choose_token(invoice.number, mix)},
    }
    return OrderAction(
        index,
        invoice.number,
        key,
        customer_email(invoice.customer_id),
        invoice.at,
        frozenset(sku for sku, _ in sale.lines),
        body,
    )


def cancel_action(invoice: Invoice, index: int, history: list[OrderAction]) -> CancelAction | None:
    """The cancellation for a ``C`` invoice, or None when no earlier order of that customer shares a sku."""
    skus = {row.sku for row in invoice.rows if is_product_code(row.code)}
    matches = tuple(o.index for o in reversed(history) if o.skus & skus)[:MAX_CANDIDATES]
    if not matches:
        return None
    return CancelAction(index, invoice.number, customer_email(invoice.customer_id), invoice.at, matches)


def plan(invoices: Iterable[Invoice], limit: int, mix) -> tuple[list, Counter]:
    """The first ``limit`` (all if <= 0) invoices that yield an order or a cancellation, as actions.

    Returns ``(actions, stats)``; stats counts invoices read, orders, cancellations,
    invoices skipped by kind and the row adjustments of ``order_action``.
    """
    actions: list = []
    history: dict[str, list[OrderAction]] = defaultdict(list)
    stats: Counter = Counter()
    for invoice in invoices:
        stats["invoices_read"] += 1
        action = _action_for(invoice, len(actions), mix, history, stats)
        if action is not None:
            actions.append(action)
            if len(actions) == limit:
                break
    return actions, stats


def _action_for(invoice: Invoice, index: int, mix, history: dict, stats: Counter):
    if invoice.is_cancellation:
        action = cancel_action(invoice, index, history[customer_email(invoice.customer_id)])
        stats["cancellations" if action else "cancellations_unmatched"] += 1
    elif invoice.is_sale:
        action = order_action(invoice, index, mix, stats)
        stats["orders" if action else "invoices_without_products"] += 1
        if action:
            history[action.email].append(action)
    else:
        action = None
        stats["adjustment_invoices"] += 1
    return action
