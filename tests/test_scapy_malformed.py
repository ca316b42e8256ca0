"""Malformed packets crafted with feedhandler.scapy: `feedhandler replay` counts each one as damage
under its reason, keeps decoding the good packets around it, and does not crash (a subprocess, so a
crash of the native core fails the test instead of the test run)."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("scapy", reason="scapy is not installed (pip install 'feedhandler[scapy]')")

from scapy.all import IP, UDP, Ether, Raw, raw, wrpcap  # noqa: E402

from feedhandler import scapy as fs  # noqa: E402
from feedhandler.capture.pcapwriter import write_pcap  # noqa: E402
from feedhandler.framing.tcp import TcpConversation  # noqa: E402


def _replay(path, *extra):
    r = subprocess.run([sys.executable, "-m", "feedhandler.cli", "replay", str(path), "--json", "--no-progress", *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ---- ITCH 5.0 over MoldUDP64 ------------------------------------------------------------------------------
def _frame(mold, t):
    p = Ether() / IP(src="10.0.0.1", dst="233.54.12.111") / UDP(sport=18001, dport=26477) / mold
    p.time = t
    return p


def _add(ref):
    return fs.ItchAddOrder(stock_locate=1, timestamp=34_200_000_000_000 + ref, order_reference_number=ref,
                           buy_sell_indicator="B", shares=100, stock="AAPL", price=1_890_000)


def _itch_capture(tmp_path, bad):
    """Directory + one add (seq 1-2), the malformed packet (seq 3), then a good add (seq 4)."""
    directory = fs.ItchStockDirectory(stock_locate=1, stock="AAPL", market_category="Q", round_lot_size=100)
    pkts = [_frame(fs.MoldUDP64(session="SCAPY00001", sequence=1, messages=[directory, _add(10)]), 1.0),
            _frame(bad, 1.1),
            _frame(fs.MoldUDP64(session="SCAPY00001", sequence=4, messages=[_add(40)]), 1.2)]
    path = tmp_path / "crafted.pcap"
    wrpcap(str(path), pkts)
    return path


CLEAN = dict(malformed_by_reason={}, unknown=0, bad_length=0, truncated=0)


@pytest.mark.parametrize("case,bad,want", [
    ("good", fs.MoldUDP64(session="SCAPY00001", sequence=3, messages=[_add(30)]),
     dict(CLEAN, records_adds=3)),
    # a block shorter than its message type's layout (20 of 36 bytes): the decoder's bad_length
    ("truncated_message",
     fs.MoldUDP64(session="SCAPY00001", sequence=3, messages=[fs.MoldUDP64Block(data=raw(_add(30))[:20])]),
     dict(CLEAN, bad_length=1, records_adds=2)),
    # the header counts 3 messages, one block follows: the framer's truncated_message
    ("bad_count",
     fs.MoldUDP64(session="SCAPY00001", sequence=3, count=3, messages=[_add(30)]),
     dict(CLEAN, malformed_by_reason={"truncated_message": 1}, records_adds=3)),
    # a block length that runs past the end of the datagram
    ("length_past_end",
     fs.MoldUDP64(session="SCAPY00001", sequence=3, messages=[fs.MoldUDP64Block(length=200, data=raw(_add(30)))]),
     dict(CLEAN, malformed_by_reason={"truncated_message": 1}, records_adds=2)),
    # a message type ITCH 5.0 does not have
    ("unknown_type",
     fs.MoldUDP64(session="SCAPY00001", sequence=3, messages=[fs.ItchMessage(message_type="z", data=b"0123456789")]),
     dict(CLEAN, unknown=1, records_adds=2)),
])
def test_itch_damage_is_counted_with_its_reason(tmp_path, case, bad, want):
    s = _replay(_itch_capture(tmp_path, bad))
    assert s["protocol"] == "itch50"
    for k in ("malformed_by_reason", "unknown", "bad_length", "truncated"):
        assert s[k] == want[k], (case, k, s[k])
    assert s["malformed"] == sum(want["malformed_by_reason"].values())
    assert s["file_damage"] == {}
    # the packets around the damage are decoded: their adds are in the records
    assert s["records_by_kind"]["mbo"] == want["records_adds"], (case, s["records_by_kind"])


# ---- OUCH 5.0 over SoupBinTCP -----------------------------------------------------------------------------
def _ouch_capture(tmp_path, bad):
    login = fs.SoupBinTCP(packet_type="L", payload_msg=fs.SoupLoginRequest(username="u", password="p"))
    accepted_login = fs.SoupBinTCP(packet_type="A", payload_msg=fs.SoupLoginAccepted(session="S1", sequence=1))
    enter = fs.SoupBinTCP(packet_type="U", payload_msg=fs.Ouch50EnterOrder(
        user_ref_num=1, side="B", quantity=100, symbol="AAPL", price=1_890_000, cl_ord_id="X1"))
    accepted = fs.SoupBinTCP(packet_type="S", payload_msg=fs.Ouch50OrderAccepted(
        timestamp=5, user_ref_num=1, side="B", quantity=100, symbol="AAPL", price=1_890_000,
        order_reference_number=9, order_state="L", cl_ord_id="X1"))
    conv = TcpConversation(client=("10.3.0.2", 52000), server=("10.3.0.1", 15000))
    ts = 1_700_000_000_000_000_000
    conv.handshake(ts)
    for side, p in [("c", login), ("s", accepted_login), ("c", enter), ("s", bad), ("s", accepted)]:
        ts += 1000
        conv.send(ts, side, p if isinstance(p, bytes) else raw(p))
    conv.close(ts + 1000)
    path = tmp_path / "crafted_ouch.pcap"
    write_pcap(str(path), conv.frames, nanosecond=True)
    return path


@pytest.mark.parametrize("case,bad,reasons,records", [
    ("unknown_type", fs.SoupBinTCP(packet_type="S", payload_msg=fs.Ouch50Message(message_type="~", data=b"abc")),
     {"unknown_type": 1}, 2),
    ("short_message", fs.SoupBinTCP(packet_type="S", payload_msg=Raw(raw(fs.Ouch50OrderExecuted(user_ref_num=1))[:20])),
     {"bad_length": 1}, 2),
    ("appendage_length_past_end",
     fs.SoupBinTCP(packet_type="S", payload_msg=fs.Ouch50OrderExecuted(user_ref_num=1, quantity=5, appendage_length=40)),
     {"bad_appendage_length": 1}, 2),
])
def test_ouch_damage_is_counted_with_its_reason(tmp_path, case, bad, reasons, records):
    s = _replay(_ouch_capture(tmp_path, bad), "--protocol", "ouch50")
    assert s["malformed_by_reason"] == reasons, case
    assert s["malformed"] == 1
    assert s["records"] == records  # the enter order and the order accepted around the damage


def test_soupbintcp_length_past_the_packet_is_counted(tmp_path):
    """A SoupBinTCP length that swallows the next packet: the stream is damaged from there on; replay
    counts it (a malformed message and a truncated tail), decodes what came before, and exits 0."""
    s = _replay(_ouch_capture(tmp_path, b"\x00\x05S\x01"), "--protocol", "ouch50")
    assert s["malformed"] >= 1 and s["truncated"] >= 1
    assert s["records"] == 1
