"""``orion dlq``: inspect, replay and purge the dead-letter queue (``worker.dead_letter``).

    orion dlq list [--limit 50] [--json]        what is there, oldest first; nothing is removed
    orion dlq replay (ID... | --all) [--reason R]  send each back to the queue it came from
    orion dlq purge (ID... | --all) [--reason R]   drop them for good

ID is the task id (the ``id`` header); ``list`` shows it. A replayed message is the
original, byte for byte, with the dead-letter headers taken off, published with
publisher confirms before it leaves the dead-letter queue: a failure in between
leaves it in both places, never in neither. Messages are read with
``basic.get`` and left unacknowledged while the command runs; the ones it does
not act on go back in their places when it ends.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import click

from tools.clicommon import run
from worker.dead_letter import HEADER, REASONS, dead_letter_queue

SCAN_LIMIT = 10_000  # at most this many messages are looked at by one command


@dataclass
class DeadLetter:
    """One message in the dead-letter queue, as ``list`` shows it."""

    id: str | None  # the task id, None for a message that is not a task
    task: str | None
    reason: str
    detail: str
    routing_key: str  # where it came from, and where replay sends it
    at: str  # ISO 8601, UTC
    host: str
    args: str  # the producer's argsrepr, or a preview of the body
    bytes: int


def describe(message) -> DeadLetter:
    headers = message.headers or {}
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    return DeadLetter(
        id=headers.get("id"),
        task=headers.get("task"),
        reason=str(headers.get(f"{HEADER}reason", "?")),
        detail=str(headers.get(f"{HEADER}detail", "")),
        routing_key=origin(headers)[1],
        at=str(headers.get(f"{HEADER}at", "")),
        host=str(headers.get(f"{HEADER}host", "")),
        args=str(headers.get("argsrepr") or body[:80].decode("utf-8", "replace")),
        bytes=len(body),
    )


@contextmanager
def dead_letters(limit: int) -> Iterator[list]:
    """The first ``limit`` messages of the dead-letter queue, unacknowledged; those
    not acknowledged inside the block go back to the queue when it ends."""
    from worker import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        channel = conn.channel()
        queue = dead_letter_queue(channel)
        queue.declare()
        held = []
        try:
            while len(held) < limit:
                message = queue.get(no_ack=False)
                if message is None:
                    break
                held.append(message)
            yield held
        finally:
            for message in held:
                if not message.acknowledged:
                    message.reject(requeue=True)
            channel.close()


class NowhereToReplay(Exception):
    """A dead-lettered message that names no routing key to go back to."""


def origin(headers: dict) -> tuple[str, str]:
    """``(exchange, routing key)`` a dead-lettered message came from: the worker's
    ``x-orion-dead-letter-*`` headers, else RabbitMQ's own ``x-death`` (a message
    its dead-letter policy moved); the routing key is "" when neither says."""
    if headers.get(f"{HEADER}routing-key"):
        return str(headers.get(f"{HEADER}exchange", "")), str(headers[f"{HEADER}routing-key"])
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        keys = deaths[0].get("routing-keys") or [""]
        return str(deaths[0].get("exchange", "")), str(keys[0])
    return "", ""


def replay_message(message) -> None:
    """Publish the original message to the exchange and routing key it came from
    (publisher confirms: returns once the broker has it). Its ``expires`` is
    dropped: a beat job replayed after its period would be revoked on arrival.

    Raises NowhereToReplay when no routing key is known (it stays in the
    dead-letter queue): published to nowhere, the broker would drop it."""
    from worker import app

    original = message.headers or {}
    exchange, routing_key = origin(original)
    if not routing_key:
        raise NowhereToReplay("it names no routing key to go back to")
    headers = {
        k: v for k, v in original.items() if not str(k).startswith(HEADER) and k not in ("x-death", "expires")
    }
    properties = message.properties or {}
    extra = {
        k: properties[k] for k in ("correlation_id", "reply_to", "priority") if properties.get(k) is not None
    }
    with app.producer_or_acquire() as producer:
        producer.publish(
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            serializer=None,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=headers,
            delivery_mode=2,
            **extra,
        )


def _chosen(messages: list, ids: tuple[str, ...], every: bool, reason: str | None) -> list:
    wanted = set(ids)
    return [
        m
        for m in messages
        if (every or (m.headers or {}).get("id") in wanted)
        and (reason is None or (m.headers or {}).get(f"{HEADER}reason") == reason)
    ]


@click.group("dlq")
def group() -> None:
    """Inspect, replay and purge the dead-letter queue (orion.dead_letter)."""


@group.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=SCAN_LIMIT),
    default=50,
    show_default=True,
    help="show at most this many, oldest first",
)
@click.option("--json", "as_json", is_flag=True, help="print them as a JSON array")
def list_command(limit: int, as_json: bool) -> int:
    """List dead-lettered messages (nothing is removed)."""
    with dead_letters(limit) as messages:
        rows = [describe(m) for m in messages]
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("the dead-letter queue is empty")
        return 0
    for r in rows:
        print(
            f"{r.at}  {r.reason:<15} {r.id or '-':<36}  {r.task or '-'}  from {r.routing_key or '-'}"
            f"\n    {r.detail}\n    args {r.args}"
        )
    return 0


def _act(verb: str, ids: tuple[str, ...], every: bool, reason: str | None) -> int:
    if not ids and not every:
        raise click.UsageError("name the task ids to act on, or --all")
    past = {"replay": "replayed", "purge": "purged"}[verb]
    done = failed = 0
    with dead_letters(SCAN_LIMIT) as messages:
        chosen = _chosen(messages, ids, every, reason)
        for message in list(chosen):
            if verb == "replay":
                try:
                    replay_message(message)
                except NowhereToReplay as exc:
                    print(f"dlq: {describe(message).id or '-'}: not replayed: {exc}", file=sys.stderr)
                    chosen.remove(message)
                    failed += 1
                    continue
            message.ack()
            done += 1
            d = describe(message)
            print(
                f"{past} {d.id or '-'} {d.task or '-'}" + (f" -> {d.routing_key}" if verb == "replay" else "")
            )
    missing = set(ids) - {(m.headers or {}).get("id") for m in messages}
    for task_id in sorted(missing):
        print(f"dlq: {task_id}: not in the dead-letter queue", file=sys.stderr)
    print(f"{done} message(s) {past}")
    return 1 if missing or failed else 0


_reason = click.option(
    "--reason", type=click.Choice(REASONS), default=None, help="only messages dead-lettered for this reason"
)


@group.command("replay")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "every", is_flag=True, help="every message (with --reason: every such one)")
@_reason
def replay_command(ids: tuple[str, ...], every: bool, reason: str | None) -> int:
    """Send messages back to the queue they came from (e.g. after deploying the
    worker that knows their task); exit 1 naming ids not found."""
    return _act("replay", ids, every, reason)


@group.command("purge")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "every", is_flag=True, help="every message (with --reason: every such one)")
@_reason
def purge_command(ids: tuple[str, ...], every: bool, reason: str | None) -> int:
    """Drop messages from the dead-letter queue for good; exit 1 naming ids not found."""
    return _act("purge", ids, every, reason)


def main(argv: list[str] | None = None) -> int:
    return run(group, argv, "orion dlq")


if __name__ == "__main__":
    sys.exit(main())
