"""Settings read from the environment; see the README's table for every variable.

Two modes share one code path:

- ``embedded`` (the default): SQLite, kombu's filesystem broker (as ``orionfs://``,
  see ``worker/fs_transport.py``) and a ``file://`` result backend under
  ``ORION_DATA_DIR``; no servers needed.
- ``services``: RabbitMQ, PostgreSQL and Redis, defaulting to their local ports.

Any URL given explicitly wins over the mode's default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NotRequired, TypedDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET = "orion-dev-secret-change-me-0123456789abcdef"


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _floats(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return tuple(sorted(float(part) for part in raw.split(",")))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    mode: str
    data_dir: Path
    database_url: str
    broker_url: str
    result_backend: str
    redis_url: str | None
    jwt_secret_key: str
    access_token_seconds: int
    refresh_token_seconds: int
    smtp_host: str
    smtp_port: int
    mail_from: str
    payment_latency_ms: int
    sandbox_database_url: str
    step_max_retries: int
    max_deliveries: int
    inline_steps: bool
    task_time_limit_s: int
    task_soft_time_limit_s: int
    retry_backoff_max_s: int
    reservation_hold_s: int
    outbox_sweep_s: float
    outbox_stale_s: float
    outbox_poll_s: float
    max_open_orders: int
    max_open_units: int
    email_max_per_address_per_hour: int
    proxy_hops: int
    socket_max_per_user: int
    socket_max_per_address: int
    socket_auth_deadline_s: float
    socket_check_every_s: float
    socket_max_subscriptions: int
    socket_subscribe_per_second: float
    register_limit: str
    metrics_token: str
    worker_concurrency: int
    web_host: str
    web_port: int
    flower_port: int
    socketio_message_queue: str
    socketio_channel: str
    web_threads: int
    stuck_after_s: int
    saga_redrive_after_s: float
    saga_redrive_every_s: float
    payment_window_s: float
    payment_reminder_ages_s: tuple[float, ...]
    payment_sweep_every_s: float
    supplier_lead_time_s: float
    restock_every_s: float
    audit_every_s: float
    broker_transport_options: dict[str, Any] = field(default_factory=dict)
    socketio_transport_options: dict[str, Any] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.mode == "embedded"

    def require_jwt_secret(self) -> str:
        """The JWT signing key; raises ConfigError when production has none."""
        if not self.jwt_secret_key:
            raise ConfigError(
                "JWT_SECRET_KEY is required outside development (ORION_ENV="
                'development); generate one with: python -c "import secrets; '
                'print(secrets.token_urlsafe(48))"'
            )
        return self.jwt_secret_key

    @property
    def flower_url(self) -> str:
        return f"http://{self.web_host}:{self.flower_port}"

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``).

        Raises ConfigError on a malformed value, or on a JWT key that
        ``jwt_secret`` refuses (a missing one only at ``require_jwt_secret``).
        """
        env = os.environ if env is None else env
        mode = env.get("ORION_MODE", "embedded")
        if mode not in ("embedded", "services"):
            raise ConfigError(f"ORION_MODE must be 'embedded' or 'services', got {mode!r}")
        data_dir = Path(env.get("ORION_DATA_DIR") or REPO_ROOT / "var").resolve()
        defaults = _embedded_urls(data_dir) if mode == "embedded" else _service_urls()
        secret = jwt_secret(env, mode)
        broker_url = env.get("BROKER_URL") or defaults["broker_url"]
        # A parked order (soft decline) holds its stock for the payment window:
        # 24 h, not the 72 h it was, so declined cards cannot keep stock from
        # other customers for days (security issue, item 3). Holds outlive the
        # window by an hour, so the expiry job cancels before a hold lapses.
        hold_s = _int(env, "RESERVATION_HOLD_SECONDS", 25 * 3600)
        window_s = _float(env, "PAYMENT_WINDOW_SECONDS", 24 * 3600.0)
        if window_s >= hold_s:
            raise ConfigError(
                f"PAYMENT_WINDOW_SECONDS ({window_s:g}) must be shorter than "
                f"RESERVATION_HOLD_SECONDS ({hold_s}): a parked order's stock "
                "must stay held until its window closes"
            )
        time_limit_s = _int(env, "TASK_TIME_LIMIT_SECONDS", 120)
        soft_time_limit_s = _int(env, "TASK_SOFT_TIME_LIMIT_SECONDS", 90)
        if time_limit_s < 1 or not 0 <= soft_time_limit_s <= time_limit_s:
            raise ConfigError(
                f"TASK_SOFT_TIME_LIMIT_SECONDS ({soft_time_limit_s}) must be from 0 (none) to "
                f"TASK_TIME_LIMIT_SECONDS ({time_limit_s}), which must be at least 1: Celery refuses "
                "to send a task whose soft limit is over its hard one"
            )
        # Emails per recipient address per hour (security issue item 9): addresses
        # are not verified, so one account's orders must not flood someone else's
        # inbox. 30 is more than a real customer's confirmations, cancellations
        # and reminders in an hour.
        emails_per_hour = _int(env, "EMAIL_MAX_PER_ADDRESS_PER_HOUR", 30)
        if emails_per_hour < 1:
            raise ConfigError(
                f"EMAIL_MAX_PER_ADDRESS_PER_HOUR must be at least 1, got {emails_per_hour}: "
                "0 would suppress every email"
            )
        # Socket.IO subscriptions per connection, and how fast (security issue
        # item 1: each subscribe reads the database, a replay the order's events).
        subscriptions = _int(env, "SOCKETIO_MAX_SUBSCRIPTIONS", 100)
        subscribe_rate = _float(env, "SOCKETIO_SUBSCRIBE_PER_SECOND", 10.0)
        if subscriptions < 1 or subscribe_rate <= 0:
            raise ConfigError(
                "SOCKETIO_MAX_SUBSCRIPTIONS must be at least 1 and SOCKETIO_SUBSCRIBE_PER_SECOND "
                f"above 0, got {subscriptions} and {subscribe_rate:g}: no subscription could be made"
            )
        redis_url = env.get("REDIS_URL") or defaults["redis_url"]
        relay_url = env.get("SOCKETIO_MESSAGE_QUEUE") or redis_url or "orionfs://"
        database_url = env.get("DATABASE_URL") or defaults["database_url"]
        # The sandbox stands for a remote provider: its own SQLite file when
        # embedded (SQLite allows one writer), else tables beside Orion's.
        sandbox_url = env.get("PAYMENT_SANDBOX_URL") or defaults.get("sandbox_database_url", database_url)
        return cls(
            mode=mode,
            data_dir=data_dir,
            database_url=database_url,
            broker_url=broker_url,
            result_backend=env.get("RESULT_BACKEND") or defaults["result_backend"],
            redis_url=redis_url,
            jwt_secret_key=secret,
            access_token_seconds=_int(env, "JWT_ACCESS_SECONDS", 900),
            refresh_token_seconds=_int(env, "JWT_REFRESH_SECONDS", 30 * 86400),
            smtp_host=env.get("SMTP_HOST", "127.0.0.1"),
            smtp_port=_int(env, "SMTP_PORT", 8025),
            mail_from=env.get("MAIL_FROM", "Orion Shop <orders@orion.example>"),
            payment_latency_ms=_int(env, "PAYMENT_LATENCY_MS", 20),
            sandbox_database_url=sandbox_url,
            step_max_retries=_int(env, "SAGA_STEP_MAX_RETRIES", 10),
            max_deliveries=_int(env, "SAGA_MAX_DELIVERIES", 5),
            inline_steps=_bool(env, "SAGA_INLINE_STEPS", True),
            task_time_limit_s=time_limit_s,
            task_soft_time_limit_s=soft_time_limit_s,
            retry_backoff_max_s=_int(env, "SAGA_RETRY_BACKOFF_MAX", 30),
            reservation_hold_s=hold_s,
            outbox_sweep_s=_float(env, "OUTBOX_SWEEP_SECONDS", 10.0),
            outbox_stale_s=_float(env, "OUTBOX_STALE_SECONDS", 5.0),
            # The relay's wait between looks when nothing woke it: PostgreSQL's
            # NOTIFY wakes it at each commit, SQLite has nothing of the kind.
            outbox_poll_s=_float(env, "OUTBOX_POLL_SECONDS", 0.2 if mode == "embedded" else 2.0),
            max_open_orders=_int(env, "MAX_OPEN_ORDERS", 20),
            # Twice the largest invoice of the dataset's year (15,049 units after
            # the API's 1,000 per line): enough for a real wholesaler, not a hoard.
            max_open_units=_int(env, "MAX_OPEN_UNITS", 30000),
            email_max_per_address_per_hour=emails_per_hour,
            proxy_hops=_int(env, "PROXY_HOPS", 0),
            socket_max_per_user=_int(env, "SOCKETIO_MAX_PER_USER", 10),
            socket_max_per_address=_int(env, "SOCKETIO_MAX_PER_ADDRESS", 50),
            socket_auth_deadline_s=_float(env, "SOCKETIO_AUTH_SECONDS", 5.0),
            socket_check_every_s=_float(env, "SOCKETIO_CHECK_SECONDS", 2.0),
            socket_max_subscriptions=subscriptions,
            socket_subscribe_per_second=subscribe_rate,
            # The embedded default is a local demo whose replay (./run.sh replay)
            # registers thousands of customers from 127.0.0.1.
            register_limit=env.get(
                "REGISTER_LIMIT", "100000 per hour" if mode == "embedded" else "20 per hour"
            ),
            metrics_token=env.get("METRICS_TOKEN", ""),
            worker_concurrency=_int(env, "WORKER_CONCURRENCY", default_concurrency(mode)),
            web_host=env.get("WEB_HOST", "127.0.0.1"),
            web_port=_int(env, "WEB_PORT", 8000),
            flower_port=_int(env, "FLOWER_PORT", 5555),
            socketio_message_queue=relay_url,
            socketio_channel=env.get("SOCKETIO_CHANNEL", "orion-socketio"),
            web_threads=_int(env, "WEB_THREADS", 1100),
            stuck_after_s=_int(env, "STUCK_AFTER_SECONDS", 300),
            saga_redrive_after_s=_float(env, "SAGA_REDRIVE_AFTER_SECONDS", 600.0),
            saga_redrive_every_s=_float(env, "SAGA_REDRIVE_EVERY_SECONDS", 60.0),
            payment_window_s=window_s,
            payment_reminder_ages_s=_floats(env, "PAYMENT_REMINDER_AFTER_SECONDS", (3600.0, 12 * 3600.0)),
            payment_sweep_every_s=_float(env, "PAYMENT_SWEEP_EVERY_SECONDS", 300.0),
            supplier_lead_time_s=_float(env, "SUPPLIER_LEAD_TIME_SECONDS", 600.0),
            restock_every_s=_float(env, "RESTOCK_EVERY_SECONDS", 60.0),
            audit_every_s=_float(env, "INVENTORY_AUDIT_EVERY_SECONDS", 300.0),
            broker_transport_options=_transport_options(broker_url, data_dir / "broker"),
            socketio_transport_options=_relay_options(relay_url, data_dir / "relay"),
        )


