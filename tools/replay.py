"""Replay the Online Retail invoices through Orion's HTTP API, each customer as themselves.

``python -m tools.replay --base-url http://127.0.0.1:8000 --limit 2000 --concurrency 8
[--speed 0] [--data PATH] [--password PW] [--timeout 600] [--tokens SPEC] [--poll-rate 20]
[--json-out FILE]``

Three parts: ``plan`` (pure: invoices -> order and cancel actions, in file order),
``Replay`` (HTTP: place the actions with a thread pool, then poll every order until
it is final) and ``summarize`` (pure: counts, throughput, latency percentiles).
docs/replay.md explains the summary. Exit status 0 when every order is final, else 1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Iterable

import requests
from tqdm import tqdm

from tools.retail_data import (DataError, Invoice, default_data_path, is_product_code, read_invoices,
                               sale_lines)

API_PREFIX = "/api/v1"
FINAL = frozenset({"completed", "cancelled", "failed"})
# SPEC: an order can be cancelled in any state before ``shipped`` that is not already
# being compensated; the server's 409 stays the authority.
CANCELLABLE = frozenset({"pending", "stock_reserved", "payment_authorized", "confirmed", "awaiting_payment"})
DEFAULT_TOKENS = ("tok_visa=0.9,tok_mastercard=0.05,tok_chargeDeclined=0.02,"
                  "tok_chargeDeclinedInsufficientFunds=0.02,tok_flaky=0.01")
REPAY_TOKEN = "tok_visa"
GUEST_EMAIL = "guest@replay.orion.example"
MAX_CANDIDATES = 10       # a cancellation checks at most this many matching orders
POLL_INTERVAL_S = 0.5     # at most two GETs a second per outstanding order
REQUEST_TIMEOUT_S = 30
RETRIES = 3               # extra attempts after a network error or 5xx (backoff 0.5, 1, 2 s)
MAX_429_WAITS, MAX_RETRY_AFTER_S = 20, 60.0
CITIES = {
    "Australia": "Canberra", "Austria": "Vienna", "Bahrain": "Manama", "Belgium": "Brussels",
    "Brazil": "Brasilia", "Canada": "Ottawa", "Channel Islands": "St Helier", "Cyprus": "Nicosia",
    "Czech Republic": "Prague", "Denmark": "Copenhagen", "EIRE": "Dublin", "Finland": "Helsinki",
    "France": "Paris", "Germany": "Berlin", "Greece": "Athens", "Hong Kong": "Hong Kong",
    "Iceland": "Reykjavik", "Israel": "Jerusalem", "Italy": "Rome", "Japan": "Tokyo",
    "Lebanon": "Beirut", "Lithuania": "Vilnius", "Malta": "Valletta", "Netherlands": "Amsterdam",
    "Norway": "Oslo", "Poland": "Warsaw", "Portugal": "Lisbon", "RSA": "Pretoria",
    "Saudi Arabia": "Riyadh", "Singapore": "Singapore", "Spain": "Madrid", "Sweden": "Stockholm",
    "Switzerland": "Bern", "USA": "Washington", "United Arab Emirates": "Abu Dhabi",
    "United Kingdom": "London",
}


# ---------------------------------------------------------------- planning (pure)

def parse_tokens(spec: str) -> list[tuple[str, float]]:
    """``"tok_a=0.9,tok_b=0.1"`` -> ``[(token, cumulative share)]``; shares are normalised to 1.

    Raises ValueError naming the bad item (missing ``=``, not a number, not positive).
    """
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        token, sep, weight = item.partition("=")
        try:
            share = float(weight) if sep and token.strip() else -1.0
        except ValueError:
            share = -1.0
        if not share > 0 or math.isinf(share):
            raise ValueError(f"bad token share {item!r}: expected token=positive number")
        pairs.append((token.strip(), share))
    if not pairs:
        raise ValueError("empty token mix")
    total, running, mix = sum(s for _, s in pairs), 0.0, []
    for token, share in pairs:
        running += share / total
        mix.append((token, running))
    return mix


def choose_token(invoice_no: str, mix: list[tuple[str, float]]) -> str:
    """The payment token for an invoice: its number's SHA-256 as a fraction in [0, 1)
    picks from the cumulative ``mix`` (same invoice, same token, on every run)."""
    fraction = int.from_bytes(hashlib.sha256(invoice_no.encode()).digest()[:8], "big") / 2**64
    return next((token for token, upto in mix if fraction < upto), mix[-1][0])


def customer_email(customer_id: str | None) -> str:
    return f"customer-{customer_id}@replay.orion.example" if customer_id else GUEST_EMAIL


def shipping_address(customer_id: str | None, country: str) -> dict:
    """A plausible address in the invoice's country (its capital; the country name if unknown)."""
    return {"name": f"Customer {customer_id}" if customer_id else "Guest customer",
            "line1": "1 High Street", "city": CITIES.get(country, country or "Unknown"),
            "postal_code": "00000", "country": country or "Unspecified"}


