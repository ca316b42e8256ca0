"""Engine events -> history rows (backend independent): the one place that decides what a row holds.

The events are the dicts :meth:`engine.manager.ShardEngine.replay_payloads` regenerates from the journal
(``type``, ``seq``, ``order_id``, ``account``, ``symbol``, ``side``, ``price``, ``qty``, ``leaves_qty``,
``cum_qty``, ``trade_id``, ``liquidity``, ``contra_*``, ``reason``, ``ts_event``, ...). :class:`Rows` holds one
batch's rows, every tuple in the column order of :data:`COLUMNS`; orders are collapsed per order id so one
batch writes each order once.
"""
from __future__ import annotations

import time

#: column order of each table's rows (the migrations create these columns)
COLUMNS = {
    "accounts": ("account", "shard", "first_seq", "first_ns"),
    "orders": ("order_id", "symbol", "account", "side", "price", "qty", "leaves_qty", "cum_qty", "status",
               "client_order_id", "reason", "shard", "created_seq", "updated_seq", "created_ns", "updated_ns"),
    "order_events": ("shard", "seq", "n", "type", "order_id", "symbol", "account", "side", "price", "qty",
                     "leaves_qty", "cum_qty", "status", "trade_id", "liquidity", "reason", "client_order_id",
                     "ts_event"),
    "trades": ("trade_id", "symbol", "price", "qty", "aggressor_side", "buy_order_id", "sell_order_id", "buyer",
               "seller", "shard", "seq", "ts_event"),
    "position_changes": ("trade_id", "order_id", "account", "symbol", "qty", "price", "shard", "seq", "ts_event"),
}
#: the columns an update of an existing order sets (price and qty only when the event carries new ones)
UPDATE_COLUMNS = ("status", "leaves_qty", "cum_qty", "price", "qty", "reason", "updated_seq", "updated_ns")

#: rejects that refer to an order other than a new one (a cancel or amend of an unknown or foreign order):
#: they never create an order row
_NOT_A_NEW_ORDER = {"unknown_order", "not_owner"}


def status_of(ev: dict) -> str:
    """The order status after one event (the SCREAMING_CASE names of the REST API)."""
    t = ev["type"]
    if t == "fill":
        return "FILLED" if ev["leaves_qty"] == 0 else "PARTIALLY_FILLED"
    if t in ("accepted", "replaced"):
        return "PARTIALLY_FILLED" if ev.get("cum_qty", 0) > 0 else "NEW"
    if t == "canceled":
        return "CANCELED"
    if t == "expired":
        return "EXPIRED"
    if t == "rejected":
        return "REJECTED"
    return t.upper()


