"""The web dashboard of the exchange: its pages, and the read endpoints they need beside the REST API.

Served by the HTTP gateway (``feedhandler exchange --http-port``):

``/``                   the trader's page (static/trader.html): ladder, trades tape, candle chart, open orders
                        with cancel buttons, order entry, balances, PnL; logs in with the venue's JWT
``/operator``           the operator's page (static/operator.html): latency histograms, order rates, journal and
                        history-writer lag, connected sessions
``/static/{file}``      the pages' JS and CSS (package data: no Node build step)
``GET /api/v1/candles`` OHLCV candles of a symbol from the history database (plus the trades the writer has not
                        stored yet, from the gateway's memory)
``GET /api/v1/pnl``     the caller's positions and realized/unrealized PnL per symbol (engine.portfolio)
``GET /api/v1/ops``     the operator page's figures as JSON (the same sources as /metrics)

The API routes are listed in :data:`ROUTES` (the format of engine.http.openapi.ROUTES, which appends them, so
they are in the OpenAPI description at /docs); their handlers are methods of :class:`Dashboard`.
"""
from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.http import codec
from engine.http.codec import ApiError, price_str

STATIC_DIR = Path(__file__).with_name("static")
_PAGES = {"/": "trader.html", "/operator": "operator.html"}
_STATIC_TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png",
                 ".svg": "image/svg+xml"}
_STATIC_NAME = re.compile(r"^[a-z0-9_\-]+\.(js|css|html|png|svg)$")

#: candle intervals accepted by /api/v1/candles (name -> seconds)
INTERVALS = {"1s": 1, "5s": 5, "15s": 15, "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
MAX_CANDLES = 1000
MAX_TRADE_ROWS = 2_000_000
#: engine.latency stages that the engine side spends (queue wait, journal, match) or that span the whole path;
#: the others (risk_done, ring_enqueue, ack_sent) are the gateway's
ENGINE_STAGES = ("match_done", "total")      # trades read for one candles request (beyond: the oldest candles are cut)

_DEC = {"type": "string", "pattern": r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"}
_CANDLE = {"type": "object", "properties": {
    "t": {"type": "integer", "description": "bucket start, ms since the epoch"}, "open": _DEC, "high": _DEC,
    "low": _DEC, "close": _DEC, "volume": _DEC, "trades": {"type": "integer"}}}
_PNL_ROW = {"type": "object", "properties": {
    "symbol": {"type": "string"}, "position": {"type": "string", "description": "signed quantity"},
    "avg_price": {**_DEC, "nullable": True}, "mark": {**_DEC, "nullable": True}, "realized": _DEC,
    "unrealized": _DEC, "bought": {"type": "string"}, "sold": {"type": "string"}}}


def _q(name, schema, required=False, desc=""):
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": desc}


#: (method, path, handler, auth, summary, parameters, body, 2xx): appended to engine.http.openapi.ROUTES
ROUTES = [
    ("GET", "/api/v1/candles", "candles", "none",
     "OHLCV candles of a symbol from the history database (and the trades it has not stored yet), oldest first",
     [_q("symbol", {"type": "string"}, True),
      _q("interval", {"enum": list(INTERVALS), "default": "1m"}, False, "candle length"),
      _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_CANDLES, "default": 300}, False,
         "the most recent candles to return"),
      _q("since", {"type": "integer"}, False, "ms since the epoch (default: limit x interval ago)")], None, 200),
    ("GET", "/api/v1/pnl", "pnl", "account",
     "The caller's positions and PnL per symbol (realized, unrealized at the mark: last trade, else BBO mid); "
     "amounts in the quote currency", [], None, 200),
    ("GET", "/api/v1/ops", "ops", "none",
     "Operator figures: latency histograms (gateway, HTTP, engine stages), order counters, journal and history "
     "lag, connected sessions (the operator page polls it)", [], None, 200),
]

DATA_SCHEMAS = {
    "candles": {"type": "object", "properties": {
        "symbol": {"type": "string"}, "interval": {"type": "string"},
        "source": {"enum": ["history", "history+memory", "memory"]},
        "history_error": {"type": "string", "description": "why the history database was not read (then: memory)"},
        "candles": {"type": "array", "items": _CANDLE}}},
    "pnl": {"type": "object", "properties": {
        "account": {"type": "string"}, "realized": _DEC, "unrealized": _DEC,
        "symbols": {"type": "array", "items": _PNL_ROW}}},
}