@dataclass(frozen=True)
class OrderAction:
    """``POST /orders`` for one sale invoice; ``index`` is its position in the plan."""

    index: int
    invoice: str
    key: str
    email: str
    at: datetime
    skus: frozenset[str]
    body: dict


@dataclass(frozen=True)
class CancelAction:
    """A ``C`` invoice: cancel the first still-cancellable order among ``candidates``
    (indices of earlier OrderActions by the same customer sharing a sku, most recent first)."""

    index: int
    invoice: str
    email: str
    at: datetime
    candidates: tuple[int, ...]


def order_action(invoice: Invoice, index: int, mix, stats: Counter) -> OrderAction | None:
    """The order request for a sale invoice, or None when no product line is left.

    Adds to ``stats``: rows skipped (non-product, not priced, negative quantity),
    quantities clamped, invoices truncated to 100 lines and the lines dropped.
    """
    sale = sale_lines(invoice)
    stats.update(rows_non_product=sale.non_product, rows_not_priced=sale.not_priced,
                 rows_negative_quantity=sale.negative_quantity, quantities_clamped=sale.clamped,
                 lines_dropped=sale.dropped, invoices_truncated=bool(sale.dropped))
    if not sale.lines:
        return None
    key = f"invoice-{invoice.number}" + (f"-{invoice.part}" if invoice.part > 1 else "")
    body = {"lines": [{"sku": sku, "quantity": qty} for sku, qty in sale.lines],
            "shipping_address": shipping_address(invoice.customer_id, invoice.country),
            "payment": {"token": choose_token(invoice.number, mix)}}
    return OrderAction(index, invoice.number, key, customer_email(invoice.customer_id), invoice.at,
                       frozenset(sku for sku, _ in sale.lines), body)


def cancel_action(invoice: Invoice, index: int, history: list[OrderAction]) -> CancelAction | None:
    """The cancellation for a ``C`` invoice, or None when no earlier order of that customer shares a sku."""
    skus = {row.sku for row in invoice.rows if is_product_code(row.code)}
    matches = tuple(o.index for o in reversed(history) if o.skus & skus)[:MAX_CANDIDATES]
    if not matches:
        return None
    return CancelAction(index, invoice.number, customer_email(invoice.customer_id), invoice.at, matches)


def plan(invoices: Iterable[Invoice], limit: int, mix) -> tuple[list, Counter]:
    """The first ``limit`` (all if <= 0) invoices that yield an order or a cancellation, as actions.

    Returns ``(actions, stats)``; stats counts invoices read, orders, cancellations,
    invoices skipped by kind and the row adjustments of ``order_action``.
    """
    actions: list = []
    history: dict[str, list[OrderAction]] = defaultdict(list)
    stats: Counter = Counter()
    for invoice in invoices:
        stats["invoices_read"] += 1
        action = _action_for(invoice, len(actions), mix, history, stats)
        if action is not None:
            actions.append(action)
            if len(actions) == limit:
                break
    return actions, stats


def _action_for(invoice: Invoice, index: int, mix, history: dict, stats: Counter):
    if invoice.is_cancellation:
        action = cancel_action(invoice, index, history[customer_email(invoice.customer_id)])
        stats["cancellations" if action else "cancellations_unmatched"] += 1
    elif invoice.is_sale:
        action = order_action(invoice, index, mix, stats)
        stats["orders" if action else "invoices_without_products"] += 1
        if action:
            history[action.email].append(action)
    else:
        action = None
        stats["adjustment_invoices"] += 1
    return action


# ---------------------------------------------------------------- HTTP

