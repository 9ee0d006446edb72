"""The Socket.IO server (SPEC "Socket.IO"): authenticated connections, rooms,
``subscribe`` with replay from the order event log.

- ``connect`` takes ``auth = {"token": <access JWT>}``; a missing, malformed,
  expired, revoked or refresh token is refused (python-socketio's
  ``ConnectionRefusedError``, which the client sees as a ``connect_error`` with
  ``{"message": "unauthorized"}``; Python's built-in one would arrive as
  "Connection refused by server"), and so is a user whose token generation
  moved on (``/auth/logout-all``). The connection joins ``user:<id>``, and
  operators (by the role stored now, not the token's) also ``operators``.
- Limits (SPEC): at most ``SOCKETIO_MAX_PER_USER`` connections per user and
  ``SOCKETIO_MAX_PER_ADDRESS`` per client address in this process (refused
  with ``too_many_connections``); Socket.IO messages up to 64 KiB, as HTTP bodies.
- ``ConnectionGuard`` re-checks every ``SOCKETIO_CHECK_SECONDS`` (2 s): it closes
  a connection whose token expired or was revoked (logout, logout-all, session
  revoked for refresh-token reuse), whose user was deleted or changed role,
  and a transport that has not authenticated within ``SOCKETIO_AUTH_SECONDS``.
- ``subscribe {order_id, after_seq?}`` joins ``order:<id>`` for the owner or an
  operator, replays ``seq > after_seq`` from ``order_events`` to this connection
  when ``after_seq`` is given, and acknowledges ``{"ok": true}`` or
  ``{"ok": false, "error": "not_found" | "invalid_request"}``. Each subscribe
  also re-checks the connection's token (expired or revoked: ``unauthorized``,
  and the connection is closed), and is limited per connection: at most
  ``SOCKETIO_SUBSCRIBE_PER_SECOND`` (10) a second, in bursts of as many
  (``rate_limited`` with ``retry_after`` in seconds), and at most
  ``SOCKETIO_MAX_SUBSCRIPTIONS`` (100) orders (``too_many_subscriptions``), so
  one connection cannot keep the database busy with subscriptions and replays.

The room is joined before the log is read, so an event committed meanwhile is
never missed: it arrives live, from the replay, or both (the client drops the
repeat by ``seq``). Events reach this process through the message queue that
workers publish to (``progress.emitter``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from flask import Flask, request
from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_socketio import ConnectionRefusedError, SocketIO, emit, join_room
from jwt.exceptions import PyJWTError
from marshmallow import Schema, ValidationError, fields, validate
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from config import get_settings
from models import OrderEvent, User, read_only
from models.db import read_connection
from progress import OPERATORS, order_room, user_room
from progress.emitter import build_manager
from services.errors import NotFound
from services.ordering import Actor, load_visible_order
from web.extensions import blocklist, generation_key, session_key

socketio = SocketIO()
UNAUTHORIZED, TOO_MANY = "unauthorized", "too_many_connections"
MAX_MESSAGE_BYTES = 64 * 1024  # as HTTP bodies (MAX_CONTENT_LENGTH)
log = logging.getLogger(__name__)


class SubscribeSchema(Schema):
    order_id = fields.UUID(required=True)
    after_seq = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0))


subscribe_schema = SubscribeSchema()


def init_realtime(app: Flask) -> None:
    """Bind the Socket.IO server to ``app`` on the configured message queue."""
    settings = get_settings()
    socketio.init_app(
        app,
        client_manager=build_manager(settings, write_only=False),
        async_mode="threading",
        cors_allowed_origins=app.config.get("SOCKETIO_CORS"),
        max_http_buffer_size=MAX_MESSAGE_BYTES,
    )
    app.extensions["orion_socket_guard"] = ConnectionGuard(app, settings)
    app.extensions["orion_socket_guard"].start()


@dataclass(frozen=True)
class Connection:
    """An authenticated Socket.IO connection of this process: what its token said."""

    actor: Actor
    address: str
    jti: str
    session: str | None
    generation: int
    expires_at: float


@dataclass
class _Subscriptions:
    """One connection's subscribed rooms and its token bucket (``tokens`` at ``at``,
    monotonic seconds)."""

    tokens: float
    at: float
    rooms: set[str] = field(default_factory=set)


class ConnectionGuard:
    """The authenticated connections of this process, their limits, and the
    periodic check that closes the ones that lost their right to be open."""

    def __init__(self, app: Flask, settings) -> None:
        self.app, self.settings = app, settings
        self.connections: dict[str, Connection] = {}
        self._unauthenticated: dict[str, float] = {}  # engine.io sid -> first seen
        self._subscriptions: dict[str, _Subscriptions] = {}  # socket.io sid -> its subscriptions
        self._lock = threading.Lock()
        self._started = False

    def admit(self, sid: str, connection: Connection) -> None:
        """Register ``sid``; raises ConnectionRefusedError over a limit."""
        with self._lock:
            mine = [c for c in self.connections.values() if c.actor.user_id == connection.actor.user_id]
            here = [c for c in self.connections.values() if c.address == connection.address]
            if (
                len(mine) >= self.settings.socket_max_per_user
                or len(here) >= self.settings.socket_max_per_address
            ):
                raise ConnectionRefusedError(TOO_MANY)
            self.connections[sid] = connection

    def start(self) -> None:
        """Run ``check`` every ``SOCKETIO_CHECK_SECONDS`` in a daemon thread (once)."""
        with self._lock:
            if not self._started:
                self._started = True
                socketio.start_background_task(self._run)

    def forget(self, sid: str) -> None:
        with self._lock:
            self.connections.pop(sid, None)
            self._subscriptions.pop(sid, None)

    def refuse_subscription(self, sid: str, room: str) -> dict | None:
        """None when connection ``sid`` may join ``room`` now (the attempt counts
        against its rate; ``joined`` counts the room), else the acknowledgement
        that refuses it: ``rate_limited`` (with ``retry_after``, seconds) over
        ``SOCKETIO_SUBSCRIBE_PER_SECOND``, ``too_many_subscriptions`` over
        ``SOCKETIO_MAX_SUBSCRIPTIONS`` rooms, or ``unauthorized`` when its token
        expired or was revoked, itself, its session or by ``/auth/logout-all``
        (the caller closes it). Raises RedisError when
        the revocation list cannot be read."""
        rate, most = self.settings.socket_subscribe_per_second, self.settings.socket_max_subscriptions
        now = time.monotonic()
        with self._lock:
            connection = self.connections.get(sid)
            if connection is None:
                return {"ok": False, "error": UNAUTHORIZED}
            state = self._subscriptions.setdefault(sid, _Subscriptions(tokens=rate, at=now))
            state.tokens, state.at = min(rate, state.tokens + (now - state.at) * rate), now
            if state.tokens < 1:
                wait = round((1 - state.tokens) / rate, 3)
                return {"ok": False, "error": "rate_limited", "retry_after": wait}
            state.tokens -= 1
            if room not in state.rooms and len(state.rooms) >= most:
                return {"ok": False, "error": "too_many_subscriptions"}
        generation = generation_key(connection.actor.user_id, connection.generation)
        revoked = blocklist.is_revoked(connection.jti, connection.session, generation)
        if connection.expires_at <= time.time() or revoked:
            return {"ok": False, "error": UNAUTHORIZED}
        return None

    def joined(self, sid: str, room: str) -> None:
        """Count ``room`` against connection ``sid``'s ``SOCKETIO_MAX_SUBSCRIPTIONS``."""
        with self._lock:
            if sid in self._subscriptions:
                self._subscriptions[sid].rooms.add(room)

    def _run(self) -> None:
        while True:
            time.sleep(self.settings.socket_check_every_s)
            try:
                with self.app.app_context():
                    self.check()
            except Exception:
                log.exception("socket.io: connection check failed")

    def check(self) -> list[str]:
        """Close what must close now; returns the Socket.IO sids closed."""
        self._close_unauthenticated()
        with self._lock:
            # A client gone while ``on_connect`` ran never reaches ``on_disconnect``.
            manager = socketio.server.manager
            pending = set(manager.pending_connect.get("/", ()))
            for sid in [
                sid for sid in self.connections if sid not in pending and not manager.is_connected(sid, "/")
            ]:
                self.connections.pop(sid, None)
            open_now = dict(self.connections)
        if not open_now:
            return []
        now = time.time()
        revoked = blocklist.revoked_among([k for c in open_now.values() for k in (c.jti, c.session) if k])
        users = _users({c.actor.user_id for c in open_now.values()})
        closing = [
            sid
            for sid, c in open_now.items()
            if c.expires_at <= now
            or c.jti in revoked
            or c.session in revoked
            or users.get(c.actor.user_id) != (c.actor.role, c.generation)
        ]
        for sid in closing:
            self.forget(sid)
            socketio.server.disconnect(sid)
        return closing

    def _close_unauthenticated(self) -> None:
        """Close engine.io transports that never connected to the namespace in time."""
        now = time.monotonic()
        server = socketio.server
        alive = set(dict(server.eio.sockets))  # dict(): one atomic copy
        for eio_sid in alive:
            sid = server.manager.sid_from_eio_sid(eio_sid, "/")
            # Connected means past ``on_connect``: a connect that raised leaves
            # its sid pending, and such a transport is closed like the others.
            if sid is not None and server.manager.is_connected(sid, "/"):
                self._unauthenticated.pop(eio_sid, None)
                continue
            first = self._unauthenticated.setdefault(eio_sid, now)
            if now - first >= self.settings.socket_auth_deadline_s:
                self._unauthenticated.pop(eio_sid, None)
                _close_transport(server.eio, eio_sid)
        for gone in set(self._unauthenticated) - alive:
            self._unauthenticated.pop(gone, None)