def money_str(x) -> str:
    """Price-units x quantity (1e-9 of the currency), possibly a Fraction, as a decimal string of the currency,
    rounded half away from zero to 9 decimals."""
    x = Fraction(x)
    neg = x < 0
    n = abs(x)
    raw = (n.numerator * 2 + n.denominator) // (2 * n.denominator)      # round half up, in 1e-9 units
    s = price_str(raw) if raw else "0"
    return "-" + s if neg and raw else s


def candles_of(ts_ns: np.ndarray, price: np.ndarray, qty: np.ndarray, interval_s: int) -> list[dict]:
    """Trades (in time order) -> OHLCV candles, one per interval that has trades."""
    if ts_ns.shape[0] == 0:
        return []
    order = np.argsort(ts_ns, kind="stable")
    ts_ns, price, qty = ts_ns[order], price[order], qty[order]
    step = interval_s * 1_000_000_000
    bucket = ts_ns // step
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], bucket.shape[0]]
    hi = np.maximum.reduceat(price, starts)
    lo = np.minimum.reduceat(price, starts)
    vol = np.add.reduceat(qty, starts)
    out = []
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        out.append({"t": int(bucket[s]) * interval_s * 1000, "open": price_str(int(price[s])),
                    "high": price_str(int(hi[i])), "low": price_str(int(lo[i])), "close": price_str(int(price[e - 1])),
                    "volume": str(int(vol[i])), "trades": e - s})
    return out


