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
    "balance_changes": ("shard", "seq", "account", "asset", "d_available", "d_locked", "available", "locked",
                        "cause"),
}
#: the columns an update of an existing order sets (price and qty only when the event carries new ones, reason
#: only for a cancel/expiry: None keeps the stored value)
UPDATE_COLUMNS = ("status", "leaves_qty", "cum_qty", "price", "qty", "reason", "updated_seq", "updated_ns")

#: order status after an event (the REST API's SCREAMING_CASE names); fill, accepted and replaced depend on
#: the quantities (FILLED / PARTIALLY_FILLED / NEW), see Rows.add
_STATUS = {"canceled": "CANCELED", "expired": "EXPIRED", "rejected": "REJECTED"}

#: rejects that refer to an order other than a new one (a cancel or amend of an unknown or foreign order):
#: they never create an order row
_NOT_A_NEW_ORDER = {"unknown_order", "not_owner"}


#: events of the replay that are not about an order: the gateway's ``request`` markers, the accounts'
#: ``admin`` operations and ``balance`` changes (balances: :class:`BalanceLedger`)
_NOT_ORDER_EVENTS = frozenset({"request", "admin", "balance"})


class BalanceLedger:
    """The writer's own :class:`engine.accounts.Accounts`, fed with every replayed event (admin operations
    and order events, in journal order): per input, the (account, asset) cells it changed become
    ``balance_changes`` rows (deltas and the amounts after). Inputs at or below a shard's resume position
    update the balances without rows (they were stored by an earlier writer)."""

    def __init__(self, accounts):
        self.acc = accounts
        self.prev: dict[tuple[str, str], tuple[int, int]] = {}

    def add(self, rows: "Rows", shard: int, events: list[dict], resume: int) -> None:
        acc = self.acc
        cur, cause, known = -1, "order", rows.known_accounts
        for ev in events:
            t = ev["type"]
            if t == "request":
                continue
            seq = ev.get("seq") or 0
            if seq != cur:
                if cur >= 0:
                    self._flush(rows, shard, cur, cause, cur > resume)
                cur, cause = seq, "order"
            if t == "admin":
                acc.apply_admin(ev)
                cause = ev["op"]
                a = ev["account"]
                if a and a not in known and seq > resume:
                    known.add(a)
                    rows.accounts.append((a, shard, seq, rows.now))
            else:
                acc.on_events((ev,))
        if cur >= 0:
            self._flush(rows, shard, cur, cause, cur > resume)

    def _flush(self, rows: "Rows", shard: int, seq: int, cause: str, store: bool) -> None:
        prev = self.prev
        out = rows.balance_changes
        for ch in self.acc.take_changes(seq):
            k = (ch["account"], ch["asset"])
            av, lk = ch["available"], ch["locked"]
            pa, pl = prev.get(k, (0, 0))
            prev[k] = (av, lk)
            if store and (av != pa or lk != pl):
                out.append((shard, seq, k[0], k[1], av - pa, lk - pl, av, lk, cause))

