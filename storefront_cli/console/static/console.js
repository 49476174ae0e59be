// The Storefront console: polls the console's JSON API and draws what it says.
// No library and no build step; the DOM is built with textContent only, never HTML strings.
"use strict";

const REFRESH_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "storefront.console.token";

// Where each node sits in the 1120 x 520 picture: callers left, services in a column,
// topics between the producer and its consumers, each service's database on its row.
const LAYOUT = {
  "clients": [70, 260],
  "envoy": [260, 110],
  "accounts": [520, 90],
  "orders": [520, 260],
  "fulfillment": [520, 430],
  "topic:accounts.customer.change": [760, 175],
  "topic:orders.order.fulfill": [920, 380],
  "topic:fulfillment.order.change": [640, 350],
  "db:accounts": [1040, 90],
  "db:orders": [1040, 260],
  "db:fulfillment": [1040, 430],
  "catalog": [260, 400],
  "topic:catalog.product.change": [390, 330],
  "topic:orders.order.change": [800, 300],
  "db:catalog": [160, 480],
};

const state = { token: sessionStorage.getItem(TOKEN_KEY) || "", staff: false };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function headers(json) {
  const h = {};
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, options) {
  const reply = await fetch(path, Object.assign({ headers: headers(options && options.body) }, options));
  const body = await reply.json().catch(() => ({ error: "HTTP " + reply.status }));
  if (!reply.ok) {
    const err = new Error(body.error || "HTTP " + reply.status);
    err.status = reply.status;
    throw err;
  }
  return body;
}

const drawn = new WeakMap();

// Rebuild a table only when its data changed: a row replaced under the pointer would
// swallow a click on its button.
function fill(tbody, rows, data) {
  const key = data === undefined ? null : JSON.stringify(data);
  if (key !== null && drawn.get(tbody) === key) return;
  drawn.set(tbody, key);
  tbody.replaceChildren(...(typeof rows === "function" ? rows() : rows));
}

// --- formatting ---------------------------------------------------------------------------

function rate(r) {
  if (r === null || r === undefined) return "";
  return r >= 10 ? r.toFixed(0) + "/s" : r >= 0.1 ? r.toFixed(2) + "/s" : r > 0 ? r.toFixed(3) + "/s" : "0/s";
}

function percent(x) {
  if (x === null || x === undefined) return "";
  return (x === 0 ? "0" : x * 100 >= 10 ? (x * 100).toFixed(0) : (x * 100).toFixed(1)) + "% err";
}

