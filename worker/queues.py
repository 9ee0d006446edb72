"""Declare Orion's queues before a worker starts, upgrading ones declared with
other arguments.

RabbitMQ refuses to re-declare a queue with different arguments
(PRECONDITION_FAILED), and a queue's arguments cannot change in place. Queues
made before ``x-max-priority`` (celeryconfig.MAX_PRIORITY) are deleted and
declared anew when they are empty; one that holds messages is left alone and
reported, since deleting it would lose them: stop the producers, let the old
workers drain it, then start again.
"""

from __future__ import annotations

import contextlib
import logging

from amqp.exceptions import NotFound, PreconditionFailed
from celery import Celery

log = logging.getLogger(__name__)


class QueueUpgradeBlocked(RuntimeError):
    """A queue must be re-declared with new arguments but still holds messages."""


def ensure_queues(app: Celery) -> list[str]:
    """Declare every queue in ``app.conf.task_queues``, and the dead-letter queue;
    returns the names re-declared.

    Raises QueueUpgradeBlocked naming the queue and its message count when an
    old queue is not empty. A transport without queue arguments (the embedded
    filesystem broker) just declares them.
    """
    from worker.dead_letter import dead_letter_queue

    redeclared: list[str] = []
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        channel = conn.channel()
        try:  # where the worker puts what it cannot run (worker.dead_letter)
            dead_letter_queue(channel).declare()
        finally:
            channel.close()  # type: ignore[attr-defined]  # see queue_declare below
        for queue in app.conf.task_queues:
            channel = conn.channel()
            try:
                queue(channel).declare()
            except PreconditionFailed:
                channel = conn.channel()  # the failed declare closed the channel
                try:
                    # kombu's stubs type the channel as the abstract StdChannel; every
                    # transport's channel (py-amqp's, kombu's virtual one) has these.
                    _, messages, consumers = channel.queue_declare(  # type: ignore[attr-defined]
                        queue.name, passive=True
                    )
                except NotFound:  # another worker starting now deleted it first
                    channel = conn.channel()
                    queue(channel).declare()
                    continue
                if messages or consumers:
                    raise QueueUpgradeBlocked(
                        f"queue {queue.name} was declared with other arguments and still has "
                        f"{messages} message(s) and {consumers} consumer(s); stop the producers, "
                        "let the old workers drain it and stop them, then start again"
                    ) from None
                # if_unused/if_empty: RabbitMQ refuses the delete if a consumer or a
                # message arrived since the check (unacked ones count as messages).
                channel.queue_delete(  # type: ignore[attr-defined]  # see queue_declare above
                    queue.name, if_unused=True, if_empty=True
                )
                queue(channel).declare()
                redeclared.append(queue.name)
                log.warning("queue %s re-declared with %s", queue.name, queue.queue_arguments)
            finally:
                with contextlib.suppress(Exception):  # the channel may be closed already
                    channel.close()  # type: ignore[attr-defined]  # see queue_declare above
    return redeclared
