"""Celery signal handlers: per-process database state, and the progress relay hook."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.signals import (
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_init,
)

from models.db import dispose_engine
from observability.logging import CORRELATION_HEADER, bind_correlation, configure_logging, correlation_id

if TYPE_CHECKING:
    from celery.worker import WorkController


def _ensure_queues(sender: WorkController | None = None, **_kwargs: Any) -> None:
    # Before the consumer declares them: re-declares queues made with older
    # arguments (priorities), or stops the worker saying why (worker.queues).
    # Celery's signal dispatch logs a receiver's exceptions and goes on, so the
    # stop is a SystemExit, which it lets through. A broker that is down is not
    # a reason to stop: the consumer keeps trying to connect.
    from worker.queues import QueueUpgradeBlocked, ensure_queues

    if sender is not None:
        try:
            ensure_queues(sender.app)
        except QueueUpgradeBlocked as exc:
            logging.getLogger(__name__).critical("worker not started: %s", exc)
            raise SystemExit(1) from exc


def _dispose_after_fork(**_kwargs: Any) -> None:
    # A prefork child inherits the parent's pooled connections; sharing a
    # socket between processes corrupts both sessions, so start afresh.
    dispose_engine()


def _release_results(sender: Task[..., Any] | None = None, **_kwargs: Any) -> None:
    # A task that continued a chain into a chord registered its header results.
    from worker.results import release_pending_results

    if sender is not None:
        release_pending_results(sender.app)


_started: dict[str | None, float] = {}  # task id -> perf_counter at prerun


def _task_started(
    task_id: str | None = None,
    task: Task[..., Any] | None = None,
    args: Sequence[Any] | None = None,
    **_kwargs: Any,
) -> None:
    _started[task_id] = time.perf_counter()
    request = getattr(task, "request", None)
    order_id = _order_id(args) if task is not None and task.name.startswith("saga.") else None
    bind_correlation(
        getattr(request, CORRELATION_HEADER, None),
        task=getattr(task, "name", None),
        task_id=task_id,
        **({"order_id": order_id} if order_id else {}),
    )


def _order_id(args: Sequence[Any] | None) -> str | None:
    """A saga task's order id: its first string argument (a chord body's first
    argument is the header's results)."""
    return next((arg for arg in args or () if isinstance(arg, str)), None)


def _carry_correlation(headers: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    # Every message published while a request or task is handled (the next link
    # of a chain, a chord's body, a retry, an outbox row) carries its id along.
    current = correlation_id()
    if headers is not None and current and not headers.get(CORRELATION_HEADER):
        headers[CORRELATION_HEADER] = current


def _configure_logging(loglevel: str | int | None = None, **_kwargs: Any) -> None:
    configure_logging(loglevel or "INFO")  # honours -l/--loglevel


def _task_finished(
    task_id: str | None = None, task: Task[..., Any] | None = None, state: str | None = None, **_kwargs: Any
) -> None:
    from observability.metrics import STEP_DURATION

    started = _started.pop(task_id, None)
    if started is not None and task is not None:
        STEP_DURATION.labels(task.name, (state or "unknown").lower()).observe(time.perf_counter() - started)


def _task_retried(sender: Task[..., Any] | None = None, **_kwargs: Any) -> None:
    from observability.metrics import TASK_RETRIES

    TASK_RETRIES.labels(getattr(sender, "name", "unknown")).inc()


def connect_signals() -> None:
    from progress import hooks as progress_hooks

    progress_hooks.install()  # order events reach Socket.IO clients after each commit
    worker_init.connect(_ensure_queues, weak=False)
    worker_process_init.connect(_dispose_after_fork, weak=False)
    task_postrun.connect(_release_results, weak=False)
    task_prerun.connect(_task_started, weak=False)
    task_postrun.connect(_task_finished, weak=False)
    task_retry.connect(_task_retried, weak=False)
    before_task_publish.connect(_carry_correlation, weak=False)
    setup_logging.connect(_configure_logging, weak=False)  # Celery leaves logging to us
