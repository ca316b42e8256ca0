"""The exchange command (config, start, SIGTERM shutdown with the journal flushed, recovery) and the demo bot."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

zmq = pytest.importorskip("zmq")
pytest.importorskip("engine.manager")

from engine.client import Client
from engine.exchange import Exchange, load_config

PX = 1_000_000_000
SPEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"


def test_load_config_toml_and_overrides(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('symbols = ["A", "B"]\n[gateway]\nworkers = 3\n[risk]\nmax_order_qty = 7\n'
                 '[[keys]]\napi_key = "k"\nsecret = "s"\naccount = "ACC"\n')
    cfg = load_config(str(p), {"gateway.endpoint": "tcp://127.0.0.1:*", "data_dir": str(tmp_path)})
    assert cfg["symbols"] == ["A", "B"] and cfg["gateway"]["workers"] == 3
    assert cfg["gateway"]["hwm"] == 10_000                       # defaults kept for unset keys
    assert cfg["gateway"]["endpoint"] == "tcp://127.0.0.1:*" and cfg["risk"] == {"max_order_qty": 7}
    assert cfg["keys"] == [{"api_key": "k", "secret": "s", "account": "ACC"}]


def _start(data_dir, extra=()):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    code = "import sys; from engine.exchange import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen([sys.executable, "-c", code, "--port", "0", "--md-port", "0", "--data-dir", str(data_dir),
                          "--symbols", "AAPL,MSFT", "--fsync", "every", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()
    m = re.search(r"gateway=(\S+)\s+marketdata=(\S+)", line)
    assert m, (line, p.stderr.read() if p.poll() is not None else "")
    return p, m.group(1), m.group(2)


def test_exchange_process_sigterm_flushes_and_recovers(tmp_path):
    p, gw, md = _start(tmp_path)
    try:
        with Client(gw, "demo-mm", "demo-mm-secret", timeout=5) as c:
            r = c.submit("AAPL", "S", 101 * PX, 10, tif="gtc")
            assert r["status"] == "ack", r
            r = c.submit("AAPL", "B", 99 * PX, 5, tif="gtc")
            assert r["status"] == "ack"
        with Client(gw, "demo-taker", "demo-taker-secret", timeout=5) as t:
            r = t.submit("AAPL", "B", 101 * PX, 4, tif="ioc")
            assert [e["type"] for e in r["events"]][:2] == ["accepted", "fill"]
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "journal flushed" in out
    trades = (tmp_path / "trades.csv").read_text().splitlines()
    assert len(trades) == 2                                    # header + one trade
    assert any((tmp_path / "journal").iterdir())
    # a restarted exchange recovers the books from the journal
    p, gw, md = _start(tmp_path)
    try:
        with Client(gw, "demo-mm", "demo-mm-secret", timeout=5) as c:
            book = c.book("AAPL")
            assert book["asks"][0][:2] == [101 * PX, 6] and book["bids"][0][:2] == [99 * PX, 5]
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err              # interrupted: the CLI's exit code table
    assert "journal flushed" in out


@pytest.mark.skipif(not SPEC.is_dir(), reason="FIX dictionaries (../shared/data/fix/spec) not present")
def test_exchange_with_fix_and_ouch_acceptors(tmp_path):
    cfg = load_config(None, {"data_dir": str(tmp_path), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*"})
    cfg["fix"] = {"port": 0, "spec_dir": str(SPEC),
                  "sessions": [{"begin_string": "FIX.4.4", "our_comp_id": "EXCH", "their_comp_id": "C1",
                                "account": "FIXACC"}]}
    cfg["ouch"] = {"port": 0, "users": {"ouch1": {"password": "pw", "account": "OUCHACC"}}}
    with Exchange(cfg) as ex:
        eps = ex.endpoints
        assert set(eps) == {"gateway", "marketdata", "fix", "ouch"}
        from feedhandler.protocols import ouch42, soupbintcp as soup
        import socket
        s = socket.create_connection(("127.0.0.1", ex.ouch.port), timeout=5)
        s.sendall(soup.login_request("ouch1", "pw"))
        s.sendall(soup.unsequenced(ouch42.encode("enter_order", order_token="T1", side="S", shares=10, stock="AAPL",
                                                 price=100_0000, time_in_force=99999)))
        f = soup.Framer()
        pk = []
        end = time.monotonic() + 5
        while len([x for x in pk if x[0] == b"S"]) < 1 and time.monotonic() < end:
            pk += f.feed(s.recv(4096))
        # the ZeroMQ client trades against the OUCH order: one pipeline, one book
        with Client(ex.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=5) as t:
            r = t.submit("AAPL", "B", 100 * PX, 3, tif="ioc")
            fills = [e for e in r["events"] if e["type"] == "fill"]
            assert fills and fills[0]["contra_account"] == "OUCHACC"
        # and the other way round: an OUCH taker fills a ZeroMQ maker, whose fill is routed from the
        # acceptor's thread through a gateway worker to the maker's DEALER
        with Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=5) as mm:
            r = mm.submit("MSFT", "S", 50 * PX, 20, tif="day")
            maker_oid = r["events"][0]["order_id"]
            s.sendall(soup.unsequenced(ouch42.encode("enter_order", order_token="T2", side="B", shares=5,
                                                     stock="MSFT", price=50_0000, time_in_force=0)))
            ex_ = mm.executions(timeout=5)
            assert [(e["exec_type"], e["order_id"], e["qty"], e["contra_account"]) for e in ex_] == [
                ("fill", maker_oid, 5, "OUCHACC")]
        s.close()


def test_demo_bot_in_process(capsys):
    from engine.bot import main
    assert main(["--start-exchange", "--duration", "3", "--quiet", "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["orders"] > 20 and summary["rejects"] == 0
    assert summary["fills"]["mm"] > 0 and summary["fills"]["taker"] > 0
    assert summary["trade_log"]["rows"] == summary["fills"]["taker"]
    assert summary["client_rtt_ns"]["count"] == summary["orders"]
    from decimal import Decimal
    pm, pt = summary["pnl"]["mm"], summary["pnl"]["taker"]
    # a closed two-account market: positions and realized PnL mirror each other exactly
    assert Decimal(pm["realized"]) == -Decimal(pt["realized"])
    assert pm["positions"]["AAPL"]["qty"] == -pt["positions"]["AAPL"]["qty"]
    assert summary["market_data_records"] > 0


def test_gateway_over_two_engine_processes(tmp_path):
    """The gateway in front of a sharded EngineManager: each symbol's book lives in its own process."""
    cfg = load_config(None, {"data_dir": str(tmp_path), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*", "engine.shards": 2,
                             "engine.processes": True})
    cfg["symbols"] = ["AAPL", "MSFT"]
    with Exchange(cfg) as ex:
        with Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=10) as a, \
                Client(ex.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=10) as b:
            makers = {}
            for sym in ("AAPL", "MSFT"):
                r = a.submit(sym, "S", 100 * PX, 10)
                assert r["status"] == "ack", r
                makers[sym] = r["events"][0]["order_id"]
                r = b.submit(sym, "B", 100 * PX, 4, tif="ioc")
                assert [(e["type"], e["qty"]) for e in r["events"]] == [("accepted", 4), ("fill", 4)]
            got = {(e["symbol"], e["order_id"], e["qty"]) for e in a.executions(timeout=3)}
            deadline = time.monotonic() + 3
            while len(got) < 2 and time.monotonic() < deadline:
                got |= {(e["symbol"], e["order_id"], e["qty"]) for e in a.executions(timeout=0.5)}
            assert got == {("AAPL", makers["AAPL"], 4), ("MSFT", makers["MSFT"], 4)}
            assert ex.engine.symbol_of(makers["AAPL"]) == "AAPL" and ex.engine.symbol_of(makers["MSFT"]) == "MSFT"
