"""HTTP: place the planned actions with a thread pool, then poll every order until it is final."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
from tqdm import tqdm

from tools.replay.plan import CancelAction, OrderAction

API_PREFIX = "/api/v1"
FINAL = frozenset({"completed", "cancelled", "failed"})
# SPEC: an order can be cancelled in any state before ``shipped`` that is not already
# being compensated; the server's 409 stays the authority.
CANCELLABLE = frozenset({"pending", "stock_reserved", "payment_authorized", "confirmed", "awaiting_payment"})
REPAY_TOKEN = "tok_visa"
POLL_INTERVAL_S = 0.5  # at most two GETs a second per outstanding order
REQUEST_TIMEOUT_S = 30
RETRIES = 3  # extra attempts after a network error or 5xx (backoff 0.5, 1, 2 s)
MAX_429_WAITS, MAX_RETRY_AFTER_S = 20, 60.0

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
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class Api:
    """The API under ``base_url`` + ``/api/v1``: one requests.Session per thread, with retries."""

    def __init__(self, base_url: str, sleep=time.sleep, session_factory=requests.Session):
        self.root, self._sleep, self._new_session = base_url.rstrip("/"), sleep, session_factory
        self._local, self.retried = threading.local(), Tally()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: dict | None = None,
        headers: dict | None = None,
        prefix: str = API_PREFIX,
    ) -> requests.Response:
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
                failures, delay = failures + 1, 0.5 * 2**failures
            else:
                raise ApiError(kind, f"{method} {path}")
            self.retried.add(kind)
            self._sleep(delay)

    def _send(self, method, path, headers, body) -> tuple[requests.Response | None, str | None]:
        if not hasattr(self._local, "session"):
            self._local.session = self._new_session()
        try:
            response = self._local.session.request(
                method, self.root + path, json=body, headers=headers, timeout=REQUEST_TIMEOUT_S
            )
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
            response = self.api.request(
                "POST", "/auth/register", json={"email": email, "password": self.password, "name": name}
            )
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

    def __init__(
        self,
        accounts: Accounts,
        concurrency: int,
        speed: float = 0.0,
        progress: bool = True,
        poll_rate: float = 20.0,
    ):
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
        with (
            ThreadPoolExecutor(self.concurrency, thread_name_prefix="replay") as pool,
            tqdm(desc="final", unit="order", total=0, disable=not self.progress, position=1) as bar,
        ):
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
        response = self.accounts.call(
            action.email, "POST", "/orders", json=action.body, headers={"Idempotency-Key": action.key}
        )
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
        except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the main thread
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
                response = self.accounts.call(
                    state.action.email, "POST", f"/orders/{state.id}/payment", json={"token": REPAY_TOKEN}
                )
                self.tally.add(
                    "repayments."
                    + ("accepted" if response.status_code == 202 else f"rejected_{response.status_code}")
                )
        except ApiError as exc:
            self.tally.add(f"errors.{exc.kind}")
