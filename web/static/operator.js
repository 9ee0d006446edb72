// The operator dashboard: every order's events live, counts, charts, stuck
// sagas, stock alerts, order search with paging, retry and cancel.
"use strict";

(() => {
  const { call, el, time, debounce, timeline } = Orion;
  const $ = (sel) => document.querySelector(sel);
  const FEED_MAX = 200;
  const PAGE = 25;
  const ORDER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const RETRYABLE = ["failed", "compensation_failed", "pending", "stock_reserved", "payment_authorized", "confirmed", "shipped", "compensating"];
  const CANCELLABLE = ["pending", "stock_reserved", "awaiting_payment", "payment_authorized", "confirmed"];
  let current = null;
  let search = { q: "", status: "" };  // the order list's filter
  let cursor = null;                   // next_cursor of the last page shown

  async function start(me) {
    if (me.role !== "operator") {
      $("#login-error").textContent = "This page is for operators.";
      Orion.tokens.clear();
      return;
    }
    $("#login-panel").hidden = true;
    $("#app").hidden = false;
    $("#logout").hidden = false;
    $("#whoami").textContent = `${me.name} <${me.email}> (operator)`;
    new Orion.OrderStream({
      onEvent, onInventory,
      onStatus: (state) => { const c = $("#connection"); c.textContent = state; c.dataset.state = state; },
    });
    await Promise.all([loadOverview(), loadOrders(), loadCharts()]);
    setInterval(loadOverview, 15000);  // stuck ages grow without events
    setInterval(loadCharts, 15000);    // also a queue depth sample each time
  }

  async function loadCharts() { OrionCharts.update(await call("GET", "/operator/charts")); }
  const reloadCharts = debounce(loadCharts, 2000);

  async function loadOverview() {
    const o = await call("GET", "/operator/overview");
    $("#stuck-after").textContent = o.stuck_after_s;
    $("#flower-link").href = o.flower_url;
    $("#counts").replaceChildren(...Object.entries(o.counts).flatMap(([status, n]) => [
      el("dt", { class: `badge ${status}` }, status), el("dd", { dataset: { status } }, n)]));
    $("#stuck tbody").replaceChildren(...o.stuck.map((s) => el("tr", { dataset: { order: s.id } },
      el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); show(s.id); } }, s.id.slice(0, 8))),
      el("td", {}, s.status), el("td", {}, `${s.step || ""} ${s.step_status || ""}`),
      el("td", {}, `${s.age_s} s`), el("td", {}, actions(s.id, s.status)))));
    for (const low of o.low_stock) alert("inventory.low", low, false);
  }
  const reloadOverview = debounce(loadOverview, 500);

  // The order list: the newest orders, or a search (an order id, or a customer's
  // email with GET /orders?customer_email=), optionally by status; "More" pages on.
  async function loadOrders(more = false) {
    const q = search.q.trim();
    if (ORDER_ID.test(q)) return findOrder(q);
    if (q && !q.includes("@")) return showList([], null, "Enter a whole order id or a customer's email.");
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (q) params.set("customer_email", q);
    if (search.status) params.set("status", search.status);
    if (more && cursor) params.set("cursor", cursor);
    const page = await call("GET", `/orders?${params}`);
    const shown = (more ? $("#order-list tbody").children.length : 0) + page.items.length;
    const what = [q && `of ${q}`, search.status && `in ${search.status}`].filter(Boolean).join(" ");
    const summary = filtered() ? `${shown} order(s) ${what}${page.next_cursor ? ", more below" : ""}`
                               : "Newest first; orders placed from now on appear at the top.";
    showList(page.items, page.next_cursor, summary, more);
  }

  async function findOrder(id) {
    try {
      const order = await call("GET", `/orders/${id}`);
      const fits = !search.status || order.status === search.status;
      showList(fits ? [order] : [], null, fits ? "1 order" : `Order ${id.slice(0, 8)} is ${order.status}, not ${search.status}.`);
      if (fits) { current = order.id; render(order); }
    } catch (err) {
      if (err.status !== 404) throw err;
      showList([], null, `No order ${id}.`);
    }
  }

  function showList(orders, next, summary, append = false) {
    const rows = orders.map((o) => row(o.id, o.status, lastStep(o), time(o.created_at)));
    if (append) $("#order-list tbody").append(...rows); else $("#order-list tbody").replaceChildren(...rows);
    cursor = next;
    $("#more-orders").hidden = !next;
    $("#search-summary").textContent = summary;
  }

  const filtered = () => Boolean(search.q.trim() || search.status);

  function lastStep(order) {
    const step = order.steps[order.steps.length - 1];
    return step ? `${step.name} ${step.status}` : "";
  }

  function row(id, status, step, placed) {
    return el("tr", { dataset: { order: id, status } },
      el("td", {}, el("a", { href: "#", title: id, onclick: (e) => { e.preventDefault(); show(id); } }, el("code", {}, id.slice(0, 8)))),
      el("td", {}, placed),
      el("td", { class: "status" }, el("span", { class: `badge ${status}` }, status)),
      el("td", {}, step), el("td", {}, actions(id, status)));
  }

  // A live change: the order's row is updated where it is shown; a new order
  // goes on top of the unfiltered list only (a search shows what it found).
  function upsert(id, status, step) {
    const existing = document.querySelector(`#order-list tr[data-order="${id}"]`);
    if (existing) existing.replaceWith(row(id, status, step, existing.children[1].textContent));
    else if (!filtered()) $("#order-list tbody").prepend(row(id, status, step, time(new Date().toISOString())));
  }

  function actions(id, status) {
    return el("span", { class: "actions" },
      RETRYABLE.includes(status) ? el("button", { class: "retry", onclick: () => act(id, "retry") }, "Retry") : null,
      CANCELLABLE.includes(status) ? el("button", { class: "cancel", onclick: () => act(id, "cancel") }, "Cancel") : null);
  }

  async function act(id, verb) {
    $("#action-error").textContent = "";
    try {
      const order = await call("POST", `/orders/${id}/${verb}`);
      upsert(order.id, order.status, lastStep(order));
    } catch (err) { $("#action-error").textContent = `${verb} ${id.slice(0, 8)}: ${err.message}`; }
  }

  function onEvent(event) {
    const step = event.step ? `${event.step} ${event.step_status}` : (event.detail || "");
    upsert(event.order_id, event.status, step);
    const feed = $("#feed");
    feed.prepend(el("li", { dataset: { order: event.order_id, seq: event.seq, status: event.status } },
      `${time(event.at)} ${event.order_id.slice(0, 8)} #${event.seq} ${event.status}`,
      event.step ? ` · ${event.step} ${event.step_status} (attempt ${event.attempt})` : "",
      event.detail ? ` · ${event.detail}` : ""));
    while (feed.children.length > FEED_MAX) feed.lastChild.remove();
    if (event.order_id === current) refresh(current);
    reloadOverview();
    reloadCharts();
  }

  function onInventory(name, data) { alert(name, data, true); }

  function alert(name, data, live) {
    const text = name === "inventory.low"
      ? `${data.sku} low: ${data.available} available, reorder point ${data.reorder_point}`
      : `${data.sku} restocked: +${data.quantity}`;
    const existing = document.querySelector(`#stock-alerts li[data-sku="${CSS.escape(data.sku)}"]`);
    const item = el("li", { class: name.replace(".", "-"), dataset: { sku: data.sku, event: name } },
      live ? `${time(new Date().toISOString())} ` : "", text);
    if (existing) existing.replaceWith(item); else $("#stock-alerts").prepend(item);
  }

  async function show(id) {
    current = id;
    render(await call("GET", `/orders/${id}`));
  }

  function render(order) {
    $("#order-detail").hidden = false;
    $("#order-id").textContent = order.id;
    $("#order-status").textContent = order.status;
    $("#order-status").className = `badge ${order.status}`;
    $("#order-reason").textContent = order.cancel_reason ? `(${order.cancel_reason})` : "";
    $("#timeline").replaceChildren(timeline(order));
  }
  const refresh = debounce(async (id) => render(await call("GET", `/orders/${id}`)), 100);

  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    try { await start(await Orion.login(data.get("email"), data.get("password"))); }
    catch (err) { $("#login-error").textContent = err.message; }
  });
  $("#logout").addEventListener("click", async () => { await Orion.logout(); location.reload(); });
  const listing = (more) => loadOrders(more).catch((err) => { $("#action-error").textContent = err.message; });
  $("#order-search").addEventListener("submit", (e) => {
    e.preventDefault();
    $("#action-error").textContent = "";
    search = { q: e.target.q.value, status: e.target.status.value };
    listing(false);
  });
  $("#clear-search").addEventListener("click", () => {
    $("#order-search").reset();
    search = { q: "", status: "" };
    listing(false);
  });
  $("#more-orders").addEventListener("click", () => listing(true));
  if (Orion.tokens.access) call("GET", "/auth/me").then(start).catch(() => Orion.tokens.clear());
})();
