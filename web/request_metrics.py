"""HTTP request counts and latencies by route template (``/api/v1/orders/<uuid:order_id>``,
not the concrete path, so the label set stays small)."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from observability.metrics import HTTP_LATENCY, HTTP_REQUESTS

# The method comes from the client: anything else is one label value, not many.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_observe)


def _start() -> None:
    g.request_started = time.perf_counter()


def _observe(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    method = request.method if request.method in METHODS else "other"
    HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
    started = g.get("request_started")
    if started is not None:
        HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
    return response
