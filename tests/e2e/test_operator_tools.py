"""The API docs page, the operator's charts and order search, and a declined
order's timeline, in real headless Chromium on the embedded platform (issue 11).

Screenshots go to ``artifacts/``; ``docs/dashboards.md`` shows copies of them.
"""

from __future__ import annotations

import uuid

import requests
from playwright.sync_api import Page, expect

from tests.e2e.conftest import OPERATOR_EMAIL, OPERATOR_PASSWORD
from tests.e2e.test_dashboards import (  # noqa: F401 - browser is the shared fixture
    ARTIFACTS,
    ORDER_TIMEOUT_MS,
    PASSWORD,
    browser,
    open_page,
    place_order,
    plentiful_sku,
    register,
)
from tests.support.factories import eventually

FINAL = {"completed", "cancelled", "failed"}

# Collected before any page script runs (an init script is not subject to the page's CSP).
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def test_api_docs_render_the_openapi_document_under_its_csp(platform, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    reply = page.goto(f"{platform['base']}/api/v1/docs")
    assert "script-src 'self'" in reply.headers["content-security-policy"]
    create = page.locator("#operations-orders-orders_create_order")
    expect(create.locator(".opblock-summary-method")).to_have_text("POST")
    expect(create.locator(".opblock-summary-path")).to_have_text("/api/v1/orders")
    expect(page.locator("#operations-operator-operator_overview")).to_be_visible()
    create.locator(".opblock-summary-control").click()  # expanded: its body schema renders
    expect(create.locator(".opblock-body")).to_contain_text("Idempotency-Key")
    assert page.evaluate("window.__cspViolations") == []
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"))
    page.close()


def test_shop_and_operator_pages_link_the_api_docs(platform, browser):  # noqa: F811
    page = browser.new_page()
    for path in ("/", "/operator"):
        page.goto(platform["base"] + path)
        expect(page.locator("#api-docs-link")).to_have_attribute("href", "/api/v1/docs")
    page.close()


def api_customer(base: str, name: str) -> tuple[str, dict]:
    """A new customer's email and ``Authorization`` header."""
    email = register(base, name)
    tokens = requests.post(f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    return email, {"Authorization": f"Bearer {tokens['access_token']}"}


def api_order(base: str, headers: dict, sku: str, token: str = "tok_visa") -> str:
    body = {
        "lines": [{"sku": sku, "quantity": 1}],
        "payment": {"token": token},
        "shipping_address": {
            "name": "Pat",
            "line1": "1 High Street",
            "city": "Leeds",
            "postal_code": "LS1 1AA",
            "country": "United Kingdom",
        },
    }
    reply = requests.post(
        f"{base}/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def all_final(base: str, headers: dict) -> bool:
    orders = requests.get(f"{base}/api/v1/orders", params={"limit": 100}, headers=headers).json()["items"]
    return all(o["status"] in FINAL for o in orders)


def chart_points(page: Page, canvas: str) -> float:
    """The sum of every value Chart.js holds for ``canvas`` (0 when nothing is drawn)."""
    return page.evaluate(
        """(id) => {
        const chart = Chart.getChart(document.getElementById(id));
        return chart ? chart.data.datasets.flatMap((d) => d.data).reduce((n, v) => n + (v || 0), 0) : 0;
    }""",
        canvas,
    )


def test_operator_charts_and_order_search_with_status_filter_and_paging(platform, browser):  # noqa: F811
    base, sku = platform["base"], plentiful_sku(platform["base"])
    email, headers = api_customer(base, "Pat")
    placed = []
    for batch in range(2):  # 26 orders, more than a page, in batches under MAX_OPEN_ORDERS
        placed += [
            api_order(base, headers, sku, token)
            for token in ["tok_visa"] * 11
            + (["tok_flaky", "tok_chargeDeclined"] if batch == 0 else ["tok_visa"] * 2)
        ]
        eventually(lambda: all_final(base, headers), timeout=240, interval=1)
    declined = placed[12]

    operator = open_page(browser, f"{base}/operator", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    expect(operator.locator("#order-list tbody tr").first).to_be_visible()
    for canvas in ("chart-outcomes", "chart-durations", "chart-retries"):
        eventually(lambda: chart_points(operator, canvas) > 0, timeout=30)  # noqa: B023
    assert (
        operator.evaluate("Chart.getChart(document.getElementById('chart-queues')).data.labels.length") >= 1
    )
    operator.screenshot(path=str(ARTIFACTS / "operator-charts.png"), full_page=True)

    operator.fill("#order-search input[name=q]", email.upper())  # emails match case-insensitively
    operator.click("#order-search button[type=submit]")
    rows = operator.locator("#order-list tbody tr")
    expect(rows).to_have_count(25)
    expect(operator.locator("#more-orders")).to_be_visible()
    operator.click("#more-orders")
    expect(rows).to_have_count(26)
    expect(operator.locator("#more-orders")).to_be_hidden()
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.order)")
    assert shown == list(reversed(placed)), "newest first, each once, across both pages"

    operator.select_option("#order-search select[name=status]", "cancelled")
    operator.click("#order-search button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-order", declined)
    operator.screenshot(path=str(ARTIFACTS / "operator-search.png"), full_page=True)

    operator.click("#clear-search")
    operator.fill("#order-search input[name=q]", placed[3])
    operator.click("#order-search button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-order", placed[3])
    expect(operator.locator("#order-id")).to_have_text(placed[3])
    expect(operator.locator("#order-status")).to_have_text("completed")

    operator.fill("#order-search input[name=q]", str(uuid.uuid4()))
    operator.click("#order-search button[type=submit]")
    expect(rows).to_have_count(0)
    expect(operator.locator("#search-summary")).to_contain_text("No order")


def test_a_declined_orders_timeline_shows_no_refund_or_void_that_undid_nothing(platform, browser):  # noqa: F811
    base, sku = platform["base"], plentiful_sku(platform["base"])
    shop = open_page(browser, base, register(base, "Quinn"), PASSWORD)
    order_id = place_order(shop, sku, "tok_chargeDeclined")
    expect(shop.locator("#order-status")).to_have_text("cancelled", timeout=ORDER_TIMEOUT_MS)
    expect(shop.locator("#order-reason")).to_have_text("(payment_declined)")
    timeline = shop.locator("#timeline")
    # The stock that was held was released: that undo is shown, once its event is in.
    expect(timeline.locator("tr.step.compensation[data-name=release_stock]")).to_have_count(1)
    expect(timeline.locator("tr.step[data-name=authorize_payment]")).to_have_attribute(
        "data-status", "failed"
    )
    for text in ("refund", "void"):
        assert text not in timeline.inner_text().lower()
        assert text not in shop.locator("#events").inner_text().lower()

    # The step log keeps them: the operator sees every undo that ran.
    operator = open_page(browser, f"{base}/operator", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    operator.fill("#order-search input[name=q]", order_id)
    operator.click("#order-search button[type=submit]")
    expect(operator.locator("#timeline tr.step[data-name=void_authorization]")).to_have_count(1)
