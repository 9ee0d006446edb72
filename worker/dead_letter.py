"""The dead-letter queue: messages a worker cannot or must not run are kept, not lost.

A worker moves a message to ``orion.dead_letter`` (a durable queue behind the
fanout exchange of the same name, which ``deploy/rabbitmq-setup.sh`` also
declares) and acknowledges it on its queue, when

- its body cannot be decoded, or its content type is not accepted (``decode``,
  ``invalid``; Celery would log and drop it);
- it names a task this worker does not have (``unknown_task``: a worker of an
  older release during a rolling upgrade, or a stray producer), or is not a task
  message at all (``unknown_message``);
- its arguments do not fit the task's signature, or its ``order_id`` is not a UUID
  (``arguments``): it would fail on every delivery;
- it is a saga step delivered ``SAGA_MAX_DELIVERIES`` times without finishing
  (``poison``): a copy is kept for the operator, and the step itself fails as before
  (``tasks.base.PoisonMessage``: the order is compensated, or resumed if the step had
  committed).

The copy is the original message, byte for byte, with its headers and properties,
plus ``x-orion-dead-letter-*`` headers: why, from which exchange and routing key,
when and by which host. ``orion dlq`` (``tools.dlq``) lists, replays and purges them.
The worker acknowledges the original rather than rejecting it, so a RabbitMQ
dead-letter policy on the queues (docker-compose's) does not add a second copy.

This works on any kombu transport, the embedded default's filesystem broker
included, since the worker publishes the copy itself.
"""

from __future__ import annotations

import inspect
import logging
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task
from celery.worker.consumer import Consumer
from kombu import Exchange, Message, Queue
from kombu.exceptions import ContentDisallowed
from prometheus_client import Counter

log = logging.getLogger(__name__)

DEAD_LETTER = "orion.dead_letter"
dead_letter_exchange = Exchange(DEAD_LETTER, type="fanout", durable=True)
dead_letter_queue = Queue(DEAD_LETTER, dead_letter_exchange, routing_key=DEAD_LETTER, durable=True)
HEADER = "x-orion-dead-letter-"  # prefix of the headers added to the copy
REASONS = ("decode", "invalid", "unknown_task", "unknown_message", "arguments", "poison")

DEAD_LETTERED = Counter(
    "orion_dead_lettered_total", "Messages moved to the dead-letter queue, by reason", ["reason"]
)


def dead_letter(app: Celery, message: Message, reason: str, detail: str) -> None:
    """Publish a copy of ``message`` (body bytes, headers, properties) to the
    dead-letter queue, with why (``reason``, one of REASONS, and ``detail``, text).

    Raises what kombu raises when the broker cannot take it (the caller then
    leaves the original unacknowledged: it comes back rather than being lost).
    """
    delivery = message.delivery_info or {}
    properties = dict(message.properties or {})
    headers = {k: v for k, v in (message.headers or {}).items() if not str(k).startswith(HEADER)}
    headers.update(
        {
            f"{HEADER}reason": reason,
            f"{HEADER}detail": detail[:1000],
            f"{HEADER}exchange": delivery.get("exchange") or "",
            f"{HEADER}routing-key": delivery.get("routing_key") or "",
            f"{HEADER}at": datetime.now(UTC).isoformat(timespec="seconds"),
            f"{HEADER}host": socket.gethostname(),
        }
    )
    keep: dict[str, Any] = {
        k: properties[k] for k in ("correlation_id", "reply_to", "priority") if properties.get(k) is not None
    }
    with app.producer_pool.acquire(block=True, timeout=10) as producer:
        producer.publish(
            message.body,
            exchange=dead_letter_exchange,
            routing_key=DEAD_LETTER,
            declare=[dead_letter_queue],
            serializer=None,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=headers,
            delivery_mode=2,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            **keep,
        )
    DEAD_LETTERED.labels(reason).inc()
    log.error(
        "message moved to the dead-letter queue (%s): %s; task %s id %s from %s",
        reason,
        detail,
        headers.get("task"),
        headers.get("id"),
        delivery.get("routing_key"),
    )


