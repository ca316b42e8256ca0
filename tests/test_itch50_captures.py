"""The native ITCH 5.0 decoder on the real NASDAQ captures in ../shared/data/itch50/ (MoldUDP64 over
UDP): decoded fields equal the pure-Python reference and the values read off the hex by hand."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.protocols import itch50_codec as codec
from feedhandler.protocols.itch50 import Itch50Decoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "itch50"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"reference captures not found at {DATA}")

MIDNIGHT = 1_692_676_800_000_000_000  # 2023-08-22 00:00 EDT (UTC-4): the captures' session day
TS_SW = 2  # FH_MSG_TS_SW: a pcap's time stamp is the kernel's receive stamp


def read_pcap(path: Path):
    """Yield (ts_ns, frame) from a classic pcap file (micro- or nanosecond, either byte order)."""
    data = path.read_bytes()
    magic = data[:4]
    endian, scale = {
        b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
        b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1),
    }[magic]
    off = 24
    while off < len(data):
        sec, frac, incl, _orig = struct.unpack_from(endian + "IIII", data, off)
        off += 16
        yield sec * 1_000_000_000 + frac * scale, data[off : off + incl]
        off += incl


def moldudp64_messages(frame: bytes):
    """(session, first sequence, [messages]) of one Ethernet/IPv4/UDP/MoldUDP64 frame."""
    eth = 12
    while frame[eth : eth + 2] in (b"\x81\x00", b"\x88\xa8"):  # 802.1Q / 802.1ad tags (these captures have one)
        eth += 4
    assert frame[eth : eth + 2] == b"\x08\x00", "not IPv4"
    ip = eth + 2
    assert frame[ip + 9] == 17, "not UDP"
    mold = frame[ip + (frame[ip] & 0x0F) * 4 + 8 :]
    session, seq, count = mold[:10], *struct.unpack_from(">QH", mold, 10)
    msgs, off = [], 20
    for _ in range(count):
        (ln,) = struct.unpack_from(">H", mold, off)
        msgs.append(mold[off + 2 : off + 2 + ln])
        off += 2 + ln
    assert off == len(mold), "MoldUDP64 block lengths do not add up"
    return session, seq, msgs


def decode_capture(name: str):
    """Decode every packet natively and with the reference; assert equality; return records + messages."""
    dec = Itch50Decoder(midnight_ns=MIDNIGHT, publisher_id=1, channel_id=0)
    all_recs, all_msgs, stamps = [], [], []
    for ts, frame in read_pcap(DATA / name):
        session, seq, msgs = moldudp64_messages(frame)
        assert session == b"000010059B"
        got = dec.decode_messages(msgs, ts_recv=ts, first_sequence=seq, flags=TS_SW)
        want = []
        for i, m in enumerate(msgs):
            want += codec.to_records(m, midnight_ns=MIDNIGHT, publisher_id=1, channel_id=0, ts_recv=ts,
                                     sequence=seq + i, msg_flags=TS_SW)
        want = codec.records_array(want)
        assert got.tobytes() == want.tobytes(), f"{name}: native and reference records differ"
        all_recs.append(got)
        all_msgs += msgs
        stamps += [ts] * len(msgs)
    c = dec.counters()
    assert c["decoded"] == len(all_msgs) and c["unknown"] == c["bad_length"] == c["empty"] == 0
    # Not np.concatenate: it repacks TICK_DTYPE (overlapping fields) into an 80-byte itemsize.
    joined = np.frombuffer(b"".join(a.tobytes() for a in all_recs), dtype=records.TICK_DTYPE)
    return joined, all_msgs, stamps


def test_add_order():
    recs, msgs, stamps = decode_capture("AddOrderNoMpidAttributionMessage.pcap")
    r = records.view(recs, "mbo")[0]
    assert codec.decode(msgs[0])["stock"] == b"IVOO    "
    assert (r["instrument_id"], r["order_id"], r["action"], r["side"]) == (5528, 23508286, b"A", b"B")
    assert (r["price"], r["size"]) == (87_390_000_000, 1600)  # $87.39
    assert (r["sequence"], r["flags"], r["publisher_id"]) == (14757721, 0x80, 1)
    # Exchange time 09:29:59.999894278 ET, received 165 us later at 13:30:00.000059094 UTC.
    assert r["ts_event"] == MIDNIGHT + 34_199_999_894_278
    assert 0 < int(r["ts_recv"]) - int(r["ts_event"]) < 1_000_000


def test_order_delete():
    recs, _, _ = decode_capture("OrderDeleteMessage.pcap")
    r = records.view(recs, "mbo")[0]
    assert (r["instrument_id"], r["order_id"], r["action"], r["size"]) == (3517, 23497686, b"C", 0)
    assert r["flags"] == 0x80 | 0x02 and r["sequence"] == 14757722


def test_order_executed():
    recs, _, _ = decode_capture("OrderExecutedMessage.pcap")
    r = records.view(recs, "mbo")[0]
    assert (r["instrument_id"], r["order_id"], r["action"], r["size"]) == (2345, 23499418, b"F", 25)
    assert r["match_number"] == 255547 and r["price"] == records.UNDEF_PRICE


def test_order_replace():
    recs, _, _ = decode_capture("OrderReplaceMessage.pcap")
    r = records.view(recs, "mbo")
    assert list(r["action"]) == [b"C", b"A"] and list(r["instrument_id"]) == [7603, 7603]
    assert (r[0]["order_id"], r[1]["order_id"]) == (15108479, 21361351)
    assert (r[1]["price"], r[1]["size"]) == (106_260_000_000, 100)  # $106.26
    assert list(r["flags"]) == [0x02, 0x80]


def test_stock_trading_action():
    recs, msgs, _ = decode_capture("StockTradingActionMessage.pcap")
    r = records.view(recs, "trading_action")[0]
    assert codec.decode(msgs[0])["stock"] == b"AMC     "
    assert (r["instrument_id"], r["trading_state"], r["reason"]) == (464, b"T", b"    ")
    assert recs[0]["raw"][30:34].tobytes() == b"    "  # reason as on the wire: four spaces


def test_market_participant_position():
    recs, msgs, _ = decode_capture("MarketParticipantPositionMessage.pcap")
    r = records.view(recs, "mpp")[0]
    assert codec.decode(msgs[0])["stock"] == b"FGMC    "
    assert (r["instrument_id"], r["mpid"], r["primary_market_maker"]) == (3731, b"MAXM", b"Y")
    assert (r["market_maker_mode"], r["market_participant_state"]) == (b"N", b"A")


def test_noii():
    recs, msgs, _ = decode_capture("NetOrderImbalanceIndicatorMessage.pcap")
    assert [records.RTYPE_NAME[x] for x in recs["rtype"]] == ["noii", "noii_prices"]
    d = codec.decode(msgs[0])
    assert d["stock"] == b"MDC     " and d["imbalance_direction"] == b"N"
    n, p = records.view(recs[:1], "noii")[0], records.view(recs[1:], "noii_prices")[0]
    assert (n["instrument_id"], n["paired_shares"], n["imbalance_shares"]) == (6462, 1, 0)
    assert (n["imbalance_direction"], n["cross_type"], n["price_variation_indicator"]) == (b"N", b"O", b"L")
    assert n["current_reference_price"] == p["far_price"] == p["near_price"] == 46_440_000_000  # $46.44


def test_multiple_packets():
    recs, msgs, stamps = decode_capture("Multiple.Packets.pcap")
    assert len(msgs) == 39 and [m[:1] for m in msgs].count(b"F") == 2
    mbo = records.view(recs, "mbo")
    assert list(mbo["sequence"][1:]) == list(range(19009117, 19009117 + 38))
    adds = mbo[1:]
    assert set(adds["instrument_id"]) == {6514} and set(adds["action"]) == {b"A"}
    assert set(adds["side"]) == {b"B", b"A"}
    assert sorted(a for a in adds["attribution"] if a) == [b"UBSS", b"UBSS"]
    # Deep-book META orders: bids around $80, asks around $357; the book does not cross.
    bids, asks = adds["price"][adds["side"] == b"B"], adds["price"][adds["side"] == b"A"]
    assert 0 < bids.max() < asks.min() < 1000 * 10**9
    assert all(p % 10**5 == 0 for p in adds["price"])  # 4 decimal wire prices
    assert list(mbo["ts_recv"]) == stamps
