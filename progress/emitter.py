"""Write-only Socket.IO emitter on Flask-SocketIO's message queue.

Workers are Celery prefork children, not Socket.IO servers: they publish each
event on the queue that every web process listens to (python-socketio's
``RedisManager`` or ``KombuManager`` with ``write_only=True``), and the web
process that holds a room's connections delivers it.
"""
from __future__ import annotations

import logging
import os
import threading

import redis
import socketio
from kombu.exceptions import OperationalError as BrokerUnavailable

from config import Settings, get_settings
from progress.notifications import Notification

log = logging.getLogger(__name__)

# What a failed publish can raise past the managers' own retry; the event stays
# in the order event log, and a client replays it with ``after_seq``.
RELAY_ERRORS = (OSError, redis.RedisError, BrokerUnavailable)


def build_manager(settings: Settings, write_only: bool) -> socketio.PubSubManager:
    """The client manager on ``settings.socketio_message_queue`` (Redis or kombu)."""
    url, channel = settings.socketio_message_queue, settings.socketio_channel
    if url.startswith(("redis://", "rediss://", "unix://")):
        return socketio.RedisManager(url, channel=channel, write_only=write_only)
    options = {"transport_options": settings.socketio_transport_options}
    return socketio.KombuManager(url, channel=channel, write_only=write_only,
                                 connection_options=options)


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
        """Publish each notification to its rooms; a relay fault is logged, not raised."""
        try:
            with self._lock:
                for note in notifications:
                    self.manager().emit(note.event, note.payload, to=list(note.rooms))
        except RELAY_ERRORS as exc:
            log.warning("progress relay unavailable, %d event(s) left to replay: %s",
                        len(notifications), exc)


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
