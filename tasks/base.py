"""The base class of every saga task: retries for transient faults, and what
happens when a step fails for good (compensation) or a compensation does
(``compensation_failed``)."""

from __future__ import annotations

import enum
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import structlog
from billiard.einfo import ExceptionInfo
from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_retry
from kombu.exceptions import OperationalError as BrokerUnavailable
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from config import get_settings
from config.failpoints import failpoint
from mail.smtp import TRANSIENT_SMTP_ERRORS
from models import order as lifecycle
from models.db import get_engine
from models.saga_log import COMPENSATION, FAILED, FORWARD, RETRYING, SUCCEEDED
from payments import TransientProviderError
from progress.hooks import emit_after_commit
from tasks.journal import OrderMoved, SagaTx, describe, public_error, should_run
from tasks.saga import INLINE, RUNS_IN

log = logging.getLogger(__name__)


NOT_SENT = "next step not sent"
# Ids of the tasks whose step committed, latest last (see ``SagaTask.__call__``).
_COMMITTED: deque[str] = deque(maxlen=64)


class PoisonMessage(Exception):
    """A message delivered ``SAGA_MAX_DELIVERIES`` times without its task finishing:
    each delivery killed its worker process (or the worker). Not transient."""


class _Inline(enum.Enum):
    """What became of a link run inline (``SagaTask.run_inline_successors``)."""

    RAN = "ran"
    HALTED = "halted"
    RETRYING = "retrying"
    SEND = "send"


class StepNotReady(Exception):
    """The step must wait for something another task is doing; retry later."""


# Faults that another attempt may cure. Business outcomes (out of stock, a
# decline) are not exceptions at all; bugs are not in this list and fail at once.
TRANSIENT_ERRORS = (
    TransientProviderError,
    OperationalError,
    PoolTimeout,
    IntegrityError,
    BrokerUnavailable,
    SoftTimeLimitExceeded,
    StepNotReady,
    *TRANSIENT_SMTP_ERRORS,
)

_settings = get_settings()


class Halt(Ignore):
    """Stop this saga branch quietly: the order moved on (cancelled, parked, stale run)."""


