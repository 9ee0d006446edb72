"""Flask extensions, created unbound here and bound to an app by ``init_extensions``.

- ``jwt``: access tokens carry the user's ``role`` claim; refresh tokens carry none.
- ``limiter``: moving-window rate limits, stored in Redis in services mode
  (``RATELIMIT_STORAGE_URI``), else in memory.
- ``blocklist``: revoked token ids (``jti``); see ``TokenBlocklist``.
"""
from __future__ import annotations

from datetime import datetime, timezone

import redis
from flask import Flask, current_app
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from models import RevokedToken, read_only, unit_of_work, utcnow

jwt = JWTManager()
limiter = Limiter(key_func=get_remote_address, strategy="moving-window", key_prefix="orion")


class TokenBlocklist:
    """Revoked JWT ids, kept until the token would have expired anyway.

    With ``ORION_REDIS_URL`` set (services mode) a key ``orion:revoked:<jti>`` whose
    TTL ends at the token's ``exp``; otherwise a row in ``revoked_tokens``.
    """

    def init_app(self, app: Flask) -> None:
        url = app.config.get("ORION_REDIS_URL")
        app.extensions["orion_redis"] = redis.Redis.from_url(url, socket_timeout=2) if url else None

    def revoke(self, jti: str, exp: int) -> None:
        """Revoke token ``jti`` whose ``exp`` claim (Unix seconds) is ``exp``."""
        expires_at = datetime.fromtimestamp(exp, timezone.utc)
        client = redis_client()
        if client is None:
            with unit_of_work() as session:
                session.merge(RevokedToken(jti=jti, expires_at=expires_at))
            return
        ttl = max(1, int((expires_at - utcnow()).total_seconds()) + 1)
        client.set(f"orion:revoked:{jti}", "1", ex=ttl)

    def is_revoked(self, jti: str) -> bool:
        client = redis_client()
        if client is not None:
            return bool(client.exists(f"orion:revoked:{jti}"))
        with read_only() as session:
            return session.get(RevokedToken, jti) is not None


blocklist = TokenBlocklist()


def redis_client() -> redis.Redis | None:
    """The app's Redis client, or None when Redis is not configured."""
    return current_app.extensions["orion_redis"]


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict, payload: dict) -> bool:
    return blocklist.is_revoked(payload["jti"])


def init_extensions(app: Flask) -> None:
    jwt.init_app(app)
    limiter.init_app(app)
    blocklist.init_app(app)
