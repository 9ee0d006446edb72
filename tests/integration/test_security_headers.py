"""SPEC "Availability and abuse": every response carries nosniff and a framing
policy, whatever answered it; responses carrying tokens are never cached."""

from __future__ import annotations

import uuid

import pytest

from tests.support.factories import customer
from web import create_app

API = "/api/v1"
PASSWORD = "correct horse battery"  # what tests.support.factories.customer sets


@pytest.fixture(scope="module")
def client():
    client = create_app().test_client()
    client.environ_base["REMOTE_ADDR"] = f"10.77.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    return client


def assert_protected(response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/healthz", 200),
        ("GET", f"{API}/products", 200),
        ("GET", f"{API}/orders", 401),  # a problem+json from the JWT layer
        ("GET", f"{API}/no-such-thing", 404),
        ("POST", f"{API}/auth/login", 422),  # a validation problem
        ("GET", "/", 200),  # the shop page
        ("GET", "/socket.io/?EIO=4&transport=polling", 200),  # Engine.IO's own answer, not Flask's
    ],
)
def test_every_kind_of_response_carries_the_headers(client, method, path, status):
    response = client.open(path, method=method, json={} if method == "POST" else None)
    assert response.status_code == status
    assert_protected(response)


def test_token_responses_are_not_stored(client, uid):
    user = customer(uid)
    login = client.post(f"{API}/auth/login", json={"email": user.email, "password": PASSWORD})
    assert login.status_code == 200
    assert login.headers["Cache-Control"] == "no-store" and login.headers["Pragma"] == "no-cache"
    assert_protected(login)
    refresh = client.post(
        f"{API}/auth/refresh", headers={"Authorization": f"Bearer {login.get_json()['refresh_token']}"}
    )
    assert refresh.status_code == 200 and refresh.headers["Cache-Control"] == "no-store"
    products = client.get(f"{API}/products")
    assert "no-store" not in products.headers.get("Cache-Control", "")


@pytest.fixture
def behind_proxy(monkeypatch):
    """The web app as the deployment runs it behind its TLS proxy (PROXY_HOPS=1)."""
    from config import reset_settings

    monkeypatch.setenv("PROXY_HOPS", "1")
    reset_settings()
    try:
        yield create_app().test_client()
    finally:
        monkeypatch.undo()
        reset_settings()


def test_behind_the_proxy_the_client_s_address_and_scheme_count(behind_proxy):
    """Security issue item 7: without ProxyFix every client behind the proxy looked
    like the proxy (loopback: /metrics open to all); HSTS on HTTPS answers only."""
    from_proxy = {"REMOTE_ADDR": "127.0.0.1"}
    outside = behind_proxy.get(
        "/metrics",
        environ_base=from_proxy,
        headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
    )
    assert outside.status_code == 403  # the client is 203.0.113.9, not the proxy's loopback
    assert outside.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    plain = behind_proxy.get(
        "/healthz",
        environ_base=from_proxy,
        headers={"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http"},
    )
    assert "Strict-Transport-Security" not in plain.headers  # RFC 6797 §7.2
    assert (
        behind_proxy.get(
            "/metrics", environ_base=from_proxy, headers={"X-Forwarded-For": "127.0.0.1"}
        ).status_code
        == 200
    )


def test_without_a_proxy_forwarded_headers_are_not_believed(client):
    response = client.get(
        "/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}, headers={"X-Forwarded-For": "127.0.0.1"}
    )
    assert response.status_code == 403  # a client cannot claim to be loopback
