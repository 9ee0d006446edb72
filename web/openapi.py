"""The OpenAPI 3 document, written from the app's url_map and what the view
decorators of ``web/apidoc.py`` recorded; served at ``GET /api/v1/openapi.json``.

A view under /api/v1 without ``@response`` is left out, which the unit test
``tests/unit/test_web_openapi.py`` turns into a failure.
"""

from __future__ import annotations

import inspect
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, render_template
from werkzeug.routing import Rule

from web.apidoc import html_page, response
from web.schemas import Money, ProblemSchema, UTCDateTime

API_PREFIX = "/api/v1"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_CONVERTER_TYPES = {"uuid": {"type": "string", "format": "uuid"}, "int": {"type": "integer"}}

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
@response(description="This API's OpenAPI 3 document")
def openapi_document():
    """The OpenAPI document of this API."""
    if "orion_openapi" not in current_app.extensions:
        current_app.extensions["orion_openapi"] = build_spec(current_app)
    return current_app.extensions["orion_openapi"]


# The docs page's own policy, stricter than the app-wide one (web/security_headers):
# Swagger UI from /vendor and its set-up from /static, no inline script, nothing
# from another origin; img-src allows data: for the icons inlined in its CSS.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/docs")
@html_page("This API's documentation: Swagger UI rendering /api/v1/openapi.json")
def docs():
    """This API's documentation, as an HTML page (Swagger UI, served locally)."""
    return render_template("api_docs.html"), {"Content-Security-Policy": DOCS_CSP}


def build_spec(app: Flask) -> dict:
    """The OpenAPI 3.0 document as a dict: every documented route under ``API_PREFIX``."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Orion API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Orion's order-processing HTTP API (SPEC 'HTTP API')."},
    )
    plugin.converter.add_attribute_function(_storable_text)
    plugin.map_to_openapi_type(Money, "string", "decimal")
    plugin.map_to_openapi_type(UTCDateTime, "string", "date-time")
    spec.components.schema("Problem", schema=ProblemSchema)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        facts = getattr(view, "_apidoc", {})
        if rule.rule.startswith(API_PREFIX) and "success" in facts:  # set by @response
            spec.path(
                path=_VARIABLE.sub(r"{\g<name>}", rule.rule),
                parameters=_path_parameters(rule),
                operations={
                    method.lower(): _operation(rule, view, facts)
                    for method in sorted(rule.methods - IGNORED_METHODS)
                },
            )
    return spec.to_dict()


# SPEC: text PostgreSQL cannot store (NUL, UTF-16 halves alone) is a 422, so the
# document says which strings are valid (web.apidoc.UNSTORABLE is the check).
STORABLE_TEXT = "^[^\\x00\\ud800-\\udfff]*$"


def _storable_text(self, field, ret: dict, **kwargs) -> dict:
    """An attribute function of apispec's converter: a plain string field (no enum,
    format or pattern of its own) gets the ``STORABLE_TEXT`` pattern."""
    if ret.get("type") == "string" and not ({"enum", "format", "pattern"} & ret.keys()):
        return {"pattern": STORABLE_TEXT}
    return {}


def _path_parameters(rule: Rule) -> list[dict]:
    return [
        {
            "in": "path",
            "name": match["name"],
            "required": True,
            "schema": _CONVERTER_TYPES.get(match["converter"], {"type": "string"}),
        }
        for match in _VARIABLE.finditer(rule.rule)
    ]


def _operation(rule: Rule, view, facts: dict) -> dict:
    summary, _, description = (inspect.getdoc(view) or "").partition("\n")
    operation = {
        "operationId": rule.endpoint.replace(".", "_"),
        "summary": summary,
        "tags": [rule.endpoint.split(".")[0]],
        "responses": _responses(facts),
    }
    if description.strip():
        operation["description"] = description.strip()
    if facts["parameters"]:
        operation["parameters"] = facts["parameters"]
    if "body" in facts:
        operation["requestBody"] = {
            "required": not facts["body_optional"],
            "content": {"application/json": {"schema": facts["body"]}},
        }
    if facts.get("auth"):
        operation["security"] = [{"bearerAuth": []}]
    return operation


def _responses(facts: dict) -> dict:
    status, schema, description, headers = facts["success"]
    success: dict = {"description": description}
    if "media_type" in facts:
        success["content"] = {facts["media_type"]: {"schema": {"type": "string"}}}
    elif schema is not None:
        success["content"] = {"application/json": {"schema": schema}}
    elif status != 204:
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    if facts.get("links"):
        success["links"] = {
            name: {"operationId": operation, "parameters": {"order_id": "$response.body#/id"}}
            for name, operation in facts["links"].items()
        }
    if headers:
        success["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    problems = {
        str(code): {"description": text, "content": {"application/problem+json": {"schema": "Problem"}}}
        for code, text in sorted(facts["responses"].items())
    }
    return {str(status): success, **problems}
