"""The mail server down longer than the confirmation email's retry budget: the
email is after the pivot, so nothing is undone; the safety net sends it once the
server is back. Its own module: no other worker may run beside this one."""

from __future__ import annotations

from sqlalchemy import select

from models import Payment, SagaStep, unit_of_work
from services.safety_net import redrive_stalled_sagas
from tests.integration.conftest import FAST_RETRIES
from tests.support.factories import customer, eventually, place, product, wait_for
from tests.support.processes import celery_worker

NOBODY_LISTENS = "1"  # SMTP_PORT


def kinds(order_id) -> list[str]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(Payment.kind).where(Payment.order_id == order_id)))


def step_status(order_id, name: str) -> str | None:
    with unit_of_work() as session:
        return session.scalar(
            select(SagaStep.status).where(SagaStep.order_id == order_id, SagaStep.name == name)
        )


def test_a_confirmation_email_that_fails_for_good_undoes_nothing_and_is_sent_later(inbox, uid):
    user, sku = customer(uid), product(uid, on_hand=5)
    env = {**FAST_RETRIES, "SAGA_STEP_MAX_RETRIES": "1", "SMTP_PORT": NOBODY_LISTENS}
    # Parcels wait in orion.fulfilment (no consumer), so the email fails for good
    # while the order is still ``confirmed``, a status a cancel could undo.
    with celery_worker(env, queues="orion.saga,orion.notify"):
        order_id = place(user, [(sku, 1)])
        eventually(lambda: step_status(order_id, "send_confirmation_email") == "failed", timeout=60)
    order = wait_for(order_id, ("confirmed", "compensating", "cancelled", "failed"), timeout=5)
    assert (order.status, order.failure, order.cancel_reason) == ("confirmed", None, None)
    assert kinds(order_id) == ["authorization", "capture"]  # nothing refunded

    with celery_worker(FAST_RETRIES, purge=False):
        assert str(order_id) in redrive_stalled_sagas(after_s=0)
        order = wait_for(order_id, timeout=60)
    assert order.status == "completed"
    assert kinds(order_id) == ["authorization", "capture"]
    eventually(lambda: inbox.to(user.email))
    assert len(inbox.to(user.email)) == 1  # the worker has stopped: nothing more can come


def test_a_cancellation_email_that_ran_out_of_retries_is_sent_by_the_safety_net(inbox, uid):
    """The order is final by the time its cancellation email gives up, so no saga
    re-drive comes for it: the safety net's sweep queues the email again, once."""
    from services.safety_net import resend_cancellation_emails

    user, sku = customer(uid), product(uid, on_hand=5)
    env = {**FAST_RETRIES, "SAGA_STEP_MAX_RETRIES": "1", "SMTP_PORT": NOBODY_LISTENS}
    with celery_worker(env):
        order_id = place(user, [(sku, 1)], token="tok_chargeDeclined")
        order = wait_for(order_id)
        eventually(lambda: step_status(order_id, "send_cancellation_email") == "failed", timeout=60)
    assert (order.status, order.cancel_reason) == ("cancelled", "payment_declined")
    assert inbox.to(user.email) == []

    with celery_worker(FAST_RETRIES):
        assert str(order_id) in resend_cancellation_emails(after_s=0)
        eventually(lambda: step_status(order_id, "send_cancellation_email") == "succeeded")
        assert str(order_id) not in resend_cancellation_emails(after_s=0)
    (received,) = inbox.to(user.email)
    assert "cancelled" in received["Subject"]
