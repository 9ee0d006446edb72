"""kill -9 of the pool process at every crash point of the saga (issue 9's catalogue):
before and after each payment provider call, after each step's commit (before its
next message is sent and its own acknowledged), and after the mail server accepted
an email not yet marked sent. Each point fires once per message (``config.failpoints``),
so every order below dies at each point it passes, and must still end as it would
have without a crash: one capture, no refund, stock where it was. Its own module:
no other worker may run beside this one."""

from __future__ import annotations

from sqlalchemy import text

from models import unit_of_work
from services.audit import STOCK_CHECKS, audit
from tests.integration.test_saga_faults import kinds, stock
from tests.support.factories import customer, place, product, wait_for
from tests.support.processes import celery_worker

EVERY_POINT = "provider.*:before=1,provider.*:after=1,saga.*:after_commit=1,email:after_smtp=1"


def provider_calls(order_id) -> dict[str, int]:
    """Approved operations at the payment provider for the order, by kind."""
    with unit_of_work() as session:
        rows = session.execute(
            text(
                "SELECT operation, count(*) FROM sandbox_operations WHERE (result->>'approved') = 'true' "
                "AND (target = :order OR target IN (SELECT result->>'reference' FROM sandbox_operations "
                "WHERE target = :order)) GROUP BY operation"
            ),
            {"order": str(order_id)},
        ).all()
    return dict(rows)


def test_a_crash_at_every_point_loses_nothing_and_does_nothing_twice(inbox, uid):
    from models import get_engine
    from payments.sandbox import SandboxBase

    SandboxBase.metadata.create_all(get_engine())
    buyer, decliner = customer(uid), customer(f"{uid}d")
    sku = product(uid, on_hand=10)
    env = {"ORION_FAILPOINTS": EVERY_POINT, "SAGA_MAX_DELIVERIES": "8"}
    with celery_worker(env) as worker:
        paid = place(buyer, [(sku, 2)])
        declined = place(decliner, [(sku, 1)], token="tok_chargeDeclined")
        orders = {order_id: wait_for(order_id, timeout=150) for order_id in (paid, declined)}
        log = worker.log_path.read_text()

    fired = {
        line.split("failpoint ", 1)[1].split(" fired")[0]
        for line in log.splitlines()
        if "failpoint " in line and " fired for " in line
    }
    for point in (
        "provider.authorize:before",
        "provider.authorize:after",
        "provider.capture:before",
        "provider.capture:after",
        "saga.validate_order:after_commit",
        "saga.reserve_stock:after_commit",
        "saga.collect_reservations:after_commit",
        "saga.authorize_payment:after_commit",
        "saga.capture_payment:after_commit",
        "saga.create_shipment:after_commit",
        "saga.complete_order:after_commit",
        "email:after_smtp",
        "saga.release_stock:after_commit",
    ):
        assert point in fired, f"the worker never died at {point}"

    assert orders[paid].status == "completed"
    assert kinds(paid) == ["authorization", "capture"]
    assert provider_calls(paid) == {"authorize": 1, "capture": 1}
    assert (orders[declined].status, orders[declined].cancel_reason) == ("cancelled", "payment_declined")
    assert provider_calls(declined) == {}
    assert stock(sku) == (8, 0)  # two shipped, the declined order's unit released
    with unit_of_work() as session:
        assert not any(audit(session, skus=[sku], checks=STOCK_CHECKS)["violations"].values())
    # The confirmation email may go out twice (the crash came after the mail server
    # took it, before it was marked sent): as SMTP allows, with one Message-ID.
    confirmations = [m for m in inbox.to(buyer.email) if m["X-Orion-Template"] == "order_confirmation"]
    assert 1 <= len(confirmations) <= 2
    assert len({m["Message-ID"] for m in confirmations}) == 1
