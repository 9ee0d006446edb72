"""The Socket.IO server (SPEC "Socket.IO"): authenticated connections, rooms,
``subscribe`` with replay from the order event log.

- ``connect`` takes ``auth = {"token": <access JWT>}``; a missing, malformed,
  expired, revoked or refresh token is refused (python-socketio's
  ``ConnectionRefusedError``, which the client sees as a ``connect_error`` with
  ``{"message": "unauthorized"}``; Python's built-in one would arrive as
  "Connection refused by server"). The token is checked at connect only.
  The connection joins ``user:<id>``, and operators also ``operators``.
- ``subscribe {order_id, after_seq?}`` joins ``order:<id>`` for the owner or an
  operator, replays ``seq > after_seq`` from ``order_events`` to this connection
  when ``after_seq`` is given, and acknowledges ``{"ok": true}`` or
  ``{"ok": false, "error": "not_found" | "invalid_request"}``.

The room is joined before the log is read, so an event committed meanwhile is
never missed: it arrives live, from the replay, or both (the client drops the
repeat by ``seq``). Events reach this process through the message queue that
workers publish to (``progress.emitter``).
"""
from __future__ import annotations

import uuid

from flask import Flask, request
from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_socketio import ConnectionRefusedError, SocketIO, emit, join_room
from jwt.exceptions import PyJWTError
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import select

from config import get_settings
from models import OrderEvent, read_only
from progress import OPERATORS, order_room, user_room
from progress.emitter import build_manager
from services.errors import NotFound
from services.ordering import Actor, load_visible_order
from web.extensions import blocklist

socketio = SocketIO()
UNAUTHORIZED = "unauthorized"


class SubscribeSchema(Schema):
    order_id = fields.UUID(required=True)
    after_seq = fields.Integer(load_default=None, allow_none=True,
                               validate=validate.Range(min=0))


subscribe_schema = SubscribeSchema()


def init_realtime(app: Flask) -> None:
    """Bind the Socket.IO server to ``app`` on the configured message queue."""
    socketio.init_app(app, client_manager=build_manager(get_settings(), write_only=False),
                      async_mode="threading", cors_allowed_origins=app.config.get("SOCKETIO_CORS"))


@socketio.on("connect")
def on_connect(auth):
    actor = _authenticate(auth)
    socketio.server.save_session(request.sid, {"actor": actor})
    join_room(user_room(actor.user_id))
    if actor.is_operator:
        join_room(OPERATORS)


def _authenticate(auth) -> Actor:
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        raise ConnectionRefusedError(UNAUTHORIZED)
    try:
        claims = decode_token(token)
    except (PyJWTError, JWTExtendedException):
        raise ConnectionRefusedError(UNAUTHORIZED) from None
    if claims.get("type") != "access" or blocklist.is_revoked(claims["jti"]):
        raise ConnectionRefusedError(UNAUTHORIZED)
    return Actor(int(claims["sub"]), claims.get("role") or "")


@socketio.on("subscribe")
def on_subscribe(data):
    try:
        args = subscribe_schema.load(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        return {"ok": False, "error": "invalid_request", "errors": exc.messages}
    actor: Actor = socketio.server.get_session(request.sid)["actor"]
    order_id: uuid.UUID = args["order_id"]
    with read_only() as session:
        try:
            load_visible_order(session, order_id, actor)
        except NotFound:
            return {"ok": False, "error": "not_found"}
    join_room(order_room(str(order_id)))
    # The replay reads in a new transaction, begun after the join: on SQLite a
    # read transaction keeps the snapshot of its first read, so reusing the one
    # above would miss events committed between that read and the join.
    if args["after_seq"] is not None:
        _replay(order_id, args["after_seq"])
    return {"ok": True}


def _replay(order_id: uuid.UUID, after_seq: int) -> None:
    """Send this connection the order's events with ``seq > after_seq``, in order."""
    with read_only() as session:
        events = [e.to_dict() for e in session.scalars(
            select(OrderEvent).where(OrderEvent.order_id == order_id, OrderEvent.seq > after_seq)
            .order_by(OrderEvent.seq))]
    for event in events:
        emit("order.updated", event, to=request.sid, ignore_queue=True)
