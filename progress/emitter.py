"""Write-only Socket.IO emitter on Flask-SocketIO's message queue.

Workers are Celery prefork children, not Socket.IO servers: they publish each
event on the queue that every web process listens to (python-socketio's
``RedisManager`` or ``KombuManager`` with ``write_only=True``), and the web
process that holds a room's connections delivers it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import kombu
import socketio

from config import ConfigError, Settings, get_settings
from progress.notifications import Notification

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
FILESYSTEM_SCHEMES = ("orionfs://", "filesystem://")


class RelayKombuManager(socketio.KombuManager):
    """``KombuManager`` whose listening queue is named after the web server's
    address, not a fresh uuid: a restarted gunicorn worker (or the listener's own
    reconnect) takes over its predecessor's binding instead of leaving behind a
    fanout binding that every later event would write a file for, unread."""

    def __init__(self, *args: Any, queue_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue_name = queue_name

    def _queue(self) -> kombu.Queue:
        return kombu.Queue(self._queue_name, self._exchange(), durable=False)


def build_manager(settings: Settings, write_only: bool) -> socketio.PubSubManager:
    """The client manager on ``settings.socketio_message_queue``: Redis, or kombu's
    filesystem transport. Other kombu transports are refused (ConfigError): kombu
    retries a publish to an unreachable broker forever, inside ``after_commit``."""
    url, channel = settings.socketio_message_queue, settings.socketio_channel
    if url.startswith(REDIS_SCHEMES):
        return socketio.RedisManager(url, channel=channel, write_only=write_only)
    if not url.startswith(FILESYSTEM_SCHEMES):
        raise ConfigError(f"SOCKETIO_MESSAGE_QUEUE must be a redis:// or orionfs:// URL, got {url!r}")
    options = {"transport_options": settings.socketio_transport_options}
    queue = f"orion.relay.{settings.web_host}:{settings.web_port}"
    return RelayKombuManager(
        url, channel=channel, write_only=write_only, connection_options=options, queue_name=queue
    )


class Relay:
    """Emits notifications; builds its manager lazily, once per process (fork-safe).

    Publishes are serialized per process: a kombu connection (the embedded relay)
    must not be shared by threads at once, and the web server has many.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._manager: socketio.PubSubManager | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def manager(self) -> socketio.PubSubManager:
        if self._manager is None or self._pid != os.getpid():
            self._manager, self._pid = build_manager(self._settings, write_only=True), os.getpid()
        return self._manager

    def emit_all(self, notifications: list[Notification]) -> None:
        """Publish each notification to its rooms.

        python-socketio's managers retry a failed publish once, then log it and
        drop it; the order event stays in the log, and a client fills the gap
        with ``subscribe {order_id, after_seq}``.
        """
        with self._lock:
            for note in notifications:
                self.manager().emit(note.event, note.payload, to=list(note.rooms))


_relay: Relay | None = None


def get_relay() -> Relay:
    global _relay
    if _relay is None:
        _relay = Relay(get_settings())
    return _relay


def reset_relay() -> None:
    """Forget the process's relay (tests that change settings call this)."""
    global _relay
    _relay = None
