"""A real Prometheus (Debian's ``prometheus`` package) for tests, and what is
needed to check Orion's alert and dashboard expressions against it."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.processes import ARTIFACTS

SET_OPERATORS = re.compile(r"\s(and|or|unless)\s+((on|ignoring)\s*\([^)]*\)\s*)?")
COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)\s*(bool\s+)?([0-9.]+(e[+-]?[0-9]+)?)\s*$")


def figures(expr: str) -> list[tuple[str, bool]]:
    """An alert expression cut into what it compares: ``[(figure, must_be_empty)]``.

    The expression is split at its top-level ``and``/``or``/``unless``; from each
    part a top-level comparison with a number (``> 0.1``) is removed, leaving the
    figure that must return series from a running Orion. A part that is an
    ``absent(...)`` must return nothing instead: that is what shows the series it
    names exists.
    """
    parts = [part.strip() for part in _split_top_level(expr)]
    return [
        (part, True) if part.startswith("absent(") else (_strip_comparison(part), False) for part in parts
    ]


def _depths(expr: str) -> list[int]:
    """The bracket depth at each character (quoted text counts as nested)."""
    depths, depth, quote = [], 0, None
    for char in expr:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        depths.append(depth + (1 if quote or char in "\"'`" else 0))
    return depths


def _split_top_level(expr: str) -> list[str]:
    depths, parts, start = _depths(expr), [], 0
    for match in SET_OPERATORS.finditer(expr):
        if depths[match.start()] == 0 and match.start() >= start:
            parts.append(expr[start : match.start()])
            start = match.end()
    return [*parts, expr[start:]]


def _strip_comparison(part: str) -> str:
    match = COMPARISON.search(part)
    if match and _depths(part)[match.start()] == 0:
        return part[: match.start()].strip()
    return part


def missing(base: str, expr: str, must_be_empty: bool = False, settle_s: float = 3.0) -> str | None:
    """None when ``expr`` returns at least one series from the Prometheus at ``base``
    (or none at all, with ``must_be_empty``); else what is wrong, for the report.

    Asked again for ``settle_s`` seconds before reporting: a scrape that timed out
    marks every series of the target stale until the next one. An expression
    Prometheus refuses (a syntax error) raises AssertionError.
    """
    deadline = time.monotonic() + settle_s
    while True:
        result = query(base, expr)
        if bool(result) != must_be_empty:
            return None
        if time.monotonic() > deadline:
            return f"{expr}: {len(result)} series, expected none" if must_be_empty else f"{expr}: no series"
        time.sleep(0.5)


def query(base: str, expr: str) -> list[dict]:
    reply = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = reply.json()
    assert reply.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


@contextmanager
def prometheus(config: Path, storage: Path, timeout: float = 30) -> Iterator[str]:
    """``prometheus`` with ``config`` on a free loopback port and its own storage;
    yields its base URL once ready, and kills it on the way out."""
    binary = shutil.which("prometheus")
    assert binary, "needs Debian's prometheus package (./run.sh test installs it)"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"prometheus-{port}.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, log_path, timeout)
        yield base
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _wait_ready(proc: subprocess.Popen, base: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}; see {log_path}")
        try:
            if requests.get(f"{base}/-/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"prometheus not ready after {timeout}s; see {log_path}")
