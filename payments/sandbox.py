"""The bundled payment sandbox: behaves by token like a provider's test mode (SPEC table).

| token | behaviour |
| tok_visa, tok_mastercard | authorized, then captured |
| tok_chargeDeclined | hard decline ``card_declined`` |
| tok_chargeDeclinedInsufficientFunds | soft decline ``insufficient_funds`` |
| tok_flaky | the first two authorization calls for an order time out |
| tok_processingError | every call fails transiently |

It keeps its own records in its own database (``PAYMENT_SANDBOX_URL``), like a
remote provider, so its call counts survive the caller's rolled-back
transaction. Repeating an idempotency key returns the first result.
``PAYMENT_LATENCY_MS`` delays each answer after the operation is recorded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import JSON, Connection, Engine, Numeric, String, Table, bindparam, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.dml import ReturningInsert

from models.db import UTCDateTime, make_engine, utcnow
from payments.provider import ProviderError, ProviderResult, ProviderTimeout, ProviderUnavailable

APPROVING = frozenset({"tok_visa", "tok_mastercard", "tok_flaky"})
FLAKY_TIMEOUTS = 2


class SandboxBase(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {Decimal: Numeric(12, 2), datetime: UTCDateTime()}

    if TYPE_CHECKING:
        __table__: ClassVar[Table]  # each model maps one Table (as models.db.Base)


class SandboxOperation(SandboxBase):
    """A completed operation, keyed by the caller's idempotency key; ``reference``
    is the provider's id for it (indexed: captures and refunds look it up)."""

    __tablename__ = "sandbox_operations"

    idempotency_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    operation: Mapped[str] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(64), index=True)
    token: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal | None]
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    reference: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxCallCount(SandboxBase):
    """Calls per (order, operation); drives ``tok_flaky``."""

    __tablename__ = "sandbox_call_counts"

    order_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


OPERATIONS = SandboxOperation.__table__
CALL_COUNTS = SandboxCallCount.__table__
_RESULT_OF = select(OPERATIONS.c.result).where(OPERATIONS.c.idempotency_key == bindparam("b_key"))
_INSERT_OPERATION = insert(OPERATIONS)
_BY_REFERENCE = select(OPERATIONS.c.operation, OPERATIONS.c.token, OPERATIONS.c.target).where(
    OPERATIONS.c.reference == bindparam("b_ref"), OPERATIONS.c.operation.in_(("authorize", "capture"))
)
_SETTLED = select(OPERATIONS.c.idempotency_key).where(
    OPERATIONS.c.target == bindparam("b_target"), OPERATIONS.c.operation == bindparam("b_op")
)


class SandboxProvider:
    """A PaymentProvider backed by ``database_url``, answering after ``latency_ms``.

    Each call is one transaction in the sandbox's database (count the call,
    replay a known key, or decide and record), as one request to a remote
    provider would be. Written in SQLAlchemy Core: two calls per order run in
    the worker's process, where an ORM session's set-up and flush cost more
    than the statements.
    """

    def __init__(self, database_url: str, latency_ms: int = 0):
        engine = make_engine(database_url)
        _create_tables(engine)
        self._engine = engine
        self._count = _count_statement(engine.dialect.name)
        self._latency = latency_ms / 1000.0

    def authorize(
        self, key: str, order_ref: str, token: str, amount: Decimal, currency: str
    ) -> ProviderResult:
        def decide(conn: Connection) -> tuple[ProviderResult | Exception, str]:
            calls = self._count_call(conn, order_ref, "authorize")
            if token == "tok_processingError":
                return ProviderUnavailable("sandbox: processing error"), token
            if token == "tok_flaky" and calls <= FLAKY_TIMEOUTS:
                return (
                    ProviderTimeout(f"sandbox: authorization call {calls} for {order_ref} timed out"),
                    token,
                )
            return _authorization_outcome(token), token

        return self._answer(self._once(key, "authorize", order_ref, amount, decide))

    def capture(self, key: str, authorization_ref: str, amount: Decimal) -> ProviderResult:
        return self._settle(key, "capture", authorization_ref, amount)

    def void(self, key: str, authorization_ref: str) -> ProviderResult:
        return self._settle(key, "void", authorization_ref, None)

    def refund(self, key: str, capture_ref: str, amount: Decimal) -> ProviderResult:
        return self._settle(key, "refund", capture_ref, amount)

    def find(self, key: str) -> ProviderResult | None:
        with self._engine.begin() as conn:
            done = conn.execute(_RESULT_OF, {"b_key": key}).scalar_one_or_none()
            return None if done is None else ProviderResult.from_dict(done)

    def _settle(self, key: str, operation: str, target: str, amount: Decimal | None) -> ProviderResult:
        """Capture, void or refund ``target``; each may happen once per target."""

        def decide(conn: Connection) -> tuple[ProviderResult | Exception, str | None]:
            token = self._token_of(conn, target)
            if token == "tok_processingError":
                return ProviderUnavailable(f"sandbox: processing error on {operation}"), token
            done = conn.execute(_SETTLED, {"b_target": target, "b_op": operation}).first()
            if done is not None:
                return ProviderError(f"sandbox: {target} already has a {operation}"), token
            return ProviderResult(True, reference=f"{operation[:2]}_{uuid.uuid4().hex[:16]}"), token

        return self._answer(self._once(key, operation, target, amount, decide))

    def _once(
        self,
        key: str,
        operation: str,
        target: str,
        amount: Decimal | None,
        decide: Callable[[Connection], tuple[ProviderResult | Exception, str | None]],
    ) -> ProviderResult:
        """The first result for ``key``, or else ``decide(conn)``'s, recorded, in
        one transaction; raises the exception ``decide`` returns, after its
        transaction committed (a call counted stays counted)."""
        for _ in range(3):
            try:
                with self._engine.begin() as conn:
                    existing = conn.execute(_RESULT_OF, {"b_key": key}).scalar_one_or_none()
                    if existing is not None:
                        return ProviderResult.from_dict(existing)
                    outcome, token = decide(conn)
                    if not isinstance(outcome, Exception):
                        conn.execute(
                            _INSERT_OPERATION,
                            {
                                "idempotency_key": key,
                                "operation": operation,
                                "target": target,
                                "token": token,
                                "amount": amount,
                                "result": outcome.to_dict(),
                                "reference": outcome.reference,
                                "created_at": utcnow(),
                            },
                        )
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
            except IntegrityError:  # a concurrent call with the same key won
                continue
        raise ProviderUnavailable("sandbox: contention on an idempotency key")

    def _token_of(self, conn: Connection, reference: str) -> str | None:
        """The card token behind an authorization or capture reference."""
        op = conn.execute(_BY_REFERENCE, {"b_ref": reference}).first()
        if op is None:
            raise ProviderError(f"sandbox: unknown reference {reference!r}")
        return op.token if op.operation == "authorize" else self._token_of(conn, op.target)

    def _count_call(self, conn: Connection, order_ref: str, operation: str) -> int:
        """Count this call (an upsert: two first calls at once both count)."""
        count: int = conn.execute(
            self._count, {"order_ref": order_ref, "operation": operation, "count": 1}
        ).scalar_one()
        return count

    def _answer(self, result: ProviderResult) -> ProviderResult:
        # The latency is the response's: the operation is already recorded, as
        # at a real provider whose answer is slow, so a caller that dies while
        # waiting must replay the key to learn the outcome.
        if self._latency:
            time.sleep(self._latency)
        return result


