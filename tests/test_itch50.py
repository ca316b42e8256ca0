"""Native ITCH 5.0 decoder against the pure-Python reference: every message type round trips into
exactly the records the documented mapping prescribes, byte for byte; rejects are counted."""
from __future__ import annotations

import random

import numpy as np
import pytest

from feedhandler import records
from feedhandler.protocols import itch50_codec as codec
from feedhandler.protocols import itch50_spec as spec
from feedhandler.protocols.itch50 import Itch50Decoder, Itch50FramingError

ALL_TYPES = "SRHYLVWKJhAFECXDUPQBINO"
MIDNIGHT = 1_692_676_800_000_000_000  # 2023-08-22 00:00 US/Eastern
TS_SW = 2  # FH_MSG_TS_SW
AFTER_GAP = 4  # FH_MSG_AFTER_GAP


def field_diff(got: np.ndarray, want: np.ndarray) -> str:
    """Readable per-field difference of two TICK_DTYPE arrays (for assertion messages)."""
    lines = []
    for i in range(max(len(got), len(want))):
        if i >= len(got) or i >= len(want):
            lines.append(f"record {i}: missing on one side")
            continue
        name = records.RTYPE_NAME.get(int(want[i]["rtype"]), "?")
        if got[i]["rtype"] != want[i]["rtype"]:
            lines.append(f"record {i}: rtype {got[i]['rtype']} != {want[i]['rtype']}")
            continue
        g = got[i : i + 1].view(records.DTYPES[name])[0]
        w = want[i : i + 1].view(records.DTYPES[name])[0]
        for f in records.DTYPES[name].names:
            if g[f] != w[f]:
                lines.append(f"record {i} ({name}).{f}: native {g[f]!r} != reference {w[f]!r}")
        if got[i].tobytes() != want[i].tobytes():
            lines.append(f"record {i}: raw bytes differ (padding?)")
    return "\n".join(lines)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == records.TICK_DTYPE
    assert len(got) == len(want) and got.tobytes() == want.tobytes(), field_diff(got, want)


def expected(msgs, *, ts_recv=0, first_sequence=1, flags=0, **cfg) -> np.ndarray:
    recs = []
    for i, m in enumerate(msgs):
        ts = ts_recv if isinstance(ts_recv, int) else ts_recv[i]
        fl = flags if isinstance(flags, int) else flags[i]
        try:
            recs += codec.to_records(m, ts_recv=ts, sequence=first_sequence + i, msg_flags=fl, **cfg)
        except codec.Itch50Error:
            pass
    return codec.records_array(recs)


def extreme_fields(t: str, high: bool) -> dict:
    """All-zero or all-max wire values (chars: NUL / 0xFF) for one message type."""
    out = {}
    for f in spec.BY_TYPE[t].fields[1:]:
        if f.kind in ("char", "alpha"):
            out[f.name] = (b"\xff" if high else b"\x00") * f.size
        elif f.kind == "ts48":
            out[f.name] = (1 << 48) - 1 if high else 0
        else:
            out[f.name] = (1 << (8 * f.size)) - 1 if high else 0
    return out


# ---- round trip of every message type -------------------------------------------------------------

@pytest.mark.parametrize("t", ALL_TYPES)
def test_round_trip_every_type(t):
    rng = random.Random(ord(t))
    msgs = [codec.random_message(t, rng) for _ in range(200)]
    msgs += [codec.encode(t, **extreme_fields(t, False)), codec.encode(t, **extreme_fields(t, True))]
    # Every wire value survives the reference codec unchanged.
    for m in msgs:
        d = codec.decode(m)
        assert codec.encode(t, **{k: v for k, v in d.items() if k != "message_type"}) == m
    flags = [rng.choice([0, 1, 2, 3, 4, 5, 6, 7]) for _ in msgs]
    ts = [rng.randrange(1 << 64) for _ in msgs]
    cfg = dict(midnight_ns=MIDNIGHT, publisher_id=0xBEEF, channel_id=0xA5)
    dec = Itch50Decoder(**cfg)
    got = dec.decode_messages(msgs, ts_recv=ts, first_sequence=(1 << 32) - 50, flags=flags)
    assert_same(got, expected(msgs, ts_recv=ts, first_sequence=(1 << 32) - 50, flags=flags, **cfg))
    c = dec.counters()
    assert c["messages"] == {t: len(msgs)}
    assert c["decoded"] == len(msgs) and c["records"] == len(got)
    assert c["unknown"] == c["bad_length"] == c["empty"] == 0


