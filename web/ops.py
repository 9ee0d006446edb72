"""At the root (not under /api/v1): liveness ``/healthz``, readiness ``/readyz``,
and Prometheus metrics ``/metrics``."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

import kombu
from flask import Blueprint, Response, current_app, request
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from models import get_engine
from observability.metrics import scrape
from web.errors import problem
from web.extensions import redis_client

bp = Blueprint("ops", __name__)
DEPENDENCY_ERRORS = (SQLAlchemyError, KombuError, RedisError, OSError)


@bp.get("/healthz")
def healthz():
    """Liveness: 200 ``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}


@bp.get("/metrics")
def metrics():
    """Prometheus text: HTTP requests, orders by status, saga steps, retries, outbox
    backlog and age, inventory audit (see ``observability/metrics.py``).

    SPEC: for loopback clients, or with ``Authorization: Bearer <METRICS_TOKEN>``
    when that is set (compared in constant time). Others get 401 (a token is set)
    or 403 (none is: only this machine may scrape).
    """
    token = current_app.config["ORION_METRICS_TOKEN"]
    given = request.headers.get("Authorization", "")
    granted = bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    if not granted and not _loopback(request.remote_addr):
        if token:
            return problem(401, "a metrics token is required", headers={"WWW-Authenticate": "Bearer"})
        return problem(403, "metrics are served to this machine only (or set METRICS_TOKEN)")
    body, content_type = scrape()
    return Response(body, content_type=content_type)


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@bp.get("/readyz")
def readyz():
    """Readiness: 200 ``{status, checks}`` when every dependency answers, else a 503
    problem whose detail names the first one that does not."""
    checks = {name: _outcome(check) for name, check in _checks()}
    failed = [name for name, outcome in checks.items() if outcome != "ok"]
    if not failed:
        return {"status": "ok", "checks": checks}
    return problem(503, f"{failed[0]} is unavailable: {checks[failed[0]]}", checks=checks)


def _checks() -> list[tuple[str, Callable[[], object]]]:
    checks = [("database", _database), ("broker", _broker)]
    if redis_client() is not None:
        checks.append(("redis", lambda: redis_client().ping()))
    return checks


def _outcome(check: Callable[[], object]) -> str:
    """``"ok"``, or the error's class name (the full error goes to the log, not to clients)."""
    try:
        check()
    except DEPENDENCY_ERRORS as exc:
        current_app.logger.warning("readiness check failed: %s", exc)
        return f"error: {type(exc).__name__}"
    return "ok"


def _database() -> None:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


def _broker() -> None:
    config = current_app.config
    with kombu.Connection(
        config["ORION_BROKER_URL"],
        connect_timeout=3,
        transport_options=config["ORION_BROKER_TRANSPORT_OPTIONS"],
    ) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0)
