"""Auth endpoints over Flask's test client, on the real PostgreSQL and Redis."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest
import redis
from flask_jwt_extended import create_access_token, decode_token

from models import RevokedToken, unit_of_work
from services.errors import Conflict
from tests.support.api import problem
from tests.support.factories import customer
from web import create_app
from web.auth import create_user

API = "/api/v1"
PASSWORD = "correct horse battery"  # what tests.support.factories.customer sets


@pytest.fixture(scope="module")
def app():
    return create_app()


def new_client(app):
    """A test client from its own client address, so per-address limits do not collide."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = (
        f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    )
    return client


@pytest.fixture
def client(app):
    return new_client(app)


def login(client, email: str, password: str = PASSWORD):
    return client.post(f"{API}/auth/login", json={"email": email, "password": password})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_register_creates_a_customer_and_hides_the_password(client, uid):
    response = client.post(
        f"{API}/auth/register",
        json={"email": f"New-{uid}@Test.Orion.Example", "password": "s3cret-enough", "name": "Grace Hopper"},
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body == {
        "id": body["id"],
        "email": f"new-{uid}@test.orion.example",
        "name": "Grace Hopper",
        "role": "customer",
    }
    assert login(client, f"new-{uid}@test.orion.example", "s3cret-enough").status_code == 200


def test_register_twice_is_409_whatever_the_case(client, uid):
    payload = {"email": f"twice-{uid}@test.orion.example", "password": "s3cret-enough", "name": "A"}
    assert client.post(f"{API}/auth/register", json=payload).status_code == 201
    payload["email"] = payload["email"].upper()
    problem(client.post(f"{API}/auth/register", json=payload), 409)


def test_register_rejects_unknown_fields_and_short_passwords(client, uid):
    response = client.post(
        f"{API}/auth/register",
        json={"email": f"bad-{uid}@test.orion.example", "password": "short", "name": "A", "role": "operator"},
    )
    errors = problem(response, 422)["errors"]
    assert errors["role"] == ["Unknown field."]
    assert "password" in errors


def test_register_rejects_an_invalid_email(client):
    errors = problem(
        client.post(
            f"{API}/auth/register", json={"email": "not-an-email", "password": "long-enough", "name": "A"}
        ),
        422,
    )["errors"]
    assert list(errors) == ["email"]


def test_create_user_makes_operators_outside_any_request(client, uid):
    user = create_user(f"Op-{uid}@Test.Orion.Example", "operator password", "Olga", role="operator")
    assert (user.email, user.role) == (f"op-{uid}@test.orion.example", "operator")
    tokens = login(client, user.email, "operator password").get_json()
    assert (
        client.get(f"{API}/auth/me", headers=bearer(tokens["access_token"])).get_json()["role"] == "operator"
    )
    with pytest.raises(Conflict):
        create_user(user.email, "operator password", "Olga again")
    with pytest.raises(ValueError):
        create_user(f"x-{uid}@test.orion.example", "password!", "X", role="admin")


def test_login_returns_tokens_that_open_me(client, uid):
    user = customer(uid)
    response = login(client, user.email)
    assert response.status_code == 200
    tokens = response.get_json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == int(client.application.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    me = client.get(f"{API}/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.get_json() == {"id": user.id, "email": user.email, "name": user.name, "role": "customer"}


@pytest.mark.parametrize("which", ["wrong password", "unknown email"])
def test_bad_credentials_are_401(client, uid, which):
    user = customer(uid)
    email = user.email if which == "wrong password" else f"nobody-{uid}@test.orion.example"
    body = problem(login(client, email, "not the password"), 401)
    assert body["detail"] == "wrong email or password"


def test_missing_and_garbage_tokens_are_401(client):
    problem(client.get(f"{API}/auth/me"), 401)
    problem(client.get(f"{API}/auth/me", headers=bearer("not.a.jwt")), 401)


def test_an_expired_access_token_is_401(app, client, uid):
    user = customer(uid)
    with app.app_context():
        token = create_access_token(
            str(user.id), additional_claims={"role": "customer"}, expires_delta=timedelta(seconds=-5)
        )
    assert "expired" in problem(client.get(f"{API}/auth/me", headers=bearer(token)), 401)["detail"]


def test_refresh_and_access_tokens_are_not_interchangeable(client, uid):
    tokens = login(client, customer(uid).email).get_json()
    problem(client.get(f"{API}/auth/me", headers=bearer(tokens["refresh_token"])), 401)
    problem(client.post(f"{API}/auth/refresh", headers=bearer(tokens["access_token"])), 401)
    problem(client.post(f"{API}/auth/logout", headers=bearer(tokens["refresh_token"])), 401)
    refreshed = client.post(f"{API}/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert refreshed.status_code == 200
    assert set(refreshed.get_json()) == {"access_token", "expires_in", "refresh_token", "token_type"}
    assert (
        client.get(f"{API}/auth/me", headers=bearer(refreshed.get_json()["access_token"])).status_code == 200
    )


def _refresh(client, refresh_token: str):
    return client.post(f"{API}/auth/refresh", headers=bearer(refresh_token))


@pytest.mark.parametrize("redis_url", ["services", None], ids=["redis", "table"])
def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_whole_session(app, uid, redis_url):
    app = app if redis_url else create_app({"ORION_REDIS_URL": None})
    client = new_client(app)
    user = customer(uid)
    first = login(client, user.email).get_json()
    other_device = login(client, user.email).get_json()  # another session of the same user
    second = _refresh(client, first["refresh_token"]).get_json()
    assert second["refresh_token"] != first["refresh_token"]
    third = _refresh(client, second["refresh_token"]).get_json()  # the rotated one works
    assert client.get(f"{API}/auth/me", headers=bearer(third["access_token"])).status_code == 200

    # An attacker replays the first refresh token: refused, and the session is over.
    assert "already used" in problem(_refresh(client, first["refresh_token"]), 401)["detail"]
    problem(client.get(f"{API}/auth/me", headers=bearer(third["access_token"])), 401)
    problem(_refresh(client, third["refresh_token"]), 401)
    problem(client.get(f"{API}/auth/me", headers=bearer(first["access_token"])), 401)
    # The user's other login is another session: untouched.
    assert client.get(f"{API}/auth/me", headers=bearer(other_device["access_token"])).status_code == 200
    assert _refresh(client, other_device["refresh_token"]).status_code == 200


def test_a_session_revoked_for_reuse_stays_revoked_as_long_as_its_newest_token_lives(app, uid):
    """The reused token may be near its end while the thief's rotated one is new:
    the session's revocation must outlive the newest token, not the reused one."""
    from flask_jwt_extended import create_refresh_token

    client, user = new_client(app), customer(uid)
    with app.app_context():  # an old refresh token of a session, two minutes from expiry
        old = create_refresh_token(
            str(user.id), additional_claims={"sid": uid, "gen": 0}, expires_delta=timedelta(minutes=2)
        )
    rotated = _refresh(client, old).get_json()  # the thief's exchange: a 30-day token
    problem(_refresh(client, old), 401)  # the owner's reuse revokes the session
    lifetime = app.config["JWT_REFRESH_TOKEN_EXPIRES"].total_seconds()
    ttl = redis.Redis.from_url(os.environ["REDIS_URL"]).ttl(f"orion:revoked:sid:{uid}")
    assert lifetime - 60 < ttl <= lifetime + 2
    problem(_refresh(client, rotated["refresh_token"]), 401)


def test_two_concurrent_exchanges_of_one_refresh_token_let_exactly_one_through(app, uid):
    from concurrent.futures import ThreadPoolExecutor

    tokens = login(new_client(app), customer(uid).email).get_json()
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda _: _refresh(new_client(app), tokens["refresh_token"]).status_code, range(8))
        )
    assert sorted(codes) == [200] + [401] * 7


@pytest.mark.parametrize("redis_url", ["services", None], ids=["redis", "table"])
def test_logout_all_revokes_every_token_of_the_user_and_only_theirs(app, uid, redis_url):
    app = app if redis_url else create_app({"ORION_REDIS_URL": None})
    client = new_client(app)
    user, bystander = customer(uid), customer(uid + "b")
    sessions = [login(client, user.email).get_json() for _ in range(3)]
    theirs = login(client, bystander.email).get_json()
    assert (
        client.post(f"{API}/auth/logout-all", headers=bearer(sessions[0]["access_token"])).status_code == 204
    )
    for tokens in sessions:
        problem(client.get(f"{API}/auth/me", headers=bearer(tokens["access_token"])), 401)
        problem(_refresh(client, tokens["refresh_token"]), 401)
    assert client.get(f"{API}/auth/me", headers=bearer(theirs["access_token"])).status_code == 200
    fresh = login(client, user.email).get_json()  # logging in again works at once
    assert client.get(f"{API}/auth/me", headers=bearer(fresh["access_token"])).status_code == 200
    assert _refresh(client, fresh["refresh_token"]).status_code == 200


def test_logout_revokes_the_access_token_at_once_in_redis(app, client, uid):
    tokens = login(client, customer(uid).email).get_json()
    access = tokens["access_token"]
    assert client.post(f"{API}/auth/logout", headers=bearer(access)).status_code == 204
    assert "revoked" in problem(client.get(f"{API}/auth/me", headers=bearer(access)), 401)["detail"]
    with app.app_context():
        jti = decode_token(access)["jti"]
    ttl = redis.Redis.from_url(os.environ["REDIS_URL"]).ttl(f"orion:revoked:{jti}")
    assert 0 < ttl <= tokens["expires_in"] + 1
    # the refresh token was not sent, so it still works
    assert client.post(f"{API}/auth/refresh", headers=bearer(tokens["refresh_token"])).status_code == 200


def test_logout_also_revokes_the_refresh_token_sent_in_the_body(client, uid):
    tokens = login(client, customer(uid).email).get_json()
    response = client.post(
        f"{API}/auth/logout",
        headers=bearer(tokens["access_token"]),
        json={"refresh_token": tokens["refresh_token"]},
    )
    assert response.status_code == 204
    problem(client.post(f"{API}/auth/refresh", headers=bearer(tokens["refresh_token"])), 401)


def test_logout_refuses_another_users_refresh_token_and_revokes_nothing(client, uid):
    mine = login(client, customer(uid).email).get_json()
    theirs = login(client, customer(uid + "b").email).get_json()
    response = client.post(
        f"{API}/auth/logout",
        headers=bearer(mine["access_token"]),
        json={"refresh_token": theirs["refresh_token"]},
    )
    assert "refresh_token" in problem(response, 422)["errors"]
    assert client.get(f"{API}/auth/me", headers=bearer(mine["access_token"])).status_code == 200
    assert client.post(f"{API}/auth/refresh", headers=bearer(theirs["refresh_token"])).status_code == 200


def test_logout_uses_the_revoked_tokens_table_without_redis(uid):
    client = new_client(create_app({"ORION_REDIS_URL": None}))
    access = login(client, customer(uid).email).get_json()["access_token"]
    assert client.post(f"{API}/auth/logout", headers=bearer(access)).status_code == 204
    with client.application.app_context():
        jti = decode_token(access, allow_expired=True)["jti"]
    with unit_of_work() as session:
        assert session.get(RevokedToken, jti) is not None
    problem(client.get(f"{API}/auth/me", headers=bearer(access)), 401)


def test_ten_failed_logins_for_one_email_then_429_with_retry_after(app, uid):
    user = customer(uid)
    for _ in range(10):  # each from another address: only the per-email limit can trip
        problem(login(new_client(app), user.email, "wrong password"), 401)
    response = login(new_client(app), user.email)  # even the right password now waits
    problem(response, 429)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert login(new_client(app), customer(uid + "x").email).status_code == 200


def test_ten_failed_logins_from_one_address_then_429(client, uid):
    for n in range(10):
        problem(login(client, f"ghost-{n}-{uid}@test.orion.example", "wrong password"), 401)
    response = login(client, f"ghost-x-{uid}@test.orion.example", "wrong password")
    problem(response, 429)
    assert int(response.headers["Retry-After"]) >= 1


def test_successful_logins_do_not_count_against_the_limit(client, uid):
    user = customer(uid)
    for _ in range(12):
        assert login(client, user.email).status_code == 200
    problem(login(client, user.email, "wrong password"), 401)


def test_a_body_over_64_kib_is_413(client):
    response = client.post(
        f"{API}/auth/register", json={"email": "a@b.example", "password": "x" * 70_000, "name": "A"}
    )
    problem(response, 413)


def test_a_non_json_body_is_a_problem(client):
    response = client.post(
        f"{API}/auth/login", data="email=a", content_type="application/x-www-form-urlencoded"
    )
    problem(response, 415)


@pytest.mark.parametrize("redis_url", ["services", None], ids=["redis", "process-lock"])
def test_fifty_concurrent_wrong_passwords_for_one_email_let_at_most_ten_through(uid, redis_url):
    from concurrent.futures import ThreadPoolExecutor

    app = create_app() if redis_url else create_app({"ORION_REDIS_URL": None})
    user = customer(uid)
    with ThreadPoolExecutor(50) as pool:  # each from its own address: only the per-email limit
        codes = list(
            pool.map(lambda _: login(new_client(app), user.email, "wrong password").status_code, range(50))
        )
    assert codes.count(401) <= 10 and codes.count(401) + codes.count(429) == 50, codes
    assert codes.count(401) == 10  # the limit is reached, not undercut by the lock


def test_registration_is_limited_per_client_address(uid):
    app = create_app({"REGISTER_LIMIT": "3 per hour"})
    client, elsewhere = new_client(app), new_client(app)

    def register(c, n: int):
        return c.post(
            f"{API}/auth/register",
            json={"email": f"reg-{n}-{uid}@test.orion.example", "password": PASSWORD, "name": "R"},
        )

    assert [register(client, n).status_code for n in range(3)] == [201, 201, 201]
    response = register(client, 3)
    problem(response, 429)
    assert int(response.headers["Retry-After"]) >= 1
    assert register(elsewhere, 4).status_code == 201  # another address has its own budget