def test_mixed_stream_matches_reference():
    rng = random.Random(5)
    msgs = [codec.random_message(rng.choice(ALL_TYPES), rng) for _ in range(3000)]
    dec = Itch50Decoder(midnight_ns=MIDNIGHT, publisher_id=3, channel_id=1)
    got = dec.decode_messages(msgs, ts_recv=123, first_sequence=10, flags=TS_SW)
    assert_same(got, expected(msgs, ts_recv=123, first_sequence=10, flags=TS_SW, midnight_ns=MIDNIGHT,
                              publisher_id=3, channel_id=1))
    # Same messages through BinaryFILE framing.
    dec2 = Itch50Decoder(midnight_ns=MIDNIGHT, publisher_id=3, channel_id=1)
    got2 = dec2.decode_binaryfile(codec.binaryfile(msgs), ts_recv=123, first_sequence=10, flags=TS_SW)
    assert_same(got2, got)
    assert dec2.counters() == dec.counters()


@pytest.mark.parametrize("out_cap", [2, 3, 5, 64])
def test_small_output_batches_resume_correctly(out_cap):
    rng = random.Random(out_cap)
    msgs = [codec.random_message(rng.choice("AUIODX"), rng) for _ in range(300)]
    ref = Itch50Decoder().decode_messages(msgs)
    dec = Itch50Decoder()
    got = dec.decode_messages(msgs, out_cap=out_cap)
    assert_same(got, ref)
    # Each call fills at most out_cap slots and stops while 2 are still needed.
    assert dec.last_calls >= len(ref) / out_cap
    with pytest.raises(ValueError):
        Itch50Decoder().decode_messages(msgs, out_cap=1)


# ---- the mapping, checked by hand (independent of the reference code) -----------------------------

def _one(name, msg, **kw):
    dec = Itch50Decoder(midnight_ns=MIDNIGHT, publisher_id=9, channel_id=2)
    out = dec.decode_messages([msg], **kw)
    return records.view(out, name), dec


def test_add_order_mapping():
    m = codec.encode("A", stock_locate=5528, timestamp=34_199_999_894_278, order_reference_number=23508286,
                     buy_sell_indicator="B", shares=1600, stock="IVOO", price=873900)
    r, _ = _one("mbo", m, ts_recv=5, first_sequence=77, flags=TS_SW)
    assert len(r) == 1
    r = r[0]
    assert (r["length"], r["rtype"], r["publisher_id"], r["instrument_id"]) == (14, 0xA0, 9, 5528)
    assert r["ts_event"] == MIDNIGHT + 34_199_999_894_278
    assert (r["order_id"], r["price"], r["size"]) == (23508286, 87_390_000_000, 1600)
    assert (r["action"], r["side"], r["channel_id"], r["flags"]) == (b"A", b"B", 2, 0x80)
    assert (r["ts_recv"], r["sequence"], r["ts_in_delta"]) == (5, 77, 0)
    sell = codec.encode("F", buy_sell_indicator="S", price=1, attribution="UBSS")
    r, _ = _one("mbo", sell)
    assert (r[0]["side"], r[0]["price"], r[0]["attribution"]) == (b"A", 100_000, b"UBSS")
    assert r[0]["flags"] == 0x80 | 0x08  # no capture clock -> BAD_TS_RECV


def test_execution_cancel_delete_mapping():
    r, _ = _one("mbo", codec.encode("E", order_reference_number=7, executed_shares=25, match_number=255547))
    assert (r[0]["action"], r[0]["side"], r[0]["size"], r[0]["match_number"]) == (b"F", b"N", 25, 255547)
    assert r[0]["price"] == records.UNDEF_PRICE
    r, _ = _one("mbo", codec.encode("C", order_reference_number=7, executed_shares=3, match_number=9,
                                    printable="N", execution_price=1234500), flags=TS_SW)
    assert (r[0]["action"], r[0]["price"], r[0]["flags"]) == (b"F", 123_450_000_000, 0x80 | 0x01)
    r, _ = _one("mbo", codec.encode("C", printable="Y"), flags=TS_SW)
    assert r[0]["flags"] == 0x80
    r, _ = _one("mbo", codec.encode("X", order_reference_number=8, cancelled_shares=40), flags=TS_SW | AFTER_GAP)
    assert (r[0]["action"], r[0]["size"], r[0]["price"], r[0]["flags"]) == (b"C", 40, records.UNDEF_PRICE, 0x84)
    r, _ = _one("mbo", codec.encode("D", order_reference_number=23498710), flags=TS_SW)
    assert (r[0]["action"], r[0]["order_id"], r[0]["size"], r[0]["flags"]) == (b"C", 23498710, 0, 0x80 | 0x02)


