"""The README's first command: the whole platform on the embedded default, no servers.

Starts ``python -m tools.launch`` (what ``./run.sh`` runs) with its own data dir and
ports, then acts as a customer over HTTP.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import requests

from tests.support.factories import ADDRESS, eventually


def customer(base: str) -> dict:
    email, password = f"e2e-{uuid.uuid4().hex[:8]}@test.orion.example", "e2e password 1"
    assert (
        requests.post(
            f"{base}/api/v1/auth/register", json={"email": email, "password": password, "name": "E2E"}
        ).status_code
        == 201
    )
    token = requests.post(f"{base}/api/v1/auth/login", json={"email": email, "password": password}).json()[
        "access_token"
    ]
    return {"Authorization": f"Bearer {token}", "email": email}


def in_stock_sku(base: str) -> str:
    page = requests.get(f"{base}/api/v1/products", params={"limit": 100}).json()
    return next(p["sku"] for p in page["items"] if p["available"] >= 5)


def final(base: str, headers: dict, order_id: str) -> dict:
    def check():
        order = requests.get(f"{base}/api/v1/orders/{order_id}", headers=headers).json()
        return order if order["status"] in ("completed", "cancelled", "failed") else None

    return eventually(check, timeout=120, interval=0.3)


def place(base: str, headers: dict, sku: str, token: str) -> str:
    body = {"lines": [{"sku": sku, "quantity": 2}], "shipping_address": ADDRESS, "payment": {"token": token}}
    reply = requests.post(
        f"{base}/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def test_an_order_completes_and_its_email_is_delivered(platform):
    base, user = platform["base"], customer(platform["base"])
    headers = {"Authorization": user["Authorization"]}
    order = final(base, headers, place(base, headers, in_stock_sku(base), "tok_visa"))
    assert order["status"] == "completed"
    assert [s["status"] for s in order["steps"]].count("succeeded") == len(order["steps"])
    mails = eventually(
        lambda: [p for p in (platform["data_dir"] / "mail").glob("*.eml") if user["email"] in p.read_text()],
        timeout=30,
    )
    assert "confirmed" in mails[0].read_text()


def test_a_declined_card_is_compensated(platform):
    base, user = platform["base"], customer(platform["base"])
    headers = {"Authorization": user["Authorization"]}
    order = final(base, headers, place(base, headers, in_stock_sku(base), "tok_chargeDeclined"))
    assert (order["status"], order["cancel_reason"]) == ("cancelled", "payment_declined")
    assert "release_stock" in [s["name"] for s in order["steps"]]


def test_flower_asks_for_credentials_and_answers_with_them(platform):
    base = f"http://127.0.0.1:{platform['flower']}"
    user, password = (platform["data_dir"] / "flower-basic-auth").read_text().strip().split(":", 1)
    # (a 401 Response is falsy, so wait on its status code)
    assert eventually(lambda: getattr(_get(f"{base}/"), "status_code", None), timeout=60) == 401
    assert requests.get(f"{base}/api/workers", timeout=5).status_code == 401
    assert requests.get(f"{base}/", auth=(user, "wrong"), timeout=5).status_code == 401
    reply = requests.get(f"{base}/", auth=(user, password), timeout=5)
    assert reply.status_code == 200 and "Flower" in reply.text
    assert platform["proc"].poll() is None


def _get(url: str):
    try:
        return requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None


def test_the_platform_s_data_files_are_readable_by_their_owner_only(platform):
    """Security issue item 8: ``var/orion.db`` was world-readable (password hashes, emails)."""
    data_dir = platform["data_dir"]
    for name in ("orion.db", "payment-sandbox.db"):
        assert (data_dir / name).stat().st_mode & 0o077 == 0, name
    mails = list((data_dir / "mail").rglob("*.eml"))
    assert all(path.stat().st_mode & 0o077 == 0 for path in mails)


def _child_with(parent: int, needle: str) -> int | None:
    """The pid of ``parent``'s child whose command line contains ``needle`` (from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        if ppid == parent and needle in cmdline:
            return int(entry.name)
    return None


def test_a_crashed_worker_is_restarted_while_the_rest_keeps_serving(platform):
    """kill -9 of the worker: the launcher starts it again, the API never stops
    answering, and orders complete again (issue 9: the launcher used to stop
    every process when one died)."""
    base, launcher = platform["base"], platform["proc"]
    crashed = _child_with(launcher.pid, "orion@")
    assert crashed is not None
    os.kill(crashed, signal.SIGKILL)
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
    restarted = eventually(
        lambda: (
            _child_with(launcher.pid, "orion@") not in (None, crashed) and _child_with(launcher.pid, "orion@")
        ),
        timeout=30,
    )
    assert launcher.poll() is None and restarted != crashed
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
    headers = customer(base)
    order_id = place(base, headers, in_stock_sku(base), "tok_visa")
    assert final(base, headers, order_id)["status"] == "completed"


def _children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_a_pool_process_killed_while_idle_does_not_stall_the_worker(platform):
    """kill -9 of the worker's idle pool processes: one of them held the pool's
    shared queue lock (billiard, synchronous loop), which used to stall the
    worker for good with every later order stuck (issue 9). The worker now stops
    and the launcher starts a fresh one; a new order completes."""
    base, launcher = platform["base"], platform["proc"]
    headers = customer(base)
    sku = in_stock_sku(base)
    assert final(base, headers, place(base, headers, sku, "tok_visa"))["status"] == "completed"
    worker = _child_with(launcher.pid, "orion@")
    assert worker is not None
    pool = eventually(lambda: len(_children_of(worker)) >= 2 and _children_of(worker), timeout=30)
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    # What the stopped worker had read ahead is the safety net's (README); a
    # stalled worker is never replaced.
    eventually(lambda: _child_with(launcher.pid, "orion@") not in (None, worker), timeout=30)
    order = final(base, headers, place(base, headers, sku, "tok_visa"))
    assert order["status"] == "completed"
    assert launcher.poll() is None