def message_problem(task: Task[..., Any], message: Message) -> tuple[str, str] | None:
    """Why this (protocol 2) task message can never run, as ``(reason, detail)``, or
    None: a content type not accepted (``invalid``), an undecodable body
    (``decode``), a body that is not ``[args, kwargs, embed]``, arguments that do
    not bind to ``task.run``, or an ``order_id`` argument that is not a UUID
    (``arguments``)."""
    try:
        body = message.decode()  # kombu keeps it: the request does not decode it again
    except ContentDisallowed as exc:
        return "invalid", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - kombu raises the serializer's own errors
        return "decode", f"body cannot be decoded: {type(exc).__name__}: {exc}"
    if not (
        isinstance(body, (list, tuple))
        and len(body) == 3
        and isinstance(body[0], (list, tuple))
        and isinstance(body[1], dict)
    ):
        return "arguments", "body is not [args, kwargs, embed]"
    args, kwargs = body[0], body[1]
    try:
        bound = _signature(task).bind(*args, **kwargs)
    except TypeError as exc:
        return "arguments", f"arguments do not fit {task.name}{_signature(task)}: {exc}"
    if "order_id" in bound.arguments and not _is_uuid(bound.arguments["order_id"]):
        return "arguments", f"{task.name}: order_id is not an order id (a UUID)"
    return None


_signatures: dict[str, inspect.Signature] = {}


def _signature(task: Task[..., Any]) -> inspect.Signature:
    sig = _signatures.get(task.name)
    if sig is None:
        sig = _signatures[task.name] = inspect.signature(task.run)
    return sig


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


class DeadLetteringConsumer(Consumer):
    """Celery's consumer (``worker_consumer`` in celeryconfig), with every message it
    would drop or could never run moved to the dead-letter queue instead."""

    # Set by Celery's Consumer (celery-types' stub does not declare them).
    strategies: dict[str, Callable[..., Any]]
    connection_errors: tuple[type[BaseException], ...]

    def update_strategies(self) -> None:
        super().update_strategies()
        for name, handler in list(self.strategies.items()):
            self.strategies[name] = self._checked(self.app.tasks[name], handler)

    def _checked(self, task: Task[..., Any], handler: Callable[..., Any]) -> Callable[..., Any]:
        from tasks.base import SagaTask, will_be_poison

        saga_step = isinstance(task, SagaTask)

        def on_message(
            message: Message,
            body: Any,
            ack: Callable[..., Any],
            reject: Callable[..., Any],
            callbacks: Any,
            **kwargs: Any,
        ) -> Any:
            try:
                problem = message_problem(task, message) if body is None else None  # protocol 2
            except Exception:  # a check that fails must not stop the consumer: run it as before
                log.exception("checking a %s message failed; it runs unchecked", task.name)
                problem = None
            if problem is not None:
                return self._move(message, *problem, ack=ack)
            task_id = (message.headers or {}).get("id")
            redelivered = (message.delivery_info or {}).get("redelivered")
            # A poison message runs once more, to fail its step for good; keep a copy.
            if saga_step and task_id and redelivered and will_be_poison(task_id):
                self._copy(
                    message,
                    "poison",
                    f"{task.name} delivered too often without finishing (SAGA_MAX_DELIVERIES)",
                )
            return handler(message, body, ack, reject, callbacks, **kwargs)

        return on_message

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._move(message, "decode", f"body cannot be decoded: {type(exc).__name__}: {exc}")

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self._move(message, "unknown_message", "not a task message (no task header)")

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        name = (message.headers or {}).get("task")
        self._move(message, "unknown_task", f"no task named {name!r} on this worker")

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._move(message, "invalid", f"{type(exc).__name__}: {exc}")

    def _copy(self, message: Message, reason: str, detail: str) -> bool:
        try:
            dead_letter(self.app, message, reason, detail)
        except Exception as exc:  # noqa: BLE001 - the broker is down: keep the original
            log.error("could not dead-letter a message (%s): %s", reason, exc)
            return False
        return True

    def _move(
        self, message: Message, reason: str, detail: str, ack: Callable[..., Any] | None = None
    ) -> None:
        """Copy to the dead-letter queue, then acknowledge the original; if the copy
        fails, reject it back to its queue (redelivered later, not lost)."""
        if self._copy(message, reason, detail):
            if ack is not None:
                ack(log, self.connection_errors)
            else:
                message.ack_log_error(log, self.connection_errors)
        else:
            message.reject_log_error(log, self.connection_errors, requeue=True)
