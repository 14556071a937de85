// The admin page: polls /api/stats once a second, fills the figures and
// tables, and draws the last minutes as SVG polylines. No dependency.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function number(n) {
  if (n == null) return "–";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function ms(seconds) {
  if (seconds == null) return "–";
  const m = seconds * 1000;
  return (m < 10 ? m.toFixed(2) : m.toFixed(0)) + " ms";
}

function duration(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

// Rows of [label, value] (or of cells) into a table body, as text.
function rows(table, data, empty) {
  const body = $(table).tBodies[0];
  body.replaceChildren();
  if (data.length === 0) {
    const td = body.insertRow().insertCell();
    td.colSpan = 4;
    td.className = "empty";
    td.textContent = empty;
    return;
  }
  for (const cells of data) {
    const tr = body.insertRow();
    cells.forEach((cell, i) => {
      const td = tr.insertCell();
      const [text, cls] = Array.isArray(cell) ? cell : [cell, i === 0 ? "" : "num"];
      td.textContent = text;
      if (cls) td.className = cls;
    });
  }
}

// Draws `series` (arrays of numbers or nulls, oldest first, one per second)
// into the SVG `id`, scaled to the largest value.
function chart(id, series, classes, scale = (v) => v) {
  const svg = $(id);
  const width = 600, height = 140, top = 14;
  const values = series.flat().filter((v) => v != null).map(scale);
  const max = Math.max(1e-9, ...values);
  const ceiling = niceCeiling(max);
  svg.replaceChildren();
  for (const f of [0, 0.5, 1]) {
    const y = top + (height - top) * (1 - f);
    const line = document.createElementNS(SVG, "line");
    Object.entries({ x1: 0, x2: width, y1: y, y2: y, class: "grid" }).forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
    if (f > 0) {
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", 2);
      label.setAttribute("y", y - 2);
      label.textContent = number(ceiling * f);
      svg.append(label);
    }
  }
  const points = Math.max(60, ...series.map((s) => s.length));
  series.forEach((values, n) => {
    const line = document.createElementNS(SVG, "polyline");
    const offset = points - values.length;
    const coords = [];
    values.forEach((v, i) => {
      if (v == null) return;
      const x = ((offset + i) / (points - 1)) * width;
      const y = top + (height - top) * (1 - scale(v) / ceiling);
      coords.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    });
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("stroke", `var(--${classes[n]})`);
    line.dataset.points = coords.length;
    svg.append(line);
  });
}

function niceCeiling(max) {
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
  return 10 * power;
}

function render(s) {
  $("version").textContent = "v" + s.version;
  $("uptime").textContent = "up " + duration(s.uptime_seconds);
  const status = $("status");
  status.textContent = s.ready ? "ready" : "not ready: " + s.not_ready_because;
  status.className = "badge " + (s.ready ? "ready" : "down");

  $("sessions").textContent = number(s.sessions);
  $("messages-in").textContent = number(s.rates.messages_in);
  $("messages-out").textContent = number(s.rates.messages_out);
  const last = s.history.length ? s.history[s.history.length - 1].latency : null;
  const latency = last || s.latency.since_start;
  $("p50").textContent = ms(latency && latency.p50);
  $("p90").textContent = ms(latency && latency.p90);
  $("p99").textContent = ms(latency && latency.p99);

  const h = s.history;
  chart("chart-sessions", [h.map((p) => p.sessions)], ["in"]);
  chart("chart-messages", [h.map((p) => p.messages_in), h.map((p) => p.messages_out)], ["in", "out"]);
  chart(
    "chart-latency",
    ["p50", "p90", "p99"].map((q) => h.map((p) => (p.latency ? p.latency[q] * 1000 : null))),
    ["p50", "p90", "p99"],
  );

  rows("connections", [
    ["WebSockets open", s.websockets_open],
    ["long-polling requests", s.connections["long-polling"]],
    ["callback-polling requests", s.connections["callback-polling"]],
    ["WebSocket upgrades", s.connections.websocket],
    ["handshakes accepted", s.handshakes.accepted],
    ["handshakes denied", s.handshakes.denied],
    ["publishes", s.publishes],
    ["deliveries", s.deliveries],
    ["dropped (overflow, qos, session end)", `${s.dropped.overflow}, ${s.dropped.qos}, ${s.dropped.session_end}`],
    ["queued in outboxes", s.outbox_depth],
  ], "");
  rows("by-subscribers",
    s.channels.by_subscribers.map((c) => [[c.channel, "channel"], c.subscribers]),
    "no subscriptions");
  rows("by-traffic",
    s.channels.by_traffic.map((c) => [[c.channel, "channel"], number(c.messages_per_second), number(c.deliveries_per_second), c.messages]),
    "no publishes yet");
  $("untracked").textContent = s.channels.untracked_per_second > 0
    ? `${number(s.channels.untracked_per_second)} msg/s on channels not tracked (table full)` : "";

  const a = s.adapters;
  rows("adapters", [
    ["Metadata Adapter", a.metadata],
    ["Data Adapters", a.data_adapters.length ? a.data_adapters.join(", ") : "none"],
    ["remote adapters", a.remote.configured.length
      ? `${a.remote.connected} of ${a.remote.configured.length} connected (${a.remote.configured.join(", ")})`
      : "none"],
  ], "");

  $("cluster-card").hidden = !s.cluster;
  if (s.cluster) {
    rows("cluster", [
      ["node id", s.cluster.node_id],
      ["broker", `${s.cluster.broker}, ${s.cluster.broker_up ? "up" : "DOWN"}`],
      ["Redis", s.cluster.redis],
    ], "");
  }

  rows("errors",
    s.recent_errors.slice().reverse().map((e) => [
      new Date(e.at_ms).toLocaleTimeString(),
      [e.level, "level-" + e.level],
      [e.target, ""],
      [e.message, ""],
    ]),
    "none since the start");
}

async function poll() {
  try {
    const response = await fetch("/api/stats", { cache: "no-store" });
    render(await response.json());
  } catch (e) {
    const status = $("status");
    status.textContent = "unreachable";
    status.className = "badge down";
  }
  setTimeout(poll, 1000);
}

poll();
