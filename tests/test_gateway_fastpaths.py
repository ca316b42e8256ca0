"""The gateway's per-order fast paths give exactly what the general code gives."""
import itertools

import pytest

from engine.marketdata import encode_events

PX = 1_000_000_000
IIDS = {"AAPL": 0, "MSFT": 1}


def _ev(t, **kw):
    ev = {"type": t, "seq": 7, "order_id": (1 << 40) | 5, "client_order_id": "c", "account": "a", "symbol": "MSFT",
          "side": "S", "price": 101 * PX, "qty": 30, "leaves_qty": 20, "cum_qty": 10, "trade_id": 0,
          "liquidity": "", "contra_account": "", "contra_order_id": 0, "reason": "", "ts_event": 123}
    ev.update(kw)
    return ev


CASES = [_ev("accepted"), _ev("accepted", leaves_qty=0), _ev("accepted", ts_event=0), _ev("canceled"),
         _ev("expired", side="B"), _ev("replaced"), _ev("replaced", side="X"),
         _ev("fill", liquidity="maker", trade_id=9), _ev("fill", liquidity="taker", trade_id=9),
         _ev("rejected", reason="bad_qty")]


@pytest.mark.parametrize("ev", CASES, ids=[f"{c['type']}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("seq0", [0, 41, 0xFFFFFFFF])
def test_single_event_encoding_matches_general_path(ev, seq0):
    fast = encode_events([ev], IIDS, 555, seq0)
    # a rejected event publishes nothing, so appending one forces the general (grouping) path
    general = encode_events([ev, _ev("rejected", symbol="AAPL")], IIDS, 555, seq0)
    assert fast == general
    if ev["type"] in ("canceled", "expired", "replaced") or (ev["type"] == "accepted" and ev["leaves_qty"]):
        assert len(fast["MSFT"]) == 64


def test_worker_frame_reader_rejects_wrong_frame_counts_and_keeps_serving():
    """The gateway's own multipart reader (_recv_frames): short and long messages are answered
    ``bad_frames`` and do not desynchronize the socket; a signed request right after is acknowledged."""
    zmq = pytest.importorskip("zmq")
    import time

    from engine.auth import Authenticator, KeyStore, sign
    from engine.gateway import Gateway, OrderPipeline, loads
    from engine.manager import EngineManager

    eng = EngineManager(["AAPL"])
    gw = Gateway(OrderPipeline(eng), Authenticator(KeyStore({"alice": (b"s3", "ACC-A")})), "tcp://127.0.0.1:*",
                 workers=2).start()
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(gw.endpoint)
    try:
        for frames in ([b"alice"], [b"alice", b"1", b"2"], [b"alice", b"1", b"2", b"3", b"4", b"5"]):
            s.send_multipart(frames)
            assert loads(s.recv()) == {"status": "rejected", "reason": "bad_frames"}
        body = b'{"type":"new","rid":"r1","symbol":"AAPL","side":"B","price":1000000000,"qty":5}'
        ts = time.time_ns()
        s.send_multipart([b"alice", str(ts).encode(), sign(b"s3", ts, body), body])
        rep = loads(s.recv())
        assert rep["rid"] == "r1" and rep["status"] == "ack"
        assert [e["type"] for e in rep["events"]] == ["accepted"]
    finally:
        s.close(0)
        ctx.term()
        gw.stop()
        eng.close()
