"""Structured logs: one JSON object per line, from structlog and from every stdlib
logger (Celery's, gunicorn's application errors, ours), with the correlation id.

The correlation id starts at the HTTP request (``X-Request-ID`` or a fresh id,
``web/request_id.py``), rides in the headers of every task message the request
and its saga publish (``worker/signals.py``: ``before_task_publish`` copies it,
``task_prerun`` binds it), and lands in the order's events and the emails'
``X-Request-ID``. It is bound with ``structlog.contextvars`` so every log line of
the request or task carries it.

``LOG_FORMAT=console`` prints readable lines instead of JSON.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

CORRELATION_KEY = "correlation_id"  # the log field
# The task message header. Not "correlation_id": Celery already uses that name
# (the AMQP property, set to the task id) and would shadow ours on the request.
CORRELATION_HEADER = "orion_correlation_id"
_configured = False

SHARED_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]


def configure_logging(level: str | int = "INFO") -> None:
    """Route structlog and the stdlib root logger to stderr as JSON lines (idempotent)."""
    global _configured
    if _configured:
        return
    renderer = (
        structlog.dev.ConsoleRenderer()
        if os.environ.get("LOG_FORMAT") == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=SHARED_PROCESSORS,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One log line per task: Celery's "Task ... succeeded in" (celery.app.trace)
    # stays; its "Task ... received" line (one more JSON render per task in the
    # worker's main process) is dropped. Flower shows when a task was received.
    logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)
    _configured = True


def correlation_id() -> str | None:
    """The correlation id bound to this request or task, if any."""
    return structlog.contextvars.get_contextvars().get(CORRELATION_KEY)


def bind_correlation(value: str | None, **extra: object) -> None:
    """Start a new log context (a request, a task) with ``value`` as its correlation id."""
    structlog.contextvars.clear_contextvars()
    if value:
        structlog.contextvars.bind_contextvars(**{CORRELATION_KEY: value}, **extra)
    elif extra:
        structlog.contextvars.bind_contextvars(**extra)