class Rows:
    """The rows of one batch of events (one transaction of the writer)."""

    def __init__(self, known_accounts: set[str] | None = None):
        self.known_accounts = known_accounts if known_accounts is not None else set()
        self.accounts: list[tuple] = []
        self.order_events: list[tuple] = []
        self.trades: list[tuple] = []
        self.position_changes: list[tuple] = []
        self.new_orders: dict[int, list] = {}     # order id -> full row (first seen in this batch)
        self.updates: dict[int, list] = {}        # order id -> UPDATE_COLUMNS + order id (order seen before)
        self.rejected_new: dict[int, list] = {}   # rejects that create a row unless the order exists
        self.balance_changes: list[tuple] = []
        self.events = 0
        self.now = time.time_ns()

    def __len__(self) -> int:
        return (len(self.accounts) + len(self.order_events) + len(self.trades) + len(self.position_changes)
                + len(self.new_orders) + len(self.updates) + len(self.rejected_new) + len(self.balance_changes))

    def _account(self, name: str, shard: int, seq: int, now: int) -> None:
        if name and name not in self.known_accounts:
            self.known_accounts.add(name)
            self.accounts.append((name, shard, seq, now))

    def add(self, shard: int, events: list[dict], now: int | None = None) -> None:
        """Add the events of one shard (in journal order): the engine's dicts (integers already Python ints;
        the keys beyond type/seq/order/account/symbol/side/price/quantities may be missing)."""
        now = now if now is not None else time.time_ns()
        known = self.known_accounts
        new_orders, updates, rejected = self.new_orders, self.updates, self.rejected_new
        oe_append = self.order_events.append
        last_seq, n = -1, 0
        for ev in events:
            if ev["type"] in _NOT_ORDER_EVENTS:   # recovery's request markers, admin ops, balance changes
                continue
            seq = ev["seq"]
            if seq != last_seq:
                last_seq, n = seq, 0
            else:
                n += 1
            self.events += 1
            t = ev["type"]
            oid = ev["order_id"]
            leaves, cum = ev["leaves_qty"], ev["cum_qty"]
            if t == "fill":
                status = "FILLED" if leaves == 0 else "PARTIALLY_FILLED"
            elif t == "accepted" or t == "replaced":
                status = "PARTIALLY_FILLED" if cum > 0 else "NEW"
            else:
                status = _STATUS.get(t) or t.upper()
            account = ev["account"]
            if account not in known and account:
                known.add(account)
                self.accounts.append((account, shard, seq, now))
            sym, side, price, qty = ev["symbol"], ev["side"], ev["price"], ev["qty"]
            clid = ev.get("client_order_id") or ""
            reason = ev.get("reason") or ""
            oe_append((shard, seq, n, t, oid, sym, account, side, price, qty, leaves, cum, status,
                       ev.get("trade_id") or 0, ev.get("liquidity") or "", reason, clid, ev.get("ts_event") or 0))
            if t == "accepted":
                new_orders[oid] = [oid, sym, account, side, price, leaves + cum, leaves, cum, status, clid, "",
                                   shard, seq, seq, now, now]
                updates.pop(oid, None)
            elif t == "rejected":
                if reason in _NOT_A_NEW_ORDER or oid in new_orders or oid in updates:
                    continue        # a refused cancel/amend: the order (if any) keeps its state
                rejected[oid] = [oid, sym, account, side, price, qty, 0, 0, status, clid, reason, shard, seq,
                                 seq, now, now]
            else:
                row = new_orders.get(oid)
                if row is not None:
                    row[8], row[6], row[7], row[13], row[15] = status, leaves, cum, seq, now
                    if t == "replaced":
                        row[4], row[5] = price, leaves + cum
                    elif t != "fill":
                        row[10] = reason
                else:
                    u = updates.get(oid)
                    if u is None:
                        u = updates[oid] = [status, leaves, cum, None, None, None, seq, now, oid]
                    else:
                        u[0], u[1], u[2], u[6], u[7] = status, leaves, cum, seq, now
                    if t == "replaced":
                        u[3], u[4] = price, leaves + cum
                    elif t != "fill":
                        u[5] = reason
                if t == "fill":
                    ts = ev.get("ts_event") or 0
                    tid = ev.get("trade_id") or 0
                    self.position_changes.append((tid, oid, account, sym, qty if side == "B" else -qty, price, shard,
                                                  seq, ts))
                    if ev.get("liquidity") == "taker":
                        contra = ev.get("contra_order_id") or 0
                        contra_acct = ev.get("contra_account") or ""
                        if contra_acct not in known and contra_acct:
                            known.add(contra_acct)
                            self.accounts.append((contra_acct, shard, seq, now))
                        if side == "B":
                            self.trades.append((tid, sym, price, qty, side, oid, contra, account, contra_acct, shard,
                                                seq, ts))
                        else:
                            self.trades.append((tid, sym, price, qty, side, contra, oid, contra_acct, account, shard,
                                                seq, ts))

    def order_rows(self) -> list[tuple]:
        return [tuple(r) for r in self.new_orders.values()]

    def rejected_rows(self) -> list[tuple]:
        return [tuple(r) for r in self.rejected_new.values()]

    def update_rows(self) -> list[tuple]:
        """(status, leaves_qty, cum_qty, price|None, qty|None, reason|None, updated_seq, updated_ns, order_id)"""
        return [tuple(u) for u in self.updates.values()]
