// The only script of the dashboard: the pending-change countdown and the
// live charts. Every page works without it (the banner shows the seconds
// left when the page was made; the tables show the rates of that moment).
"use strict";

function countdown() {
  const banner = document.getElementById("pending-banner");
  const out = document.getElementById("countdown");
  if (!banner || !out) return;
  const deadline = Number(banner.dataset.deadlineMs);
  const tick = () => {
    const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    out.textContent = left + " s";
    if (left > 0) {
      setTimeout(tick, 250);
    } else {
      out.textContent = "0 s: rolling back";
      // The appliance rolls back at the deadline; the page then says what
      // was restored.
      setTimeout(() => location.reload(), 2000);
    }
  };
  tick();
}

// ---- charts --------------------------------------------------------------

const POINTS = 180; // three minutes at one sample a second
const SVGNS = "http://www.w3.org/2000/svg";
const W = 420, H = 170, PAD_L = 84, PAD_B = 20;

const UNITS = { bps: "bit/s", pps: "pkt/s", drops: "frames/s", conns: "", latency: "µs" };

function si(v, unit) {
  const a = Math.abs(v);
  if (unit === "µs" && a >= 1000) return (v / 1000).toFixed(1) + " ms";
  let s;
  if (a >= 1e9) s = (v / 1e9).toFixed(1) + " G";
  else if (a >= 1e6) s = (v / 1e6).toFixed(1) + " M";
  else if (a >= 1e3) s = (v / 1e3).toFixed(1) + " k";
  else s = (Number.isInteger(v) ? v : v.toFixed(1)) + " ";
  return (s + unit).trim();
}

function el(name, attrs, parent) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

class Chart {
  constructor(figure) {
    this.kind = figure.dataset.series;
    this.unit = UNITS[this.kind];
    this.svg = figure.querySelector("svg");
    this.svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.series = {}; // name -> array of values
    this.figure = figure;
    this.legend = document.createElement("p");
    this.legend.className = "legend";
    figure.appendChild(this.legend);
  }
  push(values) {
    for (const [name, v] of Object.entries(values)) {
      if (!this.series[name]) this.series[name] = [];
    }
    for (const [name, arr] of Object.entries(this.series)) {
      arr.push(values[name] ?? 0);
      if (arr.length > POINTS) arr.shift();
    }
    this.draw();
  }
  draw() {
    const svg = this.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    let max = 0;
    for (const arr of Object.values(this.series)) for (const v of arr) max = Math.max(max, v);
    const top = max > 0 ? max * 1.1 : 1;
    // Axes and the scale.
    el("line", { x1: PAD_L, y1: 4, x2: PAD_L, y2: H - PAD_B, class: "axis" }, svg);
    el("line", { x1: PAD_L, y1: H - PAD_B, x2: W, y2: H - PAD_B, class: "axis" }, svg);
    for (const f of [0, 0.5, 1]) {
      const y = H - PAD_B - f * (H - PAD_B - 4);
      const t = el("text", { x: PAD_L - 4, y: y + 4, class: "tick", "text-anchor": "end" }, svg);
      t.textContent = si(top * f, this.unit);
      if (f > 0) el("line", { x1: PAD_L, y1: y, x2: W, y2: y, class: "grid" }, svg);
    }
    const t = el("text", { x: W, y: H - 4, class: "tick", "text-anchor": "end" }, svg);
    t.textContent = "now";
    const t0 = el("text", { x: PAD_L, y: H - 4, class: "tick" }, svg);
    t0.textContent = "−" + POINTS + " s";
    const legend = [];
    let i = 0;
    for (const [name, arr] of Object.entries(this.series)) {
      const pts = arr.map((v, j) => {
        const x = W - (arr.length - 1 - j) * ((W - PAD_L) / (POINTS - 1));
        const y = H - PAD_B - (v / top) * (H - PAD_B - 4);
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      el("polyline", { points: pts.join(" "), class: "line s" + (i % 4) }, svg);
      legend.push(`<span class="key s${i % 4}"></span>${name}: <output data-series-name="${name}">${si(arr[arr.length - 1], this.unit)}</output>`);
      i++;
    }
    // Built from our own strings and numbers only.
    this.legend.innerHTML = legend.join(" &nbsp; ");
    this.figure.dataset.points = String(Math.max(0, ...Object.values(this.series).map((a) => a.length)));
    this.figure.dataset.last = String(Object.values(this.series).reduce((s, a) => s + (a[a.length - 1] || 0), 0));
  }
}

function sum(list, f) {
  return (list || []).reduce((s, x) => s + f(x), 0);
}

function charts() {
  const figures = document.querySelectorAll("figure.chart");
  if (!figures.length || !window.EventSource) return;
  const byKind = {};
  figures.forEach((f) => (byKind[f.dataset.series] = new Chart(f)));
  const state = document.getElementById("stream-state");
  const source = new EventSource("/api/v1/stats/stream");
  source.addEventListener("rates", (ev) => {
    const s = JSON.parse(ev.data);
    const ports = s.ltran ? s.ltran.ports : null;
    const useLtran = ports && ports.length;
    const rxBps = useLtran ? sum(ports, (p) => p.rx_bps) : sum(s.lstacks, (l) => l.rx_bps);
    const txBps = useLtran ? sum(ports, (p) => p.tx_bps) : sum(s.lstacks, (l) => l.tx_bps);
    const rxPps = useLtran ? sum(ports, (p) => p.rx_pps) : sum(s.lstacks, (l) => l.rx_pps);
    const txPps = useLtran ? sum(ports, (p) => p.tx_pps) : sum(s.lstacks, (l) => l.tx_pps);
    const dispatchDrops = s.ltran
      ? sum(s.ltran.dispatch.filter((c) => /drop|full|malformed|not_for_us|spoofed/.test(c.name)), (c) => c.per_sec)
      : 0;
    byKind.bps && byKind.bps.push({ rx: rxBps, tx: txBps });
    byKind.pps && byKind.pps.push({ rx: rxPps, tx: txPps });
    byKind.drops && byKind.drops.push({ lstack: sum(s.lstacks, (l) => l.drops_per_sec), ltran: dispatchDrops });
    byKind.conns && byKind.conns.push({ tcp: sum(s.lstacks, (l) => l.tcp_connections) });
    // Every instance's reads of the last second, summarised by the server.
    const lat = s.rx_latency;
    byKind.latency && byKind.latency.push({ p50: lat ? lat.p50_us : 0, p99: lat ? lat.p99_us : 0 });
    if (state) state.textContent = "Live: updated every second from the appliance's stream of rates.";
  });
  source.onerror = () => {
    if (state) state.textContent = "The live stream is interrupted; retrying.";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  countdown();
  charts();
});
