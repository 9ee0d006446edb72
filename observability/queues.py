"""Queue depth on the broker: how many messages wait in each of Orion's queues
and how many consumers read them, for ``/metrics`` and the operator page."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


def queue_depths(app: Celery | None = None, timeout_s: float = 2.0) -> dict[str, dict[str, int]] | None:
    """``{queue name: {"messages": n, "consumers": n}}`` for every queue in
    ``task_queues`` and the dead-letter queue (``orion.dead_letter``), read with a
    passive declare (nothing is created).

    ``messages`` counts the messages ready for delivery (RabbitMQ's
    ``messages_ready``; those a consumer holds unacknowledged are not in it).
    Returns None when the broker cannot be reached within ``timeout_s`` seconds,
    so a scrape never fails or hangs because the broker is down. A queue that
    does not exist yet is left out.
    """
    if app is None:
        from worker import app as default_app

        app = default_app
    from amqp.exceptions import AMQPError, NotFound
    from kombu.exceptions import ChannelError, KombuError

    from worker.dead_letter import DEAD_LETTER

    depths: dict[str, dict[str, int]] = {}
    try:
        with app.connection_for_read(connect_timeout=timeout_s) as conn:
            # kombu's stubs want whole seconds; kombu takes a float.
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)  # type: ignore[arg-type]
            for name in [q.name for q in app.conf.task_queues] + [DEAD_LETTER]:
                channel = conn.channel()
                try:
                    # kombu's stubs type the channel as the abstract StdChannel (see worker.queues).
                    _, messages, consumers = channel.queue_declare(  # type: ignore[attr-defined]
                        name, passive=True
                    )
                except (NotFound, ChannelError):  # py-amqp's 404; kombu's virtual transports
                    continue
                finally:
                    # A failed passive declare has closed the channel already.
                    with contextlib.suppress(Exception):
                        channel.close()  # type: ignore[attr-defined]
                depths[name] = {"messages": messages, "consumers": consumers}
    except (OSError, KombuError, AMQPError) as exc:
        log.warning("queue depths: broker not reachable: %s", exc)
        return None
    return depths
