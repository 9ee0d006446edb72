"""Orion's web app: the HTTP API under ``/api/v1`` and the probes at the root.

``create_app(config=None)`` builds it (``gunicorn 'web:create_app()'``); the
defaults come from ``config.get_settings()`` and ``config`` overrides any of them.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Settings, get_settings
from observability.logging import configure_logging
from progress import hooks as progress_hooks
from web import auth, inventory, operator, ops, orders, pages, products, request_id, request_metrics
from web.errors import register_error_handlers, register_jwt_errors
from web.extensions import init_extensions, jwt
from web.openapi import API_PREFIX
from web.openapi import bp as openapi_bp
from web.realtime import init_realtime
from web.security_headers import SecurityHeaders
from web.transport_limit import TransportLimit

MAX_BODY_BYTES = 64 * 1024  # SPEC: a larger body gets 413


def create_app(config: dict | None = None) -> Flask:
    """The Flask app, with extensions bound and blueprints registered."""
    configure_logging()
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(default_config(get_settings()))
    app.config.update(config or {})
    app.json.sort_keys = False
    request_id.init_app(app)  # first, so every later hook and error sees the id
    request_metrics.init_app(app)
    init_extensions(app)
    auth.install_login_serialization(app)
    register_error_handlers(app)
    register_jwt_errors(jwt)
    for blueprint in (auth.bp, products.bp, orders.bp, inventory.bp, operator.bp, openapi_bp):
        app.register_blueprint(blueprint, url_prefix=API_PREFIX)
    app.register_blueprint(ops.bp)
    app.register_blueprint(pages.bp)
    init_realtime(app)
    # Outside Flask-SocketIO's middleware: a refused transport never reaches it.
    app.wsgi_app = TransportLimit(app.wsgi_app, transport_limit(get_settings()))
    hops = get_settings().proxy_hops
    if hops:  # behind a reverse proxy: the client's address and scheme, from X-Forwarded-*
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.wsgi_app = SecurityHeaders(app.wsgi_app)  # outermost: Socket.IO's answers too
    progress_hooks.install()
    return app


JWT_ISSUER, JWT_AUDIENCE = "orion", "orion-api"


def transport_limit(settings: Settings) -> int:
    """Socket.IO transports per client address: two per allowed connection (a
    polling client upgrading to WebSocket briefly holds both)."""
    return 2 * settings.socket_max_per_address


def default_config(settings: Settings) -> dict:
    """Flask config from the settings; keys named ``ORION_*`` and the limits are ours."""
    return {
        "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
        "ORION_METRICS_TOKEN": settings.metrics_token,
        "JWT_SECRET_KEY": settings.require_jwt_secret(),
        "JWT_TOKEN_LOCATION": ["headers"],
        # RFC 8725 §3.10/§3.9: tokens name who issued them and for whom; both checked.
        "JWT_ENCODE_ISSUER": JWT_ISSUER,
        "JWT_DECODE_ISSUER": JWT_ISSUER,
        "JWT_ENCODE_AUDIENCE": JWT_AUDIENCE,
        "JWT_DECODE_AUDIENCE": JWT_AUDIENCE,
        "JWT_ALGORITHM": "HS256",
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=settings.access_token_seconds),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(seconds=settings.refresh_token_seconds),
        "RATELIMIT_STORAGE_URI": settings.redis_url or "memory://",
        "LOGIN_FAILURE_LIMIT": "10 per minute",
        "REGISTER_LIMIT": settings.register_limit,
        "ORDER_RATE_LIMIT": "120 per minute",
        "ORION_REDIS_URL": settings.redis_url,
        "ORION_BROKER_URL": settings.broker_url,
        "ORION_BROKER_TRANSPORT_OPTIONS": settings.broker_transport_options,
    }
