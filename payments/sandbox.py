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
from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, Numeric, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from models.db import UTCDateTime, make_engine, utcnow
from payments.provider import ProviderError, ProviderResult, ProviderTimeout, ProviderUnavailable

APPROVING = frozenset({"tok_visa", "tok_mastercard", "tok_flaky"})
FLAKY_TIMEOUTS = 2


class SandboxBase(DeclarativeBase):
    type_annotation_map = {Decimal: Numeric(12, 2), datetime: UTCDateTime()}


class SandboxOperation(SandboxBase):
    """A completed operation, keyed by the caller's idempotency key; ``reference``
    is the provider's id for it (indexed: captures and refunds look it up)."""

    __tablename__ = "sandbox_operations"

    idempotency_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    operation: Mapped[str] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(64), index=True)
    token: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal | None]
    result: Mapped[dict] = mapped_column(JSON)
    reference: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxCallCount(SandboxBase):
    """Calls per (order, operation); drives ``tok_flaky``."""

    __tablename__ = "sandbox_call_counts"

    order_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


class SandboxProvider:
    """A PaymentProvider backed by ``database_url``, answering after ``latency_ms``.

    Each call is one transaction in the sandbox's database (count the call,
    replay a known key, or decide and record), as one request to a remote
    provider would be.
    """

    def __init__(self, database_url: str, latency_ms: int = 0):
        engine = make_engine(database_url)
        SandboxBase.metadata.create_all(engine, checkfirst=True)
        _add_reference_column(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._latency = latency_ms / 1000.0

    def authorize(self, key: str, order_ref: str, token: str, amount: Decimal,
                  currency: str) -> ProviderResult:
        def decide(session: Session) -> tuple[ProviderResult | Exception, str]:
            calls = self._count_call(session, order_ref, "authorize")
            if token == "tok_processingError":
                return ProviderUnavailable("sandbox: processing error"), token
            if token == "tok_flaky" and calls <= FLAKY_TIMEOUTS:
                return (ProviderTimeout(f"sandbox: authorization call {calls} for {order_ref} "
                                        "timed out"), token)
            return _authorization_outcome(token), token
        return self._answer(self._once(key, "authorize", order_ref, amount, decide))

    def capture(self, key: str, authorization_ref: str, amount: Decimal) -> ProviderResult:
        return self._settle(key, "capture", authorization_ref, amount)

    def void(self, key: str, authorization_ref: str) -> ProviderResult:
        return self._settle(key, "void", authorization_ref, None)

    def refund(self, key: str, capture_ref: str, amount: Decimal) -> ProviderResult:
        return self._settle(key, "refund", capture_ref, amount)

    def find(self, key: str) -> ProviderResult | None:
        with self._sessions.begin() as session:
            done = session.get(SandboxOperation, key)
            return None if done is None else ProviderResult.from_dict(done.result)

    def _settle(self, key: str, operation: str, target: str, amount: Decimal | None) -> ProviderResult:
        """Capture, void or refund ``target``; each may happen once per target."""
        def decide(session: Session) -> tuple[ProviderResult | Exception, str | None]:
            token = self._token_of(session, target)
            if token == "tok_processingError":
                return ProviderUnavailable(f"sandbox: processing error on {operation}"), token
            done = session.scalar(select(SandboxOperation.idempotency_key).where(
                SandboxOperation.target == target, SandboxOperation.operation == operation))
            if done is not None:
                return ProviderError(f"sandbox: {target} already has a {operation}"), token
            return ProviderResult(True, reference=f"{operation[:2]}_{uuid.uuid4().hex[:16]}"), token
        return self._answer(self._once(key, operation, target, amount, decide))

    def _once(self, key, operation, target, amount, decide) -> ProviderResult:
        """The first result for ``key``, or else ``decide(session)``'s, recorded, in
        one transaction; raises the exception ``decide`` returns, after its
        transaction committed (a call counted stays counted)."""
        for _ in range(3):
            try:
                with self._sessions.begin() as session:
                    existing = session.get(SandboxOperation, key)
                    if existing is not None:
                        return ProviderResult.from_dict(existing.result)
                    outcome, token = decide(session)
                    error = outcome if isinstance(outcome, Exception) else None
                    if error is None:
                        session.add(SandboxOperation(
                            idempotency_key=key, operation=operation, target=target, token=token,
                            amount=amount, result=outcome.to_dict(), reference=outcome.reference))
                if error is not None:
                    raise error
                return outcome
            except IntegrityError:  # a concurrent call with the same key (or counter) won
                continue
        raise ProviderUnavailable("sandbox: contention on an idempotency key")

    def _token_of(self, session: Session, reference: str) -> str | None:
        """The card token behind an authorization or capture reference."""
        op = session.execute(select(SandboxOperation.operation, SandboxOperation.token,
                                    SandboxOperation.target)
                             .where(SandboxOperation.reference == reference,
                                    SandboxOperation.operation.in_(("authorize", "capture")))).first()
        if op is None:
            raise ProviderError(f"sandbox: unknown reference {reference!r}")
        return op.token if op.operation == "authorize" else self._token_of(session, op.target)

    def _count_call(self, session: Session, order_ref: str, operation: str) -> int:
        row = session.get(SandboxCallCount, (order_ref, operation), with_for_update=True)
        if row is None:
            row = SandboxCallCount(order_ref=order_ref, operation=operation, count=0)
            session.add(row)
        row.count += 1
        session.flush()  # a racing first call fails here, and the whole call is retried
        return row.count

    def _answer(self, result: ProviderResult) -> ProviderResult:
        # The latency is the response's: the operation is already recorded, as
        # at a real provider whose answer is slow, so a caller that dies while
        # waiting must replay the key to learn the outcome.
        if self._latency:
            time.sleep(self._latency)
        return result


def _authorization_outcome(token: str) -> ProviderResult:
    if token in APPROVING:
        return ProviderResult(True, reference=f"au_{uuid.uuid4().hex[:16]}")
    if token == "tok_chargeDeclinedInsufficientFunds":
        return ProviderResult(False, decline_code="insufficient_funds", soft=True)
    return ProviderResult(False, decline_code="card_declined")


def _add_reference_column(engine) -> None:
    """Sandboxes made before ``reference`` existed get the column and its index,
    filled from each operation's recorded result."""
    from sqlalchemy import inspect, text

    if "reference" in {c["name"] for c in inspect(engine).get_columns("sandbox_operations")}:
        return
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE sandbox_operations ADD COLUMN reference VARCHAR(64)"))
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_sandbox_operations_reference "
                          "ON sandbox_operations (reference)"))
    with engine.begin() as conn:
        rows = conn.execute(select(SandboxOperation.idempotency_key, SandboxOperation.result)).all()
        for key, result in rows:
            conn.execute(text("UPDATE sandbox_operations SET reference = :r WHERE idempotency_key = :k"),
                         {"r": (result or {}).get("reference"), "k": key})
