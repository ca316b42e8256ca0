"""The exchange's state hash covers the FIX and OUCH acceptors (issue 10, "the state hash covers all of
it"): after order entry over FIX, OUCH and the ZeroMQ gateway, an exchange rebuilt from the same data dir
(journal + session stores, nothing else) has the same hash, and a change of either acceptor's state
changes it."""
from __future__ import annotations

import shutil
import socket
import time

import pytest

zmq = pytest.importorskip("zmq")
simplefix = pytest.importorskip("simplefix")

from engine.client import Client  # noqa: E402
from engine.exchange import Exchange, load_config  # noqa: E402
from test_fixouch_durability import SPEC, logon, order  # noqa: E402
from test_fixouch_durability import Client as FixClient  # noqa: E402

pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")
PX = 1_000_000_000


def _cfg(data):
    cfg = load_config(None, {"data_dir": str(data), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*", "engine.fsync": "none"})
    cfg["fix"] = {"port": 0, "spec_dir": str(SPEC),
                  "sessions": [{"begin_string": "FIX.4.4", "our_comp_id": "EXCH", "their_comp_id": "S1",
                                "account": "FIXACC"}]}
    cfg["ouch"] = {"port": 0, "users": {"ouch1": {"password": "pw", "account": "OUCHACC"}}}
    return cfg


def _trade(ex):
    from feedhandler.protocols import ouch42, soupbintcp as soup
    c = FixClient(ex.fix.port, "S1", "FIX.4.4", 1)
    logon(c)
    order(c, "F1", "2", 30, "1")               # FIX sell 30 @100, rests
    c.pump(0.5)
    s = socket.create_connection(("127.0.0.1", ex.ouch.port), timeout=5)
    s.sendall(soup.login_request("ouch1", "pw"))
    s.sendall(soup.unsequenced(ouch42.encode("enter_order", order_token="T1", side="B", shares=10, stock="AAPL",
                                             price=100_0000, time_in_force=0)))     # OUCH IOC buy 10
    f, pk = soup.Framer(), []
    end = time.monotonic() + 5
    while len([x for x in pk if x[0] == b"S"]) < 2 and time.monotonic() < end:
        pk += f.feed(s.recv(4096))
    with Client(ex.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=5) as t:
        r = t.submit("AAPL", "B", 100 * PX, 5, tif="ioc")                          # gateway buy 5
        assert any(e["type"] == "fill" for e in r["events"]), r
    c.pump(0.5)
    fills = [m for m in c.got if m.get(35) == b"8" and m.get(150) == b"F"]
    assert [int(m.get(14)) for m in fills] == [10, 15], [m.get(14) for m in fills]
    s.close()
    c.close()


def test_exchange_state_hash_covers_the_acceptors_and_equals_a_rebuild(tmp_path):
    data = tmp_path / "data"
    with Exchange(_cfg(data)) as ex:
        _trade(ex)
        time.sleep(0.3)
        live = ex.state_hash()
        fix_live = ex.fix.app.state_hash()
        assert live != ex.pipeline.state_hash()
    with Exchange(_cfg(data)) as again:                   # rebuilt from the journal and the session stores
        assert again.fix.app.state_hash() == fix_live
        assert again.state_hash() == live
        # each acceptor's state is part of the hash
        again.fix.app._exec_n += 1
        assert again.state_hash() != live
        again.fix.app._exec_n -= 1
        again.ouch._reported.add(("accepted", 0))
        assert again.state_hash() != live
        again.ouch._reported.discard(("accepted", 0))
        assert again.state_hash() == live
    # the FIX reports are events of the journal: without the FIX session stores the restart regenerates
    # them (catch_up), in the same order with the same ExecIDs, so even that rebuild has the same hash
    other = tmp_path / "nofix"
    shutil.copytree(data, other)
    shutil.rmtree(other / "fix")
    with Exchange(_cfg(other)) as ex:
        assert ex.state_hash() == live
