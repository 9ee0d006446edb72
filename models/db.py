"""Engine, session factory and the unit of work.

The engine is built on first use, never at import, so a forked Celery child
(after ``dispose_engine``) opens its own connections.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterator

from sqlalchemy import DateTime, Engine, Numeric, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from config import get_settings


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on PostgreSQL and SQLite alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use models.db.utcnow()")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {Decimal: Numeric(12, 2), datetime: UTCDateTime()}


_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None


def make_engine(url: str) -> Engine:
    """Build an engine for ``url``; SQLite gets WAL and ``BEGIN IMMEDIATE``.

    SQLite's deferred transactions fail with SQLITE_BUSY when a reader tries to
    become a writer while another process writes; taking the write lock at BEGIN
    makes concurrent workers wait (``busy_timeout``) instead.
    """
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Reads (read_only()) need no write lock: in WAL mode they see a
        # snapshot and neither wait for writers nor hold them up.
        read_only = conn.get_execution_options().get("orion_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def get_engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine(get_settings().database_url)
    return _engine


def session_factory() -> sessionmaker[Session]:
    global _factory
    if _factory is None:
        _factory = sessionmaker(get_engine(), expire_on_commit=False)
    return _factory


def dispose_engine() -> None:
    """Drop pooled connections (after fork, or when settings change in tests)."""
    global _engine, _factory
    if _engine is not None:
        _engine.dispose(close=False)
    _engine, _factory = None, None


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """A session in one transaction: commits when the block ends, rolls back on error."""
    with session_factory().begin() as session:
        yield session


@contextmanager
def read_only() -> Iterator[Session]:
    """A session for reads: never committed, and on SQLite without the write lock.

    Closing (not rolling back) returns the connection, whose transaction the
    pool rolls back, and leaves loaded objects usable after the block.
    """
    session = session_factory()()
    try:
        session.connection(execution_options={"orion_read_only": True})
        yield session
    finally:
        session.close()


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
