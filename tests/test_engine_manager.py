"""EngineManager: dict edge, routing by symbol and order id, shards in two engine processes, engine thread."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_matcher import dict_flow  # noqa: E402

from engine.manager import EngineManager  # noqa: E402

SYMS = ["AAPL", "MSFT", "NVDA", "TSLA"]
P = 1_000_000_000  # price_raw of 1.0


def strip(ev: dict) -> dict:
    """Event without the per-shard input sequence number."""
    return {k: v for k, v in ev.items() if k not in ("seq", "token")}


def test_dict_api_roundtrip():
    with EngineManager(SYMS, tick_size=P // 100) as m:
        a = m.submit({"type": "new", "account": "alice", "client_order_id": "a1", "symbol": "MSFT", "side": "S",
                      "price": 101 * P, "qty": 10, "tif": "gtc"})
        assert [e["type"] for e in a] == ["accepted"]
        oid = a[0]["order_id"]
        assert m.symbol_of(oid) == "MSFT" and m.order(oid)["client_order_id"] == "a1"
        b = m.submit({"type": "new", "account": "bob", "client_order_id": "b1", "symbol": "MSFT", "side": "B",
                      "price": 102 * P, "qty": 4})
        fill = [e for e in b if e["type"] == "fill"]
        assert [(e["liquidity"], e["price"], e["qty"], e["client_order_id"]) for e in fill] == [
            ("taker", 101 * P, 4, "b1"), ("maker", 101 * P, 4, "a1")]
        assert fill[0]["contra_account"] == "alice" and fill[1]["contra_account"] == "bob"
        assert m.last_trade("MSFT") == (101 * P, 4)
        assert m.book("MSFT") == ([], [(101 * P, 6, 1)])
        r = m.submit({"type": "amend", "account": "alice", "client_order_id": "a2", "order_id": oid, "new_qty": 2})
        assert r[0]["type"] == "replaced" and r[0]["leaves_qty"] == 2 and r[0]["request_client_order_id"] == "a2"
        r = m.submit({"type": "cancel", "account": "bob", "order_id": oid})
        assert (r[0]["type"], r[0]["reason"]) == ("rejected", "not_owner")
        r = m.submit({"type": "cancel", "account": "alice", "order_id": oid})
        assert (r[0]["type"], r[0]["reason"], r[0]["qty"]) == ("canceled", "user", 2)
        assert m.order(oid) is None


def test_bad_requests_are_not_journaled(tmp_path):
    with EngineManager(SYMS, journal_dir=str(tmp_path)) as m:
        before = (m.seq, m.state_hash())
        bad = [{"type": "new", "account": "x", "symbol": "ZZZ", "side": "B", "price": 1, "qty": 1},
               {"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": 1.5, "qty": 1},
               {"type": "new", "account": "x", "symbol": "AAPL", "side": "Q", "price": 1, "qty": 1},
               {"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": 1, "qty": 0},
               {"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": 1, "qty": 1, "tif": "xx"},
               {"type": "cancel", "account": "x", "order_id": 12345},
               {"type": "amend", "account": "x", "order_id": (1 << 40) | 1},
               {"type": "bogus"}, "not a dict"]
        for req in bad:
            evs = m.submit(req)
            assert len(evs) == 1 and evs[0]["type"] == "rejected" and evs[0]["seq"] == 0, (req, evs)
            assert evs[0]["reason"] in ("bad_request", "unknown_symbol", "unknown_order")
        assert (m.seq, m.state_hash()) == before


def test_out_of_range_and_odd_values_are_bad_requests(tmp_path):
    """Values that fit no C field (or no dict key) are answered like any bad request: one rejected event,
    nothing sequenced or journaled; numpy integers are integers."""
    import numpy as np

    with EngineManager(SYMS, journal_dir=str(tmp_path)) as m:
        before = (m.seq, m.state_hash())
        bad = [{"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": 2**63, "qty": 1},
               {"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": 1, "qty": 2**31},
               {"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": 1, "qty": 1, "ts_recv": -1},
               {"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": 1, "qty": 1, "ts_recv": 2**64},
               {"type": "new", "account": "x", "symbol": ["AAPL"], "side": "B", "price": 1, "qty": 1},
               {"type": "eod", "symbol": {"AAPL": 1}},
               {"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": True, "qty": 1},
               {"type": "amend", "account": "x", "order_id": (1 << 40) | 1, "new_price": -(2**63) - 1},
               {"type": "new", "account": 7, "symbol": "AAPL", "side": "B", "price": 1, "qty": 1}]
        for req in bad:
            evs = m.submit(req)
            assert len(evs) == 1 and evs[0]["type"] == "rejected" and evs[0]["seq"] == 0, (req, evs)
            assert evs[0]["reason"] in ("bad_request", "unknown_symbol"), (req, evs)
        assert (m.seq, m.state_hash()) == before
        ok = m.submit({"type": "new", "account": "x", "symbol": "AAPL", "side": "B", "price": np.int64(7),
                       "qty": np.uint32(3)})
        assert [(e["type"], e["price"], e["qty"]) for e in ok] == [("accepted", 7, 3)]


def test_end_of_day_all_symbols():
    with EngineManager(SYMS) as m:
        for s in SYMS:
            m.submit({"type": "new", "account": "a", "symbol": s, "side": "B", "price": 5, "qty": 1})
            m.submit({"type": "new", "account": "a", "symbol": s, "side": "B", "price": 4, "qty": 1, "tif": "gtc"})
        evs = m.end_of_day()
        assert sorted(e["symbol"] for e in evs) == sorted(SYMS) and {e["type"] for e in evs} == {"expired"}
        assert all(m.book(s) == ([(4, 1, 1)], []) for s in SYMS)


def run_flow(m, flow, batch=50):
    out = []
    for i in range(0, len(flow), batch):
        for evs in m.submit_many(flow[i : i + batch]):
            out.append([strip(e) for e in evs])
    return out


def test_sharded_in_two_engine_processes():
    """Two engine processes own half the symbols each; results equal the single-engine run."""
    flow = dict_flow(11, 3000, SYMS, n_accounts=3)
    with EngineManager(SYMS) as single:
        want = run_flow(single, flow)
        want_books = {s: single.book(s, 50) for s in SYMS}
    with EngineManager(SYMS, shards=2, processes=True) as sharded:
        pids = sharded.shard_pids()
        assert len(pids) == 2 and os.getpid() not in pids and len(set(pids)) == 2
        got = run_flow(sharded, flow)
        assert got == want
        assert {s: sharded.book(s, 50) for s in SYMS} == want_books
        assert sharded.seq == len(flow)
        # cancel routed to the right process by order id alone (no symbol)
        rest = [e for evs in got for e in evs if e["type"] == "accepted"][-1]
        oid = rest["order_id"]
        if sharded.order(oid) is not None:
            evs = sharded.submit({"type": "cancel", "account": rest["account"], "order_id": oid})
            assert evs[0]["type"] == "canceled" and evs[0]["symbol"] == rest["symbol"]


def test_sharded_journals_recover(tmp_path):
    flow = dict_flow(12, 800, SYMS)
    with EngineManager(SYMS, shards=2, processes=True, journal_dir=str(tmp_path)) as m:
        run_flow(m, flow)
        h = m.state_hash()
    assert sorted(os.listdir(tmp_path)) == ["shard-0", "shard-1"]
    with EngineManager(SYMS, shards=2, processes=True, journal_dir=str(tmp_path)) as m:
        assert m.state_hash() == h and m.seq == len(flow)


def test_tokens_follow_their_requests_events():
    flow = dict_flow(13, 2000, SYMS)
    with EngineManager(SYMS) as ref:
        want = [[strip(e) for e in evs] for evs in ref.submit_many(flow)]
    with EngineManager(SYMS, shards=2) as m:
        got: dict[int, list] = {}
        for k in range(0, len(flow), 64):
            for evs in m.submit_many(flow[k : k + 64], list(range(k, min(k + 64, len(flow))))):
                for ev in evs:
                    got.setdefault(ev["token"], []).append(strip(ev))
    assert [got.get(i, []) for i in range(len(flow))] == want


@pytest.mark.parametrize("stp", ["cancel_newest", "cancel_oldest", "cancel_both"])
def test_manager_stp_default(stp):
    with EngineManager(["X"], stp=stp) as m:
        m.submit({"type": "new", "account": "a", "symbol": "X", "side": "S", "price": 10, "qty": 1})
        evs = m.submit({"type": "new", "account": "a", "symbol": "X", "side": "B", "price": 10, "qty": 1})
        stp_cancels = [e["order_id"] & 0xFF for e in evs if e["reason"] == "stp"]
        assert stp_cancels == {"cancel_newest": [2], "cancel_oldest": [1], "cancel_both": [1, 2]}[stp]
