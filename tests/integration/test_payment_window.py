"""Payment reminders and expiry for orders in ``awaiting_payment``, run as beat
runs them (tasks sent to a real worker), with a real SMTP server."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from models import EmailMessage, Order, unit_of_work, utcnow
from tests.integration.test_saga_faults import stock
from tests.support.factories import customer, eventually, place, product, wait_for
from worker import app as celery_app

HOUR = 3600


def park(uid: str):
    user, sku = customer(uid), product(uid, on_hand=10)
    order_id = place(user, [(sku, 3)], token="tok_chargeDeclinedInsufficientFunds")
    assert wait_for(order_id, statuses=("awaiting_payment",)).status == "awaiting_payment"
    return user, sku, order_id


def parked_for(order_id, seconds: float) -> None:
    with unit_of_work() as session:
        session.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(awaiting_payment_since=utcnow() - timedelta(seconds=seconds))
        )


def sent(order_id, template_prefix: str) -> int:
    with unit_of_work() as session:
        return session.scalar(
            select(func.count())
            .select_from(EmailMessage)
            .where(
                EmailMessage.order_id == order_id,
                EmailMessage.template.startswith(template_prefix),
                EmailMessage.status == "sent",
            )
        )


def run_job(name: str, times: int = 1) -> None:
    """Send the beat job to the worker ``times`` times and wait for each to finish."""
    for _ in range(times):
        celery_app.send_task(name, ignore_result=False).get(timeout=30)


def test_reminders_go_out_once_per_step_then_the_order_expires(worker, inbox, uid):
    user, sku, order_id = park(uid)
    run_job("scheduled.send_payment_reminders")
    assert inbox.to(user.email) == [], "no reminder before the first age"

    parked_for(order_id, 2 * HOUR)
    run_job("scheduled.send_payment_reminders", times=2)  # a second run in the period changes nothing
    eventually(lambda: len(inbox.to(user.email)) == 1)
    assert inbox.to(user.email)[0]["Subject"].endswith("is waiting for payment")

    parked_for(order_id, 13 * HOUR)  # past the second age (12 h), inside the 24 h window
    run_job("scheduled.send_payment_reminders", times=2)
    eventually(lambda: len(inbox.to(user.email)) == 2)
    assert sent(order_id, "payment_reminder") == 2
    run_job("scheduled.expire_unpaid_orders")
    with unit_of_work() as session:
        assert session.get(Order, order_id).status == "awaiting_payment", "still inside the window"

    parked_for(order_id, 25 * HOUR)
    run_job("scheduled.send_payment_reminders")
    run_job("scheduled.expire_unpaid_orders", times=2)
    order = wait_for(order_id)
    assert (order.status, order.cancel_reason) == ("cancelled", "payment_expired")
    assert stock(sku) == (10, 0), "the held units are back"
    eventually(lambda: any("was cancelled" in m["Subject"] for m in inbox.to(user.email)))
    assert sent(order_id, "payment_reminder") == 2
    assert len(inbox.to(user.email)) == 3


def test_an_order_inside_the_window_is_not_expired(worker, uid):
    _, sku, order_id = park(uid)
    parked_for(order_id, 23 * HOUR)
    run_job("scheduled.expire_unpaid_orders", times=2)
    with unit_of_work() as session:
        assert session.get(Order, order_id).status == "awaiting_payment"
    assert stock(sku) == (10, 3)


def test_parking_again_renews_the_stock_hold_for_a_new_window(worker, uid):
    """Declined softly twice: the second parking starts a new payment window, and
    the held stock must last through it too."""
    from config import get_settings
    from models import Reservation
    from services.ordering import Actor, pay_again

    user, _, order_id = park(uid)
    with unit_of_work() as session:  # most of the first hold has gone by
        session.execute(
            update(Reservation)
            .where(Reservation.order_id == order_id)
            .values(expires_at=utcnow() + timedelta(hours=1))
        )
    pay_again(order_id, Actor(user.id, "customer"), "tok_chargeDeclinedInsufficientFunds")

    def renewed():
        with unit_of_work() as session:
            order = session.get(Order, order_id)
            expiries = list(
                session.scalars(select(Reservation.expires_at).where(Reservation.order_id == order_id))
            )
            return (
                order.status == "awaiting_payment"
                and order.saga_run == 2
                and all((e - utcnow()).total_seconds() > get_settings().payment_window_s for e in expiries)
            )

    eventually(renewed, timeout=30)


def test_a_lapsed_stock_hold_expires_its_parked_order(worker, uid):
    from models import Reservation

    _, sku, order_id = park(uid)
    with unit_of_work() as session:
        session.execute(
            update(Reservation)
            .where(Reservation.order_id == order_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    run_job("scheduled.release_lapsed_holds", times=2)
    order = wait_for(order_id)
    assert (order.status, order.cancel_reason) == ("cancelled", "payment_expired")
    assert stock(sku) == (10, 0)


def test_a_refused_reminder_is_marked_refused_and_the_others_still_go(worker, inbox, uid):
    """A 550 for one customer's address: that reminder is refused for good, and the
    sweep goes on to the other parked orders."""
    refused_user, _, refused_order = park(f"{uid}r")
    other_user, _, other_order = park(f"{uid}o")
    inbox.refuse(refused_user.email)
    parked_for(refused_order, 2 * HOUR)
    parked_for(other_order, 2 * HOUR)
    run_job("scheduled.send_payment_reminders")
    eventually(lambda: len(inbox.to(other_user.email)) == 1)
    with unit_of_work() as session:
        statuses = dict(
            session.execute(
                select(EmailMessage.order_id, EmailMessage.status).where(
                    EmailMessage.order_id.in_([refused_order, other_order]),
                    EmailMessage.template.startswith("payment_reminder"),
                )
            ).all()
        )
    assert statuses == {refused_order: "refused", other_order: "sent"}
    run_job("scheduled.send_payment_reminders")  # a refused reminder is not tried again
    assert inbox.to(refused_user.email) == [] and len(inbox.to(other_user.email)) == 1
