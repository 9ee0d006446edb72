"""Celery signal handlers: per-process database state, and the progress relay hook."""
from __future__ import annotations

from celery.signals import task_postrun, worker_process_init

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


def connect_signals() -> None:
    from progress import hooks as progress_hooks

    progress_hooks.install()  # order events reach Socket.IO clients after each commit
    worker_process_init.connect(_dispose_after_fork, weak=False)
    task_postrun.connect(_release_results, weak=False)
