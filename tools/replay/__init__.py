"""Replay the Online Retail invoices through Orion's HTTP API, each customer as themselves.

``python -m tools.replay --base-url http://127.0.0.1:8000 --limit 2000 --concurrency 8
[--speed 0] [--data PATH] [--password PW] [--timeout 600] [--tokens SPEC] [--poll-rate 20]
[--json-out FILE]``

Three parts, one module each: ``plan`` (``tools.replay.plan``, pure: invoices ->
order and cancel actions, in file order), ``Replay`` (``tools.replay.client``,
HTTP: place the actions with a thread pool, then poll every order until it is
final) and ``summarize`` (``tools.replay.summary``, pure: counts, throughput,
latency percentiles); this module is the command line.
docs/replay.md explains the summary. Exit status 0 when every order is final, else 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from pathlib import Path

from tools.replay.client import (API_PREFIX, CANCELLABLE, FINAL, POLL_INTERVAL_S,
                                 REPAY_TOKEN, Accounts, Api, ApiError, OrderState, Replay, Tally,
                                 retry_after)
from tools.replay.plan import (DEFAULT_TOKENS, GUEST_EMAIL, MAX_CANDIDATES,
                               CancelAction, OrderAction, choose_token, customer_email,
                               order_action, parse_tokens, plan, shipping_address)
from tools.replay.summary import (parse_time, percentile, render, summarize,
                                  timings)
from tools.retail_data import DataError, default_data_path, read_invoices

__all__ = [  # the three parts, re-exported for callers of ``tools.replay``
    "API_PREFIX", "CANCELLABLE", "FINAL", "POLL_INTERVAL_S", "REPAY_TOKEN", "Accounts", "Api",
    "ApiError", "OrderState", "Replay", "Tally", "retry_after",
    "DEFAULT_TOKENS", "GUEST_EMAIL", "MAX_CANDIDATES", "CancelAction", "OrderAction", "choose_token",
    "customer_email", "order_action", "parse_tokens", "plan", "shipping_address",
    "parse_time", "percentile", "render", "summarize", "timings", "main",
]


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--limit", type=int, default=2000,
                        help="invoices that yield an order or a cancellation (0: all)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--speed", type=float, default=0.0,
                        help="compress the invoices' time gaps N times (0: no pauses)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset (default: $ORION_DATASET or the bundled file)")
    parser.add_argument("--password", default="replay-customer-password",
                        help="every replay customer's password")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for final states after placing")
    parser.add_argument("--tokens", default=DEFAULT_TOKENS,
                        help="payment token mix, token=share,...")
    parser.add_argument("--poll-rate", type=float, default=20.0,
                        help="at most this many status GETs a second while waiting (0: unpaced)")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="also write the summary as JSON here")
    parser.add_argument("--dry-run", action="store_true",
                        help="only plan: print the invoice counts, send nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        args.mix = parse_tokens(args.tokens)
    except ValueError as exc:
        parser.error(f"--tokens: {exc}")
    if args.concurrency < 1 or args.speed < 0 or args.timeout < 0:
        parser.error("--concurrency must be >= 1, --speed and --timeout >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    replay = Replay(Accounts(api, args.password), args.concurrency, args.speed, not args.no_progress,
                    args.poll_rate)
    replay.run(actions, args.timeout)
    summary = summarize(stats, replay.tally.counts, replay.states(), api.retried.counts,
                        replay.placing_s, replay.waiting_s)
    print(render(summary))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["all_final"] else 1


if __name__ == "__main__":
    sys.exit(main())

