"""The Socket.IO relay on the real services: gunicorn as the launcher starts it,
a Celery worker emitting through Redis, python-socketio clients (SPEC "Socket.IO")."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest
import requests
import socketio
from sqlalchemy import select, update

from config import get_settings
from models import Inventory, Order, OrderEvent, read_only, unit_of_work
from tests.support.factories import customer, eventually, order_body, product
from tests.support.processes import web_server

PASSWORD = "correct horse battery"
FINAL = ("completed", "cancelled", "failed")


@pytest.fixture(scope="module")
def web(worker):
    with web_server() as base:
        yield base


def login(base: str, user) -> str:
    reply = requests.post(f"{base}/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    reply.raise_for_status()
    return reply.json()


class Listener:
    """A connected client that records every event it receives, with arrival order."""

    def __init__(self, base: str, token: str) -> None:
        self.events: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        for name in ("order.updated", "inventory.low", "inventory.restocked"):
            self.client.on(name, self._recorder(name))
        self.client.connect(base, auth={"token": token}, transports=["websocket"], wait_timeout=10)

    def _recorder(self, name: str):
        def record(data):
            with self.lock:
                self.events.append((name, data))

        return record

    def of(self, name: str, **match) -> list[dict]:
        with self.lock:
            return [d for n, d in self.events if n == name and all(d.get(k) == v for k, v in match.items())]

    def subscribe(self, order_id: str, after_seq: int | None = None) -> dict:
        payload = {"order_id": order_id} | ({} if after_seq is None else {"after_seq": after_seq})
        return self.client.call("subscribe", payload, timeout=10)

    def close(self) -> None:
        self.client.disconnect()


class SeqTracker:
    """The client rule from SPEC: apply each order's events in seq order, once."""

    def __init__(self) -> None:
        self.applied: list[dict] = []
        self.waiting: dict[int, dict] = {}
        self.repeats = 0

    @property
    def last(self) -> int:
        return self.applied[-1]["seq"] if self.applied else 0

    def feed(self, events: list[dict]) -> None:
        for event in events:
            if event["seq"] <= self.last or event["seq"] in self.waiting:
                self.repeats += 1
                continue
            self.waiting[event["seq"]] = event
            while self.last + 1 in self.waiting:
                self.applied.append(self.waiting.pop(self.last + 1))


