"""The customer shop and the operator dashboard in real headless Chromium
(Debian's ``chromium``, driven by Playwright), on the embedded platform.

Each test leaves screenshots in ``artifacts/``; ``docs/dashboards.md`` shows
copies of them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import OPERATOR_EMAIL, OPERATOR_PASSWORD
from tests.support.factories import eventually

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries Google's hosts, which
# this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PASSWORD = "customer password 1"
ORDER_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Browser:
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def register(base: str, name: str) -> str:
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@e2e.orion.example"
    reply = requests.post(
        f"{base}/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": name}
    )
    assert reply.status_code == 201, reply.text
    return email


def open_page(browser: Browser, url: str, email: str, password: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.fill("#login-form input[name=email]", email)
    page.fill("#login-form input[name=password]", password)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#connection")).to_have_text("live")
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    return page


def place_order(page: Page, search: str, token: str) -> str:
    """Search, add the first hit to the cart, check out; the new order's id."""
    shown = page.locator("#order-id").inner_text()
    page.fill("#search-form input[name=q]", search)
    page.click("#search-form button")
    page.locator("#products tbody tr").first.locator("button.add").click()
    for field, value in (
        ("name", "Ada Lovelace"),
        ("line1", "12 St James's Square"),
        ("city", "London"),
        ("postal_code", "SW1Y 4JH"),
    ):
        page.fill(f"#checkout-form input[name={field}]", value)
    page.select_option("#payment-token", token)
    page.click("#place-order")
    expect(page.locator("#order-id")).not_to_have_text(shown)
    expect(page.locator("#order-id")).not_to_be_empty()
    return page.locator("#order-id").inner_text()


def plentiful_sku(base: str) -> str:
    page = requests.get(f"{base}/api/v1/products", params={"limit": 100}).json()
    return max(page["items"], key=lambda p: p["available"])["sku"]


