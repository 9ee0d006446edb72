"""At most ``EMAIL_MAX_PER_ADDRESS_PER_HOUR`` emails to one address per hour (security
issue, item 9): addresses are not verified, so an account registered with someone
else's address could flood it with orders. Past the limit an email is recorded
``suppressed`` and never sent, and its order goes on as after a refused email.
Its own module: the worker here runs with a limit of its own."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import EmailMessage, OrderEvent, Payment, SagaStep, unit_of_work
from tests.integration.conftest import FAST_RETRIES
from tests.support.factories import customer, place, product, wait_for
from tests.support.processes import celery_worker

LIMIT = 3
SUPPRESSED_DETAIL = f"not sent: too many emails to this address ({LIMIT} in the last hour)"


def emails(order_ids) -> list[tuple[str, str]]:
    """(template, status) of the orders' emails, in the order they were made."""
    with unit_of_work() as session:
        rows = session.execute(
            select(EmailMessage.template, EmailMessage.status)
            .where(EmailMessage.order_id.in_(order_ids))
            .order_by(EmailMessage.created_at, EmailMessage.id)
        )
        return [tuple(row) for row in rows]


def step(order_id, name: str) -> SagaStep:
    with unit_of_work() as session:
        return session.scalars(
            select(SagaStep).where(SagaStep.order_id == order_id, SagaStep.name == name)
        ).one()


def details(order_id) -> list[str]:
    with unit_of_work() as session:
        return list(session.scalars(select(OrderEvent.detail).where(OrderEvent.order_id == order_id)))


def kinds(order_id) -> list[str]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(Payment.kind).where(Payment.order_id == order_id)))


@pytest.fixture(scope="module")
def limited_worker(inbox):
    with celery_worker({**FAST_RETRIES, "EMAIL_MAX_PER_ADDRESS_PER_HOUR": str(LIMIT)}) as proc:
        yield proc


def test_emails_past_the_hourly_limit_of_an_address_are_suppressed_and_the_orders_complete(
    limited_worker, inbox, uid
):
    user, sku = customer(uid), product(uid, on_hand=50)
    completed = []
    for _ in range(LIMIT + 2):  # one after the other: each email step sees the ones before
        order_id = place(user, [(sku, 1)])
        assert wait_for(order_id).status == "completed"
        completed.append(order_id)
    # A declined order's cancellation email is over the limit too; the order still ends.
    declined = place(user, [(sku, 1)], token="tok_chargeDeclined")
    order = wait_for(declined)
    assert (order.status, order.cancel_reason) == ("cancelled", "payment_declined")

    assert emails([*completed, declined]) == [
        *[("order_confirmation", "sent")] * LIMIT,
        *[("order_confirmation", "suppressed")] * 2,
        ("order_cancellation", "suppressed"),
    ]
    assert len(inbox.to(user.email)) == LIMIT, "the SMTP server got the first ones only"
    for order_id in completed[LIMIT:]:
        assert step(order_id, "send_confirmation_email").status == "succeeded"
        assert any(SUPPRESSED_DETAIL in (detail or "") for detail in details(order_id))
        assert kinds(order_id) == ["authorization", "capture"], "nothing refunded"
    assert step(declined, "send_cancellation_email").status == "succeeded"
    assert any(SUPPRESSED_DETAIL in (detail or "") for detail in details(declined))


def test_a_payment_reminder_past_the_limit_is_suppressed(limited_worker, inbox, uid, monkeypatch):
    """The beat's reminders count too (``services.payment_window.send_reminder``, run
    here in the test's process with the same limit)."""
    from config import reset_settings
    from mail import templates
    from services.payment_window import send_reminder

    user, sku = customer(uid), product(uid, on_hand=50)
    for _ in range(LIMIT):
        assert wait_for(place(user, [(sku, 1)])).status == "completed"
    parked = place(user, [(sku, 1)], token="tok_chargeDeclinedInsufficientFunds")
    wait_for(parked, ("awaiting_payment",))
    monkeypatch.setenv("EMAIL_MAX_PER_ADDRESS_PER_HOUR", str(LIMIT))
    reset_settings()
    try:
        assert send_reminder(str(parked), 1) is False
    finally:
        monkeypatch.undo()
        reset_settings()
    assert (templates.reminder(1), "suppressed") in emails([parked])
    assert any(f"payment reminder 1 {SUPPRESSED_DETAIL}" == detail for detail in details(parked))
    assert len(inbox.to(user.email)) == LIMIT
