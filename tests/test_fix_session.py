"""FIX order entry end to end: simplefix (third-party initiator) -> our acceptor -> OrderPipeline ->
engine -> ExecutionReports; sequence numbers and resends across an acceptor restart; tshark decodes the
captured session (checksum validated) as an independent oracle."""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

simplefix = pytest.importorskip("simplefix")

from engine.fix.acceptor import FixAcceptor, OrderApplication, SessionConfig, price_to_raw, raw_to_price
from engine.fix.message import utc_timestamp
from engine.fix.store import FileStore
from engine.gateway import OrderPipeline
from engine.risk import RiskLimits, RiskManager

SPEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"
pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")


def test_price_conversions_exact():
    assert price_to_raw(b"101.25") == 101_250_000_000
    assert price_to_raw(b"0.000000001") == 1
    assert raw_to_price(101_250_000_000) == "101.25" and raw_to_price(5 * 10**9) == "5"
    with pytest.raises(ValueError):
        price_to_raw(b"1e5")


class Initiator:
    """A FIX client built on simplefix, recording raw bytes both ways (for the pcap)."""

    def __init__(self, port, sender, begin="FIX.4.4", log=None, seq=1):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.p = simplefix.FixParser()
        self.sender, self.begin, self.seq = sender, begin, seq
        self.log = log if log is not None else []

    def send(self, msgtype, fields=(), seq=None):
        m = simplefix.FixMessage()
        m.append_pair(8, self.begin)
        m.append_pair(35, msgtype)
        m.append_pair(34, self.seq if seq is None else seq)
        m.append_pair(49, self.sender)
        m.append_pair(52, utc_timestamp().decode())
        m.append_pair(56, "EXCH")
        for t, v in fields:
            m.append_pair(t, v)
        raw = m.encode()
        self.log.append((True, raw))
        self.s.sendall(raw)
        if seq is None:
            self.seq += 1

    def recv(self, timeout=5.0):
        end = time.monotonic() + timeout
        while True:
            m = self.p.get_message()
            if m is not None:
                return m
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                return None
            if not data:
                return "EOF"
            self.log.append((False, data))
            self.p.append_buffer(data)

    def recv_type(self, msgtype: bytes, timeout=5.0):
        while True:
            m = self.recv(timeout)
            if m is None or m == "EOF":
                return m
            if m.get(35) == msgtype:
                return m

    def close(self):
        self.s.close()


def make_engine():
    try:
        from engine.manager import EngineManager
        return EngineManager(["AAPL", "MSFT"])
    except ImportError:
        from test_gateway import RefEngine
        return RefEngine(["AAPL", "MSFT"])


def start(tmp_path, eng):
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0)))
    app = OrderApplication(pipe, {"BUYSIDE1": "ACC-1", "BUYSIDE2": "ACC-2"})
    acc = FixAcceptor([SessionConfig("FIX.4.4", "EXCH", "BUYSIDE1"), SessionConfig("FIX.4.2", "EXCH", "BUYSIDE2")],
                      app, SPEC, store_dir=tmp_path / "store").start()
    return acc


def logon(c):
    c.send(b"A", [(98, 0), (108, 30)])
    r = c.recv()
    assert r not in (None, "EOF") and r.get(35) == b"A", r
    return r