def place(base: str, token: str, sku: str, payment: str = "tok_visa") -> str:
    reply = requests.post(
        f"{base}/api/v1/orders",
        json=order_body([(sku, 1)], payment),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def logged_events(order_id: str) -> list[dict]:
    with read_only() as session:
        return [
            e.to_dict()
            for e in session.scalars(
                select(OrderEvent).where(OrderEvent.order_id == uuid.UUID(order_id)).order_by(OrderEvent.seq)
            )
        ]


def final_seq(order_id: str) -> int:
    def check():
        with read_only() as session:
            order = session.get(Order, uuid.UUID(order_id))
            return order.last_event_seq if order.status in FINAL else None

    eventually(check, timeout=60)
    time.sleep(0.5)  # the final step's trailing events (e.g. an email) settle
    with read_only() as session:
        return session.get(Order, uuid.UUID(order_id)).last_event_seq


def current(order_id: str) -> tuple[str, int]:
    """The order's committed status and last event seq."""
    with read_only() as session:
        order = session.get(Order, uuid.UUID(order_id))
        return order.status, order.last_event_seq


def forged_token(user_id: int, **claims) -> str:
    now = datetime.now(UTC)
    body = {
        "sub": str(user_id),
        "type": "access",
        "jti": uuid.uuid4().hex,
        "fresh": False,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "role": "customer",
        "iss": "orion",
        "aud": "orion-api",
    } | claims
    return pyjwt.encode(body, get_settings().jwt_secret_key, algorithm="HS256")


def refused(base: str, auth) -> bool:
    """True when the server refuses the connection with SPEC's ``unauthorized``."""
    client, errors = socketio.Client(reconnection=False), []
    client.on("connect_error", errors.append)
    try:
        client.connect(base, auth=auth, transports=["websocket"], wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        assert errors == [{"message": "unauthorized"}], errors
        return True
    client.disconnect()
    return False


def test_connect_is_refused_without_a_valid_access_token(web, uid):
    user = customer(uid)
    tokens = login(web, user)
    past = datetime.now(UTC) - timedelta(minutes=1)
    assert refused(web, None)
    assert refused(web, {"token": "not-a-jwt"})
    assert refused(
        web,
        {
            "token": forged_token(
                user.id, exp=past, iat=past - timedelta(minutes=5), nbf=past - timedelta(minutes=5)
            )
        },
    )
    assert refused(web, {"token": tokens["refresh_token"]})
    assert refused(web, {"token": forged_token(user.id, iss="someone-else")}), "RFC 8725 §3.10"
    assert refused(web, {"token": forged_token(user.id, aud="another-api")})
    assert not refused(web, {"token": forged_token(user.id)})
    assert not refused(web, {"token": tokens["access_token"]})
    requests.post(
        f"{web}/api/v1/auth/logout", json={}, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).raise_for_status()
    assert refused(web, {"token": tokens["access_token"]}), "a revoked token is refused"


def test_each_event_follows_its_commit_and_seq_rises_by_one(web, uid):
    sku, user = product(uid, 10), customer(uid)
    token = login(web, user)["access_token"]
    listener = Listener(web, token)
    committed: list[tuple[int, int]] = []

    def check_commit(event):  # runs as each event arrives
        with read_only() as session:
            order = session.get(Order, uuid.UUID(event["order_id"]))
            committed.append((event["seq"], order.last_event_seq if order else 0))

    listener.client.on("order.updated", lambda e: (listener._recorder("order.updated")(e), check_commit(e)))
    order_id = place(web, token, sku)
    last = final_seq(order_id)
    eventually(lambda: len(listener.of("order.updated", order_id=order_id)) >= last, timeout=10)
    listener.close()

    # Parallel steps (a chord header) commit and publish independently, so arrival
    # order may differ from seq order; each seq arrives once.
    received = sorted(listener.of("order.updated", order_id=order_id), key=lambda e: e["seq"])
    assert [e["seq"] for e in received] == list(range(1, last + 1))
    assert received == logged_events(order_id)
    assert received[-1]["status"] == "completed"
    assert all(in_db >= seq for seq, in_db in committed), committed


def test_only_the_owner_and_operators_see_an_order(web, uid):
    sku = product(uid, 10)
    owner, other, operator = customer(uid), customer(uid + "b"), customer(uid, role="operator")
    owner_token = login(web, owner)["access_token"]
    listeners = {
        name: Listener(web, login(web, user)["access_token"])
        for name, user in (("owner", owner), ("other", other), ("operator", operator))
    }
    order_id = place(web, owner_token, sku)
    last = final_seq(order_id)
    eventually(lambda: len(listeners["operator"].of("order.updated", order_id=order_id)) >= last)
    eventually(lambda: len(listeners["owner"].of("order.updated", order_id=order_id)) >= last)

    assert listeners["other"].subscribe(order_id, after_seq=0) == {"ok": False, "error": "not_found"}
    assert listeners["other"].subscribe(str(uuid.uuid4())) == {"ok": False, "error": "not_found"}
    assert listeners["operator"].subscribe(order_id) == {"ok": True}
    time.sleep(0.5)
    assert listeners["other"].of("order.updated", order_id=order_id) == []
    for listener in listeners.values():
        listener.close()


def test_subscribe_replays_after_seq_and_rejects_bad_input(web, uid):
    sku, user = product(uid, 10), customer(uid)
    token = login(web, user)["access_token"]
    order_id = place(web, token, sku)
    last = final_seq(order_id)
    listener = Listener(web, token)
    assert listener.subscribe(order_id) == {"ok": True}
    time.sleep(0.3)
    assert listener.of("order.updated", order_id=order_id) == [], "no replay without after_seq"
    assert listener.subscribe(order_id, after_seq=last - 3) == {"ok": True}
    eventually(lambda: len(listener.of("order.updated", order_id=order_id)) == 3)
    assert listener.of("order.updated", order_id=order_id) == logged_events(order_id)[-3:]
    bad = listener.client.call("subscribe", {"order_id": "nope", "after_seq": -1, "extra": 1}, timeout=10)
    assert bad["ok"] is False and bad["error"] == "invalid_request"
    assert set(bad["errors"]) == {"order_id", "after_seq", "extra"}
    listener.close()


def test_a_client_that_drops_mid_order_resumes_with_every_event_once(web, uid):
    """Disconnect after the first events, miss some, reconnect with ``after_seq``."""
    sku, user = product(uid, 10), customer(uid)
    token = login(web, user)["access_token"]
    first = Listener(web, token)
    order_id = place(web, token, sku, "tok_flaky")  # two authorization timeouts: retries
    assert first.subscribe(order_id, after_seq=0) == {"ok": True}
    eventually(lambda: len({e["seq"] for e in first.of("order.updated", order_id=order_id)}) >= 3, timeout=30)
    first.close()
    tracker = SeqTracker()
    tracker.feed(first.of("order.updated", order_id=order_id))
    # Resume while the second retry's backoff (1 to 2 s) holds the saga in flight.
    eventually(
        lambda: any(e["step_status"] == "retrying" and e["attempt"] == 2 for e in logged_events(order_id)),
        timeout=60,
        interval=0.02,
    )
    assert current(order_id)[1] > tracker.last, "events went by unseen"

    second = Listener(web, token)
    assert second.subscribe(order_id, after_seq=tracker.last) == {"ok": True}
    status_on_resume = current(order_id)[0]
    last = final_seq(order_id)
    eventually(lambda: max([e["seq"] for e in second.of("order.updated", order_id=order_id)] or [0]) >= last)
    second.close()
    tracker.feed(second.of("order.updated", order_id=order_id))

    assert status_on_resume not in FINAL, "resumed while the saga was still running"
    assert [e["seq"] for e in tracker.applied] == list(range(1, last + 1))
    assert tracker.applied == logged_events(order_id)
    assert any(e["step_status"] == "retrying" for e in tracker.applied)
    assert tracker.applied[-1]["status"] == "completed"


def test_operators_hear_when_stock_falls_through_its_reorder_point(web, uid):
    sku, user, operator = product(uid, 6), customer(uid), customer(uid, role="operator")
    with unit_of_work() as session:
        session.execute(update(Inventory).where(Inventory.sku == sku).values(reorder_point=6))
    token = login(web, user)["access_token"]
    ops, buyer = Listener(web, login(web, operator)["access_token"]), Listener(web, token)
    order_id = place(web, token, sku)
    final_seq(order_id)
    low = eventually(lambda: ops.of("inventory.low", sku=sku), timeout=10)
    assert low == [{"sku": sku, "available": 5, "reorder_point": 6}]
    assert buyer.of("inventory.low") == []
    ops.close()
    buyer.close()


# --- connections that lose their right to be open (SPEC "Socket.IO") ----------------


def _closed_within(listener: Listener, seconds: float) -> float:
    """Seconds until the server closed ``listener``'s connection; fails after ``seconds``."""
    start = time.monotonic()
    while listener.client.connected:
        assert time.monotonic() - start < seconds, "the connection is still open"
        time.sleep(0.1)
    return time.monotonic() - start


def _post(base: str, path: str, token: str, body: dict | None = None) -> requests.Response:
    return requests.post(
        f"{base}/api/v1{path}", json=body or {}, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_logout_closes_the_open_socket_of_that_token_within_5_s(web, uid):
    user = customer(uid)
    gone, staying = login(web, user), login(web, user)
    closing, other = Listener(web, gone["access_token"]), Listener(web, staying["access_token"])
    try:
        assert _post(web, "/auth/logout", gone["access_token"]).status_code == 204
        _closed_within(closing, 5)
        assert other.client.connected  # another login of the same user stays
    finally:
        other.client.disconnect()


def test_logout_all_closes_every_socket_of_the_user_within_5_s(web, uid):
    user, bystander = customer(uid), customer(uid + "b")
    sessions = [login(web, user) for _ in range(2)]
    theirs = Listener(web, login(web, bystander)["access_token"])
    listeners = [Listener(web, tokens["access_token"]) for tokens in sessions]
    try:
        assert _post(web, "/auth/logout-all", sessions[0]["access_token"]).status_code == 204
        for listener in listeners:
            _closed_within(listener, 5)
        assert theirs.client.connected
        assert refused(web, {"token": sessions[1]["access_token"]})
    finally:
        theirs.client.disconnect()


def test_a_socket_closes_when_its_token_expires(web, uid):
    user = customer(uid)
    now = datetime.now(UTC)
    listener = Listener(web, forged_token(user.id, exp=now + timedelta(seconds=3)))
    elapsed = _closed_within(listener, 3 + 5)
    assert elapsed >= 1.5  # not before it expired


def test_an_operator_demoted_or_deleted_loses_the_socket(web, uid):
    from models import User

    demoted = customer(uid, role="operator")
    listener = Listener(web, login(web, demoted)["access_token"])
    with unit_of_work() as session:
        session.execute(update(User).where(User.id == demoted.id).values(role="customer"))
    _closed_within(listener, 5)


def test_connection_limits_and_the_authentication_deadline():
    import simple_websocket

    env = {
        "SOCKETIO_MAX_PER_USER": "2",
        "SOCKETIO_MAX_PER_ADDRESS": "3",
        "SOCKETIO_AUTH_SECONDS": "2",
        "SOCKETIO_CHECK_SECONDS": "1",
    }
    uid = uuid.uuid4().hex[:8]
    with web_server(env) as base:
        one, two = customer(uid + "1"), customer(uid + "2")
        mine = [Listener(base, login(base, one)["access_token"]) for _ in range(2)]
        try:
            assert _refused_with(base, login(base, one)["access_token"]) == "too_many_connections"
            third = Listener(base, login(base, two)["access_token"])  # 3 from this address
            assert _refused_with(base, login(base, two)["access_token"]) == "too_many_connections"
            third.client.disconnect()
            mine.append(Listener(base, login(base, two)["access_token"]))  # a slot came free
        finally:
            for listener in mine:
                listener.client.disconnect()
        # A transport that never authenticates is closed after the deadline.
        ws = simple_websocket.Client.connect(
            f"{base.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket"
        )
        start = time.monotonic()
        try:
            while time.monotonic() - start < 8:
                ws.receive(timeout=0.5)
            pytest.fail("an unauthenticated transport stayed open past the deadline")
        except simple_websocket.ConnectionClosed:
            assert time.monotonic() - start >= 1.5
        finally:
            if ws.connected:
                ws.close()


def _refused_with(base: str, token: str) -> str | None:
    client, errors = socketio.Client(reconnection=False), []
    client.on("connect_error", errors.append)
    try:
        client.connect(base, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        return errors[0]["message"] if errors else "refused"
    client.disconnect()
    return None


def test_a_flood_of_idle_websockets_from_one_address_is_refused_and_the_api_answers():
    """Transports beyond 2 x SOCKETIO_MAX_PER_ADDRESS from one address get 429 at
    once, so they hold no server thread; the API keeps answering meanwhile
    (bench.socket_flood measures the same with 2,000 connections)."""
    import asyncio

    from bench.socket_flood import _flood

    with web_server({"SOCKETIO_MAX_PER_ADDRESS": "5", "SOCKETIO_AUTH_SECONDS": "30"}) as base:
        outcome = {"admitted": 0, "refused": 0, "closed_by_server": 0, "failed": 0}

        async def flood_and_read():
            flood = asyncio.create_task(_flood(base, 60, 4.0, outcome))
            await asyncio.sleep(1.5)
            reply = await asyncio.to_thread(requests.get, f"{base}/api/v1/products?limit=5", timeout=5)
            await flood
            return reply.status_code

        assert asyncio.run(flood_and_read()) == 200
    assert outcome["admitted"] == 10 and outcome["refused"] == 50, outcome


def test_subscriptions_are_limited_per_connection_and_each_rechecks_the_token(uid):
    """Security issue item 1: ``subscribe`` had no limit (each one reads the
    database, and a replay all of an order's events), and a logged-out token kept
    subscribing until the next periodic check."""
    env = {
        "SOCKETIO_MAX_SUBSCRIPTIONS": "2",
        "SOCKETIO_SUBSCRIBE_PER_SECOND": "4",
        "SOCKETIO_CHECK_SECONDS": "600",  # only the subscribe's own check can close it here
    }
    with web_server(env) as base:
        user, sku = customer(uid), product(uid, on_hand=50)
        tokens = login(base, user)
        orders = [place(base, tokens["access_token"], sku) for _ in range(3)]
        listener = Listener(base, tokens["access_token"])
        try:
            assert listener.subscribe(orders[0]) == {"ok": True}
            assert listener.subscribe(orders[1]) == {"ok": True}
            assert listener.subscribe(orders[0]) == {"ok": True}  # a room it is in: not one more
            time.sleep(1.0)  # the bucket refills
            assert listener.subscribe(orders[2]) == {"ok": False, "error": "too_many_subscriptions"}
            replies = [listener.subscribe(str(uuid.uuid4())) for _ in range(8)]
            limited = [r for r in replies if r["error"] == "rate_limited"]
            assert len(limited) >= 3 and all(0 < r["retry_after"] <= 0.25 for r in limited)
            others = [r["error"] for r in replies if r not in limited]  # within the rate, over the rooms
            assert others == ["too_many_subscriptions"] * (8 - len(limited))
            time.sleep(1.0)
            assert _post(base, "/auth/logout", tokens["access_token"]).status_code == 204
            assert listener.subscribe(orders[0]) == {"ok": False, "error": "unauthorized"}
            _closed_within(listener, 5)
            # Logged out everywhere from another device: refused at its next subscribe too.
            other, elsewhere = Listener(base, login(base, user)["access_token"]), login(base, user)
            assert other.subscribe(orders[0]) == {"ok": True}
            assert _post(base, "/auth/logout-all", elsewhere["access_token"]).status_code == 204
            assert other.subscribe(orders[1]) == {"ok": False, "error": "unauthorized"}
            _closed_within(other, 5)
        finally:
            if listener.client.connected:
                listener.close()
