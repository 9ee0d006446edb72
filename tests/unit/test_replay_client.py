"""The replay's HTTP behaviour against an in-memory fake of the SPEC's API (no sockets)."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests

import tools.replay.client as replay_module
from tests.unit.test_replay_plan import invoice
from tools.replay import Accounts, Api, ApiError, Replay, parse_tokens, plan, summarize

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
HOLD = "99999Z"


class Response:
    def __init__(self, status: int, body=None, headers=None, method="GET", url=""):
        self.status_code, self._body, self.headers = status, body, headers or {}
        self.request, self.url = type("Req", (), {"method": method})(), url

    def json(self):
        if self._body is None:
            raise ValueError("no JSON")
        return self._body


class FakeApi:
    """Just enough of SPEC.md: auth, orders (202), GET, cancel, payment. Orders holding the
    sku ``HOLD`` (99999Z) stay ``stock_reserved`` until cancelled; others settle on their first GET."""

    def __init__(self):
        self.lock, self.log, self.ids = threading.Lock(), [], itertools.count(1)
        self.users, self.tokens, self.orders, self.keys = {}, {}, {}, {}
        self.faults: list[Response | Exception] = []  # served first, one per request

    def session(self):
        return self

    def request(self, method, url, json=None, headers=None, timeout=None):
        with self.lock:
            path = url.split("/api/v1", 1)[-1]
            self.log.append((method, path, dict(headers or {})))
            if self.faults:
                fault = self.faults.pop(0)
                if isinstance(fault, Exception):
                    raise fault
                return fault
            return self.route(method, path, json or {}, (headers or {}).get("Authorization", ""))

    def route(self, method, path, body, auth):
        if path == "/auth/register":
            if body["email"] in self.users:
                return Response(409, {"status": 409})
            self.users[body["email"]] = body["password"]
            return Response(201, {"email": body["email"]})
        if path == "/auth/login":
            if self.users.get(body["email"]) != body["password"]:
                return Response(401, {"status": 401})
            token = f"t{next(self.ids)}"
            self.tokens[token] = body["email"]
            return Response(200, {"access_token": token, "token_type": "Bearer"})
        user = self.tokens.get(auth.removeprefix("Bearer "))
        if user is None:
            return Response(401, {"status": 401})
        return self.orders_route(method, path, body, user)

    def orders_route(self, method, path, body, user):
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/orders":
            return self.place(body, user, self.log[-1][2].get("Idempotency-Key"))
        order = self.orders.get(parts[1])
        if order is None or order["owner"] != user:
            return Response(404, {"status": 404})
        if method == "GET":
            self.advance(order)
            return Response(200, {k: v for k, v in order.items() if k not in ("owner", "body")})
        if parts[2] == "cancel":
            if order["status"] in ("completed", "cancelled", "failed", "shipped"):
                return Response(409, {"status": 409})
            self.finish(order, "cancelled", "customer_request")
            return Response(202, {"id": order["id"]})
        if order["status"] != "awaiting_payment":
            return Response(409, {"status": 409})
        order["status"], order["token"] = "pending", body["token"]
        return Response(202, {"id": order["id"]})

    def place(self, body, user, key):
        if (user, key) in self.keys:
            return Response(202, {"id": self.keys[user, key], "status": "pending"})
        n = next(self.ids)
        order = {
            "id": f"o{n}",
            "owner": user,
            "status": "pending",
            "cancel_reason": None,
            "body": body,
            "token": body["payment"]["token"],
            "created_at": (T0 + timedelta(seconds=n)).isoformat(),
            "finished_at": None,
        }
        self.orders[order["id"]] = order
        self.keys[user, key] = order["id"]
        return Response(202, {"id": order["id"], "status": "pending"}, {"Location": f"/orders/o{n}"})

    def advance(self, order):
        if order["status"] != "pending":
            return
        if any(line["sku"] == HOLD for line in order["body"]["lines"]):
            order["status"] = "stock_reserved"
        elif order["token"] == "tok_chargeDeclinedInsufficientFunds":
            order["status"] = "awaiting_payment"
        else:
            self.finish(order, "completed", None)

    def finish(self, order, status, reason):
        created = datetime.fromisoformat(order["created_at"])
        order.update(
            status=status,
            cancel_reason=reason,
            finished_at=(created + timedelta(seconds=2)).isoformat().replace("+00:00", "Z"),
        )


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(replay_module, "POLL_INTERVAL_S", 0.01)
    return FakeApi()


def api_for(fake, sleeps=None) -> Api:
    return Api(
        "http://orion.test",
        sleep=(sleeps.append if sleeps is not None else lambda _s: None),
        session_factory=fake.session,
    )


def test_5xx_and_network_errors_are_retried_with_backoff(fake):
    sleeps = []
    fake.faults = [Response(503), requests.ConnectionError("reset")]
    response = api_for(fake, sleeps).request("POST", "/auth/register", json={"email": "a@x", "password": "p"})
    assert response.status_code == 201 and sleeps == [0.5, 1.0]


def test_errors_that_outlast_the_retries_are_raised_by_kind(fake):
    fake.faults = [requests.Timeout("slow")] * 4
    with pytest.raises(ApiError) as raised:
        api_for(fake).request("GET", "/orders/o1")
    assert raised.value.kind == "network" and fake.faults == [] and len(fake.log) == 4


def test_429_waits_for_retry_after(fake):
    sleeps = []
    fake.faults = [Response(429, headers={"Retry-After": "3"})]
    response = api_for(fake, sleeps).request("POST", "/auth/login", json={"email": "a@x", "password": "p"})
    assert response.status_code == 401
    assert sleeps == [3.0]


def test_accounts_register_once_log_in_once_and_renew_on_401(fake):
    fake.users["customer-1@replay.orion.example"] = "pw"  # registered by an earlier run
    accounts = Accounts(api_for(fake), "pw")
    email = "customer-1@replay.orion.example"
    first = accounts.token(email)
    assert accounts.token(email) == first
    fake.tokens.clear()  # the server forgot it (expiry, restart)
    assert accounts.call(email, "GET", "/orders/none").status_code == 404
    paths = [p for _, p, _ in fake.log]
    assert paths == ["/auth/register", "/auth/login", "/orders/none", "/auth/login", "/orders/none"]


def test_a_wrong_password_is_an_error_naming_the_customer(fake):
    fake.users["guest@replay.orion.example"] = "other"
    with pytest.raises(ApiError, match=r"login_401.*guest@replay"):
        Accounts(api_for(fake), "pw").token("guest@replay.orion.example")


def run(fake, invoices, tokens="tok_visa=1", timeout=5.0):
    actions, stats = plan(invoices, 0, parse_tokens(tokens))
    replay = Replay(Accounts(api_for(fake), "pw"), concurrency=4, progress=False)
    replay.run(actions, timeout)
    return summarize(stats, replay.tally.counts, replay.states(), Counter())


def test_replay_places_pays_again_cancels_and_waits_for_final_states(fake):
    summary = run(
        fake,
        [
            invoice("1", (HOLD, 1), ("22423", 1)),
            invoice("2", ("22423", 2)),
            invoice("3", ("85123A", 1), customer="12346"),
            invoice("C4", (HOLD, -1), minute=3),
        ],
        tokens="tok_chargeDeclinedInsufficientFunds=1",
    )
    assert summary["orders"] == {"placed": 3}
    assert summary["cancellations"] == {"sent": 1, "accepted": 1}
    assert summary["repayments"] == {"accepted": 2}
    assert summary["final"] == {"cancelled": 1, "completed": 2}
    assert summary["cancel_reasons"] == {"customer_request": 1}
    assert summary["all_final"] and summary["latency_s"]["max"] == 2.0
    keys = [h.get("Idempotency-Key") for m, p, h in fake.log if (m, p) == ("POST", "/orders")]
    assert sorted(keys) == ["invoice-1", "invoice-2", "invoice-3"]
    payments = [h for m, p, h in fake.log if p.endswith("/payment")]
    assert len(payments) == 2


def test_a_cancellation_skips_orders_no_longer_cancellable(fake):
    summary = run(fake, [invoice("1", ("22423", 1)), invoice("C2", ("22423", -1), minute=1)])
    assert summary["cancellations"] == {"sent": 0, "none_cancellable": 1}
    assert summary["final"] == {"completed": 1}


def test_orders_still_open_at_the_timeout_are_reported(fake):
    summary = run(fake, [invoice("1", (HOLD, 1))], timeout=0.2)
    assert summary["not_final"] == {"stock_reserved": 1} and summary["all_final"] is False


def test_rejected_orders_are_counted_by_status(fake):
    fake.faults = [Response(201, {}), Response(200, {"access_token": "nope"}), Response(422, {"status": 422})]
    summary = run(fake, [invoice("1", ("22423", 1))])
    assert summary["orders"] == {"rejected_422": 1} and summary["all_final"] is True
