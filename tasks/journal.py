"""The saga's bookkeeping: the locked order, step-log rows and order events.

Every step changes an order only while holding its row lock, so a step, a
cancel and a compensation of one order never interleave.

A step works through a ``SagaTx``: one ``SELECT ... FOR UPDATE`` reads the
order, the step decides and does its effect, and ``flush`` writes what the
step changed: the step-log upsert, the events and one ``UPDATE`` of the order
carrying status, event counter and timestamps. On PostgreSQL that is one
statement (data-modifying CTEs, ``_flush_sql``), elsewhere three in SQLAlchemy
Core; no ORM unit of work, no second read of the order. The event ``seq`` is the locked row's counter plus
one, so it stays gap-free per order.

Chord headers, which would otherwise queue for one order's lock, open their
``SagaTx`` with ``read`` instead: no lock while they work, then ``claim``, a
conditional ``UPDATE`` that locks the row only if the order is still where they
read it (else OrderMoved, and the transaction rolls back).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, CursorResult, Executable, Insert, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session
from sqlalchemy.util.typing import TupleAny, Unpack

from models import Order, OrderEvent, OutboxMessage, SagaStep, utcnow
from models import order as lifecycle
from models.outbox import SAGA_COMPENSATE, SAGA_RESUME, outbox_row
from models.saga_log import FAILED, RETRYING, RUNNING, SUCCEEDED, event_payload
from observability.logging import correlation_id
from progress import OPERATORS, Notification, order_room, queue_notification, take_notifications, user_room

ORDERS = Order.__table__
STEPS = SagaStep.__table__
EVENTS = OrderEvent.__table__
_ORDER_COLUMNS = (
    ORDERS.c.id,
    ORDERS.c.status,
    ORDERS.c.saga_run,
    ORDERS.c.customer_id,
    ORDERS.c.last_event_seq,
    ORDERS.c.total,
    ORDERS.c.currency,
    ORDERS.c.payment_token,
    ORDERS.c.correlation_id,
    ORDERS.c.cancel_reason,
    ORDERS.c.failure,
)
# Statements built once: SQLAlchemy then finds their compiled form by a memoized
# cache key instead of walking a new statement tree on every execution.
_READ = select(*_ORDER_COLUMNS).where(ORDERS.c.id == bindparam("b_id"))
_LOCK = _READ.with_for_update()
# The same, with the status of one step of the order's current run beside it.
_STEP_OF_RUN = (
    select(STEPS.c.status)
    .where(
        STEPS.c.order_id == ORDERS.c.id, STEPS.c.name == bindparam("b_name"), STEPS.c.run == ORDERS.c.saga_run
    )
    .scalar_subquery()
)
_READ_WITH_STEP = select(*_ORDER_COLUMNS, _STEP_OF_RUN).where(ORDERS.c.id == bindparam("b_id"))
_CLAIM = (
    update(ORDERS)
    .where(
        ORDERS.c.id == bindparam("b_id"),
        ORDERS.c.status == bindparam("b_status"),
        ORDERS.c.saga_run == bindparam("b_run"),
    )
    .values(updated_at=bindparam("b_now"))
    .returning(ORDERS.c.last_event_seq)
)
_STEP_STATUS = select(STEPS.c.status).where(
    STEPS.c.order_id == bindparam("b_id"),
    STEPS.c.name == bindparam("b_name"),
    STEPS.c.run == bindparam("b_run"),
)
_INSERT_EVENTS = EVENTS.insert()
_LAST_EVENT_DETAIL = (
    select(EVENTS.c.detail)
    .where(EVENTS.c.order_id == bindparam("b_id"))
    .order_by(EVENTS.c.seq.desc())
    .limit(1)
)
_BUMP_SEQ = (
    update(ORDERS)
    .where(ORDERS.c.id == bindparam("b_id"))
    .values(last_event_seq=bindparam("b_seq"), updated_at=bindparam("b_now"))
)
_INSERT_OUTBOX = insert(OutboxMessage.__table__)
_STATE_COLUMNS = ("status", "finished_at", "awaiting_payment_since", "cancel_reason", "failure")
_UPSERTS: dict[str, Insert] = {}


@dataclass
class LockedOrder:
    """The columns of an order row a step needs, read once under its row lock."""

    id: uuid.UUID
    status: str
    saga_run: int
    customer_id: int
    last_event_seq: int
    total: Decimal
    currency: str
    payment_token: str
    correlation_id: str | None
    cancel_reason: str | None
    failure: str | None


class OrderMoved(Exception):
    """The order left the status a claiming step read it in (see ``SagaTx.claim``)."""


@dataclass
class SagaTx:
    """One step's transaction on one order (see the module docstring).

    Opened with ``lock`` (the row locked for the whole step) or ``read`` (no
    lock until ``claim``, for chord headers that run side by side) on a Core
    ``Connection`` inside its transaction: a step needs no ORM session, whose
    set-up and commit bookkeeping cost more CPU than the step's statements.
    Raises ``InvalidTransition`` from ``transition_to`` as the ORM model does.
    Call ``flush`` once, at the end of the step, and after COMMIT emit
    ``take_notifications()``; ``SagaTask.locked`` does both.

    It stands in for a session where domain code needs one (``models.catalog``'s
    stock functions, ``progress.queue_notification``): ``connection()``,
    ``execute()`` and ``info`` (the notifications waiting for COMMIT).
    """

    conn: Connection
    order: LockedOrder
    locked: bool = True
    info: dict[Any, Any] = field(default_factory=dict)
    _changes: dict[str, Any] = field(default_factory=dict)
    _events: list[dict[str, Any]] = field(default_factory=list)
    _steps: list[dict[str, Any]] = field(default_factory=list)
    _read_as: tuple[str, int] | None = None  # (status, run) as ``read`` found them
    step_seen: str | None = None  # with ``read``'s ``step``: its status then

    @classmethod
    def lock(cls, conn: Connection | Session, order_id: str | uuid.UUID) -> SagaTx:
        """``SELECT ... FOR UPDATE`` of the order on ``conn`` (a connection in a
        transaction, or a session's); raises NoResultFound if absent."""
        return cls._open(_connection(conn), order_id, _LOCK, None)

    @classmethod
    def _open(
        cls,
        conn: Connection,
        order_id: str | uuid.UUID,
        statement: Executable,
        step: str | None,
        locked: bool = True,
    ) -> SagaTx:
        key = order_id if isinstance(order_id, uuid.UUID) else uuid.UUID(order_id)
        params = {"b_id": key} if step is None else {"b_id": key, "b_name": step}
        row = conn.execute(statement, params).one_or_none()
        if row is None:
            raise NoResultFound(f"no order {key}")
        tx = cls(conn, LockedOrder(*row[: len(_ORDER_COLUMNS)]), locked=locked)
        tx.step_seen = row[-1] if step is not None else None
        return tx

    @classmethod
    def read(cls, conn: Connection | Session, order_id: str | uuid.UUID, step: str | None = None) -> SagaTx:
        """Read the order without locking it; ``claim`` (or ``flush``) locks it later.

        For the chord headers of one order, which would otherwise wait for each
        other's row lock: each does its work unlocked and claims the order at
        the end, in the same transaction. With ``step``, the same statement
        reads that step's status in the order's current run into ``step_seen``
        (None: not recorded).
        """
        conn = _connection(conn)
        tx = cls._open(conn, order_id, _READ if step is None else _READ_WITH_STEP, step, locked=False)
        tx._read_as = (tx.order.status, tx.order.saga_run)
        return tx

    def claim(self) -> None:
        """Lock the order if it is still in the status and run it was read in.

        One conditional ``UPDATE ... RETURNING`` that takes the row lock (a
        cancel that comes later waits for this transaction, and sees its
        effects); raises OrderMoved when the order moved on meanwhile (a cancel
        that came first), so the transaction rolls back and its effects with it.
        """
        if self.locked:
            return
        assert self._read_as is not None  # opened by ``read``, the only way to be unlocked
        status, run = self._read_as
        row = self.conn.execute(
            _CLAIM, {"b_id": self.order.id, "b_status": status, "b_run": run, "b_now": utcnow()}
        ).one_or_none()
        if row is None:
            raise OrderMoved(f"order {self.order.id} left {status!r}")
        self.order.last_event_seq = row.last_event_seq
        self.locked = True

    # -- what domain code written for a session uses -----------------------------
    def connection(self) -> Connection:
        return self.conn

    def execute(
        self,
        statement: Executable,
        parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> CursorResult[Unpack[TupleAny]]:
        return self.conn.execute(statement, parameters)

    def take_notifications(self) -> list[Notification]:
        """The Socket.IO notifications this step queued, for after COMMIT (and
        gone from here: a step that rolls back just drops them)."""
        return take_notifications(self)

    # -- the order's state ---------------------------------------------------------
    def transition_to(self, target: str) -> None:
        """Move the order to ``target`` (checked against ``models.order.TRANSITIONS``)."""
        current = self.order.status
        if target not in lifecycle.TRANSITIONS[current]:
            raise lifecycle.InvalidTransition(current, target)
        now = utcnow()
        self.order.status = target
        self._changes.update(
            status=target,
            finished_at=now if target in lifecycle.FINAL_STATUSES else None,
            awaiting_payment_since=now if target == lifecycle.AWAITING_PAYMENT else None,
        )

    def start_compensation(self, cancel_reason: str | None, failure: str | None = None) -> None:
        """Move to ``compensating`` for a business ``cancel_reason`` or a technical
        ``failure``, record why, and queue ``saga.compensate`` through the outbox."""
        self.transition_to(lifecycle.COMPENSATING)
        self.order.cancel_reason, self.order.failure = cancel_reason, failure
        self._changes.update(cancel_reason=cancel_reason, failure=failure)
        self.event(detail=cancel_reason or failure)
        self.conn.execute(
            _INSERT_OUTBOX,
            outbox_row(
                SAGA_COMPENSATE, {"order_id": str(self.order.id)}, correlation=self.order.correlation_id
            ),
        )

    def last_event_detail(self) -> str:
        """The ``detail`` of the order's latest recorded event ("" if none or empty)."""
        detail: str = self.conn.execute(_LAST_EVENT_DETAIL, {"b_id": self.order.id}).scalar() or ""
        return detail

    def queue_resume(self) -> bool:
        """Queue, through the outbox, the message that carries the saga on from
        where it stands (``saga.compensate`` while compensating, else the forward
        canvas from its first step, whose finished steps pass through). False,
        and nothing queued, when the order is in no state a saga message moves
        (final, parked for payment, needing an operator)."""
        status = self.order.status
        payload: dict[str, Any]
        if status == lifecycle.COMPENSATING:
            topic, payload = SAGA_COMPENSATE, {"order_id": str(self.order.id)}
        elif status in lifecycle.IN_FLIGHT:
            topic, payload = SAGA_RESUME, {"order_id": str(self.order.id), "from_step": None}
        else:
            return False
        self.conn.execute(_INSERT_OUTBOX, outbox_row(topic, payload, correlation=self.order.correlation_id))
        return True

    # -- the step log and events ---------------------------------------------------
    def step_status(self, name: str, run: int | None = None) -> str | None:
        """The status of step ``name`` in ``run`` (default: the order's run), or None."""
        return self.conn.execute(
            _STEP_STATUS,
            {"b_id": self.order.id, "b_name": name, "b_run": self.order.saga_run if run is None else run},
        ).scalar_one_or_none()

    def record_step(
        self,
        name: str,
        kind: str,
        attempt: int,
        status: str,
        detail: str | None = None,
        error: str | None = None,
        started_at: datetime | None = None,
        event: bool = True,
    ) -> None:
        """Write step ``name`` of this run as ``status`` (an upsert on (order, step, run):
        a retried step keeps its first ``started_at`` and its highest ``attempt``),
        and, unless ``event`` is false, its event."""
        now = utcnow()
        finished = None if status in (RUNNING, RETRYING) else now
        self._steps.append(
            {
                "order_id": self.order.id,
                "name": name,
                "run": self.order.saga_run,
                "kind": kind,
                "status": status,
                "attempt": attempt,
                "started_at": started_at or now,
                "finished_at": finished,
                "error": error,
            }
        )
        if event:
            self.event(step=name, step_status=status, attempt=attempt, detail=detail or error)

    def event(
        self,
        step: str | None = None,
        step_status: str | None = None,
        attempt: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Append an order event (numbered by ``flush``: the next ``seq`` of the
        locked row); its ``order.updated`` goes to the order's room, its owner's
        and the operators' after COMMIT."""
        self._events.append(
            {
                "order_id": self.order.id,
                "status": self.order.status,
                "step": step,
                "step_status": step_status,
                "attempt": attempt,
                "detail": detail,
                "at": utcnow(),
                "correlation_id": correlation_id() or self.order.correlation_id,
            }
        )

    def _number_events(self) -> None:
        rooms = (order_room(str(self.order.id)), user_room(self.order.customer_id), OPERATORS)
        for row in self._events:
            self.order.last_event_seq += 1
            row["seq"] = self.order.last_event_seq
            queue_notification(self, Notification("order.updated", event_payload(row), rooms))
        if self._events:
            self._changes["last_event_seq"] = self.order.last_event_seq

    def flush(self) -> None:
        """Claim the order if it was only read, then write the step rows, the
        events and the order's changes."""
        if self._steps or self._events or self._changes:
            self.claim()
        self._number_events()
        conn = self.conn
        if conn.dialect.name == "postgresql" and _distinct_steps(self._steps):
            if self._steps or self._events or self._changes:
                conn.exec_driver_sql(*_flush_postgresql(self.order, self._steps, self._events, self._changes))
        else:
            self._flush_statements(conn)
        self._steps, self._events, self._changes = [], [], {}

    def _flush_statements(self, conn: Connection) -> None:
        for step in self._steps:
            conn.execute(_upsert_step(conn.dialect.name), step)
        if self._events:
            conn.execute(_INSERT_EVENTS, self._events[0] if len(self._events) == 1 else self._events)
        if self._changes:
            now = utcnow()
            if any(column in self._changes for column in _STATE_COLUMNS):
                conn.execute(
                    update(ORDERS).where(ORDERS.c.id == self.order.id).values(**self._changes, updated_at=now)
                )
            else:
                conn.execute(
                    _BUMP_SEQ, {"b_id": self.order.id, "b_now": now, "b_seq": self._changes["last_event_seq"]}
                )


def _connection(conn: Connection | Session) -> Connection:
    return conn.connection() if isinstance(conn, Session) else conn


def _distinct_steps(steps: list[dict[str, Any]]) -> bool:
    """One ``INSERT ... ON CONFLICT`` cannot touch a row twice: a flush that
    records one step twice takes the statement-per-row path."""
    return len({step["name"] for step in steps}) == len(steps)


_STEP_COLUMNS = ("name", "kind", "status", "attempt", "started_at", "finished_at", "error")
_EVENT_COLUMNS = ("seq", "status", "step", "step_status", "attempt", "detail", "at", "correlation_id")
_FLUSH_SQL: dict[tuple[int, int, tuple[str, ...]], str] = {}


def _flush_sql(steps: int, events: int, changed: tuple[str, ...]) -> str:
    """The PostgreSQL statement of one ``flush`` shape (``steps`` step rows,
    ``events`` event rows, the order columns ``changed``): data-modifying CTEs
    for the step upsert and the events, and the order's ``UPDATE`` as the main
    statement, one round trip instead of three. Rows are ``VALUES`` of scalar
    parameters, which psycopg dumps in C, where one array per column (an
    ``unnest``) took a Python loop per array; a step writes one or two rows, so
    the shapes are few, and each is built once and prepared by psycopg."""
    key = (steps, events, changed)
    if key in _FLUSH_SQL:
        return _FLUSH_SQL[key]
    parts = []
    if steps:
        rows = ", ".join(
            f"(%(order_id)s, %(run)s, {', '.join(f'%(s{i}_{c})s' for c in _STEP_COLUMNS)})"
            for i in range(steps)
        )
        parts.append(
            f"s AS (INSERT INTO saga_steps (order_id, run, {', '.join(_STEP_COLUMNS)}) VALUES {rows} "
            "ON CONFLICT (order_id, name, run) DO UPDATE SET status = excluded.status, "
            "finished_at = excluded.finished_at, error = excluded.error, kind = excluded.kind, "
            "attempt = greatest(saga_steps.attempt, excluded.attempt) "
            f"WHERE saga_steps.status <> '{SUCCEEDED}')"
        )
    if events:
        rows = ", ".join(
            f"(%(order_id)s, {', '.join(f'%(e{i}_{c})s' for c in _EVENT_COLUMNS)})" for i in range(events)
        )
        parts.append(f"e AS (INSERT INTO order_events (order_id, {', '.join(_EVENT_COLUMNS)}) VALUES {rows})")
    main = (
        f"UPDATE orders SET {', '.join(f'{c} = %(o_{c})s' for c in changed)}, "
        "updated_at = %(now)s WHERE id = %(order_id)s"
        if changed
        else "SELECT 1"
    )
    sql = f"WITH {', '.join(parts)} {main}" if parts else main
    _FLUSH_SQL[key] = sql
    return sql


def _flush_postgresql(
    order: LockedOrder, steps: list[dict[str, Any]], events: list[dict[str, Any]], changes: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    changed = tuple(sorted(changes))
    params = {
        "order_id": order.id,
        "run": order.saga_run,
        "now": utcnow(),
        **{f"o_{name}": changes[name] for name in changed},
    }
    for i, step in enumerate(steps):
        for name in _STEP_COLUMNS:
            params[f"s{i}_{name}"] = step[name]
    for i, event in enumerate(events):
        for name in _EVENT_COLUMNS:
            params[f"e{i}_{name}"] = event[name]
    return _flush_sql(len(steps), len(events), changed), params


def _upsert_step(dialect: str) -> Insert:
    """INSERT ... ON CONFLICT (order, step, run) DO UPDATE, built once per dialect."""
    if dialect not in _UPSERTS:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(STEPS)
        excluded = stmt.excluded
        bigger = func.max if dialect == "sqlite" else func.greatest
        # A step that succeeded stays succeeded: a duplicate delivery running
        # beside the first one must not write "retrying" or "failed" over it.
        _UPSERTS[dialect] = stmt.on_conflict_do_update(
            index_elements=[STEPS.c.order_id, STEPS.c.name, STEPS.c.run],
            set_={
                "status": excluded.status,
                "finished_at": excluded.finished_at,
                "error": excluded.error,
                "kind": excluded.kind,
                "attempt": bigger(STEPS.c.attempt, excluded.attempt),
            },
            where=STEPS.c.status != SUCCEEDED,
        )
    return _UPSERTS[dialect]


def describe(exc: BaseException) -> str:
    """The full text of ``exc`` (class and message, at most 500 characters), for
    logs only: it may carry SQL, parameters, host names or provider messages."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def public_error(exc: BaseException) -> str:
    """A short, stable text for what went wrong, safe to show a customer (SPEC
    "Availability and abuse": a step's ``error`` and an event's ``detail`` never
    carry exception text, SQL or host names; operators find the full text in
    the logs by the order id). Unknown faults are ``internal error``."""
    for kinds, text in _public_error_kinds():
        if isinstance(exc, kinds):
            return text
    return "internal error"


@lru_cache(maxsize=1)
def _public_error_kinds() -> tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...]:
    """(exception classes, text) pairs, imported late: mail and payments import the models."""
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
    from kombu.exceptions import OperationalError as BrokerUnavailable
    from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from mail.smtp import TRANSIENT_SMTP_ERRORS
    from payments import ProviderError, TransientProviderError
    from tasks.base import PoisonMessage

    return (
        (PoisonMessage, "step crashed its worker repeatedly"),
        (TransientProviderError, "payment provider unavailable"),
        (ProviderError, "payment provider refused the request"),
        ((SoftTimeLimitExceeded, TimeLimitExceeded), "step timed out"),
        (IntegrityError, "conflicting update"),
        ((OperationalError, PoolTimeout, DBAPIError), "database unavailable"),
        (BrokerUnavailable, "message broker unavailable"),
        (TRANSIENT_SMTP_ERRORS, "email server unavailable"),
    )


FORWARD_PATH = ("pending", "stock_reserved", "payment_authorized", "confirmed", "shipped", "completed")
_RANK = {status: i for i, status in enumerate(FORWARD_PATH)} | {"awaiting_payment": 1}


def should_run(order: LockedOrder | Order, run: int, runs_in: str, halt: type[Exception]) -> bool:
    """Decide a forward step's fate from the order's state (``order`` has
    ``status`` and ``saga_run``).

    True: the order is in ``runs_in``, do the step. False: the order is already
    past it (a redelivered or duplicate message), pass through. Anything else
    (a stale run, compensating, parked, final) raises ``halt``.
    """
    if run != order.saga_run or order.status not in _RANK:
        raise halt()
    if order.status == runs_in:
        return True
    if _RANK[order.status] > _RANK[runs_in]:
        return False
    raise halt()


__all__ = [
    "FAILED",
    "RETRYING",
    "RUNNING",
    "SUCCEEDED",
    "LockedOrder",
    "OrderMoved",
    "SagaTx",
    "describe",
    "public_error",
    "should_run",
]
