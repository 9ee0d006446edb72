"""Emit a session's notifications after its transaction commits, never before.

SQLAlchemy's ``after_commit`` runs once the database has acknowledged the
COMMIT; ``after_soft_rollback`` drops what a rolled-back transaction queued.
Installed once per process by the web app and the worker.
"""

from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from progress.emitter import get_relay
from progress.notifications import Notification, take_notifications

_installed = False
log = logging.getLogger(__name__)


def install() -> None:
    """Hook every ``Session`` of this process up to the relay (idempotent)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_soft_rollback", _after_rollback)
    _installed = True


def _after_commit(session: Session) -> None:
    notifications = take_notifications(session)
    if notifications:
        emit_after_commit(notifications)


def emit_after_commit(notifications: list[Notification]) -> None:
    """Emit what a transaction that has just committed queued (also for code that
    commits on a Core connection, without a session). A relay that fails is
    logged, never raised: the commit stands, and a client fills the gap from
    the order's event log (``subscribe`` with ``after_seq``)."""
    try:
        get_relay().emit_all(notifications)
    except Exception as exc:  # noqa: BLE001
        log.warning("progress: %d notification(s) not emitted: %s", len(notifications), exc)


def _after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    # Notifications are held per session, not per savepoint: Orion uses no
    # savepoints. One that rolled back would keep its notifications (with seqs
    # the outer transaction reuses); hold them per transaction before using any.
    if not previous_transaction.nested:
        take_notifications(session)
