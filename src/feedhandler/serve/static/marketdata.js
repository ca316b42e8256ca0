// The feed handler's market-data page: Server-Sent Events of book snapshots (sampled at a few Hz on the feed's
// consumer thread), drawn as BBO lines, depth ladders and counters. Plain JS, no build step.
"use strict";
(function () {
  const $ = id => document.getElementById(id);
  let lastSeq = 0;

  function counter(parent, label, value, key) {
    const d = document.createElement("div");
    d.className = "counter"; d.dataset.key = key || label;
    const b = document.createElement("b"); b.textContent = value === null || value === undefined ? "-" : value;
    const s = document.createElement("span"); s.textContent = label;
    d.append(b, s); parent.appendChild(d);
  }

  const fmt = n => (typeof n === "number" ? n.toLocaleString("en-US") : n);

  function drawCounters(snap) {
    const c = snap.counters || {};
    const p = $("counters"); p.textContent = "";
    counter(p, "packets read", fmt(c.packets), "packets");
    counter(p, "messages decoded", fmt(c.messages), "messages");
    counter(p, "records applied to the books", fmt(snap.records), "records");
    counter(p, "gaps", fmt(c.gaps), "gaps");
    counter(p, "lost messages", fmt(c.lost_messages), "lost_messages");
    counter(p, "duplicates", fmt(c.duplicates), "duplicates");
    counter(p, "drops", fmt(c.drops), "drops");
    if (c.latency_label) {
      counter(p, c.latency_label + " p50 (us)", c.latency_p50_us, "latency_p50_us");
      counter(p, c.latency_label + " p99 (us)", c.latency_p99_us, "latency_p99_us");
    }
    if (c.progress_pct !== undefined && c.progress_pct !== null) counter(p, "capture read (%)", c.progress_pct, "progress");
    $("sample-info").textContent = "sample " + snap.seq + ", " + snap.elapsed_s.toFixed(1) + " s" + (snap.final ? " (final: the feed ended)" : "");
    $("source").textContent = snap.source;
  }

  function ladder(book) {
    const t = document.createElement("table");
    t.className = "ladder";
    const h = t.createTHead().insertRow();
    for (const x of ["orders", "bid size", "price", "ask size", "orders"]) { const th = document.createElement("th"); th.textContent = x; h.appendChild(th); }
    const body = t.createTBody();
    const asks = book.asks.slice().reverse();
    for (const [px, sz, n] of asks) {
      const tr = body.insertRow(); tr.dataset.side = "ask"; tr.dataset.price = px; tr.dataset.size = sz;
      for (const [v, cls] of [["", ""], ["", ""], [px, "px ask"], [sz, "askq"], [n, ""]]) { const td = tr.insertCell(); td.textContent = v === null ? "" : v; td.className = cls; }
    }
    for (const [px, sz, n] of book.bids) {
      const tr = body.insertRow(); tr.dataset.side = "bid"; tr.dataset.price = px; tr.dataset.size = sz;
      for (const [v, cls] of [[n, ""], [sz, "bidq"], [px, "px bid"], ["", ""], ["", ""]]) { const td = tr.insertCell(); td.textContent = v === null ? "" : v; td.className = cls; }
    }
    return t;
  }

  function drawBooks(snap) {
    const p = $("books"); p.textContent = "";
    if (!snap.books.length) { p.textContent = "no book yet"; return; }
    for (const b of snap.books) {
      const s = document.createElement("section");
      s.className = "book"; s.dataset.symbol = b.symbol;
      const h = document.createElement("h2"); h.textContent = b.symbol + (b.known ? " (instrument " + b.instrument_id + ")" : " (not in the feed's reference data yet)");
      s.appendChild(h);
      if (b.known) {
        const line = document.createElement("div"); line.className = "bbo-line";
        line.dataset.bid = b.bid === null ? "" : b.bid; line.dataset.bidSz = b.bid_sz;
        line.dataset.ask = b.ask === null ? "" : b.ask; line.dataset.askSz = b.ask_sz;
        line.dataset.records = snap.records;
        const bid = document.createElement("span"); bid.className = "bid"; bid.textContent = b.bid === null ? "no bid" : b.bid_sz + " @ " + b.bid;
        const ask = document.createElement("span"); ask.className = "ask"; ask.textContent = b.ask === null ? "no ask" : b.ask + " x " + b.ask_sz;
        line.append(bid, document.createTextNode("   /   "), ask);
        s.append(line, ladder(b));
      }
      p.appendChild(s);
    }
  }

  function onSnapshot(snap) {
    if (snap.seq <= lastSeq) return;
    lastSeq = snap.seq;
    drawCounters(snap); drawBooks(snap);
    document.body.dataset.seq = snap.seq;
    document.body.dataset.records = snap.records;
    if (snap.final) document.body.dataset.final = "1";
  }

  function connect() {
    const es = new EventSource("/api/stream");
    es.addEventListener("snapshot", ev => { $("stream-status").textContent = "live"; $("stream-status").className = "status ok"; onSnapshot(JSON.parse(ev.data)); });
    es.addEventListener("end", () => { $("stream-status").textContent = "feed ended"; $("stream-status").className = "status"; es.close(); });
    es.onerror = () => { $("stream-status").textContent = "disconnected"; $("stream-status").className = "status bad"; };
  }

  $("choose").addEventListener("submit", async ev => {
    ev.preventDefault();
    const syms = $("symbols").value.split(",").map(s => s.trim().toUpperCase()).filter(Boolean);
    const r = await fetch("/api/choose", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({symbols: syms})});
    const env = await r.json();
    if (env.code !== 0) $("stream-status").textContent = env.msg;
  });

  async function loadKnown() {
    try {
      const env = await (await fetch("/api/symbols")).json();
      const dl = $("known"); dl.textContent = "";
      for (const s of env.data.slice(0, 2000)) { const o = document.createElement("option"); o.value = s.symbol; dl.appendChild(o); }
    } catch (e) { /* the list is a convenience */ }
  }
  connect();
  loadKnown(); setInterval(loadKnown, 5000);
})();
