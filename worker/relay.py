"""The outbox relay: ``python -m worker.relay`` publishes committed outbox rows
to the broker, so no HTTP request and no saga step waits on the broker.

It runs ``tasks.outbox.publish_batch`` until the outbox is empty, then waits:

- on PostgreSQL, for ``NOTIFY orion_outbox`` (a statement trigger on ``outbox``,
  migration 0004, notifies at every commit that inserted rows), or at most
  ``OUTBOX_POLL_SECONDS`` (2 s);
- on SQLite (embedded), ``OUTBOX_POLL_SECONDS`` (0.2 s) between looks.

Several relays may run (rows are taken ``FOR UPDATE SKIP LOCKED``); one is
enough for thousands of rows a second. When none runs, the beat job
``outbox.republish_unsent`` publishes rows older than ``OUTBOX_STALE_SECONDS``.
A broker or database error is logged and retried with backoff (0.5 s doubling
to 10 s); SIGTERM or SIGINT stops the relay after its current batch.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import psycopg
from sqlalchemy.engine import make_url

from config import get_settings
from observability.logging import configure_logging

CHANNEL = "orion_outbox"
BATCH = 200
log = logging.getLogger("orion.relay")


class Wakeup:
    """Wait for ``NOTIFY orion_outbox`` on its own autocommit connection
    (PostgreSQL), or just sleep (any other database)."""

    def __init__(self, database_url: str, poll_s: float) -> None:
        url = make_url(database_url)
        self.poll_s = poll_s
        self.dsn = (
            url.set(drivername="postgresql").render_as_string(hide_password=False)
            if url.get_backend_name() == "postgresql"
            else None
        )
        self.conn: psycopg.Connection | None = None

    def wait(self, stop: threading.Event) -> None:
        """Return at the next notification, after ``poll_s`` seconds, or when
        ``stop`` is set. A lost connection is reopened at the next call; what
        was committed meanwhile is found by the batch that follows."""
        if self.dsn is None:
            stop.wait(self.poll_s)
            return
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.dsn, autocommit=True)
                self.conn.execute(f"LISTEN {CHANNEL}")
                return  # rows committed before LISTEN: look once before waiting
            deadline = time.monotonic() + self.poll_s
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                # At most a second at a time, so a stop request is seen within one.
                if any(True for _ in self.conn.notifies(timeout=min(left, 1.0), stop_after=1)):
                    # One batch answers every commit so far: drop the pending rest.
                    for _ in self.conn.notifies(timeout=0.0):
                        pass
                    return
        except psycopg.Error as exc:
            log.warning("relay: LISTEN connection lost (%s); polling until it is back", exc)
            self.close()
            stop.wait(self.poll_s)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run(stop: threading.Event, batch: int = BATCH) -> None:
    """Publish until ``stop`` is set (the relay's main loop)."""
    from tasks.outbox import publish_batch

    settings = get_settings()
    wakeup = Wakeup(settings.database_url, settings.outbox_poll_s)
    backoff = 0.0
    try:
        while not stop.is_set():
            try:
                sent = publish_batch(batch)
            except Exception as exc:  # noqa: BLE001 - broker or database down: wait, retry
                backoff = min(10.0, backoff * 2 or 0.5)
                log.warning(
                    "relay: publish failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, backoff
                )
                stop.wait(backoff)
                continue
            backoff = 0.0
            if sent < batch:
                wakeup.wait(stop)
    finally:
        wakeup.close()


def main() -> int:
    configure_logging()
    import worker  # noqa: F401 - the Celery app and its signal handlers (correlation ids)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("relay: publishing the outbox (poll %.1f s)", get_settings().outbox_poll_s)
    run(stop)
    log.info("relay: stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
