"""Prometheus metrics (SPEC "Health and metrics"), served by the web at ``/metrics``.

Counters and histograms live in the process that observes them: HTTP in the
web process, saga steps and retries in the worker's pool processes. With
``PROMETHEUS_MULTIPROC_DIR`` set (the launcher sets ``var/metrics``), every
process writes its samples there and ``/metrics`` merges them (prometheus-client's
multiprocess mode); with ``METRICS_ROOT`` (docker-compose), every folder below it,
one per container. Figures that live in the database
(orders by status, the outbox backlog and its age) are read when scraped, and
so is each queue's depth on the broker.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

HTTP_REQUESTS = Counter(
    "orion_http_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "orion_http_request_duration_seconds", "HTTP request latency by route", ["route", "method"]
)
STEP_DURATION = Histogram(
    "orion_saga_step_duration_seconds",
    "Saga task run time by step and outcome (success, retry, failure, ignored)",
    ["step", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TASK_RETRIES = Counter("orion_task_retries_total", "Task retries scheduled after a transient fault", ["task"])
INVENTORY_VIOLATIONS = Gauge(
    "orion_inventory_audit_violations",
    "SKUs breaking SPEC's stock guarantee at the last audit, by check",
    ["check"],
    multiprocess_mode="mostrecent",
)
INVENTORY_AUDIT_TIME = Gauge(
    "orion_inventory_audit_last_run_timestamp_seconds",
    "When the inventory audit last ran (Unix time)",
    multiprocess_mode="mostrecent",
)


class DatabaseCollector:
    """Orders by status, stuck sagas and the outbox backlog, read from the database
    at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from config import get_settings
        from models import Order, OutboxMessage, read_only, utcnow
        from models.order import STATUSES, stuck

        after_s = get_settings().stuck_after_s
        with read_only() as session:
            counts = dict(session.execute(select(Order.status, func.count()).group_by(Order.status)).all())
            stuck_count = session.scalar(
                select(func.count()).select_from(Order).where(stuck(utcnow(), after_s))
            )
            backlog, oldest = session.execute(
                select(func.count(), func.min(OutboxMessage.created_at)).where(
                    OutboxMessage.dispatched_at.is_(None)
                )
            ).one()
        orders = GaugeMetricFamily("orion_orders", "Orders by status", labels=["status"])
        for status in STATUSES:
            orders.add_metric([status], counts.get(status, 0))
        yield orders
        yield GaugeMetricFamily(
            "orion_sagas_stuck",
            "Orders in flight or compensating, unchanged "
            "for STUCK_AFTER_SECONDS (the operator overview's stuck list)",
            value=stuck_count,
        )
        yield GaugeMetricFamily("orion_outbox_backlog", "Outbox rows not yet published", value=backlog)
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "orion_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none)",
            value=age,
        )


def scrape() -> tuple[bytes, str]:
    """The exposition text for ``/metrics`` and its content type."""
    registry = CollectorRegistry()
    if os.environ.get("METRICS_ROOT"):
        registry.register(_MergedFiles(os.path.join(os.environ["METRICS_ROOT"], "*", "*.db")))
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry.register(_MergedFiles(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")))
    else:
        registry = _SingleProcess()
    registry.register(DatabaseCollector())
    registry.register(QueueCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _MergedFiles:
    """prometheus-client's multiprocess files matching ``pattern`` (one folder, or
    with ``METRICS_ROOT`` every container's folder, ``deploy/entrypoint.sh``), merged
    as its MultiProcessCollector merges one folder, but without the files a process
    is creating at this moment: such a file is empty until its header is written,
    and reading it failed the whole scrape with a 500 (``struct.error``)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def collect(self) -> Iterable[Metric]:
        files = [f for f in glob.glob(self.pattern) if _size(f) >= 8]
        # prometheus-client leaves MultiProcessCollector unannotated.
        metrics: Iterable[Metric] = multiprocess.MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
            files, accumulate=True
        )
        return metrics


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # removed meanwhile (the launcher empties the folder at start)
        return 0


class _SingleProcess(CollectorRegistry):
    """This process's own metrics (no multiprocess folder), plus what is registered here."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from super().collect()


class QueueCollector:
    """Messages waiting and consumers per queue, read from the broker at scrape time
    (nothing when the broker cannot be reached: the scrape still answers)."""

    def collect(self) -> Iterator[Metric]:
        from observability.queues import queue_depths

        depths = queue_depths()
        if depths is None:
            return
        messages = GaugeMetricFamily(
            "orion_queue_messages", "Messages ready in a broker queue, not yet delivered", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "orion_queue_consumers", "Consumers of a broker queue", labels=["queue"]
        )
        for name, depth in sorted(depths.items()):
            messages.add_metric([name], depth["messages"])
            consumers.add_metric([name], depth["consumers"])
        yield messages
        yield consumers