MIN_SECRET_BYTES = 32  # 256 bits for HS256: RFC 7518 §3.2, RFC 8725 §3.5


def jwt_secret(env: Mapping[str, str], mode: str) -> str:
    """The HS256 signing key: ``JWT_SECRET_KEY``, or "" when it is missing outside
    development (``Settings.require_jwt_secret`` refuses that where tokens are
    signed or checked: the web process).

    Only in development (``ORION_ENV=development``, which is the default of the
    embedded mode) may the key be missing: then a fixed key from this
    repository signs tokens, and anyone can read it. Services mode defaults to
    ``ORION_ENV=production``. Raises ConfigError for an unknown ``ORION_ENV``
    or a key shorter than 32 bytes.
    """
    environment = env.get("ORION_ENV") or ("development" if mode == "embedded" else "production")
    if environment not in ("development", "production"):
        raise ConfigError(f"ORION_ENV must be 'development' or 'production', got {environment!r}")
    secret = env.get("JWT_SECRET_KEY", "")
    if not secret:
        return DEV_SECRET if environment == "development" else ""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"JWT_SECRET_KEY must have at least {MIN_SECRET_BYTES} bytes "
            f"(256 bits, RFC 8725 §3.5); it has {len(secret.encode())}"
        )
    return secret


def default_concurrency(mode: str) -> int:
    """Worker processes when ``WORKER_CONCURRENCY`` is unset: two per core in
    services mode, where a step spends much of its time waiting on PostgreSQL,
    a row lock or the payment provider (measured in docs/performance.md: 4
    processes on 2 cores drain orders ~30 % faster than 2); 2 in the embedded
    default, whose SQLite admits one writer at a time."""
    return 2 * (os.cpu_count() or 1) if mode == "services" else 2


