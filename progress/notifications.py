"""Notifications waiting in a session for its transaction to commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

_KEY = "orion.notifications"


@dataclass(frozen=True)
class Notification:
    """One Socket.IO event: its name, its JSON-safe payload and the rooms it goes to."""

    event: str
    payload: dict[str, Any]
    rooms: tuple[str, ...]


class Holder(Protocol):
    """Where notifications wait: a ``Session``, or anything with an ``info`` dict whose
    owner emits after its own COMMIT (``tasks.journal.SagaTx`` on a bare connection)."""

    @property
    def info(self) -> dict[Any, Any]: ...


def queue_notification(session: Holder, notification: Notification) -> None:
    """Hold ``notification`` until ``session`` commits (see ``progress.hooks``).

    ``session`` may also be any holder with an ``info`` dict whose owner emits
    after its own COMMIT (``tasks.journal.SagaTx`` on a bare connection)."""
    session.info.setdefault(_KEY, []).append(notification)


def take_notifications(session: Holder) -> list[Notification]:
    """Remove and return the session's queued notifications, oldest first."""
    notifications: list[Notification] = session.info.pop(_KEY, [])
    return notifications
