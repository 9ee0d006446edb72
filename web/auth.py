"""Accounts and tokens: register, login, refresh, logout, logout-all, me; and ``create_user``.

Tokens (SPEC "Availability and abuse"): a login starts a session (claim ``sid``)
shared by its access and refresh tokens. ``/auth/refresh`` rotates the refresh
token; presenting one that was already exchanged is taken as theft (OAuth 2.0
Security BCP, RFC 9700 §4.14.2: refresh token rotation) and revokes the whole
session. ``/auth/logout-all`` moves the user to the next token generation
(claim ``gen``), which refuses every token issued before it.

Failed logins are limited per email and per client address (SPEC: at most 10 a
minute per email, then 429 with Retry-After). Only failures count; once a limit
is reached every attempt is refused until the window moves on, a correct
password included, so the limit cannot be used as a password oracle.
Flask-Limiter checks such a limit before the view and counts a failure after
the response, so concurrent guesses would all pass the check: logins for one
email therefore run one at a time (``_one_login_per_email``: a Redis lock, or
a process lock without Redis), from before the check to after the count.
Registration is limited per client address (``REGISTER_LIMIT``), every attempt
counted.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from functools import lru_cache

from flask import Blueprint, current_app, g, request
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    current_user,
    decode_token,
    get_jwt,
    get_jwt_identity,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_limiter.util import get_remote_address
from jwt import InvalidTokenError
from marshmallow import ValidationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import TooManyRequests, Unauthorized

from models import User, read_only, unit_of_work
from models.db import read_connection
from models.user import CUSTOMER, OPERATOR
from services.errors import Conflict
from services.ordering import Actor
from web.apidoc import authenticate, body, other_responses, response
from web.extensions import blocklist, generation_key, jwt, limiter, redis_client, session_key
from web.schemas import LoginSchema, LogoutSchema, RegisterSchema, TokensSchema, UserSchema

bp = Blueprint("auth", __name__)


def create_user(email: str, password: str, name: str, role: str = CUSTOMER) -> User:
    """Store a user with an argon2 hash of ``password``; the email is stored lower-cased.

    Raises Conflict (409) when the email is taken, ValueError for an unknown role.
    """
    if role not in (CUSTOMER, OPERATOR):
        raise ValueError(f"role must be {CUSTOMER!r} or {OPERATOR!r}, got {role!r}")
    user = User(email=User.normalize_email(email), name=name, role=role)
    user.set_password(password)
    try:
        with unit_of_work() as session:
            session.add(user)
    except IntegrityError:  # the unique email index decides races
        raise Conflict("this email is already registered") from None
    return user


def _register_limit() -> str:
    return current_app.config["REGISTER_LIMIT"]


@bp.post("/auth/register")
@limiter.limit(_register_limit, key_func=lambda: f"register:{get_remote_address()}")
@body(RegisterSchema())
@response(UserSchema(), 201, "Created: the new customer")
@other_responses(
    {409: "Email already registered", 429: "Too many registrations from this address; see Retry-After"}
)
def register(body: dict):
    """Create a customer account."""
    return create_user(body["email"], body["password"], body["name"])


def _login_limit() -> str:
    return current_app.config["LOGIN_FAILURE_LIMIT"]


def _login_email() -> str:
    data = request.get_json(silent=True)
    email = data.get("email") if isinstance(data, dict) else None
    return f"email:{User.normalize_email(email) if isinstance(email, str) else '-'}"


def _client_address() -> str:
    return f"address:{get_remote_address()}"


def _failed(response) -> bool:
    return response.status_code == 401


LOGIN_LOCK_SECONDS = 10  # a lock outlives a crashed request by at most this
LOGIN_LOCK_WAIT_SECONDS = 5  # a login waits this long for the ones before it, then 429
# Without Redis: a fixed set of lock stripes (emails share a stripe by hash), so
# the map cannot grow with every email ever tried.
_local_locks = tuple(threading.Lock() for _ in range(256))


def install_login_serialization(app) -> None:
    """Hook ``_one_login_per_email`` in just ahead of Flask-Limiter's own
    ``before_request`` check (app hooks run in registration order, and the
    limiter registered before the blueprints; the request id's hook stays
    first), and release its lock at teardown, after the limiter counted the failure."""
    hooks = app.before_request_funcs.setdefault(None, [])
    limiter_at = next(
        (i for i, hook in enumerate(hooks) if getattr(hook, "__self__", None) is limiter), len(hooks)
    )
    hooks.insert(limiter_at, _one_login_per_email)  # after the request id's hook
    app.teardown_request(_release_login_lock)


def _one_login_per_email():
    if request.endpoint != "auth.login":
        return
    key = _login_email()
    client = redis_client()
    if client is not None:
        lock = client.lock(
            f"orion:login-lock:{key}",
            timeout=LOGIN_LOCK_SECONDS,
            blocking_timeout=LOGIN_LOCK_WAIT_SECONDS,
            sleep=0.02,
        )
        acquired = lock.acquire()
    else:
        lock = _local_locks[hash(key) % len(_local_locks)]
        acquired = lock.acquire(timeout=LOGIN_LOCK_WAIT_SECONDS)
    if not acquired:
        raise TooManyRequests(
            "another login for this email is in progress; retry later", retry_after=LOGIN_LOCK_WAIT_SECONDS
        )
    g.orion_login_lock = lock


def _release_login_lock(_exc):
    lock = g.pop("orion_login_lock", None)
    if lock is None:
        return
    with contextlib.suppress(Exception):  # an expired Redis lock, or Redis gone: it expires anyway
        lock.release()


@bp.post("/auth/login")
@limiter.limit(_login_limit, key_func=_login_email, deduct_when=_failed)
@limiter.limit(_login_limit, key_func=_client_address, deduct_when=_failed)
@body(LoginSchema())
@response(TokensSchema())
@other_responses(
    {401: "Wrong email or password", 429: "Too many failed logins for this email or address; see Retry-After"}
)
def login(body: dict):
    """Exchange email and password for an access token and a refresh token."""
    user = _check_credentials(body["email"], body["password"])
    return _tokens(user, uuid.uuid4().hex)


# RFC 6749 §5.1: a response carrying tokens must not be stored by any cache.
TOKEN_ENDPOINTS = frozenset({"auth.login", "auth.refresh"})


@bp.after_request
def _no_store_tokens(response):
    if request.endpoint in TOKEN_ENDPOINTS:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


@bp.post("/auth/refresh")
@authenticate(refresh=True)
@response(TokensSchema())
def refresh():
    """Exchange a refresh token (sent as the Bearer token) for a new access token and a
    new refresh token (rotation). A refresh token already exchanged revokes every
    token of its session (401)."""
    claims = get_jwt()
    if not blocklist.claim_rotation(claims["jti"], claims["exp"]):
        sid = session_key(claims)
        if sid:  # until the newest token the session may hold has expired
            lifetime = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"].total_seconds()
            blocklist.revoke(sid, int(time.time() + lifetime) + 1)
        raise Unauthorized("this refresh token was already used; the session is revoked")
    return _tokens(current_user, claims.get("sid") or uuid.uuid4().hex)


@bp.post("/auth/logout")
@authenticate()
@body(LogoutSchema(), optional=True)
@response(None, 204, "Revoked")
def logout(body: dict):
    """Revoke the presented access token at once, and the refresh token given in the body."""
    refresh_claims = _own_refresh_token(body["refresh_token"]) if "refresh_token" in body else None
    for claims in (get_jwt(), refresh_claims):
        if claims:
            blocklist.revoke(claims["jti"], claims["exp"])


_NEXT_GENERATION = (
    update(User.__table__)
    .where(User.__table__.c.id == bindparam("b_id"))
    .values(token_generation=User.__table__.c.token_generation + 1)
)


@bp.post("/auth/logout-all")
@authenticate()
@response(None, 204, "Every token of the user revoked")
def logout_all():
    """Revoke every access and refresh token of the signed-in user, on every device."""
    claims = get_jwt()
    with unit_of_work() as session:
        session.execute(_NEXT_GENERATION, {"b_id": current_user.id})
    # The database refuses the old generation from now on; the blocklist too,
    # until the last token issued in it (a refresh token) has expired.
    lifetime = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"].total_seconds()
    blocklist.revoke(generation_key(claims["sub"], claims.get("gen", 0)), int(time.time() + lifetime) + 1)
    blocklist.revoke(claims["jti"], claims["exp"])


@bp.get("/auth/me")
@authenticate()
@response(UserSchema())
def me():
    """The signed-in user."""
    return current_user


_USER_BY_ID = select(User.__table__).where(User.__table__.c.id == bindparam("b_id"))


@jwt.user_lookup_loader
def _load_user(_header: dict, payload: dict) -> User | Actor | None:
    """The token's user, read on every authenticated request (a deleted user's
    token stops working at once): one primary-key ``SELECT`` on an autocommit
    connection (``models.db.read_connection``), as a detached ``User``.

    On a route whose command reads the user's row itself
    (``authenticate(user_read_by_command=True)``) nothing is read here: the
    token's ``Actor`` stands in, and the command refuses the token (401) if its
    user is gone or logged out everywhere."""
    if g.get("orion_user_read_by_command"):
        return Actor(int(payload["sub"]), payload.get("role", CUSTOMER))
    with read_connection() as conn:
        row = conn.execute(_USER_BY_ID, {"b_id": int(payload["sub"])}).first()
    user = None if row is None else User(**row._mapping)
    return user if user is not None and user.accepts(payload) else None


def _tokens(user: User, sid: str) -> dict:
    """``{access_token, expires_in, refresh_token, token_type}`` of session ``sid``;
    both tokens carry the session and the user's token generation, the access
    token also the user's role."""
    claims = {"sid": sid, "gen": user.token_generation}
    token = create_access_token(str(user.id), additional_claims={**claims, "role": user.role})
    seconds = int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    return {
        "access_token": token,
        "expires_in": seconds,
        "token_type": "Bearer",
        "refresh_token": create_refresh_token(str(user.id), additional_claims=claims),
    }


@lru_cache(maxsize=1)
def _decoy() -> User:
    user = User()
    user.set_password("decoy password, never matches a stored hash")
    return user


def _check_credentials(email: str, password: str) -> User:
    """The user with this email and password; Unauthorized (401) otherwise.

    An unknown email still costs one hash check, so timing does not tell which part was wrong.
    """
    with read_only() as session:
        user = session.scalar(select(User).where(User.email == User.normalize_email(email)))
    matches = (user if user is not None else _decoy()).check_password(password)
    if user is None or not matches:
        raise Unauthorized("wrong email or password")
    return user


def _own_refresh_token(token: str) -> dict:
    """The claims of ``token`` if it is a refresh token of the caller; else ValidationError (422)."""
    try:
        claims = decode_token(token, allow_expired=True)
    except (InvalidTokenError, JWTExtendedException):
        claims = {}
    if claims.get("type") != "refresh" or claims.get("sub") != get_jwt_identity():
        raise ValidationError({"refresh_token": ["Not a refresh token of this user."]})
    return claims
