"""The OpenAPI document stays true to the code: every route under /api/v1 is in it,
with the response codes SPEC promises (no I/O: the document is built from the app)."""

from __future__ import annotations

import re

import pytest

from web import create_app
from web.openapi import build_spec

PREFIX = "/api/v1"
# SPEC "HTTP API": the success and notable failure codes of each endpoint.
SPEC_CODES = {
    ("post", "/auth/register"): {"201", "409", "422"},
    ("post", "/auth/login"): {"200", "401", "429"},
    ("post", "/auth/refresh"): {"200", "401"},
    ("post", "/auth/logout"): {"204", "401"},
    ("get", "/auth/me"): {"200", "401"},
    ("get", "/products"): {"200", "422"},
    ("get", "/products/{sku}"): {"200", "404"},
    ("post", "/orders"): {"202", "401", "404", "409", "413", "422", "429"},
    ("get", "/orders/{order_id}"): {"200", "404"},
    ("get", "/orders"): {"200", "422"},
    ("post", "/orders/{order_id}/cancel"): {"202", "404", "409"},
    ("post", "/orders/{order_id}/payment"): {"202", "404", "409"},
    ("post", "/orders/{order_id}/retry"): {"202", "403", "404", "409"},
}
PUBLIC = {
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("get", "/products"),
    ("get", "/products/{sku}"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
}


@pytest.fixture(scope="module")
def app():
    return create_app()


@pytest.fixture(scope="module")
def document(app):
    return app.test_client().get(f"{PREFIX}/openapi.json").get_json()


def api_routes(app) -> set[tuple[str, str]]:
    """``(method, OpenAPI path)`` for every rule the app serves under /api/v1."""
    return {
        (method.lower(), re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(PREFIX)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def operations(document) -> dict[tuple[str, str], dict]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    }


def test_every_api_route_is_documented_and_nothing_else(app, document):
    assert set(operations(document)) == api_routes(app)


def test_spec_endpoints_are_all_there_with_their_codes(document):
    documented = operations(document)
    for (method, path), codes in SPEC_CODES.items():
        operation = documented[(method, PREFIX + path)]
        assert codes <= set(operation["responses"]), (method, path)


def test_protected_operations_use_the_bearer_scheme(document):
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for (method, path), operation in operations(document).items():
        public = (method, path.removeprefix(PREFIX)) in PUBLIC
        assert ("security" not in operation) == public, (method, path)
        assert public or "401" in operation["responses"]


def test_every_operation_has_a_summary_and_problem_errors(document):
    for key, operation in operations(document).items():
        assert operation["summary"], key
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                assert "application/problem+json" in response["content"], (key, code)


def test_bodies_document_their_schema_and_422(document):
    post_orders = operations(document)[("post", f"{PREFIX}/orders")]
    schema_ref = post_orders["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    order_create = document["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert order_create["additionalProperties"] is False
    assert order_create["properties"]["lines"]["maxItems"] == 100
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= post_orders["parameters"][0].items()


def test_an_undocumented_route_would_be_missing():
    app = create_app()
    app.add_url_rule(f"{PREFIX}/undocumented", "undocumented", lambda: "")
    assert f"{PREFIX}/undocumented" not in build_spec(app)["paths"]
    assert ("get", f"{PREFIX}/undocumented") in api_routes(app)


def test_links_lead_from_an_order_to_what_can_be_done_with_it(document):
    """OpenAPI links (followed by clients and by schemathesis's stateful tests) name
    operations that exist and take the order's id from the response body."""
    ids = {op["operationId"]: path for (_, path), op in operations(document).items()}
    placed = document["paths"]["/api/v1/orders"]["post"]["responses"]["202"]["links"]
    assert set(placed) == {"GetOrder", "CancelOrder", "PayAgain", "RetryOrder"}
    every = [
        link
        for path in document["paths"].values()
        for op in path.values()
        if isinstance(op, dict)
        for response in op.get("responses", {}).values()
        for link in response.get("links", {}).values()
    ]
    assert len(every) >= 10
    for link in every:
        assert "{order_id}" in ids[link["operationId"]]
        assert link["parameters"] == {"order_id": "$response.body#/id"}