class ApiError(RuntimeError):
    """A request that retries could not complete; ``kind`` is its key in the summary's errors."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind} ({detail})" if detail else kind)
        self.kind = kind


class Tally:
    """A Counter that several threads add to."""

    def __init__(self):
        self._lock, self.counts = threading.Lock(), Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n


def retry_after(value: str | None, now: datetime | None = None) -> float:
    """Seconds to wait for a Retry-After header (RFC 9110 10.2.3: delay-seconds or an
    HTTP-date); 1 s when absent or unreadable; clipped to 0..MAX_RETRY_AFTER_S."""
    if not value:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 1.0
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class Api:
    """The API under ``base_url`` + ``/api/v1``: one requests.Session per thread, with retries."""

    def __init__(self, base_url: str, sleep=time.sleep, session_factory=requests.Session):
        self.root, self._sleep, self._new_session = base_url.rstrip("/"), sleep, session_factory
        self._local, self.retried = threading.local(), Tally()

    def request(self, method: str, path: str, *, token: str | None = None, json: dict | None = None,
                headers: dict | None = None, prefix: str = API_PREFIX) -> requests.Response:
        """Send a request and return any response below 500 except 429.

        Network errors and 5xx are retried ``RETRIES`` times (backoff 0.5, 1, 2 s);
        429 waits for its Retry-After, up to ``MAX_429_WAITS`` times. Then raises
        ApiError with kind ``network``, ``http_5xx`` or ``http_429``.
        """
        headers = dict(headers or {}, **({"Authorization": f"Bearer {token}"} if token else {}))
        failures = throttled = 0
        while True:
            response, kind = self._send(method, prefix + path, headers, json)
            if kind is None:
                return response
            if kind == "http_429" and throttled < MAX_429_WAITS:
                throttled, delay = throttled + 1, retry_after(response.headers.get("Retry-After"))
            elif kind != "http_429" and failures < RETRIES:
                failures, delay = failures + 1, 0.5 * 2 ** failures
            else:
                raise ApiError(kind, f"{method} {path}")
            self.retried.add(kind)
            self._sleep(delay)

    def _send(self, method, path, headers, body) -> tuple[requests.Response | None, str | None]:
        if not hasattr(self._local, "session"):
            self._local.session = self._new_session()
        try:
            response = self._local.session.request(method, self.root + path, json=body, headers=headers,
                                                   timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException:
            return None, "network"
        if response.status_code == 429:
            return response, "http_429"
        return response, "http_5xx" if response.status_code >= 500 else None


def _json(response: requests.Response) -> dict:
    """The JSON object in ``response``; ApiError ``bad_response`` if it is not one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError("bad_response", f"{response.request.method} {response.url}")
    return body


class Accounts:
    """Customers' log-ins: register once per run (409: already there), log in, cache the
    access token per email, log in again on 401. Raises ApiError ``register_<status>``
    or ``login_<status>`` when the server refuses."""

    def __init__(self, api: Api, password: str):
        self.api, self.password = api, password
        self._tokens: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def call(self, email: str, method: str, path: str, **kwargs) -> requests.Response:
        """``Api.request`` as ``email``; a 401 renews the token and retries once."""
        token = self.token(email)
        response = self.api.request(method, path, token=token, **kwargs)
        if response.status_code == 401:
            response = self.api.request(method, path, token=self.token(email, stale=token), **kwargs)
        return response

    def token(self, email: str, stale: str | None = None) -> str:
        """The cached access token, logging in when there is none or it is ``stale``."""
        with self._guard:
            lock = self._locks[email]
        with lock:
            if self._tokens.get(email) in (None, stale):
                self._tokens[email] = self._login(email)
            return self._tokens[email]

    def _login(self, email: str) -> str:
        if email not in self._tokens:
            name = email.split("@")[0].replace("-", " ").capitalize()
            response = self.api.request("POST", "/auth/register",
                                        json={"email": email, "password": self.password, "name": name})
            if response.status_code not in (201, 409):
                raise ApiError(f"register_{response.status_code}", email)
        response = self.api.request("POST", "/auth/login", json={"email": email, "password": self.password})
        if response.status_code != 200:
            raise ApiError(f"login_{response.status_code}", email)
        return _json(response)["access_token"]


# ---------------------------------------------------------------- running

@dataclass
class OrderState:
    """One placed order as its latest GET showed it (ISO-8601 UTC strings for the times)."""

    action: OrderAction
    id: str
    status: str = "pending"
    cancel_reason: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    polled: bool = False
    repaid: bool = False

    @property
    def done(self) -> bool:
        return self.polled and self.status in FINAL

    def observe(self, body: dict) -> None:
        self.status, self.cancel_reason = body.get("status", self.status), body.get("cancel_reason")
        self.created_at, self.finished_at = body.get("created_at"), body.get("finished_at")
        self.polled = True


