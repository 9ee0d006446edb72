"""The base class of every saga task: retries for transient faults, and what
happens when a step fails for good (compensation) or a compensation does
(``compensation_failed``)."""
from __future__ import annotations

import logging
import random

from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded, TimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerUnavailable
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from config import get_settings
from mail.smtp import TRANSIENT_SMTP_ERRORS
from models import Order, record_event, unit_of_work
from models import order as lifecycle
from models.outbox import SAGA_COMPENSATE, enqueue
from models.saga_log import COMPENSATION, FORWARD
from payments import TransientProviderError
from tasks import journal
from tasks.outbox import publish_after_commit

log = logging.getLogger(__name__)


class StepNotReady(Exception):
    """The step must wait for something another task is doing; retry later."""


# Faults that another attempt may cure. Business outcomes (out of stock, a
# decline) are not exceptions at all; bugs are not in this list and fail at once.
TRANSIENT_ERRORS = (TransientProviderError, OperationalError, PoolTimeout, IntegrityError,
                    BrokerUnavailable, SoftTimeLimitExceeded, StepNotReady, *TRANSIENT_SMTP_ERRORS)

_settings = get_settings()


class Halt(Ignore):
    """Stop this saga branch quietly: the order moved on (cancelled, parked, stale run)."""


class SagaTask(Task):
    """A saga task: ``args[0]`` is the order id; forward steps also take the saga run.

    A transient fault is written to the step log and retried after an
    exponential backoff with jitter (1 s, 2 s, 4 s ... capped at
    ``SAGA_RETRY_BACKOFF_MAX``), at most ``SAGA_STEP_MAX_RETRIES`` times.
    """

    abstract = True
    step_kind = FORWARD
    max_retries = _settings.step_max_retries
    backoff_cap = _settings.retry_backoff_max_s

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            if self.request.called_directly or self.request.retries >= self.max_retries:
                raise
            # Logged before the retry is published: a retry that runs at once on
            # another child must not overtake its own "retrying" entry.
            self._note_retry(args, exc)
            raise self.retry(exc=exc, countdown=self.backoff(self.request.retries))

    def backoff(self, retries: int) -> float:
        """Seconds before retry ``retries + 1``: half fixed, half random ("equal jitter")."""
        ceiling = min(self.backoff_cap, 2 ** retries)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _note_retry(self, args: tuple, exc: BaseException) -> None:
        try:
            name = self.step_name(args)  # before the transaction: it may read (SQLite: one writer)
            with unit_of_work() as session:
                order = journal.lock_order(session, _order_arg(args))
                journal.note_retry(session, order, name, self.step_kind, self.attempt,
                                   journal.describe(exc))
        except (OperationalError, PoolTimeout) as db_exc:  # the retry matters more than its log
            log.warning("could not log the retry of %s: %s", self.name, db_exc)

    def step_name(self, args: tuple) -> str:
        return self.name.split(".", 1)[1]

    @property
    def attempt(self) -> int:
        return self.request.retries + 1

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Retries ran out, or a fault that retrying cannot cure: start compensation."""
        log.error("saga step %s failed for good for order %s: %s", self.name, args[:1], exc)
        if isinstance(exc, TimeLimitExceeded):
            # Called in the worker's main process while the child that overran
            # may still hold the order's row lock: waiting for it would freeze
            # the worker. The order stays in its step for an operator's retry.
            return
        name = self.step_name(args)
        with unit_of_work() as session:
            order = journal.lock_order(session, _order_arg(args))
            journal.note_failure(session, order, name, self.step_kind, self.attempt,
                                 journal.describe(exc))
            self.after_failure(session, order, exc)
            messages = session.info.get("outbox", [])
        publish_after_commit(messages)

    def after_failure(self, session, order: Order, exc: BaseException) -> None:
        # Past ``shipped`` nothing can be undone (SPEC lifecycle); the failed
        # step stays in the log for an operator's retry.
        if order.status in lifecycle.CANCELLABLE:
            order.start_compensation(None, failure=f"{self.name}: {journal.describe(exc)}")
            start_compensation(session, order)


class CompensationTask(SagaTask):
    """A compensating task: when it fails for good the order needs an operator."""

    abstract = True
    step_kind = COMPENSATION
    max_retries = max(_settings.step_max_retries, 8)

    def after_failure(self, session, order: Order, exc: BaseException) -> None:
        if order.status == lifecycle.COMPENSATING:
            order.transition_to(lifecycle.COMPENSATION_FAILED)
            record_event(session, order, detail=f"compensation failed: {journal.describe(exc)}")


def lock_for_undo(session, order_id: str, step_name: str) -> Order | None:
    """The locked order for an undo step, or None if this undo already succeeded.

    Raises Halt when the order is not ``compensating`` (a duplicate chain after
    the compensation finished, or an operator's re-drive).
    """
    order = journal.lock_order(session, order_id)
    if order.status != lifecycle.COMPENSATING:
        raise Halt()
    return None if journal.already_succeeded(session, order, step_name) else order


def start_compensation(session, order: Order) -> None:
    """Queue the compensation of ``order`` (already ``compensating``) through the outbox."""
    record_event(session, order, detail=order.cancel_reason or order.failure)
    enqueue(session, SAGA_COMPENSATE, {"order_id": str(order.id)})


def _order_arg(args: tuple) -> str:
    # Chord joins get the header results first: (results, order_id, run).
    return args[1] if isinstance(args[0], list) else args[0]