def _close_transport(eio, eio_sid: str) -> None:
    """Close an Engine.IO socket without waiting for its writer to drain
    (``eio.disconnect`` waits, one socket after another, for clients that may
    never read)."""
    socket = eio.sockets.get(eio_sid)
    if socket is not None:
        socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
        eio.sockets.pop(eio_sid, None)


def guard() -> ConnectionGuard:
    from flask import current_app

    return current_app.extensions["orion_socket_guard"]


_USERS = select(User.__table__.c.id, User.__table__.c.role, User.__table__.c.token_generation)


def _users(ids: set[int]) -> dict[int, tuple[str, int]]:
    """``{id: (role, token generation)}`` of the users that still exist."""
    with read_connection() as conn:
        rows = conn.execute(_USERS.where(User.__table__.c.id.in_(sorted(ids)))).all()
    return {row.id: (row.role, row.token_generation) for row in rows}


@socketio.on("connect")
def on_connect(auth):
    connection = _authenticate(auth)
    guard().admit(request.sid, connection)
    actor = connection.actor
    socketio.server.save_session(request.sid, {"actor": actor})
    join_room(user_room(actor.user_id))
    if actor.is_operator:
        join_room(OPERATORS)


@socketio.on("disconnect")
def on_disconnect(*_reason):
    guard().forget(request.sid)


