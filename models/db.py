"""Engine, session factory and the unit of work.

The engine is built on first use, never at import, so a forked Celery child
(after ``dispose_engine``) opens its own connections.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    Engine,
    Executable,
    Numeric,
    Result,
    Select,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util.typing import TupleAny, Unpack

from config import get_settings


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on PostgreSQL and SQLite alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use models.db.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {Decimal: Numeric(12, 2), datetime: UTCDateTime()}

    if TYPE_CHECKING:
        # Every Orion model maps one Table (SQLAlchemy types ``__table__`` as any
        # FromClause), and Core statements are built on ``Model.__table__``.
        __table__: ClassVar[Table]


_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None


def make_engine(url: str) -> Engine:
    """Build an engine for ``url``; SQLite gets WAL and ``BEGIN IMMEDIATE``.

    SQLite's deferred transactions fail with SQLITE_BUSY when a reader tries to
    become a writer while another process writes; taking the write lock at BEGIN
    makes concurrent workers wait (``busy_timeout``) instead.
    """
    if not url.startswith("sqlite"):
        # hide_parameters: an error's text never carries the row's values (tokens, emails).
        engine = create_engine(url, pool_size=5, max_overflow=5, hide_parameters=True)
        ping_when_idle(engine, IDLE_PING_AFTER_S)
        return engine
    engine = create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Reads (read_only()) need no write lock: in WAL mode they see a
        # snapshot and neither wait for writers nor hold them up.
        read_only = conn.get_execution_options().get("orion_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


IDLE_PING_AFTER_S = 5.0


def ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Check a pooled connection at checkout only if it sat in the pool longer
    than ``idle_s`` seconds; a dead one is replaced before anyone uses it.

    ``pool_pre_ping`` pings at every checkout: a round trip per request and per
    saga step for a connection that was in use a millisecond ago. A connection
    that dies while in steady use (a server restart, ``pg_terminate_backend``)
    fails its next statement instead; SQLAlchemy then invalidates the whole
    pool, and the caller's retry (a saga step's, or the client's after a 503)
    gets fresh connections. This is SQLAlchemy's documented pessimistic
    disconnect handling, done at the pool's ``checkout`` event
    (https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-pessimistic).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry | None) -> None:
        if record is not None:
            record.info["orion_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(
        dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        since = record.info.get("orion_checked_in")
        if since is None or time.monotonic() - since <= idle_s:
            return  # new, or in use moments ago
        try:
            engine.dialect.do_ping(dbapi_conn)
            dbapi_conn.rollback()  # the ping's SELECT opened a transaction: start clean
        except Exception as exc:
            if isinstance(exc, engine.dialect.loaded_dbapi.Error) and engine.dialect.is_disconnect(
                exc, dbapi_conn, None
            ):
                raise DisconnectionError(f"stale pooled connection: {exc}") from exc
            raise


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


@contextmanager
def read_connection() -> Iterator[Connection]:
    """A pooled connection for a few reads that need no transaction together.

    On PostgreSQL it runs in autocommit (each statement its own snapshot; no
    ``BEGIN`` or ``ROLLBACK`` round trips); on SQLite it reads in a deferred
    transaction, as ``read_only`` does.
    """
    engine = get_engine()
    options = (
        {"orion_read_only": True} if engine.dialect.name == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
    )
    with engine.connect().execution_options(**options) as conn:
        yield conn


def pg_arrays(table: Table, columns: Iterable[str], prefix: str) -> str:
    """``%(<prefix><column>)s::<type>[]`` for each of ``columns`` of ``table``, comma
    separated: the arguments of an ``unnest(...)`` that turns one parameter per
    column (a list of values) into rows, for PostgreSQL statements written as text."""
    from sqlalchemy.dialects import postgresql

    # SQLAlchemy leaves the dialects' __init__ unannotated.
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return ", ".join(
        f"%({prefix}{name})s::{table.c[name].type.compile(dialect=dialect)}[]" for name in columns
    )


class Transaction(Protocol):
    """What domain code written for a ``Session`` uses of it: its connection,
    ``execute`` and ``info``. ``tasks.journal.SagaTx`` offers the same on a bare
    ``Connection`` in its transaction."""

    @property
    def info(self) -> dict[Any, Any]: ...

    def connection(self) -> Connection: ...

    def execute(
        self,
        statement: Executable,
        parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        /,
    ) -> Result[Unpack[TupleAny]]: ...


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claim_rows(session: Session, query: Select[Any]) -> Select[Any]:
    """``query`` with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so that two sweeps
    at once (two beats, or a sweep beside an operator) take different rows; plain
    ``FOR UPDATE`` elsewhere (SQLite has one writer and ignores it)."""
    return query.with_for_update(skip_locked=is_postgres(session))
