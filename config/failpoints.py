"""Failpoints: kill -9 of the running process at a named point, for the fault suite
(``bench.faults``'s ``crash-points``) and nothing else.

``ORION_FAILPOINTS`` lists ``pattern=probability`` pairs, comma-separated, e.g.
``saga.*:after_commit=0.2,provider.capture:after=0.3``; unset (the default), every
failpoint is one dictionary check of an empty tuple. The points:

- ``provider.<authorize|capture|void|refund>:before`` and ``:after``: around the
  call to the payment provider (after it, the provider has acted and Orion has
  not yet recorded it);
- ``<task name>:after_commit``: a saga step committed, its next message not yet
  sent and its own not yet acknowledged;
- ``email:after_smtp``: the mail server accepted an email that is not yet marked sent.

A point fires at most once per key (the idempotency key, the task id, the email
row), claimed in Redis (``orion:failpoint:<point>:<key>``, kept an hour), so the
redelivered message gets past it, as after a real crash; without Redis it never
fires. The process dies with SIGKILL: no ``finally``, no ack, no rollback message
to PostgreSQL (the server sees the connection drop).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import random
import signal
from typing import Any

log = logging.getLogger(__name__)


def parse(spec: str) -> tuple[tuple[str, float], ...]:
    """``"pattern=probability,..."`` as ``((pattern, probability), ...)``.

    Raises ValueError naming a pair without ``=`` or a probability outside [0, 1].
    """
    points = []
    for pair in filter(None, (p.strip() for p in spec.split(","))):
        pattern, sep, probability = pair.partition("=")
        if not sep:
            raise ValueError(f"ORION_FAILPOINTS: {pair!r} is not pattern=probability")
        value = float(probability)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"ORION_FAILPOINTS: {pair!r}: the probability must be in [0, 1]")
        points.append((pattern.strip(), value))
    return tuple(points)


ACTIVE = parse(os.environ.get("ORION_FAILPOINTS", ""))
_redis: list[tuple[int, Any]] = []  # (pid, client): one client per process


def failpoint(point: str, key: str) -> None:
    """Kill this process here if ``point`` matches an active pattern, the dice say so,
    and this ``(point, key)`` has not fired before."""
    if not ACTIVE:
        return
    for pattern, probability in ACTIVE:
        if fnmatch.fnmatchcase(point, pattern) and random.random() < probability:
            if _first_time(point, key):
                log.warning("failpoint %s fired for %s: kill -9 of pid %d", point, key, os.getpid())
                os.kill(os.getpid(), signal.SIGKILL)
            return


def _first_time(point: str, key: str) -> bool:
    url = os.environ.get("REDIS_URL")
    if not url:
        return False
    import redis

    try:
        if not _redis or _redis[0][0] != os.getpid():
            _redis[:] = [(os.getpid(), redis.Redis.from_url(url, socket_timeout=2))]
        return bool(_redis[0][1].set(f"orion:failpoint:{point}:{key}", "1", nx=True, ex=3600))
    except redis.RedisError:
        return False
