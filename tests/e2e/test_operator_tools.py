"""The API docs page, the operator's charts and order search, and a declined
order's timeline, in real headless Chromium on the embedded platform (issue 11).

Screenshots go to ``artifacts/``; ``docs/dashboards.md`` shows copies of them.
"""
from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.test_dashboards import ARTIFACTS, browser  # noqa: F401 - the browser fixture

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
