"""Security headers on every response the web process sends: the API, the pages,
``/metrics``, errors and Socket.IO's own HTTP answers (SPEC "Availability and
abuse"; OWASP Secure Headers Project).

- ``X-Content-Type-Options: nosniff``: browsers take the declared type (a JSON
  body is never sniffed into HTML or script).
- A framing policy, both forms: ``Content-Security-Policy: frame-ancestors
  'none'`` (CSP Level 2) and ``X-Frame-Options: DENY`` for older browsers
  (clickjacking). A response with a CSP of its own keeps it.
- ``Referrer-Policy: no-referrer``: order ids in URLs do not leak to other sites.
- ``Strict-Transport-Security`` on responses to HTTPS requests (behind the TLS
  proxy of the deployment, with ``PROXY_HOPS`` set).

A WSGI middleware rather than Flask's ``after_request``: it sits outside
Flask-SocketIO's middleware, so the Engine.IO responses get the headers too.
Token responses also carry ``Cache-Control: no-store`` (``web.auth``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
)
# On HTTPS only (RFC 6797 §7.2: not over plain HTTP): behind the TLS proxy, with
# PROXY_HOPS set so that the scheme is the client's.
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


class SecurityHeaders:
    """WSGI middleware adding ``HEADERS`` that the response does not set itself."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info=None):
            # Read now, not before the call: ProxyFix (inside) sets the client's scheme.
            https = environ.get("wsgi.url_scheme") == "https"
            extra = (*HEADERS, HSTS) if https else HEADERS
            present = {name.lower() for name, _ in headers}
            headers = list(headers) + [(name, value) for name, value in extra if name.lower() not in present]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)
