"""Check SPEC's guarantees over the whole database and report every violation.

``orion audit [--database-url URL] [--json]`` (or ``python -m tools.audit``); exit 1
if anything is off.

- guarantee 3, per SKU: ``on_hand >= 0``, ``reserved >= 0``, ``reserved`` equals
  the sum of held reservations, and ``on_hand`` equals the sum of its ledger rows;
- guarantee 2: no order has two captures or two refunds, and no refund lacks a capture;
- guarantee 4 (emails): no order has two emails of one template.
"""

from __future__ import annotations

import json
import sys

import click

from services.audit import audit
from tools.clicommon import run


@click.command("audit")
@click.option("--database-url", metavar="URL", help="default: the settings' DATABASE_URL")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def command(database_url: str | None, as_json: bool) -> int:
    """Check SPEC's guarantees over the whole database; exit 1 if anything is off."""
    from sqlalchemy.orm import sessionmaker

    from config import get_settings
    from models.db import make_engine

    engine = make_engine(database_url or get_settings().database_url)
    with sessionmaker(engine).begin() as session:
        report = audit(session)
    bad = {k: v for k, v in report["violations"].items() if v}
    if as_json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print("totals: " + ", ".join(f"{k}={v}" for k, v in report["totals"].items()))
        for name, rows in report["violations"].items():
            print(f"{'FAIL' if rows else 'ok  '} {name}" + (f": {rows[:5]}" if rows else ""))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    return run(command, argv, "orion audit")


if __name__ == "__main__":
    sys.exit(main())
