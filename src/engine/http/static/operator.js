// The operator's page: polls GET /api/v1/ops once a second (the same sources as /metrics).
"use strict";
(function () {
  const $ = id => document.getElementById(id);
  let prev = null;

  function counter(parent, label, value, id) {
    const d = document.createElement("div");
    d.className = "counter";
    if (id) d.id = id;
    const b = document.createElement("b"); b.textContent = value;
    const s = document.createElement("span"); s.textContent = label;
    d.append(b, s); parent.appendChild(d);
  }

  function fmtBound(s) { return s < 1e-3 ? (s * 1e6) + "us" : s < 1 ? (s * 1e3) + "ms" : s + "s"; }

  function histogram(parent, h, bounds) {
    const box = document.createElement("div");
    box.className = "histbox"; box.dataset.name = h.group + "." + h.name;
    const title = document.createElement("div"); title.className = "title";
    const a = document.createElement("span"); a.textContent = h.name;
    const b = document.createElement("span");
    b.textContent = h.count ? `n ${h.count}  p50 ${h.p50_us} us  p99 ${h.p99_us} us` : "no samples";
    title.append(a, b);
    const bars = document.createElement("div"); bars.className = "hist";
    const max = Math.max(1, ...h.counts);
    for (const c of h.counts) {
      const d = document.createElement("div");
      d.style.height = (100 * c / max) + "%"; d.title = String(c);
      bars.appendChild(d);
    }
    const labels = document.createElement("div"); labels.className = "histlabels";
    for (const x of [...bounds.map(fmtBound), "inf"]) { const s = document.createElement("span"); s.textContent = "≤" + x; labels.appendChild(s); }
    box.append(title, bars, labels);
    parent.appendChild(box);
  }

  function draw(d) {
    $("uptime").textContent = "up " + Math.round(d.uptime_s) + " s";
    const rates = $("rates"); rates.textContent = "";
    const c = d.counters;
    const dt = prev ? (d.ts - prev.ts) / 1000 : 0;
    const rate = k => (prev && dt > 0 ? ((c[k] - prev.counters[k]) / dt).toFixed(1) : "-");
    counter(rates, "requests/s", rate("requests"), "rate-requests");
    counter(rates, "acks/s", rate("acks"));
    counter(rates, "rejects/s", rate("rejects"));
    counter(rates, "HTTP responses/s", rate("http_responses"));
    counter(rates, "WS frames/s", rate("ws_messages_sent"));
    counter(rates, "requests total", c.requests, "total-requests");
    counter(rates, "rate limited", c.rate_limited);
    counter(rates, "busy", c.busy);
    const lags = $("lags"); lags.textContent = "";
    counter(lags, "engine seq", d.journal.seq === null ? "-" : d.journal.seq);
    counter(lags, "queued for journal", d.journal.engine_queue_pending, "journal-lag");
    counter(lags, "fsync", d.journal.fsync || "-");
    const h = d.history;
    if (h && h.error === undefined) {
      counter(lags, "history lag (seq)", h.lag, "history-lag");
      counter(lags, "history stored seq", h.stored_seq.join("/"));
      counter(lags, "writer", h.alive ? "alive" : "down");
      counter(lags, "writer restarts", h.restarts);
    } else {
      counter(lags, "history", h ? h.error : "off", "history-lag");
    }
    for (const g of ["gateway", "http", "engine"]) {
      const p = $("hist-" + g); p.textContent = "";
      // HTTP handlers without samples (an exchange traded over ZeroMQ only) are left out
      for (const x of d.histograms.filter(x => x.group === g && (x.count || g !== "http"))) histogram(p, x, d.bounds_s);
    }
    const body = $("sessions").tBodies[0]; body.textContent = "";
    for (const s of d.sessions) {
      const tr = body.insertRow();
      for (const v of [s.door, s.account, s.channels, s.queued]) { const td = tr.insertCell(); td.textContent = v === null ? "-" : v; }
    }
    if (!d.sessions.length) { const td = body.insertRow().insertCell(); td.colSpan = 4; td.className = "empty"; td.textContent = "none"; }
    prev = d;
  }

  async function poll() {
    try {
      const r = await fetch("/api/v1/ops");
      const env = await r.json();
      if (env.code !== 0) throw new Error(env.code + ": " + env.msg);
      draw(env.data);
      $("ops-status").textContent = "live"; $("ops-status").className = "status ok";
      document.body.dataset.ready = "1";
    } catch (e) {
      $("ops-status").textContent = "error: " + e.message; $("ops-status").className = "status bad";
    }
  }
  poll();
  setInterval(poll, 1000);
})();
