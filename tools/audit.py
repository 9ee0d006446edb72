"""Check SPEC's guarantees over the whole database and report every violation.

``python -m tools.audit [--database-url URL] [--json]``; exit 1 if anything is off.

- guarantee 3, per SKU: ``on_hand >= 0``, ``reserved >= 0``, ``reserved`` equals
  the sum of held reservations, and ``on_hand`` equals the sum of its ledger rows;
- guarantee 2: no order has two captures or two refunds, and no refund lacks a capture;
- guarantee 4 (emails): no order has two emails of one template.
"""
from __future__ import annotations

import argparse
import json
import sys

from services.audit import audit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from sqlalchemy.orm import sessionmaker

    from config import get_settings
    from models.db import make_engine

    engine = make_engine(args.database_url or get_settings().database_url)
    with sessionmaker(engine).begin() as session:
        report = audit(session)
    bad = {k: v for k, v in report["violations"].items() if v}
    if args.json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print("totals: " + ", ".join(f"{k}={v}" for k, v in report["totals"].items()))
        for name, rows in report["violations"].items():
            print(f"{'FAIL' if rows else 'ok  '} {name}" + (f": {rows[:5]}" if rows else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
