"""Ordering across the private WebSocket channels: order_updates and balance_updates carry one per-account
``user_seq``; merged by it, every balance message shows the balances after exactly the order events before
it (engine order: a request's order events, then its balance changes, then the next request's)."""
from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from _http_support import Signed
from test_http_balances import _exchange, _fund, _ws_login

pytest.importorskip("websockets", reason="websockets (test extra) is not installed")

MAX_BPS = 2          # test_http_balances.ACCOUNTS: maker 1, taker 2
RAW = Decimal(10**9)


def _lock(price: str, leaves: int) -> Decimal:
    n = int(Decimal(price) * RAW) * leaves
    return Decimal(n + n * MAX_BPS // 10_000) / RAW


@pytest.fixture
def ex(tmp_path):
    e = _exchange(tmp_path)
    e.start()
    try:
        yield e
        assert e.http.listener_errors == 0, e.http.last_listener_error
    finally:
        e.stop()


def test_order_and_balance_updates_share_one_user_sequence(ex):
    url = ex.http.url
    _fund(url)
    prices = ["10", "11", "12", "13", "14", "15"]

    async def run():
        ws = await _ws_login(url, "TAKER")
        tk, mm = Signed(url, "TAKER"), Signed(url, "MM")

        async def post(c, path, body):
            r = await asyncio.to_thread(c.post, path, body)
            assert r.status_code in (200, 202), r.text
            return r.json()["data"]
        # concurrent: several requests of one engine batch
        made = await asyncio.gather(*(post(tk, "/api/v1/create_order",
                                           {"symbol": "AAPL", "side": "BUY", "price": p, "qty": "3", "cid": f"b{p}"})
                                      for p in prices))
        # MM sells into the two best bids (one fills, one partly), then TAKER cancels everything still open
        await post(mm, "/api/v1/create_order", {"symbol": "AAPL", "side": "SELL", "price": "14", "qty": "4"})
        await asyncio.gather(*(post(tk, "/api/v1/cancel_order", {"order_id": m["order_id"]})
                               for m in made if m["cid"] not in ("b15",)))
        msgs = []
        try:
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 2.0))
                if m.get("channel") in ("order_updates", "balance_updates"):
                    msgs.append(m)
        except asyncio.TimeoutError:
            pass
        await ws.close()
        return msgs
    msgs = asyncio.run(run())
    # one sequence over both channels, in the order received, without a gap (the deposit before the
    # subscription took the account's first number)
    us = [m["user_seq"] for m in msgs]
    assert us == list(range(us[0], us[0] + len(us))) and us[0] == 2
    for ch in ("order_updates", "balance_updates"):
        seqs = [m["seq"] for m in msgs if m["channel"] == ch]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # replay the order updates: each USD balance message's locked amount is the lock of the orders open after
    # the order events that came before it
    leaves: dict[str, tuple[str, int]] = {}
    n_checked = 0
    for m in msgs:
        d = m["data"]
        if m["channel"] == "order_updates":
            if d["status"] in ("ACCEPTED", "PARTIALLY_FILLED"):
                leaves[d["order_id"]] = (d["price"], int(d["leaves_qty"]))
            elif d["status"] in ("FILLED", "CANCELED", "EXPIRED", "REJECTED"):
                leaves.pop(d["order_id"], None)
        elif d["asset"] == "USD":
            want = sum((_lock(p, q) for p, q in leaves.values()), Decimal(0))
            assert Decimal(d["locked"]) == want, (m, leaves)
            n_checked += 1
    assert n_checked >= 2 * len(prices)
    assert not leaves
