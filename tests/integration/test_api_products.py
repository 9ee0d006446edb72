"""Catalog endpoints over Flask's test client, on the real PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from models import Inventory, Product, unit_of_work
from tests.support.api import problem
from web import create_app

API = "/api/v1"


@pytest.fixture(scope="module")
def client():
    return create_app().test_client()


def add_product(sku: str, name: str, price: str = "2.55", on_hand: int | None = 10, reserved: int = 0) -> str:
    with unit_of_work() as session:
        session.add(Product(sku=sku, name=name, unit_price=Decimal(price)))
        session.flush()
        if on_hand is not None:
            session.add(Inventory(sku=sku, on_hand=on_hand, reserved=reserved))
    return sku


def test_a_product_shows_price_as_a_string_and_available_stock(client, uid):
    sku = add_product(f"T{uid}", "Brass compass", price="12.5", on_hand=10, reserved=3)
    response = client.get(f"{API}/products/{sku}")
    assert response.status_code == 200
    assert response.get_json() == {
        "sku": sku,
        "name": "Brass compass",
        "unit_price": "12.50",
        "currency": "GBP",
        "available": 7,
    }


def test_a_product_without_stock_row_has_zero_available(client, uid):
    sku = add_product(f"T{uid}", "Unstocked", on_hand=None)
    assert client.get(f"{API}/products/{sku}").get_json()["available"] == 0


def test_an_unknown_product_is_a_404_problem(client, uid):
    problem(client.get(f"{API}/products/NOPE{uid}"), 404)


def test_the_list_pages_by_sku_with_an_opaque_cursor(client, uid):
    skus = [add_product(f"T{uid}{suffix}", f"Item {suffix}") for suffix in "EDCBA"]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"q": f"T{uid}", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get(f"{API}/products", query_string=query).get_json()
        assert len(body["items"]) <= 2
        seen += [item["sku"] for item in body["items"]]
        pages, cursor = pages + 1, body["next_cursor"]
        if cursor is None:
            break
        assert f"T{uid}" not in cursor  # opaque, not the sku itself
    assert seen == sorted(skus)
    assert pages == 3


def test_q_matches_sku_or_name_case_insensitively(client, uid):
    by_sku = add_product(f"T{uid}S", "Plain")
    by_name = add_product(f"N{uid}", f"Lamp {uid.upper()} deluxe")
    found = client.get(f"{API}/products", query_string={"q": uid.upper()}).get_json()["items"]
    assert {item["sku"] for item in found} == {by_sku, by_name}
    found = client.get(f"{API}/products", query_string={"q": f"t{uid}s"}).get_json()["items"]
    assert [item["sku"] for item in found] == [by_sku]


def test_q_wildcards_are_taken_literally(client, uid):
    add_product(f"T{uid}A", "Item")
    items = client.get(f"{API}/products", query_string={"q": f"T{uid}_"}).get_json()["items"]
    assert items == []


def test_the_default_page_size_is_20(client, uid):
    for n in range(21):
        add_product(f"T{uid}{n:02d}", f"Bulk {n}")
    body = client.get(f"{API}/products", query_string={"q": f"T{uid}"}).get_json()
    assert len(body["items"]) == 20 and body["next_cursor"] is not None


@pytest.mark.parametrize(
    "query, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_query_parameters_are_422_with_errors(client, query, field):
    assert field in problem(client.get(f"{API}/products", query_string=query), 422)["errors"]