class Replay:
    """Places a plan's actions through ``accounts`` and follows the orders until final.

    Actions are submitted in plan order to a pool of ``concurrency`` threads, paced by
    ``speed``; a cancellation first waits for the orders it may cancel. A poller
    GETs every unfinished order at most every ``POLL_INTERVAL_S``, and at most
    ``poll_rate`` GETs a second in all (the figures come from the server's
    timestamps, so polling only decides when to stop; unpaced, it took the CPU
    the workers needed), and pays again (``REPAY_TOKEN``) the first time it sees
    ``awaiting_payment``.
    """

    def __init__(self, accounts: Accounts, concurrency: int, speed: float = 0.0, progress: bool = True,
                 poll_rate: float = 20.0):
        self.accounts, self.concurrency, self.speed, self.progress = accounts, concurrency, speed, progress
        self.poll_gap = 1.0 / poll_rate if poll_rate > 0 else 0.0
        self.orders: dict[int, OrderState] = {}
        self.tally = Tally()
        self.placing_s = self.waiting_s = 0.0
        self._lock, self._placed, self._deadline = threading.Lock(), threading.Event(), math.inf
        self._poll_error: BaseException | None = None

    def run(self, actions: list, timeout: float) -> None:
        """Place ``actions`` (from ``plan``), then wait up to ``timeout`` seconds for final states."""
        started = time.monotonic()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="replay") as pool, \
                tqdm(desc="final", unit="order", total=0, disable=not self.progress, position=1) as bar:
            poller = threading.Thread(target=self._poll_loop, args=(pool, bar), daemon=True)
            poller.start()
            placed = False
            try:
                self._place_all(pool, actions)
                placed = True
            finally:  # the poller stops at the deadline; at once if placing failed
                self.placing_s = time.monotonic() - started
                self._deadline = time.monotonic() + (timeout if placed else 0.0)
                self._placed.set()
                poller.join()
        if self._poll_error is not None:
            raise self._poll_error
        self.waiting_s = time.monotonic() - started - self.placing_s

    def states(self) -> list[OrderState]:
        with self._lock:
            return list(self.orders.values())

    def _place_all(self, pool: ThreadPoolExecutor, actions: list) -> None:
        futures: dict[int, Future] = {}
        start = time.monotonic()
        with tqdm(total=len(actions), desc="placing", unit="invoice", disable=not self.progress) as bar:
            for action in actions:
                if self.speed > 0:
                    offset = (action.at - actions[0].at).total_seconds() / self.speed
                    time.sleep(max(0.0, start + offset - time.monotonic()))
                futures[action.index] = pool.submit(self._perform, action, futures)
                futures[action.index].add_done_callback(lambda _f: bar.update())
            wait(futures.values())
        for future in futures.values():
            future.result()  # a bug in a worker fails the run loudly

    def _perform(self, action, futures: dict[int, Future]) -> None:
        try:
            if isinstance(action, OrderAction):
                self._place(action)
            else:
                wait([futures[i] for i in action.candidates])  # submitted earlier: never a deadlock
                self._cancel(action)
        except ApiError as exc:
            self.tally.add(f"errors.{exc.kind}")

    def _place(self, action: OrderAction) -> None:
        response = self.accounts.call(action.email, "POST", "/orders", json=action.body,
                                      headers={"Idempotency-Key": action.key})
        if response.status_code not in (200, 201, 202):
            self.tally.add(f"orders.rejected_{response.status_code}")
            return
        with self._lock:
            self.orders[action.index] = OrderState(action, str(_json(response)["id"]))
        self.tally.add("orders.placed")

    def _cancel(self, action: CancelAction) -> None:
        for index in action.candidates:
            state = self.orders.get(index)
            if state is None:
                continue  # that order was never placed
            self._refresh(state)
            if state.status in CANCELLABLE:
                response = self.accounts.call(action.email, "POST", f"/orders/{state.id}/cancel")
                outcome = {202: "accepted", 409: "not_cancellable"}.get(response.status_code)
                self.tally.add(f"cancellations.{outcome or f'rejected_{response.status_code}'}")
                return
        self.tally.add("cancellations.none_cancellable")

    def _refresh(self, state: OrderState) -> None:
        response = self.accounts.call(state.action.email, "GET", f"/orders/{state.id}")
        if response.status_code != 200:
            raise ApiError(f"get_order_{response.status_code}", state.id)
        state.observe(_json(response))

    def _poll_loop(self, pool: ThreadPoolExecutor, bar: tqdm) -> None:
        try:
            self._poll_rounds(pool, bar)
        except BaseException as exc:  # re-raised by run() in the main thread
            self._poll_error = exc

    def _poll_rounds(self, pool: ThreadPoolExecutor, bar: tqdm) -> None:
        while time.monotonic() < self._deadline:
            began, pending = time.monotonic(), [s for s in self.states() if not s.done]
            if self._placed.is_set() and not pending:
                return
            futures = []
            for state in pending:
                futures.append(pool.submit(self._poll, state))
                time.sleep(self.poll_gap)
                if time.monotonic() >= self._deadline:
                    break
            for future in futures:
                future.result()
            bar.total = len(self.orders)
            bar.update(sum(s.done for s in pending))
            time.sleep(max(0.0, POLL_INTERVAL_S - (time.monotonic() - began)))

    def _poll(self, state: OrderState) -> None:
        try:
            self._refresh(state)
            if state.status == "awaiting_payment" and not state.repaid:
                state.repaid = True
                response = self.accounts.call(state.action.email, "POST", f"/orders/{state.id}/payment",
                                              json={"token": REPAY_TOKEN})
                self.tally.add("repayments." + ("accepted" if response.status_code == 202
                                                else f"rejected_{response.status_code}"))
        except ApiError as exc:
            self.tally.add(f"errors.{exc.kind}")


