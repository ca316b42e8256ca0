// The trader's page: REST (/api/v1/...) with the venue's JWT, WebSocket (/ws) pushes. Plain JS, no build step.
"use strict";
(function () {
  const LEVELS = 10;                                    // ladder rows per side
  const $ = id => document.getElementById(id);
  const S = {
    token: null, account: null, key: null, secret: null, refreshTimer: null,
    symbol: null, symbols: [], ws: null, wsReady: false,
    book: {bids: new Map(), asks: new Map(), seq: 0},
    orders: new Map(), chart: null, interval: "1m",
  };
  window.dashState = S;                                 // for debugging in the browser console
  const INTERVAL_MS = {"5s": 5e3, "1m": 6e4, "5m": 3e5, "15m": 9e5, "1h": 3.6e6};

  // ---- REST -------------------------------------------------------------------------------------
  async function api(method, path, body) {
    const h = {"Content-Type": "application/json"};
    if (S.token) h["Authorization"] = "Bearer " + S.token;
    const r = await fetch(path, {method, headers: h, body: body === undefined ? undefined : JSON.stringify(body)});
    let env;
    try { env = await r.json(); } catch (e) { throw new Error("HTTP " + r.status); }
    if (env.code !== 0) {
      const err = new Error(env.code + ": " + env.msg);
      err.code = env.code;
      throw err;
    }
    return env.data;
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "-" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function setStatus(el, text, cls) { el.textContent = text; el.className = "status " + (cls || ""); }

  // ---- login (JWT, refreshed before it expires: the secret stays in this page's memory only) ---------
  async function login(key, secret) {
    const d = await api("POST", "/api/v1/login", {api_key: key, secret: secret});
    S.token = d.token; S.account = d.account; S.key = key; S.secret = secret;
    setStatus($("account"), "account " + d.account, "ok");
    $("o-submit").disabled = false;
    clearTimeout(S.refreshTimer);
    const ms = Math.max(5000, d.expires_at - Date.now() - 30000);
    S.refreshTimer = setTimeout(() => login(S.key, S.secret).catch(e => setStatus($("account"), "login: " + e.message, "bad")), ms);
    return d;
  }

  $("login").addEventListener("submit", async ev => {
    ev.preventDefault();
    try {
      const before = S.account;
      await login($("login-key").value.trim(), $("login-secret").value);
      $("login-secret").value = "";
      if (!before) wsAuth();
      else if (before !== S.account && S.ws) S.ws.close();     // reconnects and authenticates as the new account
      loadPrivate();
    } catch (e) {
      setStatus($("account"), "login failed: " + e.message, "bad");
    }
  });

  // ---- WebSocket ------------------------------------------------------------------------------------
  function wsSend(obj) { if (S.ws && S.ws.readyState === 1) S.ws.send(JSON.stringify(obj)); }

  function publicChannels(sym) { return ["depth." + sym, "bbo." + sym, "trades." + sym]; }

  function wsAuth() {
    if (S.wsReady && S.token) wsSend({op: "auth", token: S.token});
  }

  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    S.ws = ws;
    ws.onopen = () => {
      S.wsReady = true;
      setStatus($("ws-status"), "live", "ok");
      if (S.symbol) wsSend({op: "subscribe", channels: publicChannels(S.symbol)});
      wsAuth();
    };
    ws.onclose = ev => {
      S.wsReady = false;
      setStatus($("ws-status"), "offline" + (ev.reason ? " (" + ev.reason + ")" : ""), "bad");
      setTimeout(connect, 1500);
    };
    ws.onmessage = ev => onMessage(JSON.parse(ev.data));
  }

  function onMessage(m) {
    if (m.type === "auth") {
      if (m.code === 0) wsSend({op: "subscribe", channels: ["order_updates", "balance_updates"]});
      else setStatus($("ws-status"), "ws auth: " + m.msg, "bad");
      return;
    }
    if (m.type === "subscribed" || m.type === "unsubscribed" || m.type === "pong") return;
    const ch = m.channel;
    if (!ch) return;
    if (ch === "depth." + S.symbol) return onDepth(m);
    if (ch === "bbo." + S.symbol) return onBbo(m.data);
    if (ch === "trades." + S.symbol) return onTrade(m.data, true);
    if (ch === "order_updates") return onOrderUpdate(m.data);
    if (ch === "balance_updates") return onBalance(m.data);
  }

  // ---- order book ladder ---------------------------------------------------------------------------
  function onDepth(m) {
    const b = S.book;
    if (m.type === "snapshot") {
      b.bids = new Map(m.data.bids); b.asks = new Map(m.data.asks); b.seq = m.seq;
    } else {
      if (m.seq !== b.seq + 1) {          // a gap: take a new snapshot
        wsSend({op: "unsubscribe", channels: ["depth." + S.symbol]});
        wsSend({op: "subscribe", channels: ["depth." + S.symbol]});
        return;
      }
      b.seq = m.seq;
      for (const [px, q] of m.data.bids) { if (q === "0") b.bids.delete(px); else b.bids.set(px, q); }
      for (const [px, q] of m.data.asks) { if (q === "0") b.asks.delete(px); else b.asks.set(px, q); }
    }
    drawLadder();
  }

  function drawLadder() {
    const body = $("ladder").tBodies[0];
    body.textContent = "";
    const asks = [...S.book.asks.entries()].sort((a, b) => +a[0] - +b[0]).slice(0, LEVELS).reverse();
    const bids = [...S.book.bids.entries()].sort((a, b) => +b[0] - +a[0]).slice(0, LEVELS);
    const mine = new Set([...S.orders.values()].filter(o => o.symbol === S.symbol).map(o => o.side + "@" + o.price));
    for (const [px, q] of asks) {
      const tr = body.insertRow();
      tr.dataset.side = "ask"; tr.dataset.price = px; tr.dataset.qty = q;
      cell(tr, ""); cell(tr, px + (mine.has("SELL@" + px) ? " *" : ""), "px ask"); cell(tr, q, "askq");
      tr.cells[1].onclick = () => { $("o-price").value = px; };
    }
    const sp = body.insertRow();
    sp.className = "spread";
    const td = cell(sp, asks.length && bids.length ? "spread " + (+asks[asks.length - 1][0] - +bids[0][0]).toFixed(4).replace(/\.?0+$/, "") : "-");
    td.colSpan = 3;
    for (const [px, q] of bids) {
      const tr = body.insertRow();
      tr.dataset.side = "bid"; tr.dataset.price = px; tr.dataset.qty = q;
      cell(tr, q, "bidq"); cell(tr, px + (mine.has("BUY@" + px) ? " *" : ""), "px bid"); cell(tr, "");
      tr.cells[1].onclick = () => { $("o-price").value = px; };
    }
  }

  function onBbo(d) {
    $("bbo").textContent = (d.bid ? d.bid_qty + " @ " + d.bid : "-") + "  /  " + (d.ask ? d.ask + " x " + d.ask_qty : "-");
  }

  // ---- trades tape and chart -------------------------------------------------------------------------
  function onTrade(t, live) {
    const body = $("tape").tBodies[0];
    const tr = document.createElement("tr");
    cell(tr, new Date(t.ts).toTimeString().slice(0, 8));
    cell(tr, t.price, t.taker_side); cell(tr, t.qty); cell(tr, t.taker_side, t.taker_side);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 100) body.deleteRow(body.rows.length - 1);
    if (live && S.chart) S.chart.addTrade(t.ts, +t.price, +t.qty);
  }

  async function loadCandles() {
    const sym = S.symbol;
    try {
      const d = await api("GET", "/api/v1/candles?symbol=" + encodeURIComponent(sym) + "&interval=" + S.interval + "&limit=120");
      if (sym !== S.symbol) return;
      S.chart.setCandles(d.candles, INTERVAL_MS[S.interval]);
      $("chart-info").textContent = d.candles.length + " candles (" + d.source + ")" +
        (d.history_error ? "; history database: " + d.history_error : "");
    } catch (e) {
      $("chart-info").textContent = "candles: " + e.message;
    }
  }

  // ---- open orders ------------------------------------------------------------------------------------
  function onOrderUpdate(u) {
    const ended = ["FILLED", "CANCELED", "EXPIRED", "REJECTED"];
    if (ended.includes(u.status)) {
      S.orders.delete(u.order_id);
    } else {
      const o = S.orders.get(u.order_id) || {order_id: u.order_id, symbol: u.symbol, side: u.side, price: u.price || null};
      if (u.price) o.price = u.price;
      o.leaves_qty = u.leaves_qty; o.status = u.status === "REDUCED" || u.status === "REPLACED" ? "ACCEPTED" : u.status;
      S.orders.set(u.order_id, o);
    }
    drawOrders(); drawLadder();
  }

  function drawOrders() {
    const body = $("open-orders").tBodies[0];
    body.textContent = "";
    const list = [...S.orders.values()].sort((a, b) => (BigInt(a.order_id) < BigInt(b.order_id) ? 1 : -1));
    if (!list.length) {
      const tr = body.insertRow(); const td = cell(tr, S.account ? "no open orders" : "log in to see your orders", "empty"); td.colSpan = 7;
    }
    for (const o of list) {
      const tr = body.insertRow();
      tr.dataset.orderId = o.order_id;
      cell(tr, o.order_id); cell(tr, o.symbol); cell(tr, o.side, o.side); cell(tr, o.price || "MKT");
      cell(tr, o.leaves_qty); cell(tr, o.status);
      const td = document.createElement("td");
      const b = document.createElement("button");
      b.textContent = "cancel"; b.className = "cancel-btn"; b.dataset.orderId = o.order_id;
      b.onclick = () => cancel(o.order_id, b);
      td.appendChild(b); tr.appendChild(td);
    }
  }

  async function cancel(oid, btn) {
    btn.disabled = true;
    try {
      await api("POST", "/api/v1/cancel_order", {order_id: oid});
      showMsg("canceled order " + oid);
    } catch (e) {
      btn.disabled = false;
      showMsg("cancel " + oid + ": " + e.message, true);
    }
  }

  // ---- order entry -----------------------------------------------------------------------------------
  function showMsg(text, err) { const m = $("order-msg"); m.textContent = text; m.className = "msg" + (err ? " err" : ""); }

  $("o-type").addEventListener("change", () => { $("o-price").disabled = $("o-type").value === "MARKET"; });
  $("o-side").addEventListener("change", () => { $("o-submit").className = $("o-side").value === "BUY" ? "buy" : "sell"; });
  $("order-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const body = {symbol: S.symbol, side: $("o-side").value, type: $("o-type").value, qty: $("o-qty").value.trim(),
                  tif: $("o-tif").value};
    if (body.type === "LIMIT") body.price = $("o-price").value.trim();
    $("o-submit").disabled = true;
    try {
      const d = await api("POST", "/api/v1/create_order", body);
      showMsg("accepted: order " + d.order_id);
    } catch (e) {
      showMsg(e.message, true);
    } finally {
      $("o-submit").disabled = !S.token;
    }
  });

  // ---- balances and PnL --------------------------------------------------------------------------------
  const balances = new Map();
  function drawBalances(note) {
    const body = $("balances").tBodies[0];
    body.textContent = "";
    if (note) { const td = cell(body.insertRow(), note, "empty"); td.colSpan = 3; return; }
    for (const [asset, b] of [...balances.entries()].sort()) {
      const tr = body.insertRow(); tr.dataset.asset = asset;
      cell(tr, asset); cell(tr, b.available); cell(tr, b.locked);
    }
  }
  function onBalance(d) { balances.set(d.asset, d); drawBalances(); }

  async function loadBalances() {
    try {
      const d = await api("GET", "/api/v1/balances");
      balances.clear();
      for (const b of d.balances) balances.set(b.asset, b);
      drawBalances(balances.size ? null : "no balances");
    } catch (e) {
      drawBalances(e.code === "UNSUPPORTED" ? "balances off (exchange without [accounts])" : e.message);
    }
  }

  async function loadPnl() {
    if (!S.token) return;
    try {
      const d = await api("GET", "/api/v1/pnl");
      $("pnl-total").textContent = "realized " + d.realized + ", unrealized " + d.unrealized;
      const body = $("pnl").tBodies[0];
      body.textContent = "";
      for (const r of d.symbols) {
        const tr = body.insertRow(); tr.dataset.symbol = r.symbol;
        cell(tr, r.symbol); cell(tr, r.position); cell(tr, r.avg_price); cell(tr, r.mark);
        cell(tr, r.realized, +r.realized < 0 ? "ask" : "bid"); cell(tr, r.unrealized, +r.unrealized < 0 ? "ask" : "bid");
      }
      if (!d.symbols.length) { const td = cell(body.insertRow(), "no positions", "empty"); td.colSpan = 6; }
    } catch (e) {
      $("pnl-total").textContent = e.message;
    }
  }

  async function loadPrivate() {
    try {
      const list = await api("GET", "/api/v1/orders?status=open");
      S.orders.clear();
      for (const o of list) S.orders.set(o.order_id, o);
      drawOrders(); drawLadder();
    } catch (e) { showMsg("orders: " + e.message, true); }
    loadBalances(); loadPnl();
  }

  // ---- symbol ----------------------------------------------------------------------------------------
  async function selectSymbol(sym) {
    if (S.symbol && S.wsReady) wsSend({op: "unsubscribe", channels: publicChannels(S.symbol)});
    S.symbol = sym;
    S.book = {bids: new Map(), asks: new Map(), seq: 0};
    drawLadder();
    $("tape").tBodies[0].textContent = "";
    $("bbo").textContent = "";
    if (S.wsReady) wsSend({op: "subscribe", channels: publicChannels(sym)});
    try {
      const trades = await api("GET", "/api/v1/trades?symbol=" + encodeURIComponent(sym) + "&limit=50");
      if (sym === S.symbol) for (const t of trades) onTrade(t, false);
    } catch (e) { /* the tape fills from the channel */ }
    loadCandles();
  }

  $("symbol").addEventListener("change", () => selectSymbol($("symbol").value));
  $("interval").addEventListener("change", () => { S.interval = $("interval").value; loadCandles(); });

  async function start() {
    S.chart = new CandleChart($("chart"), INTERVAL_MS[S.interval]);
    drawOrders(); drawBalances("log in to see your balances");
    const syms = await api("GET", "/api/v1/symbols");
    S.symbols = syms.map(s => s.symbol);
    for (const s of S.symbols) { const o = document.createElement("option"); o.textContent = s; $("symbol").appendChild(o); }
    const want = new URLSearchParams(location.search).get("symbol");
    const first = S.symbols.includes(want) ? want : S.symbols[0];
    $("symbol").value = first;
    connect();
    await selectSymbol(first);
    setInterval(loadPnl, 2000);
    setInterval(loadCandles, 30000);
    window.addEventListener("resize", () => S.chart.draw());
    document.body.dataset.ready = "1";
  }
  start().catch(e => setStatus($("ws-status"), "start failed: " + e.message, "bad"));
})();
