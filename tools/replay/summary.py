"""The summary, pure: counts, throughput, latency percentiles (docs/replay.md)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.replay.client import OrderState


# ---------------------------------------------------------------- summary (pure)


def parse_time(value: str) -> datetime:
    """An ISO-8601 timestamp as an aware datetime (``Z`` accepted; naive taken as UTC)."""
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list: the smallest value with at least
    ``p`` % of the values at or below it; None for an empty list."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def timings(states: Iterable[OrderState]) -> dict:
    """Latency (finished_at - created_at, seconds) percentiles of the final orders, and
    throughput: final orders per second from the first created_at to the last finished_at."""
    spans = [
        (parse_time(s.created_at), parse_time(s.finished_at))
        for s in states
        if s.done and s.created_at and s.finished_at
    ]
    latencies = sorted((end - start).total_seconds() for start, end in spans)
    window = (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds() if spans else 0.0
    stats = {f"p{p}": percentile(latencies, p) for p in (50, 90, 99)}
    return {
        "latency_s": {"count": len(latencies), **stats, "max": latencies[-1] if latencies else None},
        "throughput_orders_per_s": round(len(spans) / window, 3) if window > 0 else None,
    }


def _group(counts: Counter, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sorted(counts.items()) if k.startswith(prefix)}


def summarize(
    stats: Counter,
    counts: Counter,
    states: list[OrderState],
    retried: Counter,
    placing_s: float = 0.0,
    waiting_s: float = 0.0,
) -> dict:
    """The run's summary (JSON-safe); its fields are described in docs/replay.md."""
    cancels = _group(counts, "cancellations.")
    final = [s for s in states if s.done]
    return {
        "invoices": {
            k: stats[k]
            for k in (
                "invoices_read",
                "orders",
                "cancellations",
                "cancellations_unmatched",
                "invoices_without_products",
                "adjustment_invoices",
            )
        },
        "adjustments": {
            k: stats[k]
            for k in (
                "rows_non_product",
                "rows_not_priced",
                "rows_negative_quantity",
                "quantities_clamped",
                "invoices_truncated",
                "lines_dropped",
            )
        },
        "orders": _group(counts, "orders."),
        "cancellations": {"sent": sum(v for k, v in cancels.items() if k != "none_cancellable"), **cancels},
        "repayments": _group(counts, "repayments."),
        "final": dict(Counter(s.status for s in final)),
        "cancel_reasons": dict(Counter(s.cancel_reason for s in final if s.status == "cancelled")),
        "not_final": dict(Counter(s.status for s in states if not s.done)),
        "errors": _group(counts, "errors."),
        "retries": dict(retried),
        **timings(states),
        "elapsed_s": {"placing": round(placing_s, 3), "waiting": round(waiting_s, 3)},
        "all_final": len(final) == len(states),
    }


def render(summary: dict) -> str:
    """The summary as text, one line per section."""

    def line(name: str, value) -> str:
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "none"
        return f"{name:<26}{_fmt(value)}"

    return "\n".join(line(name.replace("_", " "), value) for name, value in summary.items())


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
