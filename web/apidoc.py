"""View decorators in the manner of APIFairy (microblog-api's companion).

Each decorator does one part of the exchange (authenticate, load the body, the
query string or headers, serialize the response) and records what it did in
``view._apidoc``, from which ``web/openapi.py`` writes the OpenAPI document, so
the document describes the code that runs. Apply ``@bp.<method>`` outermost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Response, g, jsonify, request
from flask_jwt_extended import get_jwt, get_jwt_identity, verify_jwt_in_request
from marshmallow import Schema, ValidationError

from services.errors import Forbidden
from services.ordering import Actor


def _facts(view) -> dict:
    return view.__dict__.setdefault("_apidoc", {"responses": {}, "parameters": []})


def authenticate(*, refresh: bool = False, role: str | None = None, user_read_by_command: bool = False):
    """Require an access token (a refresh token if ``refresh``) as ``Authorization: Bearer``.

    401 on a missing, malformed, expired or revoked token or one of the other kind,
    or when the token's user is gone or logged out everywhere since it was issued;
    403 when ``role`` is given and the token's ``role`` claim differs.

    The user check reads the user's row (``web.auth._load_user``) unless
    ``user_read_by_command``: then the view's command reads that row anyway and
    makes the same check there (``place_order`` locks the customer's row and
    compares its token generation with the token's ``gen``: a 401 from inside the
    transaction, which writes nothing), and ``current_user`` is only the token's
    ``Actor``. That saves a connection checkout and a round trip per request.
    """

    def decorator(view):
        facts = _facts(view)
        facts["auth"] = "refresh" if refresh else "access"
        facts["responses"][401] = "Missing, invalid, expired or revoked token"
        if role:
            facts["responses"][403] = f"Only the {role} role may do this"

        @wraps(view)
        def wrapper(*args, **kwargs):
            g.orion_user_read_by_command = user_read_by_command
            verify_jwt_in_request(refresh=refresh)
            if role and get_jwt().get("role") != role:
                raise Forbidden(f"only the {role} role may do this")
            return view(*args, **kwargs)

        return wrapper

    return decorator


def current_actor() -> Actor:
    """Who sent this request, from the verified access token."""
    return Actor(int(get_jwt_identity()), get_jwt()["role"])


def body(schema: Schema, *, optional: bool = False):
    """Load the JSON body with ``schema`` into the ``body`` argument (422 if invalid).

    With ``optional`` an empty body counts as ``{}``.
    """

    def decorator(view):
        facts = _facts(view)
        facts["body"], facts["body_optional"] = schema, optional
        facts["responses"].update(
            {
                400: "Body is not well-formed JSON",
                413: "Body larger than 64 KiB",
                415: "Content-Type is not application/json",
                422: "Invalid request",
            }
        )

        @wraps(view)
        def wrapper(*args, **kwargs):
            empty = optional and not request.get_data(cache=True)
            data = {} if empty else request.get_json()
            refuse_unstorable(data)
            return view(*args, body=schema.load(data), **kwargs)

        return wrapper

    return decorator


UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL, and UTF-16 halves left alone


def refuse_unstorable(data, path: str = "") -> None:
    """Raise a 422 ``ValidationError`` naming each string in ``data`` (at any depth,
    keys included) that PostgreSQL cannot store: a NUL character or a lone
    surrogate (JSON allows ``\u0000`` and ``\ud800``; PostgreSQL text and UTF-8 do
    not). SPEC: such text is a 422, not a 500."""
    errors: dict[str, list[str]] = {}

    def walk(value, where: str) -> None:
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                errors[where or "_schema"] = ["contains a NUL character or a lone surrogate"]
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key, f"{where}.{key}" if where else str(key))
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}.{i}" if where else str(i))

    walk(data, path)
    if errors:
        raise ValidationError(errors)


def arguments(schema: Schema):
    """Load the query string with ``schema`` into the ``args`` argument (422 if invalid)."""

    def decorator(view):
        facts = _facts(view)
        facts["parameters"].append({"in": "query", "schema": schema})
        facts["responses"][422] = "Invalid query parameters"

        @wraps(view)
        def wrapper(*args, **kwargs):
            given = request.args.to_dict()
            refuse_unstorable(given)
            return view(*args, args=schema.load(given), **kwargs)

        return wrapper

    return decorator


def request_headers(schema: Schema):
    """Load the request headers that ``schema`` names into the ``headers`` argument."""

    def decorator(view):
        facts = _facts(view)
        facts["parameters"].append({"in": "header", "schema": schema})
        facts["responses"][422] = "Invalid request"
        names = [field.data_key or name for name, field in schema.fields.items()]

        @wraps(view)
        def wrapper(*args, **kwargs):
            given = {name: request.headers[name] for name in names if name in request.headers}
            refuse_unstorable(given)
            return view(*args, headers=schema.load(given), **kwargs)

        return wrapper

    return decorator


def response(
    schema: Schema | None = None,
    status: int = 200,
    description: str = "OK",
    headers: dict[str, str] | None = None,
):
    """Serialize what the view returns with ``schema`` (``jsonify`` without one).

    The view returns the object, or ``(object, headers)``; a 204 sends no body.
    An object wrapped in ``Serialized`` is the schema's output already and is
    sent as it is. ``headers`` documents response headers: ``{name: description}``.
    """

    def decorator(view):
        _facts(view)["success"] = (status, schema, description, headers or {})

        @wraps(view)
        def wrapper(*args, **kwargs):
            result = view(*args, **kwargs)
            result, extra = result if isinstance(result, tuple) else (result, {})
            if status == 204:
                return Response(status=204, headers=extra)
            if isinstance(result, Serialized):
                data = result.data
            else:
                data = schema.dump(result) if schema is not None else result
            return jsonify(data), status, extra

        return wrapper

    return decorator


@dataclass(frozen=True)
class Serialized:
    """A response body a view wrote in its schema's shape itself (a hot path's
    hand-written dump, held to the schema by a test); ``response`` sends it
    without dumping it again."""

    data: Any


def html_page(description: str):
    """Document a view that answers 200 with an HTML page (``text/html``) it renders itself."""

    def decorator(view):
        _facts(view)["success"] = (200, None, description, {})
        _facts(view)["media_type"] = "text/html"
        return view

    return decorator


def links(**targets: str):
    """OpenAPI links from the success response to operations on the same order:
    ``name=operationId``; each passes the response body's ``id`` as ``order_id``.
    Clients (and schemathesis's stateful tests) follow them."""

    def decorator(view):
        _facts(view)["links"] = targets
        return view

    return decorator


def other_responses(responses: dict[int, str]):
    """Document further problem responses: ``{status: description}``."""

    def decorator(view):
        _facts(view)["responses"].update(responses)
        return view

    return decorator
