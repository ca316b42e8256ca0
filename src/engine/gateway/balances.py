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

from engine.accounts import AdminRequestError, validate_admin
from engine.gateway.codec import dumpb, loads
from engine.gateway.state import reply_core
from engine.limits import MAX_ACCOUNT_BYTES, MAX_RID_BYTES

MAX_TOTAL = 2 ** 62     # net deposits per asset: every balance then fits a signed 64-bit integer


def _reject(rid, reason: str, text: str = "") -> dict:
    out = {"rid": rid, "status": "rejected", "reason": reason}
    if text:
        out["text"] = text
    return out


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