class SagaTask(Task[..., Any]):
    """A saga task: ``args[0]`` is the order id; forward steps also take the saga run.

    A transient fault is written to the step log and retried after an
    exponential backoff with jitter (1 s, 2 s, 4 s ... capped at
    ``SAGA_RETRY_BACKOFF_MAX``), at most ``SAGA_STEP_MAX_RETRIES`` times.
    """

    abstract = True
    step_kind = FORWARD
    max_retries = _settings.step_max_retries
    backoff_cap = _settings.retry_backoff_max_s

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        if task_id is None:  # called directly, not for a message: nothing to count or note
            return super().__call__(*args, **kwargs)
        if task_id in _COMMITTED:  # a retry or redelivery of it: not yet, again
            _COMMITTED.remove(task_id)
        counted = (self.request.delivery_info or {}).get("redelivered") and _count_delivery(
            task_id, self.name
        )
        try:
            result = super().__call__(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            if self.request.called_directly or self.request.retries >= self.max_retries:
                raise
            # Logged before the retry is published: a retry that runs at once on
            # another child must not overtake its own "retrying" entry.
            self._note_retry(args, exc)
            raise self.retry(exc=exc, countdown=self.backoff(self.request.retries)) from exc
        finally:
            if counted:  # this delivery finished (well or not): it crashed nothing
                _forget_deliveries(task_id)
        # The step's transaction has committed. Celery sends the chain's next
        # message (and reports a chord part to the result backend) only after
        # this returns; a failure there reaches ``on_failure`` too (on the path
        # for errors other than kombu's, without this request's context), and
        # must not be taken for the step's.
        _COMMITTED.append(task_id)
        failpoint(f"{self.name}:after_commit", task_id)
        if _settings.inline_steps:
            self.run_inline_successors()
        return result

    def run_inline_successors(self) -> None:
        """Run the chain's next links here, one after another, while they are
        steps declared ``inline`` (``tasks.saga.Stage.inline``); Celery then
        sends what remains of the chain, as it would have after this task.

        A link runs as a message of its own instead, as if nothing had been
        tried here, when this delivery is a redelivery (a step that crashes
        its process must have a message, a delivery count and a dead letter of
        its own, ``SAGA_MAX_DELIVERIES``) or when it raises anything but a
        transient fault or ``Halt`` (it fails again where it runs, through its
        own ``on_failure``). A transient fault is retried as the step's own
        message, attempt 2 after the first backoff, exactly as if attempt 1 had
        come from the queue. ``Halt`` ends the chain here. Only a failure to
        publish such a retry leaves this method (``on_failure`` then sees this
        task as committed and resumes the saga through the outbox).
        """
        request = self.request
        # The links still to run, next one last: signature dicts (Celery's stubs say str).
        chain: list[dict[str, Any]] | None = request.chain  # type: ignore[assignment]
        if not chain or (request.delivery_info or {}).get("redelivered"):
            return
        while chain and chain[-1].get("task") in INLINE and chain[-1].get("immutable"):
            link = chain[-1]
            task = self.app.tasks[link["task"]]
            if not isinstance(task, SagaTask):
                return
            outcome = task._run_inline(link, request, chain[:-1])
            if outcome is _Inline.SEND:
                return
            if outcome is _Inline.RAN:
                chain.pop()
                continue
            chain.clear()  # halted, or its retry message carries the rest of the chain
            return

    def _run_inline(self, link: dict[str, Any], parent: Any, rest: list[Any]) -> _Inline:
        args = tuple(link.get("args") or ())
        kwargs = dict(link.get("kwargs") or {})
        options = link.get("options") or {}
        task_id = options.get("task_id") or str(uuid.uuid4())
        self.push_request(
            id=task_id,
            args=args,
            kwargs=kwargs,
            retries=0,
            called_directly=False,
            is_eager=False,
            delivery_info=parent.delivery_info,
            root_id=parent.root_id,
            parent_id=parent.id,
            hostname=parent.hostname,
        )
        started = time.perf_counter()
        state: str | None = "success"
        try:
            with structlog.contextvars.bound_contextvars(task=self.name, task_id=task_id):
                try:
                    self.run(*args, **kwargs)
                except Halt:
                    state = "ignored"
                    return _Inline.HALTED
                except TRANSIENT_ERRORS as exc:
                    if not self.max_retries:  # no retry budget: let it fail as its own message
                        state = None
                        return _Inline.SEND
                    state = "retry"
                    self._note_retry(args, exc)
                    task_retry.send(sender=self, request=self.request, reason=exc, einfo=None)
                    self.app.signature(link).apply_async(
                        countdown=self.backoff(0), retries=1, chain=rest, parent_id=parent.id
                    )
                    return _Inline.RETRYING
                except Exception as exc:  # noqa: BLE001 - it fails where it runs next, as a message
                    state = None  # not an outcome: the step runs again from its message
                    log.warning(
                        "saga step %s of order %s did not run inline (%s); it is sent as a message",
                        self.name,
                        _order_arg(args),
                        describe(exc),
                    )
                    return _Inline.SEND
                log.info(
                    "Task %s[%s] succeeded inline in %.3fs", self.name, task_id, time.perf_counter() - started
                )
                failpoint(f"{self.name}:after_commit", task_id)
                return _Inline.RAN
        finally:
            self.pop_request()
            if state is not None:
                _observe_step(self.name, state, time.perf_counter() - started)

    @property
    def runs_in(self) -> str:
        """The order status this forward step runs in (declared in ``tasks.saga``)."""
        return RUNS_IN[self.name]

    @contextmanager
    def locked(self, order_id: str) -> Iterator[SagaTx]:
        """The order locked in a transaction of its own; what the step recorded is
        written when the block ends, and committed with it. Its Socket.IO
        notifications go out after COMMIT; on an exception the transaction
        rolls back and they are dropped."""
        with get_engine().begin() as conn:
            tx = SagaTx.lock(conn, order_id)
            yield tx
            tx.flush()
        _emit(tx)

    @contextmanager
    def forward(self, order_id: str, run: int, halt: type[Exception] = Halt) -> Iterator[SagaTx | None]:
        """Lock the order and gate this step on it (``journal.should_run``): yields
        the transaction when the order is in ``runs_in``, None when it is already
        past this step (a duplicate message: pass through); raises ``halt`` when
        the saga must stop here (cancelled, parked, a stale run)."""
        with self.locked(order_id) as tx:
            yield tx if should_run(tx.order, run, self.runs_in, halt) else None

    @contextmanager
    def claiming(
        self, order_id: str, run: int, halt: type[Exception] = Halt, step: str | None = None
    ) -> Iterator[SagaTx | None]:
        """``forward`` for a chord header: the order is read without its row lock, so
        the headers of one order run side by side, and claimed (``SagaTx.claim``)
        when the step writes. Raises ``halt`` if the order moved on meanwhile: the
        transaction rolls back, effects included. ``step``: read that step's status
        in the same statement (``SagaTx.step_seen``)."""
        try:
            with get_engine().begin() as conn:
                tx = SagaTx.read(conn, order_id, step)
                yield tx if should_run(tx.order, run, self.runs_in, halt) else None
                tx.flush()
        except OrderMoved:
            raise halt() from None
        _emit(tx)

    def backoff(self, retries: int) -> float:
        """Seconds before retry ``retries + 1``: half fixed, half random ("equal jitter")."""
        ceiling: float = min(self.backoff_cap, 2**retries)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _note_retry(self, args: tuple[Any, ...], exc: BaseException) -> None:
        # The full text goes to the log only; the step log gets a stable one.
        log.warning(
            "saga step %s of order %s will retry (attempt %d): %s",
            self.name,
            _order_arg(args),
            self.attempt,
            describe(exc),
        )
        try:
            with self.locked(_order_arg(args)) as tx:
                tx.record_step(
                    self.step_name(args), self.step_kind, self.attempt, RETRYING, error=public_error(exc)
                )
        except (OperationalError, PoolTimeout) as db_exc:  # the retry matters more than its log
            log.warning("could not log the retry of %s: %s", self.name, db_exc)

    def step_name(self, args: tuple[Any, ...]) -> str:
        return self.name.split(".", 1)[1]

    @property
    def attempt(self) -> int:
        return self.request.retries + 1

    def on_failure(
        self,
        exc: Exception,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Retries ran out, or a fault that retrying cannot cure: start compensation.

        Unless the step itself succeeded and what failed is sending the saga's next
        message (the broker or the result backend down after the commit): then
        nothing is undone (``_resume``)."""
        if task_id in _COMMITTED or (isinstance(exc, PoisonMessage) and self._succeeded(args)):
            self._resume(args, exc)
            return
        log.error("saga step %s failed for good for order %s: %s", self.name, _order_arg(args), describe(exc))
        if isinstance(exc, TimeLimitExceeded):
            # Called in the worker's main process while the child that overran
            # may still hold the order's row lock: waiting for it would freeze
            # the worker. The order stays in its step for an operator's retry.
            return
        with self.locked(_order_arg(args)) as tx:
            tx.record_step(
                self.step_name(args), self.step_kind, self.attempt, FAILED, error=public_error(exc)
            )
            self.after_failure(tx, exc)

    def _succeeded(self, args: tuple[Any, ...]) -> bool:
        """This step is recorded as succeeded in the order's current run (what crashed
        its worker came after the commit)."""
        try:
            with self.locked(_order_arg(args)) as tx:
                return tx.step_status(self.step_name(args)) == SUCCEEDED
        except (OperationalError, PoolTimeout):
            return False

    def _resume(self, args: tuple[Any, ...], exc: BaseException) -> None:
        """The step committed but its successor was not sent: record it on the order
        and queue the saga's resumption through the outbox (its relay publishes
        once the broker and result backend answer again; finished steps pass
        through). At most once in a row: if the order's last event is already
        such a stall, the safety net's re-drive (``SAGA_REDRIVE_AFTER_SECONDS``)
        takes over, rather than a loop of resumptions for as long as the outage lasts."""
        order_id = _order_arg(args)
        log.error(
            "saga step %s of order %s succeeded, but the next step was not sent: %s",
            self.name,
            order_id,
            describe(exc),
        )
        try:
            with self.locked(order_id) as tx:
                if tx.last_event_detail().startswith(NOT_SENT) or not tx.queue_resume():
                    return
                tx.event(
                    detail=f"{NOT_SENT} after {self.step_name(args)} "
                    f"({public_error(exc)}); resumed through the outbox"
                )
        except (OperationalError, PoolTimeout) as db_exc:
            log.warning(
                "could not queue the resumption of order %s: %s; the safety net re-drives it",
                order_id,
                db_exc,
            )

    def after_failure(self, tx: SagaTx, exc: BaseException) -> None:
        # Past ``shipped`` nothing can be undone (SPEC lifecycle); the failed
        # step stays in the log for an operator's retry.
        if tx.order.status in lifecycle.CANCELLABLE:
            tx.start_compensation(None, failure=f"{self.name}: {public_error(exc)}")


class CompensationTask(SagaTask):
    """A compensating task: when it fails for good the order needs an operator."""

    abstract = True
    step_kind = COMPENSATION
    max_retries = max(_settings.step_max_retries, 8)

    @contextmanager
    def undo(self, order_id: str) -> Iterator[SagaTx | None]:
        """Lock the order for this undo: yields None if this undo already succeeded
        in this run. Raises Halt when the order is not ``compensating`` (a
        duplicate chain after the compensation finished, or an operator's re-drive)."""
        with self.locked(order_id) as tx:
            if tx.order.status != lifecycle.COMPENSATING:
                raise Halt()
            yield None if tx.step_status(self.step_name((order_id,))) == SUCCEEDED else tx

    def after_failure(self, tx: SagaTx, exc: BaseException) -> None:
        if tx.order.status == lifecycle.COMPENSATING:
            tx.transition_to(lifecycle.COMPENSATION_FAILED)
            tx.event(detail=f"compensation failed: {public_error(exc)}")


_redis: dict[int, redis.Redis] = {}  # pid -> client


def _count_delivery(task_id: str, name: str) -> bool:
    """Count one more delivery of a redelivered message that no delivery has finished
    (RabbitMQ's classic queues keep no count: a message that kills its worker
    process on every delivery would come back for ever). The count is forgotten
    as soon as a delivery finishes (``_forget_deliveries``), so only deliveries
    that died in a row add up: crashes, or worker and broker restarts.

    Raises PoisonMessage past ``SAGA_MAX_DELIVERIES``, which fails the step for
    good (``on_failure``: compensation where the order allows, unless the step had
    committed). Counted in Redis (``orion:deliveries:<task id>``, kept a day);
    returns False, counting nothing, without Redis or with Redis down (the
    message just runs; the embedded default's transport never redelivers)."""
    client = _redis_client()
    if client is None:
        return False
    key = f"orion:deliveries:{task_id}"
    try:
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, 86400)
        deliveries = pipe.execute()[0] + 1  # the first delivery was not counted
    except redis.RedisError as exc:
        log.warning("could not count the deliveries of %s %s: %s", name, task_id, exc)
        return False
    if deliveries > _settings.max_deliveries:
        # Refused for good: a replay from the dead-letter queue starts counting afresh.
        _forget_deliveries(task_id)
        raise PoisonMessage(f"{name} delivered {deliveries} times without finishing")
    log.warning(
        "%s %s delivered again (delivery %d of at most %d)",
        name,
        task_id,
        deliveries,
        _settings.max_deliveries,
    )
    return True


