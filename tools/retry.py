"""Re-drive a saga from the command line, as an operator's retry would.

``orion retry ORDER_ID [ORDER_ID ...]``: a ``failed`` order starts a new
run, a stuck one resumes from its last completed step, ``compensation_failed``
re-runs compensation. Prints each order's new status; exits 1 naming any order
that could not be retried, and why.
"""

from __future__ import annotations

import sys

import click

from tools.clicommon import run


@click.command("retry")
@click.argument("order_ids", nargs=-1, required=True, metavar="ORDER_ID...")
def command(order_ids: tuple[str, ...]) -> int:
    """Re-drive sagas as the operator's Retry does: a failed order starts a new run,
    a stuck one resumes, compensation_failed re-runs compensation."""
    from services.errors import Conflict, NotFound
    from services.ordering import Actor, retry_saga

    operator = Actor(user_id=0, role="operator")  # the command line acts as an operator
    failed = 0
    for order_id in order_ids:
        try:
            order = retry_saga(order_id, operator)
        except (NotFound, Conflict) as exc:
            print(f"retry: {order_id}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{order_id}: re-driven, now {order.status}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run(command, argv, "orion retry")


if __name__ == "__main__":
    sys.exit(main())
