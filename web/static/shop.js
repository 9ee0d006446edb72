// The customer page: catalog, cart, checkout, and live order timelines.
"use strict";

(() => {
  const { call, el, time, debounce, timeline } = Orion;
  const $ = (sel) => document.querySelector(sel);
  const cart = new Map();      // sku -> {name, unit_price, quantity}
  const orders = new Map();    // order id -> latest order document
  let current = null;          // the order shown in detail
  let stepsWithEvents = new Set();  // names of the steps of `current` that wrote an event
  let stream = null;
  let productCursor = null;

  function showError(target, err) { $(target).textContent = err ? (err.message || String(err)) : ""; }

  async function start(me) {
    $("#login-panel").hidden = true;
    $("#app").hidden = false;
    $("#logout").hidden = false;
    $("#whoami").textContent = `${me.name} <${me.email}>`;
    stream = new Orion.OrderStream({
      onEvent: onEvent,
      onStatus: (state) => { const c = $("#connection"); c.textContent = state; c.dataset.state = state; },
    });
    window.orionStream = stream;  // for a look from the browser console (and the browser tests)
    await Promise.all([searchProducts(""), loadOrders()]);
  }

  // Catalog
  async function searchProducts(q, cursor = null) {
    const params = new URLSearchParams({ limit: "20" });
    if (q) params.set("q", q);
    if (cursor) params.set("cursor", cursor);
    const page = await call("GET", `/products?${params}`);
    const body = $("#products tbody");
    if (!cursor) body.replaceChildren();
    for (const p of page.items) {
      body.append(el("tr", { dataset: { sku: p.sku } },
        el("td", {}, p.sku), el("td", {}, p.name), el("td", {}, `${p.unit_price} ${p.currency}`),
        el("td", {}, p.available),
        el("td", {}, el("button", { class: "add", onclick: () => addToCart(p) }, "Add"))));
    }
    productCursor = page.next_cursor;
    $("#more-products").hidden = !productCursor;
  }

  function addToCart(product) {
    const line = cart.get(product.sku) || { ...product, quantity: 0 };
    line.quantity += 1;
    cart.set(product.sku, line);
    renderCart();
  }

  function renderCart() {
    const body = $("#cart-lines tbody");
    body.replaceChildren(...[...cart.values()].map((line) => el("tr", { dataset: { sku: line.sku } },
      el("td", {}, line.name),
      el("td", {}, el("input", { type: "number", min: "1", max: "1000", value: line.quantity,
        "aria-label": `quantity of ${line.sku}`,
        onchange: (e) => { line.quantity = Number(e.target.value); } })),
      el("td", {}, el("button", { onclick: () => { cart.delete(line.sku); renderCart(); } }, "Remove")))));
  }

  async function placeOrder(form) {
    showError("#checkout-error", null);
    if (!cart.size) return showError("#checkout-error", "The cart is empty.");
    const data = new FormData(form);
    const body = {
      lines: [...cart.values()].map((l) => ({ sku: l.sku, quantity: l.quantity })),
      shipping_address: Object.fromEntries(["name", "line1", "city", "postal_code", "country"].map((k) => [k, data.get(k)])),
      payment: { token: data.get("token") },
    };
    try {
      const order = await call("POST", "/orders", body, { "Idempotency-Key": crypto.randomUUID() });
      cart.clear();
      renderCart();
      remember(order);
      await show(order.id);
    } catch (err) { showError("#checkout-error", err); }
  }

  // Orders
  async function loadOrders() {
    const page = await call("GET", "/orders?limit=20");
    for (const order of page.items.reverse()) remember(order);
  }

  function remember(order) {
    orders.set(order.id, order);
    const row = el("tr", { dataset: { order: order.id }, onclick: () => show(order.id) },
      el("td", {}, el("code", {}, order.id.slice(0, 8))), el("td", {}, time(order.created_at)),
      el("td", {}, `${order.totals.total} ${order.currency}`),
      el("td", { class: "status" }, el("span", { class: `badge ${order.status}` }, order.status)));
    const existing = document.querySelector(`#order-list tr[data-order="${order.id}"]`);
    if (existing) existing.replaceWith(row); else $("#order-list tbody").prepend(row);
  }

  async function show(orderId) {
    // The event list restarts from seq 1: whatever arrives live from now on
    // waits in the stream until the replay below has filled the seqs before it.
    current = orderId;
    stepsWithEvents = new Set();
    $("#events").replaceChildren();
    stream.lastSeq.set(orderId, 0);
    stream.pending.delete(orderId);
    render(await call("GET", `/orders/${orderId}`));
    await stream.watch(orderId, 0);
  }

  function render(order) {
    remember(order);
    if (order.id !== current) return;
    $("#order-detail").hidden = false;
    $("#order-id").textContent = order.id;
    const status = $("#order-status");
    status.textContent = order.status;
    status.className = `badge ${order.status}`;
    $("#order-reason").textContent = order.cancel_reason ? `(${order.cancel_reason})` : "";
    $("#timeline").replaceChildren(timeline({ ...order, steps: order.steps.filter(shown) }));
    $("#pay-again").hidden = order.status !== "awaiting_payment";
    $("#cancel-order").hidden = !["pending", "stock_reserved", "awaiting_payment", "payment_authorized", "confirmed"].includes(order.status);
  }

  // An undo that found nothing to undo (no authorization to void, no capture to
  // refund, no stock held) stays in the step log but writes no order event
  // (tasks/payment.py, tasks/stock.py): the customer's timeline leaves it out, as
  // "refund_payment" there read as money having moved. The operator page shows
  // the whole step log.
  function shown(step) {
    return step.kind !== "compensation" || step.status !== "succeeded" || stepsWithEvents.has(step.name);
  }

  const refresh = debounce(async (orderId) => render(await call("GET", `/orders/${orderId}`)), 100);

  function onEvent(event) {
    const known = orders.get(event.order_id);
    if (known && known.status !== event.status) { known.status = event.status; remember(known); }
    if (event.order_id !== current) return;
    if (event.step) stepsWithEvents.add(event.step);
    $("#events").append(el("li", { dataset: { seq: event.seq, status: event.status } },
      `#${event.seq} ${time(event.at)} ${event.status}`,
      event.step ? ` · ${event.step} ${event.step_status} (attempt ${event.attempt})` : "",
      event.detail ? ` · ${event.detail}` : ""));
    refresh(event.order_id);  // the event follows the commit, so the re-read is never behind it
  }

  async function act(path, body) {
    showError("#detail-error", null);
    try { render(await call("POST", path, body)); } catch (err) { showError("#detail-error", err); }
  }

  // Wiring
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    try { await start(await Orion.login(data.get("email"), data.get("password"))); }
    catch (err) { showError("#login-error", err); }
  });
  $("#register-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(e.target));
    try {
      await call("POST", "/auth/register", data);
      await start(await Orion.login(data.email, data.password));
    } catch (err) { showError("#register-error", err); }
  });
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); searchProducts(e.target.q.value); });
  $("#more-products").addEventListener("click", () => searchProducts($("#search-form").q.value, productCursor));
  $("#checkout-form").addEventListener("submit", (e) => { e.preventDefault(); placeOrder(e.target); });
  $("#cancel-order").addEventListener("click", () => act(`/orders/${current}/cancel`));
  $("#pay-again-button").addEventListener("click", () => act(`/orders/${current}/payment`, { token: $("#pay-again-token").value }));
  $("#logout").addEventListener("click", async () => { await Orion.logout(); location.reload(); });

  if (Orion.tokens.access) call("GET", "/auth/me").then(start).catch(() => Orion.tokens.clear());
})();
