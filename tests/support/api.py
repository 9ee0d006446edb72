"""Helpers for tests that speak to the HTTP API through Flask's test client."""

from __future__ import annotations


def problem(response, status: int) -> dict:
    """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == status
    return body


API = "/api/v1"
PASSWORD = "correct horse battery"  # what tests.support.factories.customer sets


def auth(client, user) -> dict:
    """``Authorization`` header with an access token for ``user`` (a factories user)."""
    tokens = client.post(f"{API}/auth/login", json={"email": user.email, "password": PASSWORD}).get_json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}
