"""Balances through the exchange: [accounts] config, Client.balances()/deposit() over ZeroMQ, balance events,
and the `feedhandler exchange` process killed with SIGKILL and restarted with the same balances."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

zmq = pytest.importorskip("zmq")

from engine.client import Client
from engine.errors import ConfigError
from engine.exchange import Exchange, load_config, validate_config

PX = 1_000_000_000
KEYS = [{"api_key": "k-ops", "secret": "s-ops", "account": "OPS"},
        {"api_key": "k-mm", "secret": "s-mm", "account": "MM"},
        {"api_key": "k-t", "secret": "s-t", "account": "T"}]
ACCOUNTS = {"enabled": True, "quote": "USD", "maker_fee_bps": 1, "taker_fee_bps": 2, "fee_account": "fees",
            "admins": ["OPS"]}


def _cfg(tmp_path, **acc):
    cfg = load_config(None, {"data_dir": str(tmp_path), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*"})
    cfg["keys"] = KEYS
    cfg["accounts"] = dict(ACCOUNTS, **acc)
    cfg["risk"] = {"price_band_bps": 0}
    return validate_config(cfg)


def test_config_keys_are_checked():
    base = load_config(None, {})
    assert base["accounts"]["enabled"] is False                   # off by default: today's exchange
    for bad, msg in (({"enabled": True, "feee_account": "x"}, "unknown key accounts.feee_account"),
                     ({"enabled": True, "maker_fee_bps": 20_000}, "maker_fee_bps"),
                     ({"enabled": True, "quote": "AAPL"}, "quote"),
                     ({"enabled": "yes"}, "accounts.enabled must be true or false")):
        cfg = dict(base, accounts=bad)
        with pytest.raises(ConfigError, match=msg):
            validate_config(cfg)
    remote = dict(base, accounts={"enabled": True}, engine=dict(base["engine"], remote=["tcp://127.0.0.1:7001"]))
    with pytest.raises(ConfigError, match="not supported with engine.remote"):
        validate_config(remote)


def test_balances_over_zeromq_with_events_and_restart(tmp_path):
    with Exchange(_cfg(tmp_path)) as ex:
        gw = ex.gateway.endpoint
        with Client(gw, "k-ops", "s-ops", timeout=5) as ops, Client(gw, "k-mm", "s-mm", timeout=5) as mm, \
                Client(gw, "k-t", "s-t", timeout=5) as t:
            mm.hello()
            for acct in ("MM", "T"):
                assert ops.create_account(acct)["status"] == "ack"
            assert ops.deposit("MM", "AAPL", 100)["status"] == "ack"
            assert ops.deposit("T", "USD", 10_000 * PX)["status"] == "ack"
            assert mm.deposit("MM", "USD", 1)["reason"] == "unauthorized"
            r = t.submit("AAPL", "B", 200 * PX, 100)
            assert r["reason"] == "insufficient_balance", r
            assert mm.submit("AAPL", "S", 100 * PX, 50, tif="gtc")["status"] == "ack"
            r = t.submit("AAPL", "B", 100 * PX, 20)
            assert r["status"] == "ack" and r["events"][1]["type"] == "fill"
            notional = 100 * PX * 20
            assert t.balances()["balances"] == {
                "USD": {"available": 10_000 * PX - notional - notional * 2 // 10_000, "locked": 0},
                "AAPL": {"available": 20, "locked": 0}}
            assert mm.balances()["balances"]["AAPL"] == {"available": 50, "locked": 30}
            ups = []
            end = time.monotonic() + 5
            while time.monotonic() < end and not any(u["asset"] == "USD" for u in ups):
                ups += mm.balance_updates(timeout=0.5)
            usd = [u for u in ups if u["asset"] == "USD"][-1]
            assert usd["available"] == notional - notional // 10_000 and usd["seq"] == r["events"][0]["seq"]
            assert ops.balances("fees")["balances"]["USD"]["available"] == notional * 3 // 10_000
            before = {a: ops.balances(a)["balances"] for a in ("MM", "T", "fees")}
    with Exchange(_cfg(tmp_path)) as ex:         # a restart replays the journal: the same balances
        with Client(ex.gateway.endpoint, "k-ops", "s-ops", timeout=5) as ops:
            assert {a: ops.balances(a)["balances"] for a in ("MM", "T", "fees")} == before


def test_an_exchange_process_killed_with_sigkill_keeps_the_balances(tmp_path):
    toml = tmp_path / "exch.toml"
    toml.write_text('symbols = ["AAPL", "MSFT"]\n[risk]\nprice_band_bps = 0\n'
                    '[accounts]\nenabled = true\nmaker_fee_bps = 3\ntaker_fee_bps = 5\nadmins = ["OPS"]\n'
                    + "".join(f'[[keys]]\napi_key = "{k["api_key"]}"\nsecret = "{k["secret"]}"\n'
                              f'account = "{k["account"]}"\n' for k in KEYS))
    data = tmp_path / "data"

    def start():
        code = "import sys; from engine.exchange import main; sys.exit(main(sys.argv[1:]))"
        p = subprocess.Popen([sys.executable, "-c", code, "--config", str(toml), "--port", "0", "--md-port", "0",
                              "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
        line = p.stdout.readline()
        m = re.search(r"gateway=(\S+)", line)
        assert m, (line, p.stderr.read() if p.poll() is not None else "")
        return p, m.group(1)

    p, gw = start()
    try:
        with Client(gw, "k-ops", "s-ops", timeout=5) as ops, Client(gw, "k-mm", "s-mm", timeout=5) as mm, \
                Client(gw, "k-t", "s-t", timeout=5) as t:
            for acct in ("MM", "T"):
                ops.create_account(acct)
            ops.deposit("MM", "MSFT", 1_000)
            ops.deposit("T", "USD", 10**6 * PX)
            for i in range(20):
                assert mm.submit("MSFT", "S", (300 + i) * PX, 10, tif="gtc")["status"] == "ack"
                assert t.submit("MSFT", "B", (300 + i) * PX, 7)["status"] == "ack"
            ops.withdraw("T", "USD", 5 * PX)
            acked = {a: ops.balances(a)["balances"] for a in ("MM", "T", "fees")}
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    p, gw = start()
    try:
        with Client(gw, "k-ops", "s-ops", timeout=5) as ops:
            assert {a: ops.balances(a)["balances"] for a in ("MM", "T", "fees")} == acked
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    total_usd = sum(acked[a]["USD"]["available"] + acked[a]["USD"]["locked"] for a in acked)
    assert total_usd == 10**6 * PX - 5 * PX            # conservation across the crash


def test_a_settled_outcome_moves_balances_and_tells_the_account(tmp_path):
    """A request answered "unknown" (a remote shard past its timeout) gets its events later through
    Exchange._on_settled: the balances follow them and the account gets its balance event."""
    with Exchange(_cfg(tmp_path)) as ex:
        pl = ex.pipeline
        assert pl.handle("OPS", None, {"type": "admin", "op": "create_account", "account": "MM"})["status"] == "ack"
        assert pl.handle("OPS", None, {"type": "admin", "op": "deposit", "account": "MM", "asset": "AAPL",
                                       "amount": 10})["status"] == "ack"
        got = []
        pl.register_sink("MM", got.append)
        req = {"type": "new", "account": "MM", "symbol": "AAPL", "side": "S", "price": 5, "qty": 4,
               "dedup_key": "c:x"}
        ev = {"type": "accepted", "seq": 99, "order_id": (1 << 40) | 77, "client_order_id": "x", "account": "MM",
              "symbol": "AAPL", "side": "S", "price": 5, "qty": 4, "leaves_qty": 4, "cum_qty": 0}
        ex._on_settled([(req, [ev])])
        assert pl.state.accounts.balances("MM")["AAPL"] == {"available": 6, "locked": 4}
        assert [(e["asset"], e["available"], e["locked"], e["seq"]) for e in got if e["type"] == "balance"] == \
            [("AAPL", 6, 4, 99)]


def test_balances_cannot_be_switched_on_or_off_for_a_written_data_dir(tmp_path):
    from engine.errors import DataDirError
    off = _cfg(tmp_path / "a", enabled=False)
    with Exchange(off):
        pass
    with pytest.raises(DataDirError, match="accounts off \\(now on\\)"):
        Exchange(_cfg(tmp_path / "a"))
    with Exchange(_cfg(tmp_path / "b")):
        pass
    with pytest.raises(DataDirError, match="accounts on \\(now off\\)"):
        Exchange(_cfg(tmp_path / "b", enabled=False))
    with Exchange(_cfg(tmp_path / "b")):       # the same configuration again: fine
        pass


def test_admin_requests_with_hostile_fields_are_refused_and_nothing_is_written(tmp_path):
    with Exchange(_cfg(tmp_path)) as ex:
        pl = ex.pipeline
        seq = pl.engine.seq
        for req in ({"op": "drop_table"}, {"op": "create_account", "account": "x" * 65},
                    {"op": "create_account", "account": ""}, {"op": "create_account", "account": 7},
                    {"op": "deposit", "account": "A'; DROP TABLE users; --", "asset": "USD", "amount": True},
                    {"op": "deposit", "account": "A", "asset": "USD", "amount": "100"},
                    {"op": "deposit", "account": "A", "asset": "USD", "amount": -1},
                    {"op": "deposit", "account": "A", "asset": "USD", "amount": 2 ** 97},
                    {"op": "withdraw", "account": "A", "asset": ["USD"], "amount": 1}):
            r = pl.handle("OPS", None, dict(req, type="admin"))
            assert (r["status"], r["reason"]) == ("rejected", "bad_request"), (req, r)
        assert pl.engine.seq == seq and pl.stats.errors == 0
