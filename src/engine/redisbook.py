"""The live book in Redis: each symbol's top levels, BBO and recent trades, for other services.

Fed by the history writer's journal replay (:class:`engine.history.writer.HistoryWriter`), off the hot path:
after each batch of journaled inputs, the symbols the batch touched get their book read from the writer's
own replayed engine (exactly the exchange's book at that journal sequence, nothing lost as a PUB socket
may) and their new trades. Written with one MULTI/EXEC per batch, so a reader sees a book and its BBO
of the same sequence.

Keys (``prefix`` default ``fh:``; prices are the engine's fixed-point integers in 1e-9 units, as decimal
strings; ``seq`` is the shard journal's input sequence the value reflects):

=========================  ======  ===============================================================
key                        type    content
=========================  ======  ===============================================================
``fh:symbols``             SET     the symbols that have a book here
``fh:book:{symbol}``       HASH    ``bids``, ``asks``: JSON arrays ``[[price, qty, orders], ...]``
                                   best first, at most ``levels`` each; ``seq``; ``ts_ns``
``fh:bbo:{symbol}``        HASH    ``bid_px``, ``bid_qty``, ``ask_px``, ``ask_qty`` ("" for an empty
                                   side), ``seq``, ``ts_ns``
``fh:trades:{symbol}``     STREAM  one entry per trade, id ``<n>-0`` (n = the trade's number in the
                                   symbol, so the ids grow and a replayed trade is never added
                                   twice), fields ``trade_id``, ``price``, ``qty``, ``side``
                                   (aggressor, B/S), ``buy_order_id``, ``sell_order_id``,
                                   ``ts_event``; capped at about ``trades`` entries (``MAXLEN ~``)
=========================  ======  ===============================================================

Every write also PUBLISHes the symbol on channel ``fh:updates`` so a service can wait instead of polling.
"""
from __future__ import annotations

import json
import time

ID_MASK = (1 << 40) - 1


class RedisBook:
    """Writes books, BBOs and trades to Redis at ``url`` (``redis://host:port/db`` or ``unix:///path.sock``)."""

    def __init__(self, url: str, *, levels: int = 10, trades: int = 1000, prefix: str = "fh:", client=None):
        if client is None:
            try:
                import redis
            except ImportError:  # pragma: no cover - redis is a dependency
                raise RuntimeError("--redis needs the redis package (pip install redis)") from None
            client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
            client.ping()
        self.url = url
        self.r = client
        self.levels = int(levels)
        self.trades = int(trades)
        self.prefix = prefix
        self._last_trade: dict[str, int] = {}     # symbol -> last trade number in its stream
        self.writes = 0

    def _last(self, symbol: str) -> int:
        n = self._last_trade.get(symbol)
        if n is None:
            last = self.r.xrevrange(f"{self.prefix}trades:{symbol}", count=1)
            n = int(last[0][0].split(b"-")[0]) if last else 0
            self._last_trade[symbol] = n
        return n

    def update(self, shard, events: list[dict]) -> None:
        """After a batch: the books of the symbols the events touched, read from ``shard`` (the replayed
        :class:`engine.manager.ShardEngine`), and their new trades."""
        if not events:
            return
        touched: dict[str, None] = {}
        trades = []
        for ev in events:
            sym = ev.get("symbol")
            if sym in shard.inst:
                touched[sym] = None
                if ev["type"] == "fill" and ev.get("liquidity") == "taker":
                    trades.append(ev)
        if not touched:
            return
        p = self.prefix
        now = time.time_ns()
        seq = shard.seq
        pipe = self.r.pipeline(transaction=True)
        for sym in touched:
            bids, asks = shard.book(sym, self.levels)
            pipe.sadd(f"{p}symbols", sym)
            pipe.hset(f"{p}book:{sym}", mapping={
                "bids": json.dumps([[str(px), int(q), int(c)] for px, q, c in bids]),
                "asks": json.dumps([[str(px), int(q), int(c)] for px, q, c in asks]),
                "seq": seq, "ts_ns": now})
            pipe.hset(f"{p}bbo:{sym}", mapping={
                "bid_px": str(bids[0][0]) if bids else "", "bid_qty": int(bids[0][1]) if bids else "",
                "ask_px": str(asks[0][0]) if asks else "", "ask_qty": int(asks[0][1]) if asks else "",
                "seq": seq, "ts_ns": now})
        for ev in trades:
            sym = ev["symbol"]
            n = int(ev["trade_id"]) & ID_MASK
            if n <= self._last(sym):
                continue            # already in the stream (a writer resuming replays what it had written)
            self._last_trade[sym] = n
            side = ev.get("side") or ""
            oid, contra = int(ev["order_id"]), int(ev.get("contra_order_id") or 0)
            buy, sell = (oid, contra) if side == "B" else (contra, oid)
            pipe.xadd(f"{p}trades:{sym}", {"trade_id": int(ev["trade_id"]), "price": str(ev["price"]),
                                            "qty": int(ev["qty"]), "side": side, "buy_order_id": buy,
                                            "sell_order_id": sell, "ts_event": int(ev.get("ts_event") or 0)},
                      id=f"{n}-0", maxlen=self.trades, approximate=True)
        for sym in touched:
            pipe.publish(f"{p}updates", sym)
        try:
            pipe.execute()
        except BaseException:
            self._last_trade.clear()     # read the streams' last ids again: this batch's trades are not there
            raise
        self.writes += 1

    def close(self) -> None:
        self.r.close()
