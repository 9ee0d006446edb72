"""Probes, request ids and the generic error handling, on the real services."""

from __future__ import annotations

import logging
import re

import pytest

from tests.support.api import problem
from web import create_app

CLOSED_PORT = 1  # nothing listens there


@pytest.fixture(scope="module")
def client():
    return create_app().test_client()


def test_healthz_is_ok(client):
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_is_ok_when_database_broker_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "broker": "ok", "redis": "ok"}


@pytest.mark.parametrize(
    "setting, url, dependency",
    [
        ("ORION_BROKER_URL", f"amqp://guest:guest@127.0.0.1:{CLOSED_PORT}//", "broker"),
        ("ORION_REDIS_URL", f"redis://127.0.0.1:{CLOSED_PORT}/0", "redis"),
    ],
)
def test_readyz_is_503_naming_the_dependency_that_does_not_answer(setting, url, dependency):
    client = create_app({setting: url}).test_client()
    body = problem(client.get("/readyz"), 503)
    assert body["detail"].startswith(f"{dependency} is unavailable")
    assert body["checks"]["database"] == "ok" and body["checks"][dependency] != "ok"


def test_the_request_id_is_echoed_or_made(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    unsafe = client.get("/healthz", headers={"X-Request-ID": "a b\tc" * 30}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe)


def test_unknown_routes_and_methods_are_problems(client):
    problem(client.get("/api/v1/nowhere"), 404)
    response = client.delete("/api/v1/products")
    problem(response, 405)
    assert "GET" in response.headers["Allow"]


def test_an_unexpected_error_is_a_bare_500_and_is_logged(caplog):
    app = create_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/boom", headers={"X-Request-ID": "req-500"})
    body = problem(response, 500)
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in body["detail"]
    assert any(record.exc_info and "req-500" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("address, status", [("127.0.0.1", 200), ("::1", 200), ("10.1.2.3", 403)])
def test_metrics_answer_loopback_clients_only_without_a_token(client, address, status):
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == status
    if status == 403:
        problem(response, 403)


def test_metrics_take_the_bearer_token_when_one_is_set():
    client = create_app({"ORION_METRICS_TOKEN": "scrape-secret"}).test_client()
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert problem(client.get("/metrics", environ_base=remote), 401)
    assert (
        client.get("/metrics", environ_base=remote, headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    granted = client.get("/metrics", environ_base=remote, headers={"Authorization": "Bearer scrape-secret"})
    assert granted.status_code == 200 and b"orion_http_requests_total" in granted.data
