"""The README's environment table stays true to what the code reads."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READ = re.compile(r'(?:env\.get|_int|_float|environ\.get|getenv)\((?:env, )?"([A-Z][A-Z0-9_]+)"')
# Keys of a WSGI request's environ (PEP 3333), read by middleware: not settings.
WSGI_KEYS = {"PATH_INFO", "REMOTE_ADDR"}


def variables_read() -> set[str]:
    names = set()
    for folder in (
        "config",
        "web",
        "worker",
        "tasks",
        "tools",
        "services",
        "models",
        "payments",
        "mail",
        "progress",
        "observability",
    ):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(READ.findall(path.read_text()))
    return names - WSGI_KEYS


def test_every_variable_the_code_reads_is_in_the_readme_table():
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", (ROOT / "README.md").read_text(), re.M))
    missing = variables_read() - table
    assert not missing, f"README lacks {sorted(missing)}"
    assert {"ORION_MODE", "DATABASE_URL", "BROKER_URL"} <= table
