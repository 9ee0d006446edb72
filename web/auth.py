"""Accounts and tokens: register, login, refresh, logout, me; and ``create_user``.

Failed logins are limited per email and per client address (SPEC: at most 10 a
minute per email, then 429 with Retry-After). Only failures count; once a limit
is reached every attempt is refused until the window moves on, a correct
password included, so the limit cannot be used as a password oracle.
"""
from __future__ import annotations

from functools import lru_cache

from flask import Blueprint, current_app, request
from flask_jwt_extended import (create_access_token, create_refresh_token, current_user,
                                decode_token, get_jwt, get_jwt_identity)
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_limiter.util import get_remote_address
from jwt import InvalidTokenError
from marshmallow import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Unauthorized

from models import User, read_only, unit_of_work
from models.db import read_connection
from models.user import CUSTOMER, OPERATOR
from services.errors import Conflict
from web.apidoc import authenticate, body, other_responses, response
from web.extensions import blocklist, jwt, limiter
from web.schemas import (AccessTokenSchema, LoginSchema, LogoutSchema, RegisterSchema,
                         TokensSchema, UserSchema)

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


@bp.post("/auth/register")
@body(RegisterSchema())
@response(UserSchema(), 201, "Created: the new customer")
@other_responses({409: "Email already registered"})
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


@bp.post("/auth/login")
@limiter.limit(_login_limit, key_func=_login_email, deduct_when=_failed)
@limiter.limit(_login_limit, key_func=_client_address, deduct_when=_failed)
@body(LoginSchema())
@response(TokensSchema())
@other_responses({401: "Wrong email or password",
                  429: "Too many failed logins for this email or address; see Retry-After"})
def login(body: dict):
    """Exchange email and password for an access token and a refresh token."""
    user = _check_credentials(body["email"], body["password"])
    return {**_access(user), "refresh_token": create_refresh_token(str(user.id)),
            "token_type": "Bearer"}


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
@response(AccessTokenSchema())
def refresh():
    """Exchange a refresh token (sent as the Bearer token) for a new access token."""
    return _access(current_user)


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


@bp.get("/auth/me")
@authenticate()
@response(UserSchema())
def me():
    """The signed-in user."""
    return current_user


_USER_BY_ID = select(User.__table__).where(User.__table__.c.id == bindparam("b_id"))


@jwt.user_lookup_loader
def _load_user(_header: dict, payload: dict) -> User | None:
    """The token's user, read on every authenticated request (a deleted user's
    token stops working at once): one primary-key ``SELECT`` on an autocommit
    connection (``models.db.read_connection``), as a detached ``User``."""
    with read_connection() as conn:
        row = conn.execute(_USER_BY_ID, {"b_id": int(payload["sub"])}).first()
    return None if row is None else User(**row._mapping)


def _access(user: User) -> dict:
    """``{access_token, expires_in}``; the token carries the user's role."""
    token = create_access_token(str(user.id), additional_claims={"role": user.role})
    seconds = int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    return {"access_token": token, "expires_in": seconds}


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