def test_replace_is_cancel_then_add():
    m = codec.encode("U", stock_locate=7603, original_order_reference_number=15108479,
                     new_order_reference_number=21361351, shares=100, price=1062600)
    r, dec = _one("mbo", m, flags=TS_SW)
    assert len(r) == 2
    assert (r[0]["action"], r[0]["order_id"], r[0]["size"], r[0]["flags"]) == (b"C", 15108479, 0, 0x02)
    assert r[0]["price"] == records.UNDEF_PRICE
    assert (r[1]["action"], r[1]["order_id"], r[1]["size"], r[1]["price"]) == (b"A", 21361351, 100, 106_260_000_000)
    assert (r[1]["side"], r[1]["flags"]) == (b"N", 0x80)
    assert dec.counters()["records"] == 2 and dec.counters()["decoded"] == 1


def test_trade_and_cross_mapping():
    r, _ = _one("trade", codec.encode("P", order_reference_number=5, buy_sell_indicator="B", shares=10,
                                      price=100000, match_number=42), flags=TS_SW)
    r = r[0]
    assert (r["length"], r["rtype"], r["action"], r["side"]) == (12, 0, b"T", b"A")
    assert (r["price"], r["size"], r["order_id"], r["match_number"], r["flags"]) == (10**10, 10, 5, 42, 0x80)
    r, _ = _one("trade", codec.encode("P", buy_sell_indicator="S"))
    assert r[0]["side"] == b"B"
    r, dec = _one("trade", codec.encode("Q", shares=(1 << 32) + 5, cross_price=200000, match_number=1,
                                        cross_type="O"))
    assert (r[0]["side"], r[0]["size"], r[0]["price"], r[0]["depth"]) == (b"N", 2**32 - 1, 2 * 10**10, ord("O"))
    assert dec.counters()["cross_shares_saturated"] == 1
    r, dec = _one("trade", codec.encode("Q", shares=2**32 - 1))
    assert r[0]["size"] == 2**32 - 1 and dec.counters()["cross_shares_saturated"] == 0


