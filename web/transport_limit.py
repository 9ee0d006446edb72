"""At most so many Socket.IO transports open at once per client address, refused
before they take a server thread for long.

The web server (gunicorn ``gthread``, Flask-SocketIO's ``threading`` mode) gives
every open WebSocket a thread for its whole life. A flood of idle connections
from one address therefore took every thread: ``GET /api/v1/products`` timed out
behind 1,500 of them (the security issue, item 1). Counting the transports of
each address in a WSGI middleware in front of Flask-SocketIO refuses the
surplus with 429 problem+json in microseconds, so the threads stay free for
everyone else; ``web.realtime.ConnectionGuard`` then closes the admitted ones
that never authenticate.

The client address is ``REMOTE_ADDR``; behind a reverse proxy it is the proxy's
unless the deployment sets up ``ProxyFix`` (see docs/security.md).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable

SOCKETIO_PATH = "/socket.io"


class TransportLimit:
    """WSGI middleware: at most ``limit`` concurrent requests under ``/socket.io``
    per ``REMOTE_ADDR`` (a WebSocket counts for as long as it is open, a
    long-poll for as long as it waits); more are answered 429 with Retry-After."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app, self.limit = app, limit
        self.open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(SOCKETIO_PATH):
            return self.app(environ, start_response)
        address = environ.get("REMOTE_ADDR") or "-"
        with self._lock:
            if self.open[address] >= self.limit:
                return _refuse(start_response, self.limit)
            self.open[address] += 1
        try:
            # A WebSocket is served inside this call (it returns when the socket
            # closes); a polling answer is a short list, consumed here too.
            result = self.app(environ, start_response)
            try:
                return list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        finally:
            with self._lock:
                self.open[address] -= 1
                if self.open[address] <= 0:
                    del self.open[address]


def _refuse(start_response: Callable, limit: int) -> list[bytes]:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Too Many Requests",
            "status": 429,
            "detail": f"too many Socket.IO connections from this address (limit {limit})",
        }
    ).encode()
    start_response(
        "429 Too Many Requests",
        [
            ("Content-Type", "application/problem+json"),
            ("Content-Length", str(len(body))),
            ("Retry-After", "10"),
        ],
    )
    return [body]
