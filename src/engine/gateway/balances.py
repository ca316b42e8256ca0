"""The pipeline's balance hooks (engine.accounts on; nothing here runs with balances off).

- :func:`admin_request`: ``{"type": "admin", "op": "create_account"|"deposit"|"withdraw", "account": A,
  "asset": X, "amount": N, "rid": R}`` from an account in ``OrderPipeline.admins``. Checked statelessly in
  the calling thread, then on the engine thread, in sequence order: the retry memory (key ``a:`` + rid),
  the stateful check (``account_exists``, ``unknown_account``, ``insufficient_balance``,
  ``amount_too_large``), then sequenced and journaled (record ``A`` in shard 0's journal) BEFORE it is
  applied. Reply: ``{"status": "ack", "events": [{"type": "admin", "seq", "op", "account", ...}]}``.
- :func:`query`: ``{"type": "query", "what": "balances"[, "account": A]}`` -> ``{"status": "ok", "account":
  A, "balances": {asset: {"available": int, "locked": int}}}`` (another account's: admins only).
- :func:`after_events` / :func:`flush`: every change of an (account, asset) by a request becomes ONE
  event routed to that account after the replies of its engine batch:
  ``{"type": "balance", "account": A, "asset": X, "available": int, "locked": int, "seq": S}`` where
  ``S`` is the sequence number of the request that caused it (per shard with several shards); the
  values are the balance after the request (absolute, not deltas: a consumer that missed one loses
  nothing by taking the next).
"""
from __future__ import annotations

import logging

from engine.accounts import AdminRequestError, validate_admin
from engine.gateway.codec import dumpb, loads
from engine.gateway.state import reply_core
from engine.limits import MAX_ACCOUNT_BYTES, MAX_BOOK_DEPTH, MAX_RID_BYTES

pipe_log = logging.getLogger("engine.gateway")
MAX_TOTAL = 2 ** 62     # net deposits per asset: every balance then fits a signed 64-bit integer


def _reject(rid, reason: str, text: str = "") -> dict:
    out = {"rid": rid, "status": "rejected", "reason": reason}
    if text:
        out["text"] = text
    return out


def wire(pipe) -> None:
    """Give the pipeline's accounts (if any) their source of market-buy protection prices (engine thread:
    the engine's live book and the risk price band; see engine.accounts)."""
    acc = pipe.state.accounts
    if acc is None:
        return

    def protection_price(account: str, symbol, qty: int):
        return market_buy_price(pipe, account, symbol, qty)
    acc.protection_price = protection_price


def market_buy_price(pipe, account: str, symbol, qty: int) -> int | None:
    """Engine thread: the price of the ask level at which the book's asks cover ``qty`` (the deepest level
    when they do not); with the risk price band on and a reference price known, only levels at or below the
    band's ceiling (reference + ``price_band_bps``) count. None when no ask qualifies. Always a price of the
    book: on the tick grid."""
    try:
        asks = pipe.engine.book(symbol, MAX_BOOK_DEPTH)[1]
    except KeyError:
        return None
    risk = pipe.risk
    band = risk.limits_for(account).price_band_bps
    ref = risk.reference_price(symbol) if band > 0 else None
    ceiling = ref + ref * band // 10_000 if ref else None
    cum, price = 0, None
    for row in asks:
        px = int(row[0])
        if ceiling is not None and px > ceiling:
            break
        price = px
        cum += int(row[1])
        if cum >= qty:
            break
    return price


def admin_request(pipe, account: str, rid, req: dict) -> dict:
    acc = pipe.state.accounts
    if acc is None:
        return _reject(rid, "accounts_disabled", "this exchange runs without [accounts]")
    if account not in pipe.admins:
        pipe.stats.auth_failures += 1
        return _reject(rid, "unauthorized", "admin requests need an admin account")
    try:
        op = validate_admin(req, acc.assets, MAX_ACCOUNT_BYTES)
    except AdminRequestError as e:
        pipe.stats.bad_requests += 1
        return _reject(rid, e.reason, str(e))
    # the retry memory's key: the rid (a str or an int, its size checked at the edge); no rid, no retry safety
    key = None if rid is None or rid == "" else "a:" + str(rid)[:MAX_RID_BYTES]
    state = pipe.state

    def on_engine() -> dict:
        if key is not None:
            prev = state.dedup.get(account, key)
            if prev is not None:
                pipe.stats.dups += 1
                return dict(loads(prev), rid=rid, dup=True)
        reason = acc.check_admin(op)
        if reason is None and op["op"] == "deposit" and acc.deposits.get(op["asset"], 0) + op["amount"] > MAX_TOTAL:
            reason = "amount_too_large"
        if reason is not None:        # refused before sequencing: changes nothing, not remembered
            pipe.stats.rejects += 1
            return _reject(rid, reason)
        evs = pipe.engine.submit_admin(dict(op, by=account, dedup_key=key or ""))[1:]
        state.apply_admin(evs)
        core = reply_core(evs)
        if key is not None:
            state.dedup.put(account, key, dumpb(core))
        pipe.stats.acks += 1
        seq = evs[0]["seq"] if evs else 0
        for ev in acc.take_changes(seq):
            pipe.route(ev["account"], ev)
        return dict(core, rid=rid)
    return pipe.in_engine(on_engine)


def query(pipe, account: str, rid, req: dict) -> dict:
    acc = pipe.state.accounts
    if acc is None:
        return _reject(rid, "accounts_disabled", "this exchange runs without [accounts]")
    target = req.get("account", account)
    if type(target) is not str or len(target.encode()) > MAX_ACCOUNT_BYTES:
        return _reject(rid, "bad_request", "account must be a string")
    if target != account and account not in pipe.admins:
        pipe.stats.auth_failures += 1
        return _reject(rid, "unauthorized", "another account's balances: admins only")
    return {"rid": rid, "status": "ok", "account": target,
            "balances": pipe.in_engine(lambda: acc.balances(target))}


def after_events(pipe, acc, events: list) -> None:
    """Engine thread, after ``acc.on_events(events)`` of one request: queue its balance changes."""
    if acc._touched:
        pipe._balance_out.extend(acc.take_changes(events[0]["seq"] if events else 0))


def flush(pipe) -> None:
    """Engine thread, after the replies of a batch: route the queued balance events to their accounts."""
    out, pipe._balance_out = pipe._balance_out, []
    for ev in out:
        pipe.route(ev["account"], ev)


def publish_with_balances(pipe, outcomes: list) -> None:
    """Engine thread, after the replies of a batch: for each request in engine order, its events to market
    data (and the HTTP views/streams tapping it), then the balance changes it caused to their accounts. A
    consumer of both (the WebSocket ``order_updates`` and ``balance_updates`` of one account, numbered by
    one per-account counter) thus sees every balance after the order event that caused it and before the
    next request's. Market-data failures are counted, never fatal (as ``OrderPipeline._publish``)."""
    out, pipe._balance_out = pipe._balance_out, []
    md = pipe.marketdata
    n, k = len(out), 0
    for kind, value in outcomes:
        if kind != "events":
            continue
        if md is not None:
            try:
                md.publish(value)
            except Exception as e:    # noqa: BLE001 - public data is not state: counted, go on
                pipe.stats.sink_errors += 1
                pipe_log.error("market data publish failed: %r", e)
        seq = value[0].get("seq") or 0 if value else 0
        while k < n and out[k]["seq"] <= seq:
            ev = out[k]
            pipe.route(ev["account"], ev)
            k += 1
    while k < n:            # changes of requests without a sequenced event (none expected): still delivered
        ev = out[k]
        pipe.route(ev["account"], ev)
        k += 1