class Rows:
    """The rows of one batch of events (one transaction of the writer)."""

    def __init__(self, known_accounts: set[str] | None = None):
        self.known_accounts = known_accounts if known_accounts is not None else set()
        self.accounts: list[tuple] = []
        self.order_events: list[tuple] = []
        self.trades: list[tuple] = []
        self.position_changes: list[tuple] = []
        self.new_orders: dict[int, list] = {}     # order id -> full row (first seen in this batch)
        self.updates: dict[int, dict] = {}        # order id -> columns of UPDATE_COLUMNS (seen before)
        self.rejected_new: dict[int, list] = {}   # rejects that create a row unless the order exists
        self.events = 0

    def __len__(self) -> int:
        return (len(self.accounts) + len(self.order_events) + len(self.trades) + len(self.position_changes)
                + len(self.new_orders) + len(self.updates) + len(self.rejected_new))

    def _account(self, name: str, shard: int, seq: int, now: int) -> None:
        if name and name not in self.known_accounts:
            self.known_accounts.add(name)
            self.accounts.append((name, shard, seq, now))

    def add(self, shard: int, events: list[dict], now: int | None = None) -> None:
        """Add the events of one shard (in journal order)."""
        now = now if now is not None else time.time_ns()
        last_seq, n = -1, 0
        for ev in events:
            seq = int(ev["seq"])
            if seq != last_seq:
                last_seq, n = seq, 0
            else:
                n += 1
            t = ev["type"]
            oid = int(ev["order_id"])
            status = status_of(ev)
            ts = int(ev.get("ts_event") or 0)
            account = ev.get("account") or ""
            self._account(account, shard, seq, now)
            self.events += 1
            self.order_events.append((shard, seq, n, t, oid, ev["symbol"], account, ev.get("side") or "",
                                      int(ev["price"]), int(ev["qty"]), int(ev["leaves_qty"]), int(ev["cum_qty"]),
                                      status, int(ev.get("trade_id") or 0), ev.get("liquidity") or "",
                                      ev.get("reason") or "", ev.get("client_order_id") or "", ts))
            if t == "accepted":
                self.new_orders[oid] = [oid, ev["symbol"], account, ev.get("side") or "", int(ev["price"]),
                                        int(ev["leaves_qty"]) + int(ev["cum_qty"]), int(ev["leaves_qty"]),
                                        int(ev["cum_qty"]), status, ev.get("client_order_id") or "", "", shard,
                                        seq, seq, now, now]
                self.updates.pop(oid, None)
            elif t == "rejected":
                if ev.get("reason") in _NOT_A_NEW_ORDER or oid in self.new_orders or oid in self.updates:
                    continue        # a refused cancel/amend: the order (if any) keeps its state
                self.rejected_new[oid] = [oid, ev["symbol"], account, ev.get("side") or "", int(ev["price"]),
                                          int(ev["qty"]), 0, 0, status, ev.get("client_order_id") or "",
                                          ev.get("reason") or "", shard, seq, seq, now, now]
            else:
                price = int(ev["price"]) if t == "replaced" else None
                qty = int(ev["leaves_qty"]) + int(ev["cum_qty"]) if t == "replaced" else None
                reason = (ev.get("reason") or "") if t in ("canceled", "expired") else None
                row = self.new_orders.get(oid)
                if row is not None:
                    row[8], row[6], row[7], row[13], row[15] = status, int(ev["leaves_qty"]), int(ev["cum_qty"]), seq, now
                    if price is not None:
                        row[4], row[5] = price, qty
                    if reason is not None:
                        row[10] = reason
                else:
                    u = self.updates.get(oid)
                    if u is None:
                        u = self.updates[oid] = {"price": None, "qty": None, "reason": None}
                    u.update(status=status, leaves_qty=int(ev["leaves_qty"]), cum_qty=int(ev["cum_qty"]),
                             updated_seq=seq, updated_ns=now)
                    if price is not None:
                        u["price"], u["qty"] = price, qty
                    if reason is not None:
                        u["reason"] = reason
            if t == "fill":
                side = ev.get("side") or ""
                qty = int(ev["qty"])
                self.position_changes.append((int(ev["trade_id"]), oid, account, ev["symbol"],
                                              qty if side == "B" else -qty, int(ev["price"]), shard, seq, ts))
                if ev.get("liquidity") == "taker":
                    contra = int(ev.get("contra_order_id") or 0)
                    contra_acct = ev.get("contra_account") or ""
                    self._account(contra_acct, shard, seq, now)
                    buy, sell = (oid, contra) if side == "B" else (contra, oid)
                    buyer, seller = (account, contra_acct) if side == "B" else (contra_acct, account)
                    self.trades.append((int(ev["trade_id"]), ev["symbol"], int(ev["price"]), qty, side, buy, sell,
                                        buyer, seller, shard, seq, ts))

    def order_rows(self) -> list[tuple]:
        return [tuple(r) for r in self.new_orders.values()]

    def rejected_rows(self) -> list[tuple]:
        return [tuple(r) for r in self.rejected_new.values()]

    def update_rows(self) -> list[tuple]:
        """(status, leaves_qty, cum_qty, price|None, qty|None, reason|None, updated_seq, updated_ns, order_id)"""
        return [(u["status"], u["leaves_qty"], u["cum_qty"], u["price"], u["qty"], u["reason"], u["updated_seq"],
                 u["updated_ns"], oid) for oid, u in self.updates.items()]
