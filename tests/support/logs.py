"""Reading the JSON log lines a test's processes write (observability.logging)."""

from __future__ import annotations

import json
from pathlib import Path


def json_lines(path: Path) -> list[dict]:
    """Every JSON object line of the log at ``path``; other lines (a traceback's,
    a library's plain text) are skipped."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return lines
