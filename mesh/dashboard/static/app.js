// neuromesh dashboard: draws each snapshot the broker streams (/events) as it comes.
// Plain DOM and SVG, no library. Node elements carry data-gid, data-layer, data-state, data-pid.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const TOKEN = new URLSearchParams(location.search).get("token");
const PALETTE = ["#2a9d8f", "#457b9d", "#8e7dbe", "#6a994e", "#bc6c25", "#5e60ce", "#264653", "#9c6644"];
const MAX_LINES = 400;  // links between two layers drawn one by one; past that, one band per host pair
const hostColours = new Map();
const meshes = new Map();  // net id -> drawn mesh (its svg, nodes by gid, layout key)
const $ = (id) => document.getElementById(id);

function withToken(path) {
  return TOKEN ? `${path}?token=${encodeURIComponent(TOKEN)}` : path;
}

function colourOf(host) {
  if (!hostColours.has(host)) hostColours.set(host, PALETTE[hostColours.size % PALETTE.length]);
  return hostColours.get(host);
}

function svg(name, attrs, parent) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function html(name, text, parent, cls) {
  const e = document.createElement(name);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

const fmt = {
  bytes: (b) => b == null ? "–" : b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : `${(b / 1e6).toFixed(1)} MB`,
  budget: (m) => m == null ? "–" : `${fmt.bytes(m.planned)} / ${fmt.bytes(m.measured)} / ${fmt.bytes(m.budget)}`,
  cores: (c) => c == null ? "–" : `${Math.round(c * 100)}%`,
  rate: (r) => r == null ? "–" : r >= 1000 ? `${(r / 1000).toFixed(1)}k` : `${Math.round(r)}`,
  secs: (s) => s == null ? "–" : s < 120 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min`,
  loss: (x) => x == null ? "–" : x.toPrecision(4),
  int: (n) => n == null ? "–" : n.toLocaleString("en"),
};

// -- the mesh ------------------------------------------------------------
const lo = (g) => g.neurons[0], hi = (g) => g.neurons[1];  // a group's neurons: [lo, hi)

function layout(net) {
  const layers = net.sizes.length;
  const perLayer = Math.max(...net.sizes.map((_, i) => net.processes.filter((g) => g.layer === i + 1).length));
  const W = 960, top = 22, bottom = 8, pad = 10;
  const H = Math.min(620, Math.max(160, 40 + perLayer * 16));
  const step = (W - 2 * pad) / layers;
  const nodeW = Math.min(170, step * 0.5);
  const x = (layer) => pad + (layer - 1) * step + (step - nodeW) / 2;
  const y = (n, layer) => top + (n / net.sizes[layer - 1]) * (H - top - bottom);
  return { W, H, nodeW, x, y };
}

function drawMesh(net) {
  let m = meshes.get(net.net);
  if (!m) {
    const box = html("div", null, $("meshes"), "mesh");
    box.dataset.net = net.net;
    m = { box, title: html("h3", null, box), svg: svg("svg", {}, box), key: null, nodes: new Map() };
    m.svg.addEventListener("mousemove", (ev) => showDetail(ev, m));
    m.svg.addEventListener("mouseleave", () => { $("detail").style.display = "none"; });
    meshes.set(net.net, m);
  }
  m.title.textContent = `${net.net}: ${net.sizes.join("–")} on ${net.inputs} inputs · ${net.processes.length} processes · ` +
    `${fmt.int(net.links.total)} links (${fmt.int(net.links.cross_host)} across hosts) · ${net.state}` +
    (net.restarts ? ` · ${net.restarts} restarts (last: ${net.last_failure})` : "");
  const key = net.processes.map((g) => `${g.gid}@${g.host}`).join(" ");
  if (key !== m.key) buildMesh(m, net, key);
  m.groups = new Map(net.processes.map((g) => [g.gid, g]));
  for (const g of net.processes) {
    const n = m.nodes.get(g.gid);
    n.g.setAttribute("data-state", g.state);
    n.g.setAttribute("data-pid", g.pid == null ? "" : String(g.pid));
    if (n.label) n.label.textContent = `${g.gid} · pid ${g.pid ?? "–"}`;
    if (n.sub) n.sub.textContent = `${g.host} · ${fmt.rate(g.msg_rate)} msg/s`;
  }
}

function buildMesh(m, net, key) {
  const L = layout(net);
  m.key = key;
  m.nodes.clear();
  m.svg.replaceChildren();
  m.svg.setAttribute("viewBox", `0 0 ${L.W} ${L.H}`);
  const edges = svg("g", { class: "edges" }, m.svg);
  const nodes = svg("g", { class: "nodes" }, m.svg);
  const byLayer = net.sizes.map((_, i) => net.processes.filter((g) => g.layer === i + 1));
  byLayer.forEach((groups, i) => {
    const t = svg("text", { x: L.x(i + 1), y: 14, class: "axis" }, m.svg);
    t.textContent = `layer ${i + 1}: ${net.sizes[i]} neurons, ${groups.length} processes`;
  });
  // every edge of the graph: a layer's sources (0: the rows, drawn from the left margin)
  const graph = net.graph || net.sizes.map((_, i) => [i]);
  graph.forEach((sources, i) => sources.forEach((s) => {
    if (s > 0) drawLinks(edges, byLayer[s - 1], byLayer[i], L);
    else if (i > 0) drawRows(edges, byLayer[i], L);
  }));
  for (const g of net.processes) {
    const y0 = L.y(lo(g), g.layer), y1 = L.y(hi(g), g.layer);
    const h = Math.max(1, y1 - y0 - Math.min(2, (y1 - y0) * 0.15));
    const node = svg("g", { class: "node", "data-gid": g.gid, "data-layer": g.layer, "data-host": g.host }, nodes);
    svg("rect", { x: L.x(g.layer), y: y0, width: L.nodeW, height: h, rx: Math.min(4, h / 3), fill: colourOf(g.host) }, node);
    const n = { g: node };
    if (h >= 14) n.label = svg("text", { x: L.x(g.layer) + 4, y: y0 + Math.min(13, h - 3) }, node);
    if (h >= 28) n.sub = svg("text", { x: L.x(g.layer) + 4, y: y0 + 26 }, node);
    m.nodes.set(g.gid, n);
  }
}

const mid = (g, L) => (L.y(lo(g), g.layer) + L.y(hi(g), g.layer)) / 2;

function drawRows(parent, to, L) {
  // the rows, sent by the broker straight to a later layer: a dashed curve from the left margin
  for (const b of to) {
    const x2 = L.x(b.layer), y2 = mid(b, L);
    svg("path", { d: `M2,${y2} Q${x2 / 2},${L.H - 2} ${x2},${y2}`, class: "edge rows",
      "data-from": "0", "data-to": String(b.layer) }, parent);
  }
}

function drawLinks(parent, from, to, L) {
  if (from.length * to.length <= MAX_LINES) {
    const plain = [], cross = [];
    for (const a of from) for (const b of to) (a.host === b.host ? plain : cross).push([a, b]);
    for (const [a, b] of plain.concat(cross)) {  // cross-host links last: on top
      const x1 = L.x(a.layer) + L.nodeW, y1 = mid(a, L), x2 = L.x(b.layer), y2 = mid(b, L);
      const cls = (a.host === b.host ? "edge" : "edge cross") + (b.layer - a.layer > 1 ? " skip" : "");
      const attrs = { class: cls, "data-from": String(a.layer), "data-to": String(b.layer) };
      if (b.layer - a.layer > 1) {  // past the layers between: bowed over them
        svg("path", { d: `M${x1},${y1} Q${(x1 + x2) / 2},2 ${x2},${y2}`, ...attrs }, parent);
      } else {
        svg("line", { x1, y1, x2, y2, ...attrs }, parent);
      }
    }
    return;
  }
  const span = (groups) => {  // host -> [top, bottom] of its groups in one layer
    const out = new Map();
    for (const g of groups) {
      const s = out.get(g.host) || [Infinity, -Infinity];
      out.set(g.host, [Math.min(s[0], L.y(lo(g), g.layer)), Math.max(s[1], L.y(hi(g), g.layer))]);
    }
    return out;
  };
  const a = span(from), b = span(to), xa = L.x(from[0].layer) + L.nodeW, xb = L.x(to[0].layer);
  for (const [ha, [a0, a1]] of a) {
    for (const [hb, [b0, b1]] of b) {
      const band = svg("polygon", { points: `${xa},${a0} ${xb},${b0} ${xb},${b1} ${xa},${a1}`,
        class: ha === hb ? "band" : "band cross" }, parent);
      svg("title", {}, band).textContent = `${ha} → ${hb}`;
    }
  }
}

function showDetail(ev, m) {
  const node = ev.target.closest && ev.target.closest(".node");
  const box = $("detail");
  const g = node && m.groups && m.groups.get(node.getAttribute("data-gid"));
  if (!g) { box.style.display = "none"; return; }
  box.textContent = `${g.gid}  (${g.state})\nlayer ${g.layer}, neurons ${lo(g)}..${hi(g) - 1}\n` +
    `pid ${g.pid ?? "–"} on ${g.host}, worker ${g.worker}\n${fmt.rate(g.msg_rate)} messages/s, ` +
    `CPU ${fmt.cores(g.cpu)}, ${fmt.bytes(g.rss)}\nsteps applied ${g.applied ?? "–"}, heartbeat ${fmt.secs(g.heartbeat_age)} ago`;
  box.style.left = `${ev.clientX + 14}px`;
  box.style.top = `${ev.clientY + 14}px`;
  box.style.display = "block";
}

// -- training ------------------------------------------------------------
function smooth(values, weight) {  // exponential moving average, debiased (as TensorBoard does)
  let last = 0, n = 0;
  return values.map((v) => { last = last * weight + (1 - weight) * v; n++; return last / (1 - weight ** n); });
}

function chart(parent, cls, points, marks, opts) {
  const W = opts.width || 640, H = 220, left = 52, right = 10, top = 10, bottom = 24;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: cls }, parent);
  const ys = points.map((p) => p[1]).filter((v) => v != null);
  const log = opts.log && ys.length && Math.min(...ys) > 0;
  const f = log ? Math.log10 : (v) => v;
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(0, ...xs), x1 = Math.max(1, ...xs);
  let y0 = ys.length ? Math.min(...ys.map(f)) : 0, y1 = ys.length ? Math.max(...ys.map(f)) : 1;
  if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
  const X = (v) => left + (v - x0) / (x1 - x0) * (W - left - right);
  const Y = (v) => top + (1 - (f(v) - y0) / (y1 - y0)) * (H - top - bottom);
  const axis = svg("g", { class: "axis" }, s);
  for (let i = 0; i <= 3; i++) {
    const v = y0 + (y1 - y0) * i / 3, value = log ? 10 ** v : v, yy = Y(value);
    svg("line", { x1: left, x2: W - right, y1: yy, y2: yy }, axis);
    svg("text", { x: 4, y: yy + 4 }, axis).textContent = value.toPrecision(3);
  }
  svg("text", { x: left, y: H - 6 }, axis).textContent = `${opts.xlabel} ${x0}`;
  svg("text", { x: W - right - 60, y: H - 6 }, axis).textContent = `${x1}`;
  for (const [step, why] of marks) {
    if (step == null) continue;
    const line = svg("line", { x1: X(step), x2: X(step), y1: top, y2: H - bottom, class: "mark" }, s);
    svg("title", {}, line).textContent = `restart at step ${step}: ${why}`;
  }
  const kept = points.filter((p) => p[1] != null);
  const poly = (pts, c) => svg("polyline", { class: c, "data-points": pts.length,
    points: pts.map(([a, b]) => `${X(a).toFixed(1)},${Y(b).toFixed(1)}`).join(" ") }, s);
  poly(kept, opts.dots ? "smooth" : "raw");
  if (opts.dots) for (const [a, b] of kept) svg("circle", { cx: X(a), cy: Y(b), r: 3, class: "epoch" }, s);
  else if (opts.smoothing > 0) {
    const sm = smooth(kept.map((p) => p[1]), opts.smoothing);
    poly(kept.map((p, i) => [p[0], sm[i]]), "smooth");
  }
  return s;
}

function drawTraining(nets) {
  const box = $("trainings");
  const runs = nets.filter((n) => n.run);
  if (!runs.length) return;
  box.replaceChildren();
  const opts = { log: $("logscale").checked, smoothing: Number($("smoothing").value) };
  for (const net of runs) {
    const t = net.run;
    const div = html("div", null, box, "training");
    div.dataset.net = net.net;
    html("h3", `${net.net}: ${t.mode} training, ${fmt.int(t.rows)} rows, batches of ${t.batch_size}`, div);
    const stats = html("div", null, div, "stats");
    const stat = (label, value) => { const s = html("span", `${label} `, stats); html("b", value, s); };
    stat("state", t.state);
    stat("epoch", `${t.epoch} / ${t.epochs}`);
    stat("step", t.steps_per_epoch ? `${fmt.int(t.step)} / ${fmt.int(t.steps_per_epoch * t.epochs)}` : fmt.int(t.step));
    stat("samples/s", fmt.rate(t.samples_per_second));
    stat("loss", fmt.loss(t.loss));
    stat("restarts", String(t.restarts.length));
    const charts = html("div", null, div, "charts");
    const perStep = html("div", null, charts);
    html("div", "loss per step", perStep, "hint");
    chart(perStep, "loss-chart", t.curve, t.restarts, { ...opts, xlabel: "step" });
    const perEpoch = html("div", null, charts);
    html("div", "mean loss per epoch", perEpoch, "hint");
    chart(perEpoch, "epoch-chart", t.epoch_losses.map((v, i) => [i + 1, v]), [], { ...opts, dots: true, xlabel: "epoch", width: 320 });
  }
}

// -- workers and processes -------------------------------------------------
function row(tbody, cells, classes) {
  const tr = html("tr", null, tbody);
  cells.forEach((c, i) => html("td", c, tr, classes && classes[i]));
}

function drawTables(state) {
  const workers = $("workers").tBodies[0];
  workers.replaceChildren();
  for (const w of state.workers) {
    row(workers, [w.name, w.hostname ? `${w.host} (${w.hostname})` : w.host, w.pid, w.slots, w.groups,
      fmt.cores(w.cpu), fmt.budget(w.memory), fmt.budget(w.disk), fmt.secs(w.heartbeat_age)]);
  }
  if (!$("processes-box").open) return;
  const procs = $("processes").tBodies[0];
  procs.replaceChildren();
  for (const net of state.networks) {
    for (const g of net.processes) {
      row(procs, [g.gid, g.layer, `${lo(g)}..${hi(g) - 1}`, g.host, g.worker, g.pid ?? "–", g.state,
        fmt.rate(g.msg_rate), fmt.cores(g.cpu), fmt.bytes(g.rss), g.applied ?? "–"],
        [null, null, null, null, null, null, g.state]);
    }
  }
}

// -- each snapshot ---------------------------------------------------------
function render(state) {
  const b = state.broker;
  const pair = b.pair ? ` · ${b.pair.role} of a pair (epoch ${b.pair.epoch}, peer ${b.pair.peer_role || "not heard"})` : "";
  $("broker").textContent = `broker ${b.address} · pid ${b.pid} · up ${fmt.secs(b.uptime)}${pair} · ` +
    `${state.workers.length} workers · ${state.processes.alive} processes alive`;
  const hosts = [...new Set(state.networks.flatMap((n) => n.processes.map((g) => g.host)))].sort();
  const legend = $("legend");
  legend.replaceChildren();
  for (const h of hosts) { const s = html("span", h, legend); s.prepend(html("i")); s.firstChild.style.background = colourOf(h); }
  for (const [id, m] of meshes) if (!state.networks.some((n) => n.net === id)) { m.box.remove(); meshes.delete(id); }
  for (const net of state.networks) drawMesh(net);
  drawTraining(state.networks);
  drawTables(state);
}

function connect() {
  const link = $("link");
  const events = new EventSource(withToken("/events"));
  events.onopen = () => { link.dataset.live = "true"; link.textContent = "live"; };
  events.onerror = () => { link.dataset.live = "false"; link.textContent = "reconnecting…"; };
  events.onmessage = (ev) => render(JSON.parse(ev.data));
}

document.addEventListener("DOMContentLoaded", () => {
  html("div", null, document.body).id = "detail";
  connect();
});