def _count_statement(dialect: str) -> ReturningInsert[int]:
    """``INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count``."""
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert_(CALL_COUNTS)
    return stmt.on_conflict_do_update(
        index_elements=[CALL_COUNTS.c.order_ref, CALL_COUNTS.c.operation],
        set_={"count": CALL_COUNTS.c.count + 1},
    ).returning(CALL_COUNTS.c.count)


def _authorization_outcome(token: str) -> ProviderResult:
    if token in APPROVING:
        return ProviderResult(True, reference=f"au_{uuid.uuid4().hex[:16]}")
    if token == "tok_chargeDeclinedInsufficientFunds":
        return ProviderResult(False, decline_code="insufficient_funds", soft=True)
    return ProviderResult(False, decline_code="card_declined")


def create_schema(database_url: str) -> None:
    """Create the sandbox's tables in its own database (``PAYMENT_SANDBOX_URL``, the
    embedded default's ``var/payment-sandbox.db``) if they are missing; ``orion
    migrate`` and the launcher call it. Beside Orion's tables, the Alembic
    migrations make them."""
    engine = make_engine(database_url)
    try:
        _create_tables(engine)
    finally:
        engine.dispose()


def _create_tables(engine: Engine, attempts: int = 3) -> None:
    """Create the sandbox's tables if missing, one process at a time: worker
    processes starting together on a fresh database raced to ``CREATE TABLE``,
    and the loser's ``DuplicateTable`` failed its order. On PostgreSQL a
    transaction-scoped advisory lock serializes them (DDL is transactional: the
    next one in sees the tables). SQLite has no such lock: a create that finds
    the table made meanwhile ("already exists") looks again."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('orion.payments.sandbox'))"))
                SandboxBase.metadata.create_all(conn, checkfirst=True)
                _add_reference_column(conn)
            return
        except OperationalError as exc:
            if attempt == attempts or "already exists" not in str(exc):
                raise


def _add_reference_column(conn: Connection) -> None:
    """Sandboxes made before ``reference`` existed get the column and its index,
    filled from each operation's recorded result (in the caller's transaction)."""
    from sqlalchemy import inspect

    if "reference" in {c["name"] for c in inspect(conn).get_columns("sandbox_operations")}:
        return
    conn.execute(text("ALTER TABLE sandbox_operations ADD COLUMN reference VARCHAR(64)"))
    conn.execute(
        text("CREATE INDEX IF NOT EXISTS ix_sandbox_operations_reference ON sandbox_operations (reference)")
    )
    rows = conn.execute(select(SandboxOperation.idempotency_key, SandboxOperation.result)).all()
    for key, result in rows:
        conn.execute(
            text("UPDATE sandbox_operations SET reference = :r WHERE idempotency_key = :k"),
            {"r": (result or {}).get("reference"), "k": key},
        )
