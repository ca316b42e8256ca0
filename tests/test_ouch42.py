"""OUCH 4.2 codec (one field table) and the OUCH-over-SoupBinTCP acceptor, with tshark as an oracle."""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from feedhandler.protocols import ouch42, soupbintcp as soup

PX = 1_000_000_000


# ---- codec -----------------------------------------------------------------------------------
def test_table_sizes_match_spec():
    for name, lay in ouch42.BY_NAME.items():
        assert lay.size == ouch42.SPEC_SIZES[name], name
        assert 1 + sum(n for _, _, n in lay.fields) == lay.size


def _field_strategy(kind, n):
    if kind == "s":
        return st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=0, max_size=n).map(str.encode)
    if kind == "c":
        return st.sampled_from([b"A", b"B", b"S", b"Y", b"N", b"P"])
    return st.integers(0, 2**32 - 1 if kind == "u4" else 2**64 - 1)


@pytest.mark.parametrize("key", sorted(ouch42.LAYOUTS, key=lambda k: (k[0], k[1])), ids=lambda k: f"{k[0]}-{k[1].decode()}")
def test_round_trip_every_message(key):
    lay = ouch42.LAYOUTS[key]

    @settings(max_examples=40, deadline=None)
    @given(st.fixed_dictionaries({f: _field_strategy(k, n) for f, k, n in lay.fields}))
    def check(fields):
        msg = ouch42.encode(lay.name, **fields)
        assert len(msg) == lay.size and msg[:1] == lay.type
        name, back = ouch42.decode(msg, lay.direction)
        assert name == lay.name
        for f, k, _ in lay.fields:
            assert back[f] == (fields[f].rstrip(b" ") if k == "s" else fields[f]), f

    check()


def test_manual_layout_enter_order():
    msg = ouch42.encode("enter_order", order_token="TOKEN1", side="B", shares=100, stock="AAPL", price=1_234_500,
                        time_in_force=99999, firm="FIRM", display="Y", capacity="A", intermarket_sweep="N",
                        minimum_quantity=0, cross_type="N", customer_type="R")
    # independent offsets from the OUCH 4.2 specification
    assert msg[0:1] == b"O" and msg[1:15] == b"TOKEN1        " and msg[15:16] == b"B"
    assert struct.unpack(">I", msg[16:20])[0] == 100 and msg[20:28] == b"AAPL    "
    assert struct.unpack(">I", msg[28:32])[0] == 1_234_500 and struct.unpack(">I", msg[32:36])[0] == 99999
    assert msg[36:40] == b"FIRM" and msg[40:43] == b"YAN" and msg[47:49] == b"NR"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_decode_never_crashes(data):
    for d in ("in", "out"):
        try:
            ouch42.decode(data, d)
        except ouch42.OuchError:
            pass