def test_customer_watches_orders_complete_and_compensate_live(platform, browser):
    base, sku = platform["base"], plentiful_sku(platform["base"])
    operator = open_page(browser, f"{base}/operator", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    shop = open_page(browser, base, register(base, "Carol"), PASSWORD)

    paid = place_order(shop, sku, "tok_visa")
    expect(shop.locator("#order-status")).to_have_text("completed", timeout=ORDER_TIMEOUT_MS)
    steps = shop.locator("#timeline tr.step")
    expect(steps.last).to_have_attribute("data-name", "complete_order")
    assert shop.locator("#timeline tr.step.compensation").count() == 0
    events = shop.locator("#events li")
    seqs = [int(s) for s in events.evaluate_all("items => items.map(i => i.dataset.seq)")]
    assert seqs == list(range(1, len(seqs) + 1)), "each event once, in seq order"
    shop.screenshot(path=str(ARTIFACTS / "shop-completed.png"), full_page=True)

    declined = place_order(shop, sku, "tok_chargeDeclined")
    expect(shop.locator("#order-status")).to_have_text("cancelled", timeout=ORDER_TIMEOUT_MS)
    expect(shop.locator("#order-reason")).to_have_text("(payment_declined)")
    kinds = shop.locator("#timeline tr.step").evaluate_all(
        "rows => rows.map(r => [r.dataset.name, r.classList.contains('compensation')])"
    )
    undone = [name for name, compensation in kinds if compensation]
    assert "release_stock" in undone, kinds
    assert kinds.index([undone[0], True]) > max(i for i, (_, c) in enumerate(kinds) if not c), (
        "compensation steps follow the forward steps they undo"
    )
    expect(shop.locator("#timeline tr.step[data-name=authorize_payment]")).to_have_attribute(
        "data-status", "failed"
    )
    shop.screenshot(path=str(ARTIFACTS / "shop-declined.png"), full_page=True)
    assert shop.evaluate("window.__sameDocument") is True, "the page must not have reloaded"

    for order_id, status in ((paid, "completed"), (declined, "cancelled")):
        expect(operator.locator(f"#order-list tr[data-order='{order_id}']")).to_have_attribute(
            "data-status", status, timeout=ORDER_TIMEOUT_MS
        )
        expect(operator.locator(f"#feed li[data-order='{order_id}']").first).to_be_visible()
    operator.screenshot(path=str(ARTIFACTS / "operator.png"), full_page=True)


def test_a_customer_cannot_see_or_subscribe_to_another_customers_order(platform, browser):
    base, sku = platform["base"], plentiful_sku(platform["base"])
    alice = open_page(browser, base, register(base, "Alice"), PASSWORD)
    order_id = place_order(alice, sku, "tok_visa")
    expect(alice.locator("#order-status")).to_have_text("completed", timeout=ORDER_TIMEOUT_MS)

    bob = open_page(browser, base, register(base, "Bob"), PASSWORD)
    expect(bob.locator(f"#order-list tr[data-order='{order_id}']")).to_have_count(0)
    seen = bob.evaluate(
        """async (orderId) => {
        const headers = {Authorization: `Bearer ${sessionStorage.getItem("orion.access")}`};
        const read = await fetch(`/api/v1/orders/${orderId}`, {headers});
        const socket = io({auth: {token: sessionStorage.getItem("orion.access")}, transports: ["websocket"]});
        const ack = await new Promise((resolve) => socket.on("connect",
            () => socket.emit("subscribe", {order_id: orderId, after_seq: 0}, resolve)));
        socket.close();
        return {status: read.status, ack};
    }""",
        order_id,
    )
    assert seen == {"status": 404, "ack": {"ok": False, "error": "not_found"}}
    assert bob.locator("#events li").count() == 0
    bobs_order = place_order(bob, sku, "tok_mastercard")
    expect(bob.locator("#order-status")).to_have_text("completed", timeout=ORDER_TIMEOUT_MS)
    expect(bob.locator("#order-list tbody tr")).to_have_count(1)

    operator = open_page(browser, f"{base}/operator", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    for visible in (order_id, bobs_order):
        expect(operator.locator(f"#order-list tr[data-order='{visible}']")).to_have_attribute(
            "data-status", "completed"
        )
    operator.locator(f"#order-list tr[data-order='{order_id}'] a").click()
    expect(operator.locator("#order-status")).to_have_text("completed")
    expect(operator.locator("#timeline tr.step").last).to_have_attribute("data-name", "complete_order")


def test_a_dropped_connection_resumes_without_losing_or_repeating_events(platform, browser):
    """The page's socket drops while a tok_flaky order retries and stays down while
    events go by; on reconnecting, the page subscribes again with the last seq it
    applied and ends with every event once, in order, without a reload."""
    base, sku = platform["base"], plentiful_sku(platform["base"])
    shop = open_page(browser, base, register(base, "Dora"), PASSWORD)
    order_id = place_order(shop, sku, "tok_flaky")
    expect(shop.locator("#events li").first).to_be_visible()
    shop.evaluate("() => { const s = window.orionStream.socket; s.io.reconnection(false); s.disconnect(); }")
    expect(shop.locator("#connection")).to_have_text("reconnecting")
    applied = shop.evaluate("(id) => window.orionStream.lastSeq.get(id)", order_id)
    token = shop.evaluate("sessionStorage.getItem('orion.access')")

    def read() -> dict:
        return requests.get(
            f"{base}/api/v1/orders/{order_id}", headers={"Authorization": f"Bearer {token}"}
        ).json()

    eventually(lambda: read()["last_event_seq"] > applied, timeout=30)  # events went by unseen
    shop.evaluate("() => { const s = window.orionStream.socket; s.io.reconnection(true); s.connect(); }")
    expect(shop.locator("#order-status")).to_have_text("completed", timeout=ORDER_TIMEOUT_MS)
    last = read()["last_event_seq"]
    expect(shop.locator("#events li")).to_have_count(last)
    seqs = [int(s) for s in shop.locator("#events li").evaluate_all("items => items.map(i => i.dataset.seq)")]
    assert seqs == list(range(1, last + 1))
    assert "retrying" in shop.locator("#events").inner_text()
    assert shop.evaluate("window.__sameDocument") is True


def test_pay_again_and_operator_cancel_buttons(platform, browser):
    base, sku = platform["base"], plentiful_sku(platform["base"])
    shop = open_page(browser, base, register(base, "Eve"), PASSWORD)
    place_order(shop, sku, "tok_chargeDeclinedInsufficientFunds")
    expect(shop.locator("#order-status")).to_have_text("awaiting_payment", timeout=ORDER_TIMEOUT_MS)
    shop.select_option("#pay-again-token", "tok_visa")
    shop.click("#pay-again-button")
    expect(shop.locator("#order-status")).to_have_text("completed", timeout=ORDER_TIMEOUT_MS)

    parked = place_order(shop, sku, "tok_chargeDeclinedInsufficientFunds")
    expect(shop.locator("#order-status")).to_have_text("awaiting_payment", timeout=ORDER_TIMEOUT_MS)
    operator = open_page(browser, f"{base}/operator", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    operator.locator(f"#order-list tr[data-order='{parked}'] button.cancel").click()
    expect(operator.locator(f"#order-list tr[data-order='{parked}']")).to_have_attribute(
        "data-status", "cancelled", timeout=ORDER_TIMEOUT_MS
    )
    expect(shop.locator("#order-status")).to_have_text("cancelled", timeout=ORDER_TIMEOUT_MS)
    expect(shop.locator("#order-reason")).to_have_text("(operator_request)")