def will_be_poison(task_id: str) -> bool:
    """Whether the next delivery of this redelivered message is the one
    ``_count_delivery`` refuses as poison (read only; False without Redis)."""
    client = _redis_client()
    if client is None:
        return False
    try:
        counted = int(client.get(f"orion:deliveries:{task_id}") or 0)
    except redis.RedisError:
        return False
    return counted + 2 > _settings.max_deliveries  # this delivery, and the first (uncounted)


def _forget_deliveries(task_id: str) -> None:
    client = _redis_client()
    try:
        if client is not None:
            client.delete(f"orion:deliveries:{task_id}")
    except redis.RedisError as exc:  # it expires within a day anyway
        log.warning("could not forget the deliveries of %s: %s", task_id, exc)


def _redis_client() -> redis.Redis | None:
    """This process's Redis client for delivery counts (None without ``REDIS_URL``)."""
    if not _settings.redis_url:
        return None
    client = _redis.get(os.getpid())
    if client is None:
        _redis.clear()
        client = _redis[os.getpid()] = redis.Redis.from_url(
            _settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
    return client


def _observe_step(name: str, state: str, seconds: float) -> None:
    from observability.metrics import STEP_DURATION

    STEP_DURATION.labels(name, state).observe(seconds)


def _emit(tx: SagaTx) -> None:
    notifications = tx.take_notifications()
    if notifications:
        emit_after_commit(notifications)


def _order_arg(args: tuple[Any, ...]) -> str:
    # Chord joins get the header results first: (results, order_id, run).
    order_id: str = args[1] if isinstance(args[0], list) else args[0]
    return order_id
