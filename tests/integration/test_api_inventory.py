"""GET /inventory and POST /inventory/{sku}/adjustments (SPEC), operators only."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from models import Inventory, InventoryLedger, unit_of_work
from models.catalog import reserve_all
from tests.support.api import API, auth, problem
from tests.support.factories import customer, product
from web import create_app
from web.pagination import encode_cursor


@pytest.fixture(scope="module")
def client():
    return create_app().test_client()


@pytest.fixture
def operator(client, uid):
    return auth(client, customer(uid, role="operator"))


def ledger(sku: str) -> list[tuple[int, int, str]]:
    with unit_of_work() as session:
        rows = session.scalars(
            select(InventoryLedger).where(InventoryLedger.sku == sku).order_by(InventoryLedger.id)
        )
        return [(row.delta, row.on_hand_after, row.reason) for row in rows]


def test_customers_get_403(client, uid):
    headers = auth(client, customer(uid))
    problem(client.get(f"{API}/inventory", headers=headers), 403)
    problem(
        client.post(f"{API}/inventory/X/adjustments", json={"delta": 1, "reason": "x"}, headers=headers), 403
    )


def test_adjustments_go_through_the_ledger(client, operator, uid):
    sku = product(uid, on_hand=10)
    reply = client.post(
        f"{API}/inventory/{sku}/adjustments", json={"delta": 5, "reason": "found a box"}, headers=operator
    )
    assert reply.status_code == 201, reply.get_data(as_text=True)
    assert reply.get_json() == {"sku": sku, "on_hand": 15, "reserved": 0, "available": 15, "reorder_point": 0}
    reply = client.post(
        f"{API}/inventory/{sku}/adjustments", json={"delta": -3, "reason": "damaged"}, headers=operator
    )
    assert reply.get_json()["on_hand"] == 12
    assert ledger(sku) == [(10, 10, "initial stock"), (5, 15, "found a box"), (-3, 12, "damaged")]


def test_an_adjustment_below_reserved_is_409_and_changes_nothing(client, operator, uid):
    sku = product(uid, on_hand=10)
    with unit_of_work() as session:
        assert reserve_all(session, {sku: 7}) == []
    body = problem(
        client.post(
            f"{API}/inventory/{sku}/adjustments", json={"delta": -4, "reason": "count"}, headers=operator
        ),
        409,
    )
    assert "reserved" in body["detail"]
    with unit_of_work() as session:
        stock = session.get(Inventory, sku)
        assert (stock.on_hand, stock.reserved) == (10, 7)
        stock.reserved = 0  # leave no units reserved without a reservation (the audit checks)
    assert len(ledger(sku)) == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"delta": 0, "reason": "x"}, "delta"),
        ({"delta": 1.5, "reason": "x"}, "delta"),
        ({"delta": 1, "reason": ""}, "reason"),
        ({"delta": 1, "reason": "x" * 201}, "reason"),
        ({"delta": 1}, "reason"),
        ({"delta": 1, "reason": "x", "extra": 1}, "extra"),
    ],
)
def test_bad_adjustments_are_422_naming_the_field(client, operator, uid, payload, field):
    sku = product(uid, on_hand=1)
    body = problem(client.post(f"{API}/inventory/{sku}/adjustments", json=payload, headers=operator), 422)
    assert field in body["errors"]


def test_unknown_sku_is_404(client, operator):
    problem(
        client.post(
            f"{API}/inventory/NO-SUCH-SKU/adjustments", json={"delta": 1, "reason": "x"}, headers=operator
        ),
        404,
    )


def test_list_filters_below_reorder_and_pages_by_sku(client, operator, uid):
    low, ok = product(uid, on_hand=3, suffix="A"), product(uid, on_hand=50, suffix="B")
    with unit_of_work() as session:
        session.execute(update(Inventory).where(Inventory.sku.in_([low, ok])).values(reorder_point=10))
    start = encode_cursor(low[:-1])  # just before this test's skus, whatever else is stocked
    below = client.get(
        f"{API}/inventory?below_reorder=true&limit=100&cursor={start}", headers=operator
    ).get_json()
    skus = [item["sku"] for item in below["items"]]
    assert low in skus and ok not in skus
    assert {"sku": low, "on_hand": 3, "reserved": 0, "available": 3, "reorder_point": 10} in below["items"]
    with unit_of_work() as session:  # later restock runs need not order for these
        session.execute(update(Inventory).where(Inventory.sku.in_([low, ok])).values(reorder_point=0))
    first = client.get(f"{API}/inventory?limit=1", headers=operator).get_json()
    second = client.get(f"{API}/inventory?limit=1&cursor={first['next_cursor']}", headers=operator).get_json()
    assert first["items"][0]["sku"] < second["items"][0]["sku"]
