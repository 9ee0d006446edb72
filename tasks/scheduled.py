"""Beat jobs (``scheduled.<verb_object>``), each safe to run twice in a period."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from config import get_settings
from mail.smtp import TRANSIENT_SMTP_ERRORS
from models import read_only
from services import payment_window, restocking
from services.audit import STOCK_CHECKS, audit
from services.safety_net import redrive_stalled_sagas, release_lapsed_holds, resend_cancellation_emails

log = logging.getLogger(__name__)


@shared_task(name="scheduled.redrive_stalled_sagas", ignore_result=True)
def redrive_stalled(after_s: float | None = None) -> int:
    """Re-drive sagas unchanged for ``SAGA_REDRIVE_AFTER_SECONDS``, and queue again the
    cancellation emails of final orders that ran out of retries
    (``services.safety_net``); how many sagas it re-drove."""
    after_s = get_settings().saga_redrive_after_s if after_s is None else after_s
    ids = redrive_stalled_sagas(after_s)
    if ids:
        log.warning("safety net: re-drove %d stalled saga(s): %s", len(ids), ", ".join(ids))
    emails = resend_cancellation_emails(after_s)
    if emails:
        log.warning(
            "safety net: cancellation email sent again for %d order(s): %s", len(emails), ", ".join(emails)
        )
    return len(ids)


@shared_task(name="scheduled.send_payment_reminders", ignore_result=True)
def send_payment_reminders() -> int:
    """Email each order in ``awaiting_payment`` its latest due reminder (at most once
    per reminder step, ages in ``PAYMENT_REMINDER_AFTER_SECONDS``); how many were sent."""
    settings = get_settings()
    sent = 0
    for order_id, step in payment_window.due_reminders(
        settings.payment_reminder_ages_s, settings.payment_window_s
    ):
        try:
            sent += payment_window.send_reminder(order_id, step)
        except TRANSIENT_SMTP_ERRORS as exc:  # the next run tries again
            log.warning("payment reminder %d for %s not sent: %s", step, order_id, exc)
    return sent


@shared_task(name="scheduled.expire_unpaid_orders", ignore_result=True)
def expire_unpaid_orders() -> int:
    """Cancel (``payment_expired``) orders in ``awaiting_payment`` past ``PAYMENT_WINDOW_SECONDS``."""
    ids = payment_window.expire_unpaid(get_settings().payment_window_s)
    if ids:
        log.info("payment window closed for %d order(s): %s", len(ids), ", ".join(ids))
    return len(ids)


@shared_task(name="scheduled.restock_low_inventory", ignore_result=True)
def restock_low_inventory(lead_time_s: float | None = None) -> dict[str, list[tuple[str, int]]]:
    """Receive purchase orders now due, then raise one for every SKU below its reorder
    point without one (due after ``SUPPLIER_LEAD_TIME_SECONDS``). Returns
    ``{received: [[sku, quantity]], raised: [[sku, quantity]]}``."""
    lead = get_settings().supplier_lead_time_s if lead_time_s is None else lead_time_s
    received = restocking.receive_due()
    raised = restocking.raise_purchase_orders(lead)
    if received or raised:
        log.info("restock: received %d purchase order(s), raised %d", len(received), len(raised))
    return {"received": received, "raised": raised}


@shared_task(name="scheduled.release_lapsed_holds", ignore_result=True)
def release_lapsed_reservations() -> dict[str, list[str]]:
    """Reservations past their hold: expire parked orders, release leaks (see
    ``services.safety_net.release_lapsed_holds``)."""
    outcome = release_lapsed_holds()
    if outcome["expired"] or outcome["released"]:
        log.warning("lapsed stock holds: %s", outcome)
    return outcome


@shared_task(name="scheduled.audit_inventory", ignore_result=True)
def audit_inventory() -> dict[str, int]:
    """Check SPEC's stock guarantee (guarantee 3) for every SKU: each violated check
    is a log event (``inventory audit violation``) and the gauge
    ``orion_inventory_audit_violations{check}``. Returns ``{check: rows found}``."""
    from observability.metrics import INVENTORY_AUDIT_TIME, INVENTORY_VIOLATIONS

    with read_only() as session:
        report = audit(session, checks=STOCK_CHECKS)["violations"]
    for check in STOCK_CHECKS:
        rows = report[check]
        INVENTORY_VIOLATIONS.labels(check).set(len(rows))
        if rows:
            log.error("inventory audit violation: %s on %d sku(s): %s", check, len(rows), rows[:20])
    INVENTORY_AUDIT_TIME.set(time.time())
    return {check: len(report[check]) for check in STOCK_CHECKS}
