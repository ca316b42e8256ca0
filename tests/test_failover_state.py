"""Failover keeps the gateway's state (issue 10, item 7): after ``feedhandler exchange --standby-of`` takes
over from a primary killed with SIGKILL, the taken-over exchange answers as the primary would have:

- a client retry of an order the primary acknowledged (same rid and client_order_id) is answered with the
  first outcome, never entered a second time;
- an account at its max_position cannot buy more; the price band (from the primary's last trade) holds;
- cancel by original client order id works for an order entered at the primary;
- the order id counter continues (no id reused).
"""
from __future__ import annotations

import signal

import pytest

zmq = pytest.importorskip("zmq")

from test_ops_standby import popen, read_until, stop  # noqa: E402

PX = 1_000_000_000
CONFIG = """
[risk]
max_position = 10
price_band_bps = 1000
rate_per_s = 0
bytes_per_s = 0

[[keys]]
api_key = "mm"
secret = "mm-secret"
account = "MM"

[[keys]]
api_key = "ta"
secret = "ta-secret"
account = "ACC-A"

[[keys]]
api_key = "tb"
secret = "tb-secret"
account = "ACC-B"
"""


def _new(rid, clid, side, price, qty):
    return {"type": "new", "rid": rid, "client_order_id": clid, "symbol": "AAPL", "side": side,
            "price": price, "qty": qty, "tif": "gtc"}


@pytest.mark.parametrize("shards", [1, 2])
def test_failover_keeps_retry_memory_risk_band_and_names(tmp_path, shards):
    from engine.client import Client

    data = str(tmp_path / "data")
    cfg = tmp_path / "x.toml"
    cfg.write_text(CONFIG + f"\n[engine]\nshards = {shards}\n")
    common = ["--symbols", "AAPL,MSFT", "--md-port", "0", "--fsync", "every", "--config", str(cfg)]
    primary = popen("exchange", *common, "--port", "0", "--data-dir", data)
    standby = None
    try:
        gw = read_until(primary, r"gateway=(\S+)").group(1)
        standby = popen("exchange", *common, "--port", "0", "--standby-of", data)
        read_until(standby, rf"standby of .*following {shards} shard journal")
        with Client(gw, "mm", "mm-secret", timeout=5) as mm, Client(gw, "ta", "ta-secret", timeout=5) as ta, \
                Client(gw, "tb", "tb-secret", timeout=5) as tb:
            assert mm.request(_new("mm-r1", "mm-1", "S", 100 * PX, 10))["status"] == "ack"
            first = ta.request(_new("a-r1", "a-1", "B", 100 * PX, 10))       # trades: ACC-A long 10 (its max)
            assert first["status"] == "ack" and any(e["type"] == "fill" for e in first["events"]), first
            assert tb.request(_new("b-r0", "b-0", "S", 101 * PX, 5))["status"] == "ack"
            b1 = tb.request(_new("b-r1", "b-1", "B", 99 * PX, 5))
            assert b1["status"] == "ack"
            # what the primary answers now, the taken-over exchange must answer the same
            assert ta.request(_new("a-r1", "a-1", "B", 100 * PX, 10)).get("dup") is True
            assert ta.request(_new("a-r2", "a-2", "B", 101 * PX, 1))["reason"] == "position_limit"
            assert tb.request(_new("b-r9", "b-9", "B", 150 * PX, 1))["reason"] == "price_band"
        primary.send_signal(signal.SIGKILL)
        primary.wait(10)
        m = read_until(standby, r"taking over: (.*); epoch (\d+), seq (\d+)", timeout=30)
        assert int(m.group(3)) == 4, m.group(0)
        gw2 = read_until(standby, r"gateway=(\S+)").group(1)
        with Client(gw2, "ta", "ta-secret", timeout=5) as ta, Client(gw2, "tb", "tb-secret", timeout=5) as tb, \
                Client(gw2, "mm", "mm-secret", timeout=5) as mm:
            # a client library's retry of the acknowledged order: its first outcome, not a second order
            again = ta.request(_new("a-r1", "a-1", "B", 100 * PX, 10))
            assert again.get("dup") is True, again
            assert again["events"][0]["order_id"] == first["events"][0]["order_id"]
            # the account at max_position cannot buy more
            r = ta.request(_new("a-r3", "a-3", "B", 101 * PX, 1))
            assert r["status"] == "rejected" and r["reason"] == "position_limit", r
            # the price band from the primary's trade at 100
            r = tb.request(_new("b-r2", "b-2", "B", 150 * PX, 1))
            assert r["status"] == "rejected" and r["reason"] == "price_band", r
            # cancel by the original client order id of an order entered at the primary
            r = tb.request({"type": "cancel", "rid": "b-c1", "orig_client_order_id": "b-1"})
            assert r["status"] == "ack" and [e["type"] for e in r["events"]] == ["canceled"], r
            assert r["events"][0]["order_id"] == b1["events"][0]["order_id"]
            # one order at 101 rests (b-0), untouched by the refused buys; the id counter continues
            book = mm.book("AAPL")
            assert [a[:2] for a in book["asks"]] == [[101 * PX, 5]], book
            assert book["bids"] == [], book
            r = tb.request(_new("b-r3", "b-3", "S", 102 * PX, 1))
            assert r["status"] == "ack" and r["events"][0]["order_id"] & ((1 << 40) - 1) == 5, r
    finally:
        stop(primary)
        if standby is not None:
            stop(standby)
    assert standby.returncode == 0, standby.stderr.read() if standby.stderr else ""
