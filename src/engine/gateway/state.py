"""The gateway's part of the exchange's state machine: what decides an answer besides the books.

One :class:`OrderState` per :class:`~engine.gateway.pipeline.OrderPipeline`, touched only by the engine
thread, in sequence order:

- the retry memory (:class:`DedupMemory`): the outcome of every sequenced request per (account, dedup
  key: client order id, rid or signature), so a retry or a replayed signed request is answered with the
  first outcome and never entered twice;
- the client-order-id -> order map of live orders (cancel/amend by ``orig_client_order_id``);
- the risk state (engine.risk.RiskManager: positions, open orders, reference prices);
- with ``[accounts]`` on, the balances (engine.accounts.Accounts: available/locked per account and asset,
  locks per live order, the fee account), changed by fills/cancels/amends and by journaled admin records.

It changes only through the events of sequenced (journaled) requests, through :meth:`OrderState.note` and
:meth:`OrderState.remember`. A restart rebuilds it with :meth:`OrderState.rebuild` from the events that the
journal's replay regenerates (engine.manager.EngineManager.take_replayed: a ``request`` marker before each
request's events), through the same two methods, so :meth:`OrderState.digest` after a restart equals the
digest before it. Decisions that are refused without sequencing (a risk reject, an unknown
``orig_client_order_id``) change nothing and are not remembered: a retry of them is decided again.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

from engine.gateway.codec import dumpb, loads

ORDER_ENDS = ("fill", "canceled", "expired")   # with leaves_qty 0: the order left the book


class DedupMemory:
    """The retry memory: per account, the last ``size`` outcomes by dedup key (oldest forgotten first), so
    one account's flood never pushes another account's in-flight retry out. Bounded by ``size`` times the
    number of accounts (configured API keys and sessions).

    Outcomes are kept as bytes: the cyclic garbage collector never walks them (dicts and lists of
    100k replies made every full collection walk all of them: ~25% of the request path's time)."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._by: dict[str, OrderedDict] = {}

    def get(self, account: str, key: str) -> bytes | None:
        m = self._by.get(account)
        return None if m is None else m.get(key)

    def put(self, account: str, key: str, body: bytes) -> None:
        m = self._by.get(account)
        if m is None:
            m = self._by[account] = OrderedDict()
        m[key] = body      # a key is put once (a hit is answered, never put again): no reorder
        if len(m) > self.size:
            m.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(m) for m in self._by.values())

    def items(self) -> list:
        return [[a, k, b.decode()] for a, m in self._by.items() for k, b in m.items()]

    def load(self, rows: list) -> None:
        self._by = {}
        for a, k, b in rows:
            self.put(a, k, b.encode())

    def digest(self, h) -> None:
        # sorted: with several shards the live order of entries interleaves shards, a replay does not; the
        # rid of the first request is in the live copy only (the journal keeps the dedup key): left out
        for acct in sorted(self._by):
            for key, body in sorted(self._by[acct].items()):
                obj = loads(body)
                obj["rid"] = None
                h.update(acct.encode() + b"\0" + key.encode() + b"\0" + dumpb(obj) + b"\n")


def reply_core(own: list, rid=None) -> dict:
    """The reply to a sequenced request from its requester's own events (OrderPipeline._complete builds
    the same inline)."""
    if own and own[0]["type"] == "rejected":
        return {"rid": rid, "status": "rejected", "reason": own[0].get("reason", ""), "events": own}
    return {"rid": rid, "status": "ack", "events": own}


def sequenced(events: list) -> bool:
    """False for the single reject of a request that the engine refused before sequencing it (seq 0)."""
    return not (len(events) == 1 and events[0].get("type") == "rejected" and not events[0].get("seq"))