class _DefaultUrls(TypedDict):
    """The URLs a mode uses where the environment names none."""

    database_url: str
    broker_url: str
    result_backend: str
    redis_url: str | None
    sandbox_database_url: NotRequired[str]


def _embedded_urls(data_dir: Path) -> _DefaultUrls:
    return {
        "database_url": f"sqlite:///{data_dir / 'orion.db'}",
        "sandbox_database_url": f"sqlite:///{data_dir / 'payment-sandbox.db'}",
        "broker_url": "orionfs://",
        "result_backend": f"file://{data_dir / 'results'}",
        "redis_url": None,
    }


def _service_urls() -> _DefaultUrls:
    return {
        "database_url": "postgresql+psycopg://postgres@127.0.0.1:5432/orion",
        "broker_url": "amqp://guest:guest@127.0.0.1:5672//",
        "result_backend": "redis://127.0.0.1:6379/0",
        "redis_url": "redis://127.0.0.1:6379/0",
    }


def _transport_options(url: str, folder: Path) -> dict[str, Any]:
    """kombu transport options for ``url``; the filesystem transport needs its folders.

    One folder serves as both ``data_folder_in`` and ``data_folder_out`` so every
    process sees every message; ``control_folder`` carries fanout (remote control,
    Flower, events, and the Socket.IO relay, which has a tree of its own under
    ``relay/`` so its traffic never lengthens the worker's folder listings).
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        return {}
    if not url.startswith(("filesystem://", "orionfs://")):
        return {"confirm_publish": True}
    if url.startswith("orionfs://"):
        from worker.fs_transport import register

        register()  # every process that reads settings can open the broker
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
    }


def flower_basic_auth(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """Flower's ``user:password``: ``FLOWER_BASIC_AUTH``, or in the embedded default
    one made on first use and kept in ``<data dir>/flower-basic-auth``.

    Raises ConfigError outside the embedded default when the variable is unset
    or is not ``user:password``.
    """
    value = (os.environ if env is None else env).get("FLOWER_BASIC_AUTH", "")
    if not value and settings.embedded:
        path = settings.data_dir / "flower-basic-auth"
        if not path.exists():
            import secrets

            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"orion:{secrets.token_urlsafe(12)}\n")
            path.chmod(0o600)
        value = path.read_text().strip()
    user, _, password = value.partition(":")
    if not (user and password):
        raise ConfigError(
            "FLOWER_BASIC_AUTH must be set to user:password outside the embedded "
            "default (Flower refuses to run without authentication)"
        )
    return value


def _relay_options(url: str, folder: Path) -> dict[str, Any]:
    """The Socket.IO relay's transport options: on the filesystem, a short poll.
    The web process's listener reads its folder as fast as events arrive, so a
    poll lists a near-empty folder, and the interval bounds the relay's latency."""
    options = _transport_options(url, folder)
    if "data_folder_in" in options:
        options["polling_interval"] = 0.02
    return options


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from ``os.environ``."""
    return Settings.from_env()


def reset_settings() -> None:
    """Forget the cached settings (tests that change the environment call this)."""
    get_settings.cache_clear()


def prepare_data_dir(settings: Settings) -> None:
    """Create the embedded mode's folders (kombu's filesystem transport does not)."""
    if not settings.embedded:
        return
    for options in (settings.broker_transport_options, settings.socketio_transport_options):
        for key in ("data_folder_in", "control_folder", "processed_folder"):
            if key in options:
                Path(options[key]).mkdir(parents=True, exist_ok=True)
    if settings.result_backend.startswith("file://"):
        Path(settings.result_backend[len("file://") :]).mkdir(parents=True, exist_ok=True)
