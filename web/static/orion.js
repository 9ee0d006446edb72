// Orion's browser client: the JSON API with a bearer token, and the live
// order stream over Socket.IO. Shared by the shop and the operator dashboard.
"use strict";

const Orion = (() => {
  const API = "/api/v1";
  const store = window.sessionStorage;

  const tokens = {
    get access() { return store.getItem("orion.access"); },
    get refresh() { return store.getItem("orion.refresh"); },
    save(body) {
      if (body.access_token) store.setItem("orion.access", body.access_token);
      if (body.refresh_token) store.setItem("orion.refresh", body.refresh_token);
    },
    clear() { store.removeItem("orion.access"); store.removeItem("orion.refresh"); },
  };

  class ApiError extends Error {
    constructor(problem) {
      super(problem.detail || problem.title || "request failed");
      this.problem = problem;
      this.status = problem.status;
    }
  }

  async function call(method, path, body, headers = {}, retried = false) {
    const init = { method, headers: { ...headers } };
    if (tokens.access) init.headers.Authorization = `Bearer ${tokens.access}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    if (response.status === 401 && !retried && tokens.refresh && path !== "/auth/refresh") {
      if (await refreshAccess()) return call(method, path, body, headers, true);
    }
    if (response.status === 204) return null;
    const data = await response.json();
    if (!response.ok) throw new ApiError(data);
    return data;
  }

  // The server rotates the refresh token on every use and treats a second use
  // of one as theft (it revokes the session), so requests that meet a 401
  // together share one refresh.
  let refreshing = null;
  function refreshAccess() {
    if (!refreshing) refreshing = exchangeRefresh().finally(() => { refreshing = null; });
    return refreshing;
  }

  async function exchangeRefresh() {
    const response = await fetch(API + "/auth/refresh", {
      method: "POST", headers: { Authorization: `Bearer ${tokens.refresh}` },
    });
    if (!response.ok) { tokens.clear(); return false; }
    tokens.save(await response.json());
    return true;
  }

  async function login(email, password) {
    tokens.save(await call("POST", "/auth/login", { email, password }));
    return call("GET", "/auth/me");
  }

  async function logout() {
    // The refresh token goes too, so it cannot outlive the session (SPEC).
    const body = tokens.refresh ? { refresh_token: tokens.refresh } : undefined;
    try { await call("POST", "/auth/logout", body); } finally { tokens.clear(); }
  }

  // The live stream. Each order's events are applied in seq order, once:
  // a repeat (seq already seen) is dropped, an early one (a gap before it)
  // waits until the gap is filled. After a reconnect every watched order is
  // subscribed again with after_seq = the last seq applied, so what was missed
  // is replayed from the order's event log and nothing is seen twice.
  class OrderStream {
    constructor({ onEvent, onInventory, onStatus }) {
      this.onEvent = onEvent;
      this.onInventory = onInventory || (() => {});
      this.onStatus = onStatus || (() => {});
      this.lastSeq = new Map();   // order id -> last seq applied
      this.pending = new Map();   // order id -> Map(seq -> event)
      this.watched = new Set();   // order ids subscribed to
      this.healing = new Set();   // order ids with a gap-filling subscribe scheduled
      this.socket = io({ auth: (cb) => cb({ token: tokens.access }), transports: ["websocket"] });
      this.socket.on("connect", () => { this.onStatus("live"); this.resubscribe(); });
      this.socket.on("disconnect", async (reason) => {
        this.onStatus("reconnecting");
        // The server closed it (the access token expired or was revoked): the
        // client does not reconnect by itself then. Refresh once and reconnect.
        if (reason !== "io server disconnect") return;
        if (tokens.refresh && await refreshAccess()) this.socket.connect();
        else this.onStatus("signed out");
      });
      this.socket.on("connect_error", async (err) => {
        this.onStatus("offline");
        // A refusal by the server (the token expired or was revoked) ends the
        // client's own retries; try once more with a refreshed access token.
        if (this.socket.active) return;
        if (err.message === "unauthorized" && tokens.refresh && await refreshAccess()) {
          setTimeout(() => this.socket.connect(), 500);
        } else {
          this.onStatus("signed out");
        }
      });
      this.socket.on("order.updated", (event) => this.receive(event));
      this.socket.on("inventory.low", (e) => this.onInventory("inventory.low", e));
      this.socket.on("inventory.restocked", (e) => this.onInventory("inventory.restocked", e));
    }

    // Watch an order whose events up to `seq` are already known (0: none).
    watch(orderId, seq = 0) {
      if (!this.lastSeq.has(orderId) || this.lastSeq.get(orderId) < seq) this.lastSeq.set(orderId, seq);
      this.watched.add(orderId);
      return this.subscribe(orderId);
    }

    subscribe(orderId) {
      return new Promise((resolve) => {
        if (!this.socket.connected) return resolve({ ok: false, error: "offline" });
        const payload = { order_id: orderId, after_seq: this.lastSeq.get(orderId) || 0 };
        this.socket.emit("subscribe", payload, resolve);
      });
    }

    resubscribe() { for (const id of this.watched) this.subscribe(id); }

    receive(event) {
      const id = event.order_id;
      if (!this.lastSeq.has(id)) {
        // An order first heard of live (placed elsewhere, or an operator's feed).
        this.lastSeq.set(id, event.seq - 1);
      }
      const last = this.lastSeq.get(id);
      if (event.seq <= last) return;  // a repeat
      const waiting = this.pending.get(id) || new Map();
      waiting.set(event.seq, event);
      this.pending.set(id, waiting);
      let next = last + 1;
      while (waiting.has(next)) {
        const ready = waiting.get(next);
        waiting.delete(next);
        this.lastSeq.set(id, next);
        this.onEvent(ready);
        next += 1;
      }
      if (waiting.size) this.healLater(id);
    }

    // A gap that outlives a second was lost on the way (a dropped connection,
    // a failed publish): replay it from the order's event log.
    healLater(orderId) {
      if (this.healing.has(orderId)) return;
      this.healing.add(orderId);
      setTimeout(() => {
        this.healing.delete(orderId);
        const waiting = this.pending.get(orderId);
        if (!waiting || !waiting.size) return;
        this.watched.add(orderId);
        this.subscribe(orderId);
      }, 1000);
    }
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function time(iso) { return iso ? new Date(iso).toLocaleTimeString() : ""; }

  function duration(start, end) {
    if (!start || !end) return "";
    const ms = new Date(end) - new Date(start);
    return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  // Calls `fn` at most once per `ms`, with the latest arguments.
  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function timeline(order) {
    const rows = order.steps.map((step) => el("tr", {
      class: `step ${step.kind} ${step.status}`, dataset: { name: step.name, status: step.status },
    }, el("td", {}, step.kind === "compensation" ? "↩ " : "", step.name),
       el("td", { class: "status" }, step.status), el("td", {}, step.attempt),
       el("td", {}, time(step.started_at)), el("td", {}, duration(step.started_at, step.finished_at)),
       el("td", { class: "error" }, step.error || "")));
    return el("table", { class: "timeline" },
      el("thead", {}, el("tr", {}, ["step", "status", "attempt", "started", "took", "error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
  }

  return { call, login, logout, tokens, OrderStream, ApiError, el, time, duration, debounce, timeline };
})();