def test_orders_executions_restart_resend_and_tshark(tmp_path):
    eng = make_engine()
    acc = start(tmp_path, eng)
    log: list = []
    c1 = Initiator(acc.port, "BUYSIDE1", log=log)
    c2 = Initiator(acc.port, "BUYSIDE2", begin="FIX.4.2")
    try:
        logon(c1)
        logon(c2)
        # resting sell from session 1 (FIX 4.4)
        c1.send(b"D", [(11, "S-1"), (55, "AAPL"), (54, "2"), (38, "100"), (40, "2"), (44, "101.5"), (59, "0"),
                       (60, utc_timestamp().decode())])
        er = c1.recv_type(b"8")
        assert (er.get(150), er.get(39), er.get(11), er.get(151)) == (b"0", b"0", b"S-1", b"100")
        oid = er.get(37)
        # aggressive buy from session 2 (FIX 4.2) fills 40 at the maker's price
        c2.send(b"D", [(11, "B-1"), (21, "1"), (55, "AAPL"), (54, "1"), (38, "40"), (40, "2"), (44, "102"),
                       (59, "3"), (60, utc_timestamp().decode())])
        ers = [c2.recv_type(b"8") for _ in range(2)]
        assert [e.get(150) for e in ers] == [b"0", b"2"]          # FIX 4.2: ExecType 2 = fill
        assert (ers[1].get(32), ers[1].get(31), ers[1].get(20)) == (b"40", b"101.5", b"0")
        # the maker's fill reaches session 1 unsolicited (FIX 4.4 ExecType F)
        mf = c1.recv_type(b"8")
        assert (mf.get(150), mf.get(39), mf.get(32), mf.get(151), mf.get(37)) == (b"F", b"1", b"40", b"60", oid)
        # replace (quantity down) then cancel by OrigClOrdID
        c1.send(b"G", [(11, "S-2"), (41, "S-1"), (55, "AAPL"), (54, "2"), (38, "50"), (40, "2"), (44, "101.5"),
                       (60, utc_timestamp().decode())])
        rp = c1.recv_type(b"8")
        assert rp.get(150) == b"5" and rp.get(41) == b"S-1"
        c1.send(b"F", [(11, "S-3"), (41, "S-1"), (55, "AAPL"), (54, "2"), (60, utc_timestamp().decode())])
        cx = c1.recv_type(b"8")
        assert cx.get(150) == b"4" and cx.get(151) == b"0"
        # cancel of an unknown order -> OrderCancelReject
        c1.send(b"F", [(11, "S-4"), (41, "NOPE"), (55, "AAPL"), (54, "2"), (60, utc_timestamp().decode())])
        rj = c1.recv_type(b"9")
        assert rj.get(41) == b"NOPE" and rj.get(434) == b"1"
        last_out = int(cx.get(34))
        next_in = c1.seq
    finally:
        c1.close()
        c2.close()
        acc.stop()
        time.sleep(0.1)

    # the store holds the sequence numbers: a restarted acceptor continues them
    st = FileStore(tmp_path / "store", "FIX.4.4-EXCH-BUYSIDE1")
    assert st.next_target == next_in and st.next_sender >= last_out + 1
    st.close()
    acc = start(tmp_path, eng)
    try:
        c1 = Initiator(acc.port, "BUYSIDE1", seq=next_in)
        r = logon(c1)
        assert int(r.get(34)) > last_out
        # ResendRequest for everything: app messages come back PossDup, admin ones as GapFill
        c1.send(b"2", [(7, 1), (16, 0)])
        got = []
        while True:
            m = c1.recv(timeout=2)
            if m is None:
                break
            got.append(m)
        app = [m for m in got if m.get(35) in (b"8", b"9")]
        # new, maker fill, replaced, canceled, cancel reject
        assert len(app) == 5 and all(m.get(43) == b"Y" and m.get(122) for m in app)
        gaps = [m for m in got if m.get(35) == b"4"]
        assert gaps and all(m.get(123) == b"Y" for m in gaps)
        seqs = sorted([int(m.get(34)) for m in app] + [int(m.get(34)) for m in gaps])
        assert seqs[0] == 1
        c1.close()
        # a logon with a sequence number that is too low is answered with Logout and a disconnect
        c3 = Initiator(acc.port, "BUYSIDE1", seq=1)
        c3.send(b"A", [(98, 0), (108, 30)])
        m = c3.recv()
        assert m not in (None, "EOF") and m.get(35) == b"5" and b"too low" in m.get(58)
        assert c3.recv() == "EOF"
        c3.close()
    finally:
        acc.stop()
        if hasattr(eng, "close"):
            eng.close()

    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    from test_ouch42 import tshark_fields, write_pcap
    pcap = tmp_path / "fix.pcap"
    write_pcap(pcap, log)
    if os.environ.get("FH_KEEP_PCAP"):
        shutil.copy(pcap, os.environ["FH_KEEP_PCAP"])
    rows = tshark_fields(pcap, "tcp.port==15000,fix", ["fix.MsgType", "fix.checksum_good", "fix.checksum_bad"])
    types = [t for r in rows for t in r[0].split(";")]
    for t in ("A", "D", "8", "G", "F", "9"):
        assert t in types, (t, types)
    n_msgs = len([m for from_client, m in log for _ in m.split(b"\x0110=")[1:]])
    assert len(types) == n_msgs                                   # tshark framed every message
    assert all(v == "1" for r in rows for v in r[1].split(";")), rows   # and every CheckSum is good
    assert all(v == "0" for r in rows for v in r[2].split(";")), rows
    # negative control: the oracle does notice a wrong checksum
    first = log[0][1]
    broken = first[:-4] + b"%03d\x01" % ((int(first[-4:-1]) + 1) % 256)
    write_pcap(pcap, [(True, broken)])
    assert tshark_fields(pcap, "tcp.port==15000,fix", ["fix.checksum_bad"]) == [["1"]]
