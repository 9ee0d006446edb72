"""Order endpoints over Flask's test client, on the real PostgreSQL, RabbitMQ and Redis.

POST /orders stores the order and publishes its saga message to the real broker;
no worker runs here, so orders stay where the API left them.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, update

from models import Order, SagaStep, User, unit_of_work, utcnow
from tests.support.api import auth, problem
from tests.support.factories import ADDRESS, count, customer, order_body, product
from web import create_app

API = "/api/v1"
PASSWORD = "correct horse battery"  # what tests.support.factories.customer sets


@pytest.fixture(scope="module")
def client():
    return create_app().test_client()


@pytest.fixture
def shopper(client, uid):
    """A customer with an access token, and a stocked sku of their own."""
    user = customer(uid)
    return user, auth(client, user), product(uid, on_hand=50)


def place(client, headers, body, key=None):
    extra = {"Idempotency-Key": key} if key else {}
    return client.post(f"{API}/orders", json=body, headers={**headers, **extra})


def set_status(order_id: str, status: str) -> None:
    with unit_of_work() as session:
        session.execute(update(Order).where(Order.id == uuid.UUID(order_id)).values(status=status))


def test_placing_an_order_answers_202_with_location_and_the_order(client, shopper):
    user, headers, sku = shopper
    response = client.post(
        f"{API}/orders", json=order_body([(sku, 2)]), headers={**headers, "X-Request-ID": "req-abc-123"}
    )
    assert response.status_code == 202
    order = response.get_json()
    assert response.headers["Location"] == f"{API}/orders/{order['id']}"
    assert response.headers["X-Request-ID"] == "req-abc-123"
    assert order["lines"] == [
        {"sku": sku, "name": f"Test product {sku}", "unit_price": "2.55", "quantity": 2, "line_total": "5.10"}
    ]
    assert order["totals"] == {"subtotal": "5.10", "total": "5.10", "currency": "GBP"}
    assert order["shipping_address"] == ADDRESS and order["cancel_reason"] is None
    assert order["created_at"].endswith("Z") and isinstance(order["steps"], list)
    with unit_of_work() as session:
        stored = session.get(Order, uuid.UUID(order["id"]))
        assert (stored.customer_id, stored.correlation_id) == (user.id, "req-abc-123")
    assert client.get(response.headers["Location"], headers=headers).get_json()["id"] == order["id"]


def test_an_order_shows_its_saga_steps_in_the_order_they_ran(client, shopper):
    _, headers, sku = shopper
    order_id = uuid.UUID(place(client, headers, order_body([(sku, 1)])).get_json()["id"])
    with unit_of_work() as session:
        for name, status, attempt in [
            ("reserve_stock", "succeeded", 1),
            ("authorize_payment", "failed", 3),
            ("release_stock", "running", 1),
        ]:
            session.add(
                SagaStep(
                    order_id=order_id,
                    name=name,
                    run=1,
                    status=status,
                    attempt=attempt,
                    finished_at=utcnow() if status != "running" else None,
                    error="declined" if status == "failed" else None,
                )
            )
            session.flush()
    steps = client.get(f"{API}/orders/{order_id}", headers=headers).get_json()["steps"]
    assert [(s["name"], s["status"], s["attempt"], s["error"]) for s in steps] == [
        ("reserve_stock", "succeeded", 1, None),
        ("authorize_payment", "failed", 3, "declined"),
        ("release_stock", "running", 1, None),
    ]
    assert steps[0]["started_at"].endswith("Z") and steps[2]["finished_at"] is None


def test_a_replay_with_the_same_key_and_body_returns_the_same_order(client, shopper, uid):
    user, headers, sku = shopper
    first = place(client, headers, order_body([(sku, 1)]), key=f"key-{uid}")
    again = place(client, headers, order_body([(sku, 1)]), key=f"key-{uid}")
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert count(Order, Order.customer_id == user.id) == 1


def test_the_same_key_with_another_body_is_409(client, shopper, uid):
    user, headers, sku = shopper
    assert place(client, headers, order_body([(sku, 1)]), key=f"key-{uid}").status_code == 202
    problem(place(client, headers, order_body([(sku, 3)]), key=f"key-{uid}"), 409)
    assert count(Order, Order.customer_id == user.id) == 1


def test_without_a_key_every_post_is_a_new_order(client, shopper):
    user, headers, sku = shopper
    ids = {place(client, headers, order_body([(sku, 1)])).get_json()["id"] for _ in range(2)}
    assert len(ids) == 2 and count(Order, Order.customer_id == user.id) == 2


def test_an_unknown_sku_is_404_and_stores_nothing(client, shopper, uid):
    user, headers, sku = shopper
    problem(place(client, headers, order_body([(sku, 1), (f"NOPE{uid}", 1)])), 404)
    assert count(Order, Order.customer_id == user.id) == 0


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda body: body.update(lines=body["lines"] * 101), "lines"),
        (lambda body: body.update(lines=[]), "lines"),
        (lambda body: body["lines"][0].update(quantity=0), "lines.0.quantity"),
        (lambda body: body["lines"][0].update(quantity=1001), "lines.0.quantity"),
        (lambda body: body["lines"][0].update(quantity="2"), "lines.0.quantity"),
        (lambda body: body["shipping_address"].update(zip="SW1"), "shipping_address.zip"),
        (lambda body: body["payment"].update(cvv="123"), "payment.cvv"),
        (lambda body: body["lines"][0].update(colour="red"), "lines.0.colour"),
        (lambda body: body.pop("payment"), "payment"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(client, shopper, change, field):
    user, headers, sku = shopper
    body = order_body([(sku, 1)])
    change(body)
    assert field in problem(place(client, headers, body), 422)["errors"]
    assert count(Order, Order.customer_id == user.id) == 0


def test_an_overlong_idempotency_key_is_422(client, shopper):
    _, headers, sku = shopper
    errors = problem(place(client, headers, order_body([(sku, 1)]), key="k" * 256), 422)["errors"]
    assert "Idempotency-Key" in errors


def test_a_body_over_64_kib_is_413(client, shopper):
    _, headers, sku = shopper
    body = order_body([(sku, 1)])
    body["shipping_address"]["line2"] = "x" * 70_000
    problem(place(client, headers, body), 413)


def test_orders_need_an_access_token_and_a_customer(client, uid):
    sku = product(uid, on_hand=5)
    problem(place(client, {}, order_body([(sku, 1)])), 401)
    problem(place(client, auth(client, customer(uid, role="operator")), order_body([(sku, 1)])), 403)


def test_another_customers_order_does_not_exist_for_them(client, shopper, uid):
    _, headers, sku = shopper
    order_id = place(client, headers, order_body([(sku, 1)])).get_json()["id"]
    stranger = auth(client, customer(uid + "s"))
    problem(client.get(f"{API}/orders/{order_id}", headers=stranger), 404)
    problem(client.post(f"{API}/orders/{order_id}/cancel", headers=stranger), 404)
    problem(
        client.post(f"{API}/orders/{order_id}/payment", json={"token": "tok_visa"}, headers=stranger), 404
    )
    assert order_id not in [
        o["id"] for o in client.get(f"{API}/orders", headers=stranger).get_json()["items"]
    ]
    operator = auth(client, customer(uid, role="operator"))
    assert client.get(f"{API}/orders/{order_id}", headers=operator).status_code == 200


def test_an_unknown_or_malformed_order_id_is_404(client, shopper):
    _, headers, _ = shopper
    problem(client.get(f"{API}/orders/{uuid.uuid4()}", headers=headers), 404)
    problem(client.get(f"{API}/orders/not-a-uuid", headers=headers), 404)


def test_the_list_is_newest_first_paged_and_filtered(client, shopper):
    _, headers, sku = shopper
    ids = [place(client, headers, order_body([(sku, 1)])).get_json()["id"] for _ in range(3)]
    set_status(ids[0], "cancelled")
    first = client.get(f"{API}/orders", query_string={"limit": 2}, headers=headers).get_json()
    rest = client.get(
        f"{API}/orders", query_string={"limit": 2, "cursor": first["next_cursor"]}, headers=headers
    ).get_json()
    assert [o["id"] for o in first["items"] + rest["items"]] == ids[::-1]
    assert rest["next_cursor"] is None
    cancelled = client.get(f"{API}/orders", query_string={"status": "cancelled"}, headers=headers).get_json()
    assert [o["id"] for o in cancelled["items"]] == [ids[0]]


def test_an_operator_lists_every_customers_orders(client, shopper, uid):
    _, headers, sku = shopper
    mine = place(client, headers, order_body([(sku, 1)])).get_json()["id"]
    other = place(client, auth(client, customer(uid + "o")), order_body([(sku, 1)])).get_json()["id"]
    operator = auth(client, customer(uid, role="operator"))
    listed = client.get(f"{API}/orders", query_string={"limit": 100}, headers=operator).get_json()["items"]
    assert {mine, other} <= {o["id"] for o in listed}


@pytest.mark.parametrize(
    "query, field",
    [({"status": "lost"}, "status"), ({"limit": 0}, "limit"), ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor")],
)
def test_bad_list_parameters_are_422(client, shopper, query, field):
    _, headers, _ = shopper
    assert field in problem(client.get(f"{API}/orders", query_string=query, headers=headers), 422)["errors"]


def test_cancel_starts_compensation_once(client, shopper):
    _, headers, sku = shopper
    order_id = place(client, headers, order_body([(sku, 1)])).get_json()["id"]
    response = client.post(f"{API}/orders/{order_id}/cancel", headers=headers)
    assert response.status_code == 202
    assert (response.get_json()["status"], response.get_json()["cancel_reason"]) == (
        "compensating",
        "customer_request",
    )
    problem(client.post(f"{API}/orders/{order_id}/cancel", headers=headers), 409)


def test_paying_again_needs_awaiting_payment(client, shopper):
    _, headers, sku = shopper
    order_id = place(client, headers, order_body([(sku, 1)])).get_json()["id"]
    problem(client.post(f"{API}/orders/{order_id}/payment", json={"token": "tok_visa"}, headers=headers), 409)
    set_status(order_id, "awaiting_payment")
    problem(
        client.post(f"{API}/orders/{order_id}/payment", json={"token": "tok_visa", "x": 1}, headers=headers),
        422,
    )
    response = client.post(f"{API}/orders/{order_id}/payment", json={"token": "tok_visa"}, headers=headers)
    assert response.status_code == 202 and response.get_json()["status"] == "stock_reserved"


def test_retry_is_for_operators_and_failed_or_stuck_orders(client, shopper, uid):
    _, headers, sku = shopper
    order_id = place(client, headers, order_body([(sku, 1)])).get_json()["id"]
    set_status(order_id, "failed")
    problem(client.post(f"{API}/orders/{order_id}/retry", headers=headers), 403)
    operator = auth(client, customer(uid, role="operator"))
    response = client.post(f"{API}/orders/{order_id}/retry", headers=operator)
    assert response.status_code == 202 and response.get_json()["status"] == "pending"
    set_status(order_id, "cancelled")
    problem(client.post(f"{API}/orders/{order_id}/retry", headers=operator), 409)
    problem(client.post(f"{API}/orders/{uuid.uuid4()}/retry", headers=operator), 404)


def test_too_many_orders_from_one_customer_is_429(uid):
    client = create_app({"ORDER_RATE_LIMIT": "2 per minute"}).test_client()
    user = customer(uid)
    headers, sku = auth(client, user), product(uid, on_hand=10)
    for _ in range(2):
        assert place(client, headers, order_body([(sku, 1)])).status_code == 202
    response = place(client, headers, order_body([(sku, 1)]))
    problem(response, 429)
    assert int(response.headers["Retry-After"]) >= 1
    assert count(Order, Order.customer_id == user.id) == 2


@pytest.mark.parametrize("redis_url", ["services", None], ids=["redis", "table"])
def test_revoked_tokens_are_401_and_spend_nothing_of_the_order_rate_limit(uid, redis_url):
    """A logged-out or logged-out-everywhere token is refused (401) before its
    request counts against the order rate limit: it cannot use up its user's budget."""
    config = {"ORDER_RATE_LIMIT": "2 per minute"} | ({} if redis_url else {"ORION_REDIS_URL": None})
    client = create_app(config).test_client()
    user, sku = customer(uid), product(uid, on_hand=10)
    logged_out, everywhere = auth(client, user), auth(client, user)
    assert client.post(f"{API}/auth/logout", headers=logged_out).status_code == 204
    for _ in range(3):
        assert "revoked" in problem(place(client, logged_out, order_body([(sku, 1)])), 401)["detail"]
    assert client.post(f"{API}/auth/logout-all", headers=everywhere).status_code == 204
    for _ in range(3):
        problem(place(client, everywhere, order_body([(sku, 1)])), 401)
    fresh = auth(client, user)
    assert [place(client, fresh, order_body([(sku, 1)])).status_code for _ in range(2)] == [202, 202]
    refused = place(client, fresh, order_body([(sku, 1)]))
    assert "2 per 1 minute" in problem(refused, 429)["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert count(Order, Order.customer_id == user.id) == 2


def test_the_placement_itself_refuses_a_token_of_a_gone_or_logged_out_user(client, uid):
    """The user check of POST /orders is the placement's own lock on the user's
    row: it holds without the blocklist (a lost Redis) and for a deleted user."""
    user, sku = customer(uid), product(uid, on_hand=10)
    headers = auth(client, user)
    with unit_of_work() as session:  # logged out everywhere, as the blocklist never heard
        session.execute(update(User).where(User.id == user.id).values(token_generation=1))
    refused = problem(place(client, headers, order_body([(sku, 1)]), key=f"k-{uid}"), 401)
    assert refused["detail"] == "the token's user no longer exists"
    gone = customer(uid + "g")
    gone_headers = auth(client, gone)
    with unit_of_work() as session:
        session.execute(delete(User).where(User.id == gone.id))
    problem(place(client, gone_headers, order_body([(sku, 1)])), 401)
    assert count(Order, Order.customer_id.in_([user.id, gone.id])) == 0


def test_an_open_order_past_the_limit_is_429_naming_it(client, shopper):
    # SPEC: at most MAX_OPEN_ORDERS (20) orders that are not final per customer.
    user, headers, sku = shopper
    placed = [place(client, headers, order_body([(sku, 1)])) for _ in range(20)]
    assert {r.status_code for r in placed} == {202}
    refused = place(client, headers, order_body([(sku, 1)]))
    body = problem(refused, 429)
    assert "20 open orders" in body["detail"] and "MAX_OPEN_ORDERS" in body["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    assert count(Order, Order.customer_id == user.id) == 20
    set_status(placed[0].get_json()["id"], "completed")  # a final order frees a place
    assert place(client, headers, order_body([(sku, 1)])).status_code == 202


def test_units_held_in_open_orders_are_capped_per_customer(client, shopper, monkeypatch):
    """Security issue item 3: one account cannot hoard the stock (MAX_OPEN_UNITS)."""
    from config import reset_settings

    user, headers, sku = shopper
    monkeypatch.setenv("MAX_OPEN_UNITS", "2500")
    reset_settings()
    try:
        assert place(client, headers, order_body([(sku, 1000), (sku, 1000)])).status_code == 202
        refused = place(client, headers, order_body([(sku, 501)]))
        body = problem(refused, 429)
        assert "MAX_OPEN_UNITS" in body["detail"] and "2000" in body["detail"]
        assert int(refused.headers["Retry-After"]) > 0
        assert place(client, headers, order_body([(sku, 500)])).status_code == 202  # exactly 2,500
        assert count(Order, Order.customer_id == user.id) == 2
    finally:
        monkeypatch.undo()
        reset_settings()


def test_concurrent_placements_cannot_pass_the_open_order_limit(uid):
    from concurrent.futures import ThreadPoolExecutor

    from services.errors import TooManyOpenOrders
    from services.ordering import place_order

    user, sku = customer(uid), product(uid, on_hand=50)

    def attempt(_):
        try:
            return place_order(user.id, order_body([(sku, 1)]), None, max_open=4).order_id
        except TooManyOpenOrders:
            return None

    with ThreadPoolExecutor(10) as threads:
        outcomes = list(threads.map(attempt, range(10)))
    assert sum(o is not None for o in outcomes) == 4
    assert count(Order, Order.customer_id == user.id) == 4


@pytest.mark.parametrize(
    "raw, field",
    [
        ('"name": "Ada\\u0000Lovelace"', "shipping_address.name"),  # NUL
        ('"name": "Ada \\ud800"', "shipping_address.name"),  # a lone surrogate
    ],
)
def test_text_postgresql_cannot_store_is_422_not_500(client, shopper, raw, field):
    _, headers, sku = shopper
    text = (
        f'{{"lines": [{{"sku": "{sku}", "quantity": 1}}], "payment": {{"token": "tok_visa"}}, '
        f'"shipping_address": {{{raw}, "line1": "1 Main St", "city": "London", '
        '"postal_code": "E1 6AN", "country": "GB"}}'
    )
    response = client.post(f"{API}/orders", data=text, content_type="application/json", headers=headers)
    assert field in problem(response, 422)["errors"]


def test_a_nul_in_a_registration_or_a_query_is_422(client, shopper):
    _, headers, _ = shopper
    register = client.post(
        f"{API}/auth/register",
        content_type="application/json",
        data='{"email": "nul@example.com", "password": "long enough pw 1", "name": "Eve\\u0000"}',
    )
    assert "name" in problem(register, 422)["errors"]
    listing = client.get(f"{API}/orders?status=pending%00", headers=headers)
    assert problem(listing, 422)["status"] == 422
