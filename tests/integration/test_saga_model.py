"""A Hypothesis state machine over the real services (issue 9, "Bad input"): it
places orders with any sandbox token, pays parked ones again, cancels, restocks,
and kills the worker's pool processes, in any order; after every step the
guarantees that hold at every instant are checked, and at the end of each run,
once every order has settled, the ones that hold for final states.

At every instant (SPEC guarantees 2 and 3): no order has two captures or two
refunds, a refund only follows a capture; on-hand and reserved never go below
zero, reserved equals the units held, on-hand equals its ledger.
At the end (guarantees 1, 2 and 4): every order is final (parked ones are
cancelled by the model); a completed order was captured once and never
refunded; a cancelled or failed one kept no money (every capture refunded);
no email went twice; stock reserved for these orders is released or shipped.

Real PostgreSQL, RabbitMQ, Redis, a real worker; never eager mode. Its own module:
it kills the pool processes of its worker."""

from __future__ import annotations

import contextlib
import time
import uuid

import psutil
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from models import Inventory, Order, Payment, unit_of_work
from services.audit import STOCK_CHECKS, audit
from services.errors import Conflict, TooManyOpenOrders
from services.inventory import adjust_stock
from services.ordering import Actor, cancel_order, pay_again
from tests.support.factories import customer, place, product

TOKENS = ("tok_visa", "tok_flaky", "tok_chargeDeclined", "tok_chargeDeclinedInsufficientFunds")
SKUS = 3
SETTLE_S = 120
OPERATOR = Actor(user_id=0, role="operator")


def statuses(order_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    with unit_of_work() as session:
        return dict(session.execute(select(Order.id, Order.status).where(Order.id.in_(order_ids))).all())


def money(order_ids: list[uuid.UUID]) -> dict[tuple[uuid.UUID, str], int]:
    """Succeeded payment rows per (order, kind)."""
    with unit_of_work() as session:
        rows = session.execute(
            select(Payment.order_id, Payment.kind, func.count())
            .where(Payment.order_id.in_(order_ids), Payment.status == "succeeded")
            .group_by(Payment.order_id, Payment.kind)
        ).all()
    return {(order_id, kind): n for order_id, kind, n in rows}


class SagaModel(RuleBasedStateMachine):
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.placed: list[uuid.UUID] = []
        self.kills = 0

    @initialize()
    def setup(self) -> None:
        uid = uuid.uuid4().hex[:8]
        self.user = customer(uid)
        self.actor = Actor(self.user.id, "customer")
        self.skus = [product(f"{uid}{i}", on_hand=8) for i in range(SKUS)]

    @rule(
        target=orders,
        lines=st.dictionaries(st.integers(0, SKUS - 1), st.integers(1, 4), min_size=1, max_size=SKUS),
        token=st.sampled_from(TOKENS),
    )
    def place_order(self, lines: dict[int, int], token: str) -> uuid.UUID:
        try:
            order_id = place(self.user, [(self.skus[i], n) for i, n in sorted(lines.items())], token)
        except TooManyOpenOrders:  # the per-customer cap (SPEC's abuse rules) is an answer too
            return self.placed[-1] if self.placed else uuid.uuid4()
        self.placed.append(order_id)
        return order_id

    @rule(order=orders)
    def cancel(self, order: uuid.UUID) -> None:
        if order in self.placed:
            with contextlib.suppress(Conflict):  # shipped, compensating or final by now
                cancel_order(order, self.actor)

    @rule(order=orders)
    def pay_again(self, order: uuid.UUID) -> None:
        if order in self.placed:
            with contextlib.suppress(Conflict):  # not parked (any more)
                pay_again(order, self.actor, "tok_visa")

    @rule(sku=st.integers(0, SKUS - 1), units=st.integers(1, 5))
    def restock(self, sku: int, units: int) -> None:
        adjust_stock(self.skus[sku], units, "model restock", OPERATOR)

    @rule(seconds=st.sampled_from((0.2, 0.5, 1.0)))
    def let_the_sagas_run(self, seconds: float) -> None:
        """Time passes: steps run, so the invariants below also see orders mid-saga."""
        time.sleep(seconds)

    @rule()
    def kill_pool_processes(self) -> None:
        if self.kills >= 2:  # each costs a second or two of restarts
            return
        self.kills += 1
        for child in psutil.Process(WORKER_PID[0]).children():
            child.kill()

    @invariant()
    def stock_is_conserved(self) -> None:
        if getattr(self, "skus", None):
            with unit_of_work() as session:
                found = audit(session, skus=self.skus, checks=STOCK_CHECKS)["violations"]
            assert not any(found.values()), found

    @invariant()
    def money_moves_at_most_once(self) -> None:
        if self.placed:
            counts = money(self.placed)
            for order_id in self.placed:
                captures = counts.get((order_id, "capture"), 0)
                refunds = counts.get((order_id, "refund"), 0)
                assert captures <= 1 and refunds <= 1, (order_id, counts)
                assert refunds <= captures, (order_id, counts)

    def teardown(self) -> None:
        if not self.placed:
            return
        deadline = time.monotonic() + SETTLE_S
        while True:
            now = statuses(self.placed)
            for order_id, status in now.items():
                if status == "awaiting_payment":  # parked for days otherwise
                    with contextlib.suppress(Conflict):
                        cancel_order(order_id, self.actor)
            if all(status in ("completed", "cancelled", "failed") for status in now.values()):
                break
            assert time.monotonic() < deadline, f"not final after {SETTLE_S}s: {now}"
            time.sleep(0.5)
        counts = money(self.placed)
        for order_id, status in now.items():
            captures = counts.get((order_id, "capture"), 0)
            refunds = counts.get((order_id, "refund"), 0)
            if status == "completed":
                assert (captures, refunds) == (1, 0), (order_id, status, counts)
            else:
                assert captures == refunds, (order_id, status, counts)
        emails = [m for m in INBOX[0].to(self.user.email)]
        keys = [(m["X-Orion-Order"], m["X-Orion-Template"]) for m in emails]
        assert len({m["Message-ID"] for m in emails}) == len(set(keys)), "an email went twice"
        with unit_of_work() as session:
            reserved = session.scalar(
                select(func.sum(Inventory.reserved)).where(Inventory.sku.in_(self.skus))
            )
        assert reserved == 0, "every order is final: nothing may stay reserved"
        self.stock_is_conserved()


WORKER_PID: list[int] = []
INBOX: list = []


def test_no_sequence_of_orders_cancels_payments_restocks_and_crashes_breaks_a_guarantee(worker, inbox):
    WORKER_PID[:] = [worker.pid]
    INBOX[:] = [inbox]
    run_state_machine_as_test(
        SagaModel,
        settings=settings(
            max_examples=6,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        ),
    )