function duration(s) {
  if (s === null || s === undefined) return "";
  return s < 1 ? (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms" : s.toFixed(1) + " s";
}

function age(s) {
  if (s === null || s === undefined) return "-";
  if (s < 120) return s.toFixed(1) + "s";
  return s < 7200 ? (s / 60).toFixed(1) + "m" : (s / 3600).toFixed(1) + "h";
}

function edgeLabel(e) {
  if (e.kind === "outbox") {
    if (e.extra.pending === undefined) return "outbox: no data";
    return "outbox " + e.extra.pending.toFixed(0) + (e.extra.oldest_s ? ", oldest " + age(e.extra.oldest_s) : "");
  }
  if (!e.rate) return "";  // idle: the dashed line says it
  // Events show an error ratio only when some were dead-lettered; publishing has none.
  const errors = e.kind === "publish" || (e.kind === "consume" && !e.error_ratio) ? "" : percent(e.error_ratio);
  return [rate(e.rate), errors, e.p99_s !== null ? "p99 " + duration(e.p99_s) : ""]
    .filter(Boolean).join(" · ");
}

// --- the graph ----------------------------------------------------------------------------

function curve(e) {
  const [x1, y1] = LAYOUT[e.source];
  const [x2, y2] = LAYOUT[e.target];
  const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1;
  const bend = e.kind === "consume" ? 28 : e.source === "clients" && e.target !== "envoy" ? 22 : 10;
  const mx = (x1 + x2) / 2 - (dy / len) * bend, my = (y1 + y2) / 2 + (dx / len) * bend;
  // Stop short of the target's shape so the arrow head shows.
  const stop = e.target.startsWith("topic:") ? 0.86 : 0.9;
  const ex = mx + (x2 - mx) * stop, ey = my + (y2 - my) * stop;
  const sx = x1 + (mx - x1) * 0.1, sy = y1 + (my - y1) * 0.1;
  // The label sits where the fan of edges out of clients and Envoy has spread apart.
  const t = e.source === "clients" && e.target !== "envoy" ? 0.68
    : e.source === "envoy" ? 0.6 : e.kind === "publish" ? 0.62 : 0.5;
  const at = (a, m, b) => (1 - t) * (1 - t) * a + 2 * (1 - t) * t * m + t * t * b;
  return { d: `M${sx},${sy} Q${mx},${my} ${ex},${ey}`, lx: at(sx, mx, ex), ly: at(sy, my, ey) };
}

function nodeShape(n) {
  const [x, y] = LAYOUT[n.id] || [20, 20];
  const g = svg("g", { class: "node " + n.health, "data-node": n.id, "data-health": n.health, transform: `translate(${x},${y})` });
  if (n.kind === "topic") g.append(svg("rect", { x: -82, y: -16, width: 164, height: 32, rx: 6 }));
  else if (n.kind === "database") g.append(svg("ellipse", { rx: 46, ry: 22 }));
  else if (n.kind === "proxy") g.append(svg("rect", { x: -34, y: -20, width: 68, height: 40, rx: 4 }));
  else g.append(svg("circle", { r: n.kind === "service" ? 32 : 26 }));
  const title = svg("title", {}, `${n.label}: ${n.health}${n.detail ? " (" + n.detail + ")" : ""}`);
  g.append(title, svg("text", { y: n.kind === "topic" ? 4 : 0 }, n.label.replace(/_svc$/, "")));
  if (n.kind === "service") g.append(svg("text", { class: "sub", y: 14 }, n.detail));
  if (n.kind === "database") g.append(svg("text", { class: "sub", y: 13 }, n.detail));
  return g;
}

function drawGraph(data) {
  const root = document.getElementById("graph");
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z" }));
  defs.append(marker);
  const edges = data.edges.filter((e) => LAYOUT[e.source] && LAYOUT[e.target]).map((e) => {
    const c = curve(e);
    const g = svg("g", {
      class: "edge " + e.health, "data-edge": e.id, "data-kind": e.kind, "data-health": e.health,
      "data-rate": e.rate ?? "", "data-error-ratio": e.error_ratio ?? "", "data-p99": e.p99_s ?? "",
    });
    g.append(svg("path", { d: c.d, "marker-end": "url(#arrow)" }),
      svg("title", {}, `${e.id} (${e.kind}): ${edgeLabel(e) || "no traffic"}${e.detail ? " — " + e.detail : ""}`));
    const label = svg("g", { class: "edge-label", "data-edge": e.id });
    label.append(svg("text", { x: c.lx, y: c.ly - 4, "text-anchor": "middle" }, edgeLabel(e)));
    return [g, label];
  });
  // Labels last, so no node hides one.
  root.replaceChildren(defs, ...edges.map(([g]) => g), ...data.nodes.map(nodeShape), ...edges.map(([, l]) => l));
  document.getElementById("graph-info").textContent =
    `${data.prometheus}, rates over ${data.window}; ${data.queries} queries in ${data.query_ms} ms`;
  document.getElementById("graph-errors").textContent = data.errors.join("; ");
}

// --- tables -------------------------------------------------------------------------------

function drawStatus(s) {
  document.getElementById("status-info").textContent = `read in ${s.took_ms} ms`;
  fill(document.querySelector("#health tbody"), s.health.map((h) =>
    el("tr", { class: h.ok ? "" : h.required ? "bad" : "warn" },
      el("td", {}, h.part), el("td", {}, h.ok ? "UP" : h.required ? "DOWN" : "down (optional)"),
      el("td", { class: "wrap" }, h.detail))));
  const lags = s.lags || [];
  document.getElementById("lag-total").textContent = s.lags ? `(total ${lags.reduce((a, r) => a + r.lag, 0)})` : "";
  document.getElementById("lag-note").textContent = s.lags ? "" : "unavailable: " + s.unavailable.offsets;
  fill(document.querySelector("#lag tbody"), lags.map((r) =>
    el("tr", { class: r.lag > 0 ? "warn" : "", "data-group": r.group, "data-topic": r.topic },
      el("td", {}, r.group), el("td", {}, r.topic), el("td", { class: "num" }, r.partition),
      el("td", { class: "num" }, r.committed ?? "-"), el("td", { class: "num" }, r.end),
      el("td", { class: "num" }, r.lag))));
  const backlog = s.backlog || [];
  document.getElementById("outbox-note").textContent = s.backlog ? "" : "unavailable: " + s.unavailable.outbox;
  fill(document.querySelector("#outbox tbody"), backlog.map((b) =>
    el("tr", { class: b.events > 0 ? "warn" : "", "data-service": b.service },
      el("td", {}, b.service), el("td", {}, b.collection), el("td", { class: "num" }, b.documents),
      el("td", { class: "num" }, b.events), el("td", { class: "num" }, age(b.oldest_age_s)))));
  fill(document.querySelector("#dlq-counts tbody"), () => (s.dead_letters || []).map((d) => {
    const all = el("button", { "data-replay-all": d.topic }, "replay all not replayed");
    all.disabled = d.not_replayed === 0;
    all.addEventListener("click", () => replay(d.topic, []));
    return el("tr", { class: d.not_replayed > 0 ? "bad" : "", "data-dlq": d.topic },
      el("td", {}, d.topic), el("td", { class: "num" }, d.records),
      el("td", { class: "num" }, d.not_replayed), el("td", {}, all));
  }), s.dead_letters);
}

function drawDlq(d) {
  fill(document.querySelector("#dlq-records tbody"), () => dlqRows(d), [d.records, d.error]);
}

function dlqRows(d) {
  const rows = d.records.map((r) => {
    const button = el("button", { "data-replay": r.id }, "replay");
    button.addEventListener("click", () => replay(r.id.split(":")[0], [r.id]));
    return el("tr", { "data-record": r.id, class: r.replayed ? "" : "bad" },
      el("td", {}, r.id), el("td", {}, r.type), el("td", {}, r.key), el("td", {}, r.time || "-"),
      el("td", { class: "num" }, r.attempts), el("td", {}, r.replayed ? "yes" : "no"),
      el("td", { class: "wrap" }, r.error), el("td", {}, button));
  });
  if (d.error) rows.push(el("tr", { class: "bad" }, el("td", { colspan: 8 }, "unavailable: " + d.error)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "nothing parked")));
  return rows;
}

