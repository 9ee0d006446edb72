"""The request id: ``X-Request-ID`` from the client (if sane) or a fresh uuid4 hex.

Kept in ``flask.g.correlation_id`` and bound as the log context's correlation id
(``observability.logging``), echoed on every response, stored on the orders a
request places, and carried by the task messages it publishes.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from observability.logging import bind_correlation

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # fits orders.correlation_id (64 chars)


def init_app(app: Flask) -> None:
    app.before_request(_assign)
    app.after_request(_echo)


def _assign() -> None:
    given = request.headers.get(HEADER, "")
    g.correlation_id = given if _SANE.fullmatch(given) else uuid.uuid4().hex
    bind_correlation(g.correlation_id)


def _echo(response: Response) -> Response:
    response.headers[HEADER] = g.setdefault("correlation_id", uuid.uuid4().hex)
    return response