# ---- pcap writer with TCP framing (for tshark) -------------------------------------------------
def write_pcap(path: Path, segments: list[tuple[bool, bytes]], cport=40000, sport=15000):
    """segments: (from_client, payload) in order. Writes Ethernet/IPv4/TCP frames with consistent seqs."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    seq = {True: 1000, False: 5000}
    t = 1_700_000_000

    def ip_csum(h):
        s = sum(struct.unpack("!10H", h))
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return ~s & 0xFFFF

    for i, (from_client, payload) in enumerate(segments):
        src, dst = (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02") if from_client else (b"\x0a\x00\x00\x02", b"\x0a\x00\x00\x01")
        sp, dp = (cport, sport) if from_client else (sport, cport)
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq[from_client], seq[not from_client], 5 << 4, 0x18, 65535, 0, 0)
        seq[from_client] += len(payload)
        total = 20 + len(tcp) + len(payload)
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, i, 0x4000, 64, 6, 0, src, dst)
        iph = iph[:10] + struct.pack("!H", ip_csum(iph)) + iph[12:]
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + iph + tcp + payload
        out.append(struct.pack("<IIII", t, i, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def tshark_fields(pcap: Path, decode_as: str, fields: list[str], extra: list[str] = ()) -> list[list[str]]:
    cmd = ["tshark", "-r", str(pcap), "-d", decode_as, "-T", "fields", "-E", "separator=|", "-E", "occurrence=a",
           "-E", "aggregator=;"] + list(extra)
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [line.split("|") for line in res.stdout.splitlines()]


# ---- acceptor --------------------------------------------------------------------------------
class Tap:
    """A SoupBinTCP client socket that records every byte both ways (for the pcap)."""

    def __init__(self, port, log):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = soup.Framer()
        self.log = log
        self.pending = []

    def send(self, data):
        self.log.append((True, data))
        self.s.sendall(data)

    def recv_packets(self, n, timeout=5.0, skip_heartbeats=True):
        end = time.monotonic() + timeout
        while len([p for p in self.pending if not (skip_heartbeats and p[0] == b"H")]) < n:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.s.settimeout(left)
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                break
            if not data:
                self.pending.append((b"EOF", b""))
                break
            self.log.append((False, data))
            self.pending += self.f.feed(data)
        got = [p for p in self.pending if not (skip_heartbeats and p[0] == b"H")]
        self.pending = []
        return got

    def close(self):
        self.s.close()


@pytest.fixture
def venue(tmp_path):
    from engine.gateway import OrderPipeline
    from engine.ouch.acceptor import OuchAcceptor
    from engine.risk import RiskLimits, RiskManager
    from test_gateway import RefEngine  # the reference engine double of the gateway tests

    try:
        from engine.manager import EngineManager
        eng = EngineManager(["AAPL", "MSFT"])
    except ImportError:
        eng = RefEngine(["AAPL", "MSFT"])
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0)))
    acc = OuchAcceptor(pipe, {"alice": ("pw-a", "ACC-A"), "bob": ("pw-b", "ACC-B")}, session="SESSION01",
                       store_dir=tmp_path / "soup", heartbeat_s=0.5).start()
    yield acc
    acc.stop()
    if hasattr(eng, "close"):
        eng.close()


def _ouch(pkts):
    return [ouch42.decode(p, "out") for t, p in pkts if t == b"S"]


def test_ouch_session_orders_fills_relogin_and_tshark(venue, tmp_path):
    log: list = []
    a = Tap(venue.port, log)
    a.send(soup.login_request("alice", "pw-a", "", 0))
    (t, p), = a.recv_packets(1)
    assert t == b"A" and soup.parse_login_accepted(p) == ("SESSION01", 1)
    a.send(soup.unsequenced(ouch42.encode("enter_order", order_token="A1", side="S", shares=300, stock="AAPL",
                                          price=100_0000, time_in_force=99999, firm="FRMA", display="Y")))
    (name, acc), = _ouch(a.recv_packets(1))
    assert name == "accepted" and acc["order_token"] == b"A1" and acc["shares"] == 300 and acc["price"] == 100_0000

    b = Tap(venue.port, [])
    b.send(soup.login_request("bob", "pw-b", "", 0))
    assert b.recv_packets(1)[0][0] == b"A"
    b.send(soup.unsequenced(ouch42.encode("enter_order", order_token="B1", side="B", shares=100, stock="AAPL",
                                          price=101_0000, time_in_force=0)))
    bmsgs = _ouch(b.recv_packets(2))
    assert [n for n, _ in bmsgs] == ["accepted", "executed"]
    assert bmsgs[1][1]["executed_shares"] == 100 and bmsgs[1][1]["execution_price"] == 100_0000
    assert bmsgs[1][1]["liquidity_flag"] == b"R"
    # alice's maker fill arrives unsolicited, sequenced
    (name, ex), = _ouch(a.recv_packets(1))
    assert name == "executed" and ex["order_token"] == b"A1" and ex["liquidity_flag"] == b"A"
    assert ex["match_number"] == bmsgs[1][1]["match_number"]
    # replace (new token, price), then cancel
    a.send(soup.unsequenced(ouch42.encode("replace_order", existing_order_token="A1", replacement_order_token="A2",
                                          shares=150, price=100_5000, time_in_force=99999, display="Y")))
    (name, rep), = _ouch(a.recv_packets(1))
    assert name == "replaced" and rep["replacement_order_token"] == b"A2" and rep["previous_order_token"] == b"A1"
    assert rep["price"] == 100_5000
    a.send(soup.unsequenced(ouch42.encode("cancel_order", order_token="A2", shares=0)))
    (name, can), = _ouch(a.recv_packets(1))
    assert name == "canceled" and can["order_token"] == b"A2" and can["decrement_shares"] == 150
    a.send(soup.packet(soup.LOGOUT_REQUEST))
    assert a.recv_packets(1, timeout=3) == [(b"EOF", b"")]
    a.close()
    # re-login from sequence 2: messages 2.. are replayed in order
    a2 = Tap(venue.port, [])
    a2.send(soup.login_request("alice", "pw-a", "SESSION01", 2))
    pk = a2.recv_packets(4)
    assert pk[0][0] == b"A" and soup.parse_login_accepted(pk[0][1]) == ("SESSION01", 2)
    assert [n for n, _ in _ouch(pk[1:])] == ["executed", "replaced", "canceled"]
    a2.close()
    b.close()

    # tshark decodes the captured session the same way
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    pcap = tmp_path / "ouch.pcap"
    write_pcap(pcap, log)
    if os.environ.get("FH_KEEP_PCAP"):
        shutil.copy(pcap, os.environ["FH_KEEP_PCAP"])
    rows = tshark_fields(pcap, "tcp.port==15000,soupbintcp",
                         ["soupbintcp.packet_type", "ouch.packet_type", "ouch.order_token", "ouch.shares",
                          "ouch.price", "ouch.executed_shares", "ouch.replacement_order_token"]
                         )
    rows = [[c.strip("'").strip() for c in r] for r in rows if r[0] != "'H'"]
    assert [(r[0], r[1]) for r in rows] == [
        ("L", ""), ("A", ""), ("U", "O"), ("S", "A"), ("S", "E"), ("U", "U"), ("S", "U"), ("U", "X"), ("S", "C"),
        ("O", "")]
    assert rows[2][2:5] == ["A1", "300", "1000000"] and rows[3][2:5] == ["A1", "300", "1000000"]
    assert rows[4][5] == "100"                       # executed shares
    assert rows[6][6] == "A2" and rows[6][3] == "150" and rows[6][4] == "1005000"
    assert rows[8][2] == "A2"


def test_login_rejects(venue):
    t = Tap(venue.port, [])
    t.send(soup.login_request("alice", "wrong", "", 0))
    assert t.recv_packets(1)[0] == (b"J", b"A")
    t.close()
    t = Tap(venue.port, [])
    t.send(soup.login_request("alice", "pw-a", "OTHERSESS", 0))
    assert t.recv_packets(1)[0] == (b"J", b"S")
    t.close()


def test_server_heartbeats(venue):
    t = Tap(venue.port, [])
    t.send(soup.login_request("bob", "pw-b", "", 0))
    assert t.recv_packets(1)[0][0] == b"A"
    pk = t.recv_packets(1, timeout=3, skip_heartbeats=False)
    assert pk and pk[0][0] == b"H"
    t.close()