UNAVAILABLE = "unavailable"


def _authenticate(auth) -> Connection:
    """The connection's token checked, and its user read; refuses with
    ``unauthorized``, or ``unavailable`` when Redis or the database cannot tell."""
    try:
        return _check_token(auth)
    except (RedisError, SQLAlchemyError):
        log.warning("socket.io: a connection was refused: the token could not be checked")
        raise ConnectionRefusedError(UNAVAILABLE) from None


def _check_token(auth) -> Connection:
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        raise ConnectionRefusedError(UNAUTHORIZED)
    try:
        claims = decode_token(token)
    except (PyJWTError, JWTExtendedException):
        raise ConnectionRefusedError(UNAUTHORIZED) from None
    if claims.get("type") != "access" or blocklist.is_revoked(claims["jti"], session_key(claims)):
        raise ConnectionRefusedError(UNAUTHORIZED)
    user_id, generation = int(claims["sub"]), claims.get("gen", 0)
    stored = _users({user_id}).get(user_id)
    if stored is None or stored[1] != generation:
        raise ConnectionRefusedError(UNAUTHORIZED)
    return Connection(
        Actor(user_id, stored[0]),
        request.remote_addr or "-",
        claims["jti"],
        session_key(claims),
        generation,
        float(claims["exp"]),
    )


@socketio.on("subscribe")
def on_subscribe(data):
    try:
        args = subscribe_schema.load(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        return {"ok": False, "error": "invalid_request", "errors": exc.messages}
    actor: Actor = socketio.server.get_session(request.sid)["actor"]
    order_id: uuid.UUID = args["order_id"]
    try:
        refused = guard().refuse_subscription(request.sid, order_room(str(order_id)))
    except RedisError:
        return {"ok": False, "error": UNAVAILABLE}
    if refused is not None:
        if refused["error"] == UNAUTHORIZED:
            guard().forget(request.sid)
            _close_after_ack(request.sid)
        return refused
    with read_only() as session:
        try:
            load_visible_order(session, order_id, actor)
        except NotFound:
            return {"ok": False, "error": "not_found"}
    join_room(order_room(str(order_id)))
    guard().joined(request.sid, order_room(str(order_id)))
    # The replay reads in a new transaction, begun after the join: on SQLite a
    # read transaction keeps the snapshot of its first read, so reusing the one
    # above would miss events committed between that read and the join.
    if args["after_seq"] is not None:
        _replay(order_id, args["after_seq"])
    return {"ok": True}


ACK_GRACE_S = 0.2


def _close_after_ack(sid: str) -> None:
    """Close connection ``sid`` once its acknowledgement is on its way (python-socketio
    sends it after the handler returns; closing inside would lose it)."""

    def close() -> None:
        time.sleep(ACK_GRACE_S)
        socketio.server.disconnect(sid)

    socketio.start_background_task(close)


def _replay(order_id: uuid.UUID, after_seq: int) -> None:
    """Send this connection the order's events with ``seq > after_seq``, in order."""
    with read_only() as session:
        events = [
            e.to_dict()
            for e in session.scalars(
                select(OrderEvent)
                .where(OrderEvent.order_id == order_id, OrderEvent.seq > after_seq)
                .order_by(OrderEvent.seq)
            )
        ]
    for event in events:
        emit("order.updated", event, to=request.sid, ignore_queue=True)