def test_reference_records_mapping():
    r, _ = _one("stock_directory", codec.encode("R", stock_locate=1, stock="AAPL", market_category="Q",
                                                round_lot_size=100, etp_leverage_factor=3, issue_sub_type="Z"))
    assert (r[0]["symbol"], r[0]["market_category"], r[0]["round_lot_size"]) == (b"AAPL    ", b"Q", 100)
    assert (r[0]["etp_leverage_factor"], r[0]["issue_subtype"], r[0]["length"]) == (3, b"Z ", 16)
    r, _ = _one("mwcb_decline", codec.encode("V", level1=300_000_000_000, level2=2**63 // 10 + 1))
    assert r[0]["level1"] == 3000 * 10**9 and r[0]["level2"] == records.UNDEF_PRICE
    msgs = [codec.encode("I", paired_shares=10, imbalance_shares=20, far_price=1, near_price=2,
                         current_reference_price=3, imbalance_direction="B", cross_type="O"),
            codec.encode("O", near_execution_time=99, minimum_allowable_price=1, maximum_allowable_price=2,
                         near_execution_price=3, lower_price_range_collar=4, upper_price_range_collar=5)]
    out = Itch50Decoder().decode_messages(msgs)
    assert [records.RTYPE_NAME[x] for x in out["rtype"]] == ["noii", "noii_prices", "dlcr", "dlcr_collars"]
    noii, prices = records.view(out[0:1], "noii")[0], records.view(out[1:2], "noii_prices")[0]
    assert (noii["paired_shares"], noii["imbalance_shares"], noii["current_reference_price"]) == (10, 20, 300000)
    assert (prices["far_price"], prices["near_price"]) == (100000, 200000)
    dl, col = records.view(out[2:3], "dlcr")[0], records.view(out[3:4], "dlcr_collars")[0]
    assert (dl["near_execution_time"], dl["near_execution_price"], dl["minimum_allowable_price"]) == (99, 300000, 100000)
    assert (col["maximum_allowable_price"], col["lower_price_range_collar"], col["upper_price_range_collar"]) == (
        200000, 400000, 500000)


# ---- rejects ----------------------------------------------------------------------------------------

def test_unknown_types_are_counted_per_type():
    msgs = [b"Z" + bytes(30), b"a" + bytes(11), b"Z", b"\x00" * 36, codec.encode("S", event_code="O")]
    dec = Itch50Decoder()
    out = dec.decode_messages(msgs)
    assert len(out) == 1 and records.view(out, "system_event")[0]["event_code"] == b"O"
    c = dec.counters()
    assert c["unknown_by_type"] == {"Z": 2, "a": 1, "\x00": 1} and c["unknown"] == 4
    assert c["decoded"] == 1 and c["bad_length"] == 0


@pytest.mark.parametrize("t", ALL_TYPES)
def test_wrong_lengths_are_counted_not_decoded(t):
    good = codec.random_message(t, random.Random(1))
    n = len(good)
    variants = [good[:1], good[: n - 1], good[: spec.HEADER_LENGTH], good + b"\x00", good + bytes(100)]
    dec = Itch50Decoder()
    out = dec.decode_messages(variants + [good])
    assert_same(out, expected([good], first_sequence=len(variants) + 1))  # only the well-formed one
    c = dec.counters()
    assert c["bad_length_by_type"] == {t: len(variants)} and c["bad_length"] == len(variants)
    assert c["messages"] == {t: 1} and c["unknown"] == 0
    for v in variants:
        with pytest.raises(codec.BadLength):
            codec.decode(v)


def test_empty_message_counted():
    dec = Itch50Decoder()
    assert len(dec.decode_messages([b"", b""])) == 0
    assert dec.counters()["empty"] == 2
    dec.reset_counters()
    assert dec.counters()["empty"] == 0


def test_binaryfile_framing():
    rng = random.Random(2)
    msgs = [codec.random_message(rng.choice(ALL_TYPES), rng) for _ in range(50)] + [b"", b"?" * 3]
    buf = codec.binaryfile(msgs)
    assert list(codec.iter_binaryfile(buf)) == msgs
    dec = Itch50Decoder()
    out = dec.decode_binaryfile(buf, first_sequence=1000)
    assert_same(out, expected(msgs, first_sequence=1000))
    c = dec.counters()
    assert c["decoded"] + c["unknown"] + c["bad_length"] + c["empty"] == len(msgs)
    assert len(Itch50Decoder().decode_binaryfile(b"")) == 0
    for end in (1, 3, len(buf) - 6, len(buf) - 1):  # inside a length prefix or inside a message
        with pytest.raises(Itch50FramingError):
            Itch50Decoder().decode_binaryfile(buf[:end])
        with pytest.raises(ValueError):
            list(codec.iter_binaryfile(buf[:end]))


def test_decode_accepts_bytes_like():
    m = codec.encode("D", order_reference_number=1)
    a = Itch50Decoder().decode_messages([bytearray(m), memoryview(m)])
    assert len(a) == 2
    b = Itch50Decoder().decode_binaryfile(bytearray(codec.binaryfile([m])))
    assert_same(b, a[:1])


@pytest.mark.parametrize("kind", ["all_two_record", "rejects_at_end", "only_rejects", "single"])
def test_binaryfile_output_sizing(kind):
    rng = random.Random(kind)
    if kind == "all_two_record":
        msgs = [codec.random_message(rng.choice("UIO"), rng) for _ in range(100)]
    elif kind == "rejects_at_end":
        msgs = [codec.random_message("A", rng) for _ in range(10)] + [b"U" * 5, b"", b"?"] * 5
    elif kind == "only_rejects":
        msgs = [b"U", b"", b"Izz", b"\xff" * 50]
    else:
        msgs = [codec.random_message("D", rng)]
    dec = Itch50Decoder()
    out = dec.decode_binaryfile(codec.binaryfile(msgs))
    assert_same(out, expected(msgs))
    assert dec.last_calls == 1  # sized so that one call decodes the whole buffer
