"""The replay's pure planning: token mix, invoice-to-request mapping, cancellation matching."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from tools.replay import (
    DEFAULT_TOKENS,
    GUEST_EMAIL,
    MAX_CANDIDATES,
    CancelAction,
    OrderAction,
    choose_token,
    order_action,
    parse_tokens,
    plan,
)
from tools.retail_data import Invoice, Row

T0 = datetime(2010, 12, 1, 8, 0)
VISA_ONLY = parse_tokens("tok_visa=1")


def invoice(number, *lines, customer="17850", country="France", minute=0, part=1) -> Invoice:
    """``lines`` are (code, quantity[, price]) tuples."""
    rows = tuple(
        Row(
            number,
            code,
            f"item {code}",
            qty,
            T0 + timedelta(minutes=minute),
            Decimal(rest[0] if rest else "1.25"),
            customer,
            country,
            2,
            code.upper(),
        )
        for code, qty, *rest in lines
    )
    return Invoice(number, rows, part)


def test_token_mix_is_cumulative_and_normalised():
    mix = parse_tokens("tok_a=3, tok_b=1")
    assert [t for t, _ in mix] == ["tok_a", "tok_b"]
    assert mix[0][1] == pytest.approx(0.75) and mix[1][1] == pytest.approx(1.0)


@pytest.mark.parametrize("spec", ["", "tok_a", "tok_a=x", "tok_a=0", "tok_a=-1", "=0.5", "tok_a=inf"])
def test_bad_token_mix_is_refused(spec):
    with pytest.raises(ValueError):
        parse_tokens(spec)


def test_token_choice_is_deterministic_and_follows_the_mix():
    mix = parse_tokens(DEFAULT_TOKENS)
    first = [choose_token(str(n), mix) for n in range(536365, 546365)]
    assert first == [choose_token(str(n), mix) for n in range(536365, 546365)]
    shares = Counter(first)
    assert 0.88 < shares["tok_visa"] / 10_000 < 0.92
    assert 0.04 < shares["tok_mastercard"] / 10_000 < 0.06
    assert 0.01 < shares["tok_chargeDeclined"] / 10_000 < 0.03
    assert 0.01 < shares["tok_chargeDeclinedInsufficientFunds"] / 10_000 < 0.03
    assert 0.004 < shares["tok_flaky"] / 10_000 < 0.016


def test_a_sale_becomes_an_order_request():
    stats = Counter()
    action = order_action(
        invoice("536365", ("85123A", 6), ("POST", 1, "18.00"), ("71053", 2), ("85123a", 1)),
        0,
        VISA_ONLY,
        stats,
    )
    assert action.key == "invoice-536365"
    assert action.email == "customer-17850@replay.orion.example"
    assert action.body["lines"] == [
        {"sku": "85123A", "quantity": 6},
        {"sku": "71053", "quantity": 2},
        {"sku": "85123A", "quantity": 1},
    ]
    assert action.body["payment"] == {"token": "tok_visa"}
    assert action.body["shipping_address"]["country"] == "France"
    assert action.body["shipping_address"]["city"] == "Paris"
    assert set(action.body["shipping_address"]) >= {"name", "line1", "city", "postal_code", "country"}
    assert action.skus == {"85123A", "71053"}
    assert stats["rows_non_product"] == 1


def test_guest_rows_share_one_account():
    action = order_action(invoice("536544", ("85123A", 1), customer=None), 0, VISA_ONLY, Counter())
    assert action.email == GUEST_EMAIL


def test_adjustments_are_counted():
    stats = Counter()
    lines = [(f"{20000 + n}", 1) for n in range(103)] + [("22423", 5000), ("22424", 1, "0"), ("22425", -1)]
    action = order_action(invoice("536365", *lines), 0, VISA_ONLY, stats)
    assert len(action.body["lines"]) == 100
    assert stats == Counter(
        rows_not_priced=1,
        rows_negative_quantity=1,
        quantities_clamped=1,
        lines_dropped=4,
        invoices_truncated=1,
    )


def test_a_late_second_part_gets_its_own_key():
    action = order_action(invoice("542806", ("22692", 2), part=2), 0, VISA_ONLY, Counter())
    assert action.key == "invoice-542806-2"


def test_an_invoice_of_postage_only_yields_nothing():
    assert order_action(invoice("536370", ("POST", 3, "18")), 0, VISA_ONLY, Counter()) is None


def test_cancellation_matches_the_customers_latest_orders_sharing_a_sku():
    invoices = [
        invoice("1", ("22423", 1)),
        invoice("2", ("85123A", 1)),
        invoice("3", ("22423", 2)),
        invoice("4", ("22423", 2), customer="99999"),
        invoice("C5", ("22423", -1), ("POST", -1, "18"), minute=5),
    ]
    actions, stats = plan(invoices, 0, VISA_ONLY)
    cancel = actions[-1]
    assert isinstance(cancel, CancelAction)
    assert cancel.candidates == (2, 0)  # invoices 3 then 1; not 2 (other sku) nor 4 (other customer)
    assert stats["cancellations"] == 1 and stats["orders"] == 4


def test_unmatched_cancellations_do_not_count_towards_the_limit():
    invoices = [
        invoice("C1", ("22423", -1)),
        invoice("2", ("22423", 1)),
        invoice("C3", ("85123A", -1)),
        invoice("4", ("85123A", 1)),
        invoice("C5", ("85123A", -1)),
        invoice("6", ("85123A", 1)),
    ]
    actions, stats = plan(invoices, 3, VISA_ONLY)
    assert [a.invoice for a in actions] == ["2", "4", "C5"]
    assert stats["cancellations_unmatched"] == 2 and stats["invoices_read"] == 5


def test_cancellation_candidates_are_capped():
    invoices = [invoice(str(n), ("22423", 1)) for n in range(MAX_CANDIDATES + 5)]
    actions, _ = plan([*invoices, invoice("C99", ("22423", -1))], 0, VISA_ONLY)
    assert actions[-1].candidates == tuple(range(MAX_CANDIDATES + 4, 4, -1))


def test_plan_keeps_file_order_and_skips_adjustments():
    invoices = [invoice("2", ("22423", 1)), invoice("A3", ("B", 1, "11062.06")), invoice("4", ("22423", 1))]
    actions, stats = plan(invoices, 0, VISA_ONLY)
    assert [a.invoice for a in actions] == ["2", "4"] and all(isinstance(a, OrderAction) for a in actions)
    assert [a.index for a in actions] == [0, 1]
    assert stats["adjustment_invoices"] == 1