# ---------------------------------------------------------------- summary (pure)

def parse_time(value: str) -> datetime:
    """An ISO-8601 timestamp as an aware datetime (``Z`` accepted; naive taken as UTC)."""
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list: the smallest value with at least
    ``p`` % of the values at or below it; None for an empty list."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def timings(states: Iterable[OrderState]) -> dict:
    """Latency (finished_at - created_at, seconds) percentiles of the final orders, and
    throughput: final orders per second from the first created_at to the last finished_at."""
    spans = [(parse_time(s.created_at), parse_time(s.finished_at)) for s in states
             if s.done and s.created_at and s.finished_at]
    latencies = sorted((end - start).total_seconds() for start, end in spans)
    window = (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds() if spans else 0.0
    stats = {f"p{p}": percentile(latencies, p) for p in (50, 90, 99)}
    return {"latency_s": {"count": len(latencies), **stats, "max": latencies[-1] if latencies else None},
            "throughput_orders_per_s": round(len(spans) / window, 3) if window > 0 else None}


def _group(counts: Counter, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sorted(counts.items()) if k.startswith(prefix)}


def summarize(stats: Counter, counts: Counter, states: list[OrderState], retried: Counter,
              placing_s: float = 0.0, waiting_s: float = 0.0) -> dict:
    """The run's summary (JSON-safe); its fields are described in docs/replay.md."""
    cancels = _group(counts, "cancellations.")
    final = [s for s in states if s.done]
    return {
        "invoices": {k: stats[k] for k in ("invoices_read", "orders", "cancellations",
                                           "cancellations_unmatched", "invoices_without_products",
                                           "adjustment_invoices")},
        "adjustments": {k: stats[k] for k in ("rows_non_product", "rows_not_priced", "rows_negative_quantity",
                                              "quantities_clamped", "invoices_truncated", "lines_dropped")},
        "orders": _group(counts, "orders."),
        "cancellations": {"sent": sum(v for k, v in cancels.items() if k != "none_cancellable"), **cancels},
        "repayments": _group(counts, "repayments."),
        "final": dict(Counter(s.status for s in final)),
        "cancel_reasons": dict(Counter(s.cancel_reason for s in final if s.status == "cancelled")),
        "not_final": dict(Counter(s.status for s in states if not s.done)),
        "errors": _group(counts, "errors."),
        "retries": dict(retried),
        **timings(states),
        "elapsed_s": {"placing": round(placing_s, 3), "waiting": round(waiting_s, 3)},
        "all_final": len(final) == len(states),
    }


def render(summary: dict) -> str:
    """The summary as text, one line per section."""
    def line(name: str, value) -> str:
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "none"
        return f"{name:<26}{_fmt(value)}"
    return "\n".join(line(name.replace("_", " "), value) for name, value in summary.items())


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


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
