// The operator page's charts, drawn with Chart.js (npm chart.js, served from
// /vendor) from GET /api/v1/operator/charts. The server gives the last hour per
// minute from the database; queue depth is only "now" on the server, so the page
// keeps the samples it polled and draws those (they start when the page opens).
"use strict";

const OrionCharts = (() => {
  const COLORS = {
    completed: "#16a34a", cancelled: "#f59e0b", failed: "#dc2626",
    p50_ms: "#93c5fd", p95_ms: "#3b82f6", p99_ms: "#1e3a8a", retries: "#9333ea",
  };
  const QUEUE_COLORS = ["#0f766e", "#c2410c", "#7c3aed", "#be185d", "#4d7c0f"];
  const POWERS_OF_TEN = new Set([0.1, 1, 10, 100, 1000, 10000, 100000, 1000000]);
  const DURATION_FLOOR_MS = 0.1;
  const SAMPLES_MAX = 240;  // an hour of samples at one per 15 s
  const samples = [];       // [{at, queues: {name: {messages, consumers}}}]
  const charts = {};

  const hhmm = (date) => date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  const minuteLabel = (key) => hhmm(new Date(`${key}:00Z`));
  const count = { beginAtZero: true, ticks: { precision: 0 } };

  function draw(id, type, data, options = {}) {
    if (charts[id]) {
      charts[id].data = data;
      charts[id].update("none");
      return;
    }
    charts[id] = new Chart(document.getElementById(id), {
      type, data,
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } }, ...options },
    });
  }

  function note(id, text) { document.getElementById(id).textContent = text; }

  function outcomes(data, labels) {
    draw("chart-outcomes", "bar", {
      labels,
      datasets: Object.entries(data.outcomes).map(([status, values]) => ({
        label: status, data: values, backgroundColor: COLORS[status] })),
    }, { scales: { x: { stacked: true }, y: { stacked: true, ...count } } });
  }

  function durations(data) {
    const steps = data.step_durations;
    // On a log scale a bar needs a value above the axis' start: sub-0.1 ms
    // durations are drawn at 0.1 ms, and the tooltip gives the real figure.
    draw("chart-durations", "bar", {
      labels: steps.map((s) => s.step),
      datasets: ["p50_ms", "p95_ms", "p99_ms"].map((key) => ({
        label: key.replace("_ms", ""), key, backgroundColor: COLORS[key],
        data: steps.map((s) => Math.max(s[key], DURATION_FLOOR_MS)) })),
    }, { indexAxis: "y",
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } },
                 tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${steps[c.dataIndex][c.dataset.key]} ms` } } },
      scales: {
        y: { ticks: { autoSkip: false } },
        x: { type: "logarithmic", min: DURATION_FLOOR_MS / 2, title: { display: true, text: "ms (log scale)" },
             ticks: { autoSkip: false, callback: (v) => (POWERS_OF_TEN.has(v) ? v.toLocaleString() : "") } } } });
    note("durations-note", steps.length ? `${steps.reduce((n, s) => n + s.runs, 0)} successful step runs`
                                        : "No step finished in the last hour.");
  }

  function retries(data, labels) {
    draw("chart-retries", "bar", {
      labels, datasets: [{ label: "retries", data: data.retries, backgroundColor: COLORS.retries }],
    }, { scales: { y: count } });
  }

  function queues(data) {
    if (data.queues) samples.push({ at: new Date(data.sampled_at), queues: data.queues });
    while (samples.length > SAMPLES_MAX) samples.shift();
    const names = [...new Set(samples.flatMap((s) => Object.keys(s.queues)))].sort();
    draw("chart-queues", "line", {
      labels: samples.map((s) => s.at.toLocaleTimeString([], { hour12: false })),
      datasets: names.map((name, i) => ({
        label: name, data: samples.map((s) => (s.queues[name] ? s.queues[name].messages : null)),
        borderColor: QUEUE_COLORS[i % QUEUE_COLORS.length], backgroundColor: QUEUE_COLORS[i % QUEUE_COLORS.length],
        pointRadius: 2, tension: 0.2 })),
    }, { scales: { y: count } });
    const now = data.queues ? Object.entries(data.queues).map(([q, d]) => `${q} ${d.messages}${d.consumers ? ` (${d.consumers} consumers)` : ""}`).join(" · ")
                            : "The broker did not answer.";
    note("queues-note", `Now: ${now || "no queues yet"}. Sampled by this page since it opened.`);
  }

  function update(data) {
    const labels = data.minutes.map(minuteLabel);
    outcomes(data, labels);
    durations(data);
    retries(data, labels);
    queues(data);
  }

  return { update, charts };
})();
