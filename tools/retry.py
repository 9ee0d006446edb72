"""Re-drive a saga from the command line, as an operator's retry would.

``python -m tools retry ORDER_ID [ORDER_ID ...]``: a ``failed`` order starts a new
run, a stuck one resumes from its last completed step, ``compensation_failed``
re-runs compensation. Prints each order's new status; exits 1 naming any order
that could not be retried, and why.
"""
from __future__ import annotations

import argparse
import sys

from services.errors import Conflict, NotFound
from services.ordering import Actor, retry_saga

CLI_OPERATOR = Actor(user_id=0, role="operator")  # the command line acts as an operator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools retry", description=__doc__.splitlines()[0])
    parser.add_argument("order_ids", nargs="+", metavar="ORDER_ID")
    args = parser.parse_args(argv)
    failed = 0
    for order_id in args.order_ids:
        try:
            order = retry_saga(order_id, CLI_OPERATOR)
        except (NotFound, Conflict) as exc:
            print(f"retry: {order_id}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{order_id}: re-driven, now {order.status}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
