"""One error vocabulary: every failure is ``application/problem+json`` (RFC 9457).

The body always has ``type``, ``title``, ``status`` (equal to the HTTP status)
and ``detail``; a 422 adds ``errors: {field: [messages]}`` where a nested field
is named by its dotted path (``lines.0.quantity``, ``shipping_address.zip``).
"""

from __future__ import annotations

import math
import time

from flask import Flask, Response, current_app, g, jsonify
from flask_limiter import RateLimitExceeded
from marshmallow import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout
from sqlalchemy.exc import OperationalError as DatabaseUnavailable
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from models import InvalidTransition
from services.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceError,
    TokenRefused,
    TooManyOpenOrders,
    TooManyUnitsHeld,
)
from web.extensions import limiter

PROBLEM_JSON = "application/problem+json"
SERVICE_STATUS = ((NotFound, 404), (Conflict, 409), (Forbidden, 403), (TooManyOpenOrders, 429))
# Orders finish in seconds to minutes: try again a little later.
RETRY_AFTER = {TooManyOpenOrders: "30", TooManyUnitsHeld: "30"}


def problem(status: int, detail: str, *, headers: dict | None = None, **extra) -> Response:
    """A problem+json response: ``{type: "about:blank", title, status, detail, **extra}``."""
    body = {
        "type": "about:blank",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    response.headers.update(headers or {})
    return response


def field_errors(messages, prefix: str = "") -> dict[str, list[str]]:
    """Flatten marshmallow's nested messages to ``{"a.0.b": [message, ...]}``."""
    if not isinstance(messages, dict):
        items = messages if isinstance(messages, list) else [messages]
        return {prefix or "_schema": [str(m) for m in items]}
    flat: dict[str, list[str]] = {}
    for key, value in messages.items():
        flat.update(field_errors(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def register_error_handlers(app: Flask) -> None:
    """Install the handlers; the most specific exception class wins (Flask walks the MRO)."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RateLimitExceeded, _rate_limited)
    app.register_error_handler(ValidationError, _invalid)
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(InvalidTransition, lambda e: problem(409, str(e)))
    for unavailable in (DatabaseUnavailable, RedisConnectionError, RedisTimeout):
        app.register_error_handler(unavailable, _unavailable)
    app.register_error_handler(Exception, _unexpected)


def register_jwt_errors(jwt) -> None:
    """Make every token failure a 401 problem (the library answers some with 422)."""
    jwt.unauthorized_loader(lambda reason: _unauthorized(f"authentication required: {reason}"))
    jwt.invalid_token_loader(lambda reason: _unauthorized(f"invalid token: {reason}"))
    jwt.expired_token_loader(lambda _header, _data: _unauthorized("the token has expired"))
    jwt.revoked_token_loader(lambda _header, _data: _unauthorized("the token has been revoked"))
    jwt.user_lookup_error_loader(lambda _header, _data: _unauthorized("the token's user no longer exists"))
    jwt.token_verification_failed_loader(lambda _header, _data: _unauthorized("the token was refused"))


def _unauthorized(detail: str) -> Response:
    return problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _http_error(error: HTTPException) -> Response:
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    return problem(error.code or 500, error.description or "", headers=headers)


def _rate_limited(error: RateLimitExceeded) -> Response:
    current = limiter.current_limit
    retry_after = 60
    if current:  # seconds until the window frees a slot, never beyond the window itself
        window = current.limit.get_expiry()
        retry_after = min(window, max(1, math.ceil(current.reset_at - time.time())))
    return problem(
        429,
        f"too many requests (limit {error.description}); retry later",
        headers={"Retry-After": str(retry_after)},
    )


def _invalid(error: ValidationError) -> Response:
    return problem(422, "the request is not valid; see errors", errors=field_errors(error.messages))


def _service_error(error: ServiceError) -> Response:
    if isinstance(error, TokenRefused):  # as the token checks' own 401s
        return _unauthorized(error.detail)
    status = next((code for cls, code in SERVICE_STATUS if isinstance(error, cls)), 400)
    retry = RETRY_AFTER.get(type(error))
    return problem(status, error.detail, headers={"Retry-After": retry} if retry else None)


def _unavailable(error: Exception) -> Response:
    current_app.logger.warning("dependency unavailable: %s", error)
    return problem(503, "a backing service is unavailable; retry later", headers={"Retry-After": "5"})


def _unexpected(error: Exception) -> Response:
    current_app.logger.error("unhandled error (request %s)", g.get("correlation_id"), exc_info=error)
    return problem(500, "an unexpected error occurred; quote the X-Request-ID header when reporting it")
