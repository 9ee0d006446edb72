"""Replay the Online Retail invoices through Orion's HTTP API, each customer as themselves.

``orion replay --base-url http://127.0.0.1:8000 --limit 2000 --concurrency 8
[--speed 0] [--data PATH] [--password PW] [--timeout 600] [--tokens SPEC] [--poll-rate 20]
[--json-out FILE]`` (or ``python -m tools.replay``)

Three parts, one module each: ``plan`` (``tools.replay.plan``, pure: invoices ->
order and cancel actions, in file order), ``Replay`` (``tools.replay.client``,
HTTP: place the actions with a thread pool, then poll every order until it is
final) and ``summarize`` (``tools.replay.summary``, pure: counts, throughput,
latency percentiles); this module is the command line.
docs/replay.md explains the summary. Exit status 0 when every order is final, else 1.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import click

from tools.clicommon import run
from tools.replay.client import (
    API_PREFIX,
    CANCELLABLE,
    FINAL,
    POLL_INTERVAL_S,
    REPAY_TOKEN,
    Accounts,
    Api,
    ApiError,
    OrderState,
    Replay,
    Tally,
    retry_after,
)
from tools.replay.plan import (
    DEFAULT_TOKENS,
    GUEST_EMAIL,
    MAX_CANDIDATES,
    CancelAction,
    OrderAction,
    choose_token,
    customer_email,
    order_action,
    parse_tokens,
    plan,
    shipping_address,
)
from tools.replay.summary import parse_time, percentile, render, summarize, timings
from tools.retail_data import DataError, default_data_path, read_invoices

__all__ = [  # the three parts, re-exported for callers of ``tools.replay``
    "API_PREFIX",
    "CANCELLABLE",
    "DEFAULT_TOKENS",
    "FINAL",
    "GUEST_EMAIL",
    "MAX_CANDIDATES",
    "POLL_INTERVAL_S",
    "REPAY_TOKEN",
    "Accounts",
    "Api",
    "ApiError",
    "CancelAction",
    "OrderAction",
    "OrderState",
    "Replay",
    "Tally",
    "choose_token",
    "customer_email",
    "main",
    "order_action",
    "parse_time",
    "parse_tokens",
    "percentile",
    "plan",
    "render",
    "retry_after",
    "shipping_address",
    "summarize",
    "timings",
]


# ---------------------------------------------------------------- command line


def _token_mix(ctx: click.Context, param: click.Parameter, value: str) -> dict:
    try:
        return parse_tokens(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("replay")
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="invoices that yield an order or a cancellation (0: all)",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="compress the invoices' time gaps N times (0: no pauses)",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="dataset (default: $ORION_DATASET or the bundled file)",
)
@click.option(
    "--password",
    default="replay-customer-password",
    show_default=True,
    help="every replay customer's password",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="seconds to wait for final states after placing",
)
@click.option(
    "--tokens",
    "mix",
    default=DEFAULT_TOKENS,
    show_default=True,
    callback=_token_mix,
    help="payment token mix, token=share,...",
)
@click.option(
    "--poll-rate",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="at most this many status GETs a second while waiting (0: unpaced)",
)
@click.option(
    "--json-out", type=click.Path(path_type=Path), default=None, help="also write the summary as JSON here"
)
@click.option("--dry-run", is_flag=True, help="only plan: print the invoice counts, send nothing")
@click.option("--no-progress", is_flag=True, help="no progress bars")
def command(**options) -> int:
    """Replay the Online Retail invoices through a running Orion's HTTP API, each
    customer as themselves; exit 0 when every order is final."""
    args = SimpleNamespace(**options)
    try:
        actions, stats = plan(read_invoices(args.data or default_data_path()), args.limit, args.mix)
    except DataError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        planned = summarize(stats, Counter(), [], Counter())
        print(render({k: planned[k] for k in ("invoices", "adjustments")}))
        return 0
    api = Api(args.base_url)
    try:
        api.request("GET", "/healthz", prefix="")
    except ApiError as exc:
        print(f"replay: cannot reach {args.base_url}: {exc}", file=sys.stderr)
        return 1
    replay = Replay(
        Accounts(api, args.password), args.concurrency, args.speed, not args.no_progress, args.poll_rate
    )
    replay.run(actions, args.timeout)
    summary = summarize(
        stats, replay.tally.counts, replay.states(), api.retried.counts, replay.placing_s, replay.waiting_s
    )
    print(render(summary))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["all_final"] else 1


def main(argv: list[str] | None = None) -> int:
    return run(command, argv, "orion replay")


if __name__ == "__main__":
    sys.exit(main())
