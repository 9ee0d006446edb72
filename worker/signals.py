"""Celery signal handlers: per-process database state."""
from __future__ import annotations


from celery.signals import worker_process_init

from models.db import dispose_engine


def _dispose_after_fork(**_kwargs) -> None:
    # A prefork child inherits the parent's pooled connections; sharing a
    # socket between processes corrupts both sessions, so start afresh.
    dispose_engine()




def connect_signals() -> None:
    worker_process_init.connect(_dispose_after_fork, weak=False)
