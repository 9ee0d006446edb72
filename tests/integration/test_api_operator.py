"""GET /api/v1/operator/overview: counts, stuck sagas and low stock, operators only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from models import Inventory, Order, unit_of_work, utcnow
from tests.support.api import API, auth, problem
from tests.support.factories import customer, place, product
from web import create_app


@pytest.fixture(scope="module")
def client():
    return create_app().test_client()


def test_customers_get_403(client, uid):
    problem(client.get(f"{API}/operator/overview", headers=auth(client, customer(uid))), 403)


def test_overview_counts_orders_and_lists_stuck_sagas_and_low_stock(client, uid):
    sku, user = product(uid, 10), customer(uid)
    headers = auth(client, customer(uid, role="operator"))
    before = client.get(f"{API}/operator/overview", headers=headers).get_json()
    fresh, stuck = place(user, [(sku, 1)]), place(user, [(sku, 1)])  # no worker: both stay pending
    with unit_of_work() as session:
        session.execute(
            update(Order)
            .where(Order.id == stuck)
            .values(updated_at=utcnow() - timedelta(seconds=before["stuck_after_s"] + 5))
        )
        session.execute(
            update(Inventory).where(Inventory.sku == sku).values(reorder_point=10**9)
        )  # first in the list, by deficit

    after = client.get(f"{API}/operator/overview", headers=headers).get_json()
    assert after["counts"]["pending"] == before["counts"]["pending"] + 2
    stuck_rows = {row["id"]: row for row in after["stuck"]}
    assert str(stuck) in stuck_rows and str(fresh) not in stuck_rows
    assert stuck_rows[str(stuck)]["status"] == "pending"
    assert stuck_rows[str(stuck)]["age_s"] >= before["stuck_after_s"]
    assert after["low_stock"][0] == {"sku": sku, "available": 10, "reorder_point": 10**9}
    with unit_of_work() as session:  # later restock runs need not order a billion units
        session.execute(update(Inventory).where(Inventory.sku == sku).values(reorder_point=0))
    assert after["flower_url"].startswith("http://")
