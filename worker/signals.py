"""Celery signal handlers: per-process database state, and the progress relay hook."""
from __future__ import annotations

import time

from celery.signals import task_postrun, task_prerun, task_retry, worker_process_init

from models.db import dispose_engine


def _dispose_after_fork(**_kwargs) -> None:
    # A prefork child inherits the parent's pooled connections; sharing a
    # socket between processes corrupts both sessions, so start afresh.
    dispose_engine()


def _release_results(sender=None, **_kwargs) -> None:
    # A task that continued a chain into a chord registered its header results.
    from worker.results import release_pending_results

    if sender is not None:
        release_pending_results(sender.app)


_started: dict[str, float] = {}


def _task_started(task_id=None, **_kwargs) -> None:
    _started[task_id] = time.perf_counter()


def _task_finished(task_id=None, task=None, state=None, **_kwargs) -> None:
    from observability.metrics import STEP_DURATION

    started = _started.pop(task_id, None)
    if started is not None and task is not None:
        STEP_DURATION.labels(task.name, (state or "unknown").lower()).observe(time.perf_counter() - started)


def _task_retried(sender=None, **_kwargs) -> None:
    from observability.metrics import TASK_RETRIES

    TASK_RETRIES.labels(getattr(sender, "name", "unknown")).inc()


def connect_signals() -> None:
    from progress import hooks as progress_hooks

    progress_hooks.install()  # order events reach Socket.IO clients after each commit
    worker_process_init.connect(_dispose_after_fork, weak=False)
    task_postrun.connect(_release_results, weak=False)
    task_prerun.connect(_task_started, weak=False)
    task_postrun.connect(_task_finished, weak=False)
    task_retry.connect(_task_retried, weak=False)
