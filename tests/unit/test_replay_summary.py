"""The replay's summary math: percentiles, latency, throughput, Retry-After."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from tools.replay import OrderState, parse_time, percentile, render, retry_after, summarize, timings


def state(status, created="2026-01-01T10:00:00Z", finished=None, reason=None, polled=True) -> OrderState:
    s = OrderState(
        action=None,
        id="x",
        status=status,
        cancel_reason=reason,
        created_at=created,
        finished_at=finished,
        polled=polled,
    )
    return s


def test_nearest_rank_percentiles():
    values = list(range(1, 101))  # 1..100
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50, 90, 99)
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4], 51) == 3
    assert percentile([], 50) is None


def test_times_parse_with_z_offset_or_naive():
    expected = datetime(2026, 1, 1, 10, 0, 1, 500000, tzinfo=UTC)
    assert parse_time("2026-01-01T10:00:01.5Z") == expected
    assert parse_time("2026-01-01T11:00:01.500000+01:00") == expected
    assert parse_time("2026-01-01T10:00:01.500000") == expected


def test_latency_and_throughput_come_from_created_and_finished_at():
    states = [
        state("completed", "2026-01-01T10:00:00Z", "2026-01-01T10:00:02Z"),
        state("cancelled", "2026-01-01T10:00:01Z", "2026-01-01T10:00:05Z", "out_of_stock"),
        state("failed", "2026-01-01T10:00:03Z", "2026-01-01T10:00:04Z"),
        state("awaiting_payment", "2026-01-01T10:00:03Z", None),
    ]
    result = timings(states)
    assert result["latency_s"] == {"count": 3, "p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0}
    assert result["throughput_orders_per_s"] == pytest.approx(3 / 5)


def test_an_order_seen_only_in_its_202_is_not_final():
    result = timings([state("completed", "2026-01-01T10:00:00Z", "2026-01-01T10:00:02Z", polled=False)])
    assert result["latency_s"]["count"] == 0 and result["throughput_orders_per_s"] is None


def test_summary_counts_and_json():
    states = [
        state("completed", "2026-01-01T10:00:00Z", "2026-01-01T10:00:02Z"),
        state("cancelled", "2026-01-01T10:00:00Z", "2026-01-01T10:00:03Z", "out_of_stock"),
        state("cancelled", "2026-01-01T10:00:00Z", "2026-01-01T10:00:03Z", "customer_request"),
        state("compensating"),
    ]
    counts = Counter(
        {
            "orders.placed": 4,
            "orders.rejected_404": 1,
            "cancellations.accepted": 2,
            "cancellations.not_cancellable": 1,
            "cancellations.none_cancellable": 3,
            "errors.network": 2,
        }
    )
    stats = Counter(invoices_read=9, orders=5, cancellations=6)
    summary = summarize(stats, counts, states, Counter(http_5xx=4))
    assert summary["invoices"]["invoices_read"] == 9
    assert summary["orders"] == {"placed": 4, "rejected_404": 1}
    assert summary["cancellations"]["sent"] == 3
    assert summary["final"] == {"completed": 1, "cancelled": 2}
    assert summary["cancel_reasons"] == {"out_of_stock": 1, "customer_request": 1}
    assert summary["not_final"] == {"compensating": 1}
    assert summary["errors"] == {"network": 2} and summary["retries"] == {"http_5xx": 4}
    assert summary["all_final"] is False
    assert json.loads(json.dumps(summary)) == summary
    assert "not final                 compensating 1" in render(summary)


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after("Thu, 01 Jan 2026 10:00:12 GMT", now) == 12.0
    assert retry_after("Thu, 01 Jan 2026 09:00:00 GMT", now) == 0.0
    assert retry_after("3600", now) == 60.0
    assert retry_after(None, now) == 1.0 and retry_after("soon", now) == 1.0
