"""Let go of result objects that Celery registers but Orion never waits on.

With the Redis backend, building a chord's GroupResult registers every header
result as pending (strong references) and SUBSCRIBEs to its channel, in the
producer and in the worker that continues a chain (celery#3812, #4824, #5320).
Nobody reads those channels; a long-lived producer's pubsub buffer grew until
Redis reset the connection (about 6,000 orders here). Orion keeps results only
for chords and never joins on them, so everything pending is released.
"""

from __future__ import annotations

from celery import Celery


def release_pending_results(app: Celery) -> int:
    """Unsubscribe from and forget every result this process registered; returns how many."""
    backend = app.backend
    pending = getattr(backend, "_pending_results", None)
    if not pending:
        return 0
    results = [
        result
        for mapping in pending
        for waiters in list(mapping.values())
        for result in list(waiters.values())
    ]
    for result in results:
        # Only the async backends (Redis, RPC) have it; _pending_results above picks them.
        backend.remove_pending_result(result)  # type: ignore[attr-defined]
    return len(results)
