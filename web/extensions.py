"""Flask extensions, created unbound here and bound to an app by ``init_extensions``.

- ``jwt``: access tokens carry the user's ``role`` claim; refresh tokens carry none.
- ``limiter``: moving-window rate limits, stored in Redis in services mode
  (``RATELIMIT_STORAGE_URI``), else in memory.
- ``blocklist``: revoked token ids (``jti``) and login sessions; see ``TokenBlocklist``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from flask import Flask, current_app
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import RevokedToken, read_only, unit_of_work, utcnow

jwt = JWTManager()
limiter = Limiter(key_func=get_remote_address, strategy="moving-window", key_prefix="orion")


class TokenBlocklist:
    """Revoked JWT ids and login sessions, kept until their tokens would have expired anyway.

    Keys are a token's ``jti``, ``sid:<session>`` for every token of one login
    (refresh-token reuse revokes the whole session), ``gen:<user>:<generation>``
    for every token of a user issued before ``/auth/logout-all``, and
    ``rotated:<jti>`` for a refresh token already exchanged. With ``ORION_REDIS_URL`` set (services
    mode) a key ``orion:revoked:<key>`` whose TTL ends at the token's ``exp``;
    otherwise a row in ``revoked_tokens``.
    """

    def init_app(self, app: Flask) -> None:
        url = app.config.get("ORION_REDIS_URL")
        app.extensions["orion_redis"] = redis.Redis.from_url(url, socket_timeout=2) if url else None

    def revoke(self, key: str, exp: int) -> None:
        """Revoke ``key`` (a ``jti`` or ``sid:<session>``) until ``exp`` (Unix seconds)."""
        self._add(key, exp, only_new=False)

    def claim_rotation(self, jti: str, exp: int) -> bool:
        """Mark refresh token ``jti`` as exchanged; False if it was already (a reuse).
        Atomic: of two concurrent exchanges of one token, exactly one gets True."""
        return self._add(f"rotated:{jti}", exp, only_new=True)

    def is_revoked(self, *keys: str | None) -> bool:
        """True if any of ``keys`` is revoked (None keys are skipped)."""
        return bool(self.revoked_among([key for key in keys if key]))

    def revoked_among(self, keys: list[str]) -> set[str]:
        """The revoked ones of ``keys``, in one round trip."""
        if not keys:
            return set()
        client = redis_client()
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(f"orion:revoked:{key}")
            return {key for key, found in zip(keys, pipe.execute(), strict=False) if found}
        with read_only() as session:
            return set(session.scalars(select(RevokedToken.jti).where(RevokedToken.jti.in_(keys))))

    def _add(self, key: str, exp: int, only_new: bool) -> bool:
        expires_at = datetime.fromtimestamp(exp, UTC)
        client = redis_client()
        if client is None:
            try:
                with unit_of_work() as session:
                    if only_new:
                        session.add(RevokedToken(jti=key, expires_at=expires_at))
                    else:
                        session.merge(RevokedToken(jti=key, expires_at=expires_at))
            except IntegrityError:
                return False
            return True
        ttl = max(1, int((expires_at - utcnow()).total_seconds()) + 1)
        return bool(client.set(f"orion:revoked:{key}", "1", ex=ttl, nx=only_new))


blocklist = TokenBlocklist()


def redis_client() -> redis.Redis | None:
    """The app's Redis client, or None when Redis is not configured."""
    return current_app.extensions["orion_redis"]


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict, payload: dict) -> bool:
    """The token itself, its whole login session, or its user's token generation
    (``/auth/logout-all``) was revoked."""
    return blocklist.is_revoked(*token_keys(payload))


def token_keys(claims: dict) -> list[str]:
    """The blocklist keys any of which revokes a token: its ``jti``, its user's
    token generation and, when it has one, its login session."""
    keys = [claims["jti"], generation_key(claims["sub"], claims.get("gen", 0))]
    session = session_key(claims)
    return [*keys, session] if session else keys


def session_key(claims: dict) -> str | None:
    """The blocklist key of the login session a token belongs to (claim ``sid``)."""
    return f"sid:{claims['sid']}" if claims.get("sid") else None


def generation_key(user_id: str | int, generation: int) -> str:
    """The blocklist key of one token generation of a user (claim ``gen``).

    ``/auth/logout-all`` moves the user to the next generation in the database,
    which every user read checks (``User.accepts``), and revokes this key, so
    that the blocklist check refuses the old tokens too, before anything else
    runs: a route whose user check comes later (``POST /orders``, in the
    placement's transaction) must not let them spend the user's rate limit."""
    return f"gen:{user_id}:{generation}"


def init_extensions(app: Flask) -> None:
    jwt.init_app(app)
    limiter.init_app(app)
    blocklist.init_app(app)
