"""TradeLogger: one row per trade with both sides, exact prices, dedup on recovery, Parquet."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_matcher import dict_flow  # noqa: E402

from engine.manager import EngineManager  # noqa: E402
from engine.tradelog import FIELDS, TradeLogger, price_str, read_trades, write_parquet  # noqa: E402

SYMS = ["AAPL", "MSFT"]


def test_price_str_exact():
    assert price_str(1_234_500_000_000) == "1234.5"
    assert price_str(1) == "0.000000001"
    assert price_str(-2_000_000_000) == "-2"
    assert price_str(0) == "0"


def test_rows_match_fill_events(tmp_path):
    path = tmp_path / "t.csv"
    tl = TradeLogger(str(path))
    fills = []
    with EngineManager(SYMS, trade_log=tl) as m:
        for evs in m.submit_many(dict_flow(5, 1500, SYMS)):
            fills += [e for e in evs if e["type"] == "fill"]
    tl.close()
    rows = read_trades(str(path))
    takers = [e for e in fills if e["liquidity"] == "taker"]
    makers = {e["trade_id"]: e for e in fills if e["liquidity"] == "maker"}
    assert len(rows) == len(takers) == len(makers) > 50
    for row, t in zip(rows, takers):
        mk = makers[t["trade_id"]]
        buy, sell = (t, mk) if t["side"] == "B" else (mk, t)
        assert row["trade_id"] == t["trade_id"] and row["symbol"] == t["symbol"]
        assert row["price_raw"] == t["price"] and row["qty"] == t["qty"] and row["aggressor_side"] == t["side"]
        assert (row["buy_account"], row["sell_account"]) == (buy["account"], sell["account"])
        assert (row["buy_order_id"], row["sell_order_id"]) == (buy["order_id"], sell["order_id"])
        assert row["ts_event"] == t["ts_event"]
    assert len({r["trade_id"] for r in rows}) == len(rows)


def test_reopen_skips_logged_and_drops_torn_row(tmp_path):
    path = tmp_path / "t.csv"
    ev = {"type": "fill", "liquidity": "taker", "symbol": "X", "trade_id": 1, "seq": 1, "price": 5, "qty": 2,
          "side": "S", "account": "a", "contra_account": "b", "order_id": 10, "contra_order_id": 9, "ts_event": 7}
    tl = TradeLogger(str(path))
    assert tl.on_fill(ev) and not tl.on_fill(ev)
    tl.close()
    with open(path, "a") as f:
        f.write("2,2,X,5,0.000000005,1,S,a")  # torn row
    tl = TradeLogger(str(path))
    assert tl.rows == 1 and not tl.on_fill(ev)
    assert tl.on_fill(dict(ev, trade_id=2))
    tl.close()
    rows = read_trades(str(path))
    assert [r["trade_id"] for r in rows] == [1, 2] and rows[0]["buy_account"] == "b"


def test_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "t.csv"
    tl = TradeLogger(str(path), parquet_path=str(tmp_path / "t.parquet"))
    with EngineManager(SYMS, trade_log=tl) as m:
        m.submit_many(dict_flow(6, 500, SYMS))
    tl.close()
    table = pq.read_table(tmp_path / "t.parquet")
    assert tuple(table.column_names) == FIELDS
    assert table.column("price_raw").to_pylist() == [r["price_raw"] for r in read_trades(str(path))]
    write_parquet(str(path), str(tmp_path / "again.parquet"))