class HistoryReader:
    """Read-only queries on the history database the exchange's writer fills (SQLite file or PostgreSQL).
    One connection, opened on first use, used from one executor thread at a time (a lock)."""

    def __init__(self, url: str | None, data_dir: str):
        import threading
        self.url = url or ""
        self.data_dir = data_dir
        self._conn = None
        self._pg = False
        self._lock = threading.Lock()

    def _connect(self):
        if self._conn is not None:
            return self._conn
        url = self.url
        if url.startswith(("postgresql://", "postgres://")) or "dbname=" in url:
            import psycopg
            self._conn = psycopg.connect(url, autocommit=True)
            self._pg = True
        else:
            if not url:
                path = str(Path(self.data_dir) / "history.sqlite")
            else:
                path = url[len("sqlite://"):] if url.startswith("sqlite://") else url
            if not Path(path).exists():
                raise ApiError("UNSUPPORTED", "the history database does not exist yet")
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=5)
        return self._conn

    def trades(self, symbol: str, since_ns: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(ts_event, price, qty, highest trade_id) of a symbol's trades since ``since_ns``, at most the latest
        ``limit``."""
        with self._lock:
            try:
                conn = self._connect()
                ph = "%s" if self._pg else "?"
                sql = (f"SELECT ts_event, price, qty, trade_id FROM trades WHERE symbol = {ph} AND ts_event >= {ph} "
                       f"ORDER BY ts_event DESC, trade_id DESC LIMIT {int(limit)}")
                cur = conn.execute(sql, (symbol, int(since_ns)))
                rows = cur.fetchall()
            except ApiError:
                raise
            except Exception as e:       # noqa: BLE001 - sqlite3 or psycopg: one line to the caller, reconnect next
                self.close()
                raise ApiError("UNSUPPORTED", f"history database: {type(e).__name__}: {str(e)[:120]}") from None
        if not rows:
            z = np.zeros(0, np.int64)
            return z, z, z, 0
        a = np.array(rows, dtype=np.int64)
        return a[::-1, 0].copy(), a[::-1, 1].copy(), a[::-1, 2].copy(), int(a[:, 3].max())

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class Dashboard:
    """The dashboard's handlers, on an :class:`engine.http.server.HttpGateway` (``gw``). ``gw.exchange`` (set by
    engine.exchange) gives the history database, its writer's lag and the FIX/OUCH sessions; without it those
    parts answer what they can (candles from memory only)."""

    def __init__(self, gw):
        self.gw = gw
        self._reader: HistoryReader | None = None
        self._last_ops: dict | None = None

    # ---- pages -------------------------------------------------------------------------------------
    def add_pages(self, app) -> None:
        for path, name in _PAGES.items():
            app.router.add_get(path, self._page(name))
        app.router.add_get("/static/{name}", self.h_static)

        async def close_reader(app) -> None:
            if self._reader is not None:
                self._reader.close()
        app.on_cleanup.append(close_reader)

    def _page(self, name: str):
        from aiohttp import web

        async def handler(request):
            body = (STATIC_DIR / name).read_bytes()
            return web.Response(body=body, content_type="text/html", charset="utf-8",
                                headers={"Cache-Control": "no-cache"})
        return handler

    async def h_static(self, request):
        from aiohttp import web
        name = request.match_info["name"]
        if not _STATIC_NAME.match(name) or not (STATIC_DIR / name).is_file():
            raise ApiError("NOT_FOUND", f"no static file {name[:60]!r}")
        ctype = _STATIC_TYPES[Path(name).suffix]
        return web.Response(body=(STATIC_DIR / name).read_bytes(), content_type=ctype,
                            headers={"Cache-Control": "no-cache"})

    # ---- candles -----------------------------------------------------------------------------------
    def _history(self) -> HistoryReader | None:
        ex = getattr(self.gw, "exchange", None)
        if ex is None or getattr(ex, "history", None) is None:
            return None
        if self._reader is None:
            h = ex.cfg.get("history") or {}
            self._reader = HistoryReader(h.get("db") or None, str(ex.data_dir))
        return self._reader

    async def h_candles(self, request):
        from engine.http.server import _int_param
        gw = self.gw
        sym = gw._symbol(request.query.get("symbol"))
        name = request.query.get("interval", "1m")
        if name not in INTERVALS:
            raise ApiError("INVALID_PARAMETER", "interval must be one of " + ", ".join(INTERVALS))
        iv = INTERVALS[name]
        limit = _int_param(request.query.get("limit"), "limit", 300, 1, MAX_CANDLES)
        now_ms = time.time_ns() // 1_000_000
        default_since = (now_ms // (iv * 1000) - limit + 1) * iv * 1000
        since_ms = _int_param(request.query.get("since"), "since", default_since, 0, 1 << 52)
        since_ns = since_ms * 1_000_000
        reader = self._history()
        source = "memory"
        ts = px = q = np.zeros(0, np.int64)
        top_id = 0
        history_error = None
        if reader is not None:
            loop = asyncio.get_running_loop()
            try:
                ts, px, q, top_id = await loop.run_in_executor(None, reader.trades, sym, since_ns, MAX_TRADE_ROWS)
                source = "history"
            except ApiError as e:        # the database is unreachable: the trades in memory, and why
                history_error = e.msg
        # trades the writer has not stored yet (history lag), or every trade when history is off: memory
        mem = [t for t in gw.views.trade_list(sym, since_ms, gw.cfg.max_trades) if int(t["trade_id"]) > top_id]
        if mem:
            source = source + "+memory" if source == "history" else "memory"
            m_ts = np.array([t["ts"] * 1_000_000 for t in mem], np.int64)
            m_px = np.array([codec.parse_price(t["price"]) for t in mem], np.int64)
            m_q = np.array([int(t["qty"]) for t in mem], np.int64)
            ts, px, q = np.r_[ts, m_ts], np.r_[px, m_px], np.r_[q, m_q]
        out = candles_of(ts, px, q, iv)[-limit:]
        data = {"symbol": sym, "interval": name, "source": source, "candles": out}
        if history_error is not None:
            data["history_error"] = history_error
        return gw._json(data)

    # ---- PnL -------------------------------------------------------------------------------------------
    async def h_pnl(self, request):
        gw = self.gw
        account = await gw._account(request)
        pf = getattr(gw.pipeline, "portfolio", None)
        if pf is None:
            raise ApiError("UNSUPPORTED", "this exchange keeps no portfolio (positions and PnL)")
        eng = gw.pipeline.engine

        def report():
            if hasattr(pf, "mark"):
                pf.mark(eng)
            a = pf.accounts.get(account)
            rows = []
            if a is not None:
                for sym, p in sorted(a.positions.items()):
                    mark = pf.marks.get(sym)
                    unreal = (p.qty * mark - p.cost) if (mark is not None and p.qty) else Fraction(0)
                    rows.append({"symbol": sym, "position": str(p.qty),
                                 "avg_price": money_str(p.avg_price) if p.avg_price is not None else None,
                                 "mark": money_str(mark) if mark is not None else None,
                                 "realized": money_str(p.realized), "unrealized": money_str(unreal),
                                 "bought": str(p.bought), "sold": str(p.sold)})
            total_r = pf.realized(account) if a is not None else 0
            total_u = pf.unrealized(account) if a is not None else 0
            return {"account": account, "realized": money_str(total_r), "unrealized": money_str(total_u),
                    "symbols": rows}

        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, gw.pipeline.in_engine, report)
        return gw._json(data)

    # ---- operations ------------------------------------------------------------------------------------
    async def h_ops(self, request):
        return self.gw._json(self.ops())

    def ops(self) -> dict:
        from engine.http.metrics import BOUNDS_S
        from engine.latency import bucket_high
        gw = self.gw
        pl = gw.pipeline
        gw._flush_latency()
        if hasattr(pl, "flush_latency"):          # the pipeline's buffered stage stamps (under its lock)
            pl.flush_latency()
        hists = []

        def add(group: str, name: str, h) -> None:
            counts = np.asarray(h.counts)
            highs = bucket_high(np.arange(counts.size))
            cum = np.cumsum(counts)
            prev, buckets = 0, []
            for b in BOUNDS_S:
                k = int(np.searchsorted(highs, int(b * 1e9), side="right")) - 1
                n = int(cum[k]) if k >= 0 else 0
                buckets.append(n - prev)
                prev = n
            buckets.append(int(h.total) - prev)
            pct = {}
            if h.total:
                for p in (50.0, 99.0):
                    pct[f"p{p:g}_us"] = round(h.percentile(p) / 1e3, 1)
            hists.append({"group": group, "name": name, "count": int(h.total), "counts": buckets, **pct})

        for n, h in gw.hist.items():
            add("http", n, h)
        lat = getattr(pl, "latency", None)
        if lat is not None:
            from engine.http.server import _copy_hist
            with lat._lock:
                snap = {n: _copy_hist(h) for n, h in lat.hist.items()}
            for n, h in snap.items():        # the gateway's stages, the engine's (queue, journal, match), end to end
                add("engine" if n in ENGINE_STAGES else "gateway", n, h)
        ex = getattr(gw, "exchange", None)
        hist_stats = None
        if ex is not None and hasattr(ex, "history_stats"):
            try:
                hist_stats = ex.history_stats()
            except Exception as e:         # noqa: BLE001 - shown on the page, the rest still answers
                hist_stats = {"error": f"{type(e).__name__}: {e}"[:200]}
        sessions = [{"door": "websocket", "account": c.account or "-", "channels": len(c.subs),
                     "queued": c.queue.qsize()} for c in list(gw.hub.conns)]
        front = getattr(ex, "gateway", None) if ex is not None else None
        if front is not None and hasattr(front, "identities"):      # accounts seen on the ZeroMQ gateway
            sessions += [{"door": "zeromq", "account": a, "channels": None, "queued": None}
                         for a in sorted(front.identities)]
        fix = getattr(ex, "fix", None) if ex is not None else None
        for s in list((getattr(fix, "sessions", None) or {}).values()):
            if getattr(s, "logged_on", False):       # the counterparty's CompID (the session's target)
                sessions.append({"door": "fix", "account": bytes(getattr(s, "target", b"?")).decode("latin-1"),
                                 "channels": None, "queued": None})
        return {
            "ts": time.time_ns() // 1_000_000,
            "uptime_s": round(time.time() - gw.started_at, 1),
            "bounds_s": list(BOUNDS_S),
            "histograms": hists,
            "counters": {**{k: int(v) for k, v in pl.stats.as_dict().items()},
                         "http_responses": sum(gw.counts.values()), "ws_messages_sent": gw.hub.stats["messages_sent"],
                         "ws_slow_disconnects": gw.hub.stats["slow_disconnects"]},
            "journal": {"engine_queue_pending": int(getattr(pl, "_pending", 0)),
                        "seq": _engine_seq(pl),
                        "fsync": (ex.cfg["engine"].get("fsync") if ex is not None else None)},
            "history": hist_stats,
            "sessions": sessions,
        }


def _engine_seq(pl):
    try:
        return int(pl.engine.seq)
    except Exception:              # noqa: BLE001 - an engine kind without a sequence counter
        return None