class OrderState:
    def __init__(self, risk, dedup_size: int = 100_000, accounts=None):
        self.risk = risk
        self.accounts = accounts          # engine.accounts.Accounts, or None (balances off: the default)
        self.dedup = DedupMemory(dedup_size)
        self.owner_by_clid: dict[tuple[str, str], int] = {}

    # ---- decisions (engine thread, sequence order) -------------------------------------------------
    def decide(self, account: str, ereq: dict, more: bool = True) -> tuple[str, str] | None:
        """Resolve ``orig_client_order_id`` and run the stateful risk checks of one request about to be
        sequenced; ``(reason, text)`` to refuse it, else None (with ``more`` requests after it in the same
        batch, the request is then reserved in risk for them)."""
        orig = ereq.pop("orig_client_order_id", None)
        if orig is not None:
            oid = self.owner_by_clid.get((account, orig))
            if oid is None:
                return "bad_request", f"unknown orig_client_order_id {orig!r}"
            ereq["order_id"] = oid
        acc = self.accounts
        if acc is not None:
            reason = acc.check(account, ereq)
            if reason is not None:
                return reason, ""
        reason = self.risk.check_and_reserve(account, ereq, more)
        if reason is not None and acc is not None:
            acc.undo_last()
        return None if reason is None else (reason, "")

    # ---- state changes (sequenced requests only) ---------------------------------------------------
    def note(self, events: list) -> None:
        """Risk and the name map follow the events of one request (inlined in OrderPipeline._execute: keep
        the two the same)."""
        self.risk.on_events(events)
        if self.accounts is not None:
            self.accounts.on_events(events)
        owner = self.owner_by_clid
        for ev in events:
            t = ev["type"]
            if t == "accepted":
                clid = ev.get("client_order_id")
                if clid:
                    owner[(ev["account"], clid)] = ev["order_id"]
            elif t in ORDER_ENDS and not ev.get("leaves_qty"):
                k = (ev.get("account"), ev.get("client_order_id"))    # the order is gone: so is its name
                if owner.get(k) == ev.get("order_id"):
                    del owner[k]

    def remember(self, account: str, key: str, core: dict) -> None:
        self.dedup.put(account, key, dumpb(core))

    # ---- restart ---------------------------------------------------------------------------------
    def rebuild(self, replayed: list) -> int:
        """Apply the events of a journal replay (``request`` markers first); returns requests applied."""
        n = 0
        marker, evs = None, []
        for ev in replayed:
            if ev.get("type") == "request":
                if marker is not None:
                    self._replayed(marker, evs)
                    n += 1
                marker, evs = ev, []
            else:
                evs.append(ev)
        if marker is not None:
            self._replayed(marker, evs)
            n += 1
        self.risk.clear_reservations()
        if self.accounts is not None:
            self.accounts.clear_reservations()
            self.accounts.take_changes()      # a replay's balance changes are not news
        return n

    def _replayed(self, m: dict, evs: list) -> None:
        if m.get("kind") == "admin":
            self.apply_admin(evs)
            own = evs
        else:
            self.note(evs)
            own = None
        key = m.get("dedup_key")
        if key:
            acct = m.get("account", "")
            if own is None:
                own = [e for e in evs if e.get("account") == acct]
            self.remember(acct, key, reply_core(own))

    def apply_admin(self, evs: list) -> None:
        """The events of one journaled admin operation (engine.accounts), live or replayed."""
        if self.accounts is None:
            raise ValueError("the journal holds account admin records (deposits, withdrawals) but this "
                             "exchange runs without [accounts]: enable it to use this data dir")
        for ev in evs:
            if ev.get("type") == "admin":
                self.accounts.apply_admin(ev)

    # ---- snapshots -----------------------------------------------------------------------------
    def export(self) -> dict:
        out = {"risk": self.risk.export_state(), "dedup": self.dedup.items(),
               "names": [[a, c, o] for (a, c), o in self.owner_by_clid.items()]}
        if self.accounts is not None:
            out["accounts"] = self.accounts.export()
        return out

    def load(self, data: dict) -> None:
        self.risk.import_state(data["risk"])
        self.dedup.load(data["dedup"])
        self.owner_by_clid = {(a, c): o for a, c, o in data["names"]}
        if self.accounts is not None:
            if "accounts" not in data:
                raise ValueError("the gateway snapshot was taken without [accounts]: balances cannot be rebuilt")
            self.accounts.load(data["accounts"])
        elif "accounts" in data:
            raise ValueError("the gateway snapshot holds balances but this exchange runs without [accounts]")

    # ---- hash ------------------------------------------------------------------------------------
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.risk.state_digest())
        h.update(repr(sorted(self.owner_by_clid.items())).encode())
        self.dedup.digest(h)
        if self.accounts is not None:
            self.accounts.digest(h)
        return h.hexdigest()