function drawEvents(e) {
  document.getElementById("events-info").textContent =
    `${e.state}; ${e.payload ? "payloads shown (staff)" : "ids and types only: payloads need a staff token"}`;
  const select = document.getElementById("events-topic");
  if (select.options.length === 1) {
    for (const t of e.topics) select.append(el("option", { value: t }, t));
  }
  fill(document.querySelector("#events tbody"), e.events.map((r) =>
    el("tr", { "data-seq": r.seq, "data-key": r.key, class: r.error ? "bad" : "" },
      el("td", {}, r.time), el("td", {}, r.topic), el("td", {}, `${r.partition}@${r.offset}`),
      el("td", {}, r.type), el("td", {}, r.key),
      el("td", { class: "wrap payload" }, [r.payload, r.error && "error: " + r.error].filter(Boolean).join("  ")))));
}

// --- actions ------------------------------------------------------------------------------

async function replay(dlqTopic, ids) {
  const out = document.getElementById("replay-result");
  out.textContent = "replaying " + (ids.length ? ids.join(", ") : "everything not replayed in " + dlqTopic) + " ...";
  try {
    const r = await api("/api/dlq/replay", { method: "POST", body: JSON.stringify({ topic: dlqTopic.replace(/\.dlq$/, ""), ids }) });
    out.textContent = r.lines.join("\n") + `\n(exit ${r.code})`;
  } catch (err) {
    out.textContent = "replay refused: " + err.message;
  }
  refresh();
}

async function check() {
  const info = document.getElementById("check-info");
  const table = document.getElementById("divergences");
  info.textContent = "checking ...";
  try {
    const r = await api("/api/check", { method: "POST", body: "{}" });
    info.textContent = r.divergences.length
      ? `${r.divergences.length} divergences (checked in ${r.took_ms} ms)`
      : `no divergence: every copy agrees with its system of record (checked in ${r.took_ms} ms)`;
    fill(table.querySelector("tbody"), r.divergences.map((d) =>
      el("tr", { "data-subject": d.subject }, el("td", {}, d.kind), el("td", {}, d.subject),
        el("td", {}, d.detail), el("td", {}, d.owner || "no"))));
    table.hidden = r.divergences.length === 0;
  } catch (err) {
    info.textContent = "check refused: " + err.message;
    table.hidden = true;
  }
}

async function whoami() {
  const who = document.getElementById("whoami");
  try {
    const me = await api("/api/whoami");
    state.staff = me.staff;
    who.textContent = me.subject ? `${me.subject} (${me.roles.join(", ") || "no role"})${me.staff ? "" : ": not staff, reads only"}` : "reading without a token";
  } catch (err) {
    if (err.status === 401) {  // a bad token would fail every read: drop it
      state.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
    }
    who.textContent = "token refused: " + err.message;
  }
}

// --- the loop -----------------------------------------------------------------------------

let timer = null;

async function refresh() {
  clearTimeout(timer);
  const started = performance.now();
  const topic = document.getElementById("events-topic").value;
  const key = document.getElementById("events-key").value.trim();
  const query = new URLSearchParams({ topic, key }).toString();
  const parts = [
    ["graph", "/api/graph", drawGraph],
    ["status", "/api/status", drawStatus],
    ["dlq", "/api/dlq", drawDlq],
    ["events", "/api/events?" + query, drawEvents],
  ];
  const failed = [];
  await Promise.all(parts.map(async ([name, path, draw]) => {
    try {
      draw(await api(path));
    } catch (err) {
      failed.push(`${name}: ${err.message}`);
    }
  }));
  const took = Math.round(performance.now() - started);
  document.getElementById("refresh").textContent =
    `refreshed ${new Date().toLocaleTimeString()} in ${took} ms` + (failed.length ? "; " + failed.join("; ") : "");
  timer = setTimeout(refresh, REFRESH_MS);
}

function useToken(token) {
  state.token = token.trim();
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  whoami().then(refresh);
}

function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    state.token = fragment.get("token");
    sessionStorage.setItem(TOKEN_KEY, state.token);
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
  }
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("token");
    useToken(input.value);
    input.value = "";
  });
  document.getElementById("forget").addEventListener("click", () => useToken(""));
  document.getElementById("check").addEventListener("click", check);
  document.getElementById("events-filter").addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
  document.getElementById("events-topic").addEventListener("change", refresh);
  document.getElementById("events-key").addEventListener("change", refresh);
  whoami().then(refresh);
}

start();
