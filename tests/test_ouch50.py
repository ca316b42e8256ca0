"""OUCH 5.0: field table, real captures with known field values, native decoder vs the Python codec, fuzz."""
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from feedhandler import records
from feedhandler.framing.soupbintcp_stream import MSG_DTYPE
from feedhandler.protocols import ouch50_spec as spec
from feedhandler.protocols import ouch_events as oe

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ouch50"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/ouch50 (real OUCH 5.0 captures) is absent")


def test_table_sizes_match_spec():
    for lay in spec.LAYOUTS.values():
        assert lay.size == spec.SPEC_SIZES[lay.name], lay.name
    assert set(spec.SPEC_SIZES) == {l.name for l in spec.LAYOUTS.values()}


def _examples():
    out = []
    for (direction, t), (name, fields) in spec.TABLE.items():
        kw = {}
        for f, kind, n in fields:
            if kind == "a":
                continue
            kw[f] = {"s": "AB", "c": "Y", "u2": 7, "u4": 123456, "u8": 2**40 + 5, "i8": -1234500}[kind]
        apps = [("firm", "ABCD"), ("min_qty", 300), ("discretion_price", 1234500)] if spec.LAYOUTS[(direction, t)].has_appendages else []
        out.append((direction, name, kw, apps))
    return out


@pytest.mark.parametrize("direction,name,kw,apps", _examples(), ids=lambda x: x if isinstance(x, str) else "")
def test_round_trip_every_message(direction, name, kw, apps):
    msg = spec.encode(name, appendages=apps, **kw)
    got_name, got = spec.decode(msg, direction)
    assert got_name == name
    for f, v in kw.items():
        exp = v.encode() if isinstance(v, str) else v
        assert got[f] == exp, f
    if apps:
        assert got["appendages"] == {"firm": b"ABCD", "min_qty": 300, "discretion_price": 1234500}


def test_bad_appendages_rejected():
    m = spec.encode("enter_order", appendages=[("firm", "LIME")], user_ref_num=1, side="B", quantity=1,
                    symbol="X", price=1)
    with pytest.raises(spec.Ouch50Error):
        spec.decode(m[:-1], "in")                         # appendage length says 6, 5 present
    bad = m[:-6] + b"\x00\x06" + b"\x09\x02LIME"             # entry length 9 overruns the block
    with pytest.raises(spec.Ouch50Error):
        spec.decode(bad, "in")


REAL = {
    "EnterOrderMessage.pcap": ("in", "enter_order", {"user_ref_num": 113, "side": b"T", "quantity": 225,
                                                     "symbol": b"CVLT", "price": 630200, "time_in_force": b"0",
                                                     "display": b"Y", "capacity": b"A", "cl_ord_id": b"H8FUB8IV",
                                                     "appendages": {"firm": b"LIME"}}),
    "OrderAcceptedMessage.pcap": ("out", "order_accepted", {"user_ref_num": 7682701, "side": b"B", "quantity": 40,
                                                            "symbol": b"ADBE", "price": 4777800,
                                                            "order_reference_number": 257340661,
                                                            "order_state": b"L", "cl_ord_id": b"7682701",
                                                            "appendages": {"firm": b"MLRO",
                                                                           "bbo_weight_indicator": b"0"}}),
    "CancelOrderMessage.pcap": ("in", "cancel_order", {"user_ref_num": 7679601, "quantity": 0}),
    "CanceledMessage.pcap": ("out", "order_canceled", {"user_ref_num": 7682701, "quantity": 40, "reason": b"U"}),
}


@needs_data
@pytest.mark.parametrize("fname", sorted(REAL))
def test_real_captures_python_codec(fname):
    from feedhandler.framing.soupbintcp_stream import SoupSessions
    from feedhandler.framing.tcp import pair_streams, reassemble_file
    streams, _ = reassemble_file(DATA / fname)
    sess = SoupSessions()
    for c, s in pair_streams(streams):
        sess.add_pair(c, s)
    tab = sess.messages()
    assert len(tab) == 1
    direction, name, fields = REAL[fname]
    assert bool(tab[0]["from_server"]) == (direction == "out")
    got_name, got = spec.decode(sess.payload(tab[0]), direction)
    assert got_name == name
    for k, v in fields.items():
        assert got[k] == v, k


@needs_data
def test_real_captures_native_records():
    recs, st = oe.replay_stream(DATA / "OrderAcceptedMessage.pcap", "ouch50")
    r = records.view(recs, "order_event")
    assert len(r) == 1 and st["ouch"]["records"] == 1
    r = r[0]
    assert r["event"] == b"A" and r["client_ref"] == 7682701 and r["size"] == 40
    assert r["price"] == 477_780_000_000 and r["order_id"] == 257340661 and r["side"] == b"B"
    assert r["flags"] & 0x01                                # from the exchange
    # ts_event = NY midnight of the capture day + OUCH timestamp (ns since midnight)
    from feedhandler.pipeline import midnight_ns_for_ts
    assert r["ts_event"] == midnight_ns_for_ts(int(r["ts_recv"])) + 0x289B4D64AF87
    recs, st = oe.replay_stream(DATA / "EnterOrderMessage.pcap", "ouch")   # version auto-detected
    assert st["protocol"] == "ouch50"
    r = records.view(recs, "order_event")[0]
    assert r["event"] == b"N" and r["client_ref"] == 113 and r["size"] == 225 and r["price"] == 63_020_000_000
    assert r["side"] == b"A"                                # 'T' sell short -> ask side
    assert st["symbols"] == {"CVLT": 1} and r["instrument_id"] == 1
    for hb in ("ClientHeartbeatPacket.pcap", "ServerHeartbeatPacket.pcap"):
        recs, st = oe.replay_stream(DATA / hb, "ouch50")
        assert len(recs) == 0
        assert st["soupbintcp"]["client_heartbeats"] + st["soupbintcp"]["server_heartbeats"] == 1


class _Stream:
    def __init__(self, data):
        self.data = bytearray(data)


class _Sessions:
    """Minimal stand-in for SoupSessions: one stream holding the given payloads back to back."""

    def __init__(self, payloads, from_server):
        self.streams = [_Stream(b"".join(payloads))]
        tab = np.zeros(len(payloads), dtype=MSG_DTYPE)
        off = 0
        for i, (p, fs) in enumerate(zip(payloads, from_server)):
            tab[i]["off"], tab[i]["len"], tab[i]["from_server"] = off, len(p), fs
            tab[i]["ts_recv"] = 1_700_000_000_000_000_000 + i
            off += len(p)
        self.table = tab

    def messages(self):
        return self.table


def test_native_matches_python_codec_on_synthetic_session():
    pk = oe.synth_messages(400, seed=5, version="5.0")
    payloads, fs = [], []
    for _, side, p in pk:
        if p[2:3] in (b"S", b"U"):
            payloads.append(p[3:])
            fs.append(1 if side == "s" else 0)
    sess = _Sessions(payloads, fs)
    d = oe.OuchEventDecoder("5.0")
    r = records.view(d.decode(sess), "order_event")
    assert len(r) == len(payloads) and d.stats["unknown_order"] == 0
    for rec, p, f in zip(r, payloads, fs):
        name, fields = spec.decode(p, "out" if f else "in")
        assert rec["client_ref"] == fields["user_ref_num"]
        q = fields.get("quantity")
        if q is not None:
            assert rec["size"] == q
        if "price" in fields and name != "order_executed":
            assert rec["price"] == fields["price"] * spec.PRICE_TO_RAW
        if name == "order_executed":
            assert rec["price"] == fields["price"] * spec.PRICE_TO_RAW and rec["event"] == b"E"
        if "order_reference_number" in fields:
            assert rec["order_id"] == fields["order_reference_number"]


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(st.tuples(st.binary(max_size=90), st.booleans()), min_size=1, max_size=12),
       version=st.sampled_from(["4.2", "5.0"]))
def test_fuzz_native_decoder_counts_every_message(msgs, version):
    """Garbage never crashes; every message is a record, a session message or a counted reject."""
    sess = _Sessions([m for m, _ in msgs], [int(f) for _, f in msgs])
    d = oe.OuchEventDecoder(version)
    recs = d.decode(sess)
    s = d.stats
    assert s["messages"] == len(msgs)
    assert s["records"] + s["session_messages"] + sum(s["rejects"].values()) == len(msgs)
    assert len(recs) == s["records"]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10**6), cut=st.integers(0, 80))
def test_fuzz_truncated_valid_messages(seed, cut):
    rnd = random.Random(seed)
    pk = [p for _, _, p in oe.synth_messages(20, seed, "5.0") if p[2:3] in (b"S", b"U")]
    p = rnd.choice(pk)[3:]
    t = p[:max(0, len(p) - 1 - cut % len(p))]
    sess = _Sessions([t], [rnd.randint(0, 1)])
    d = oe.OuchEventDecoder("5.0")
    d.decode(sess)
    assert d.stats["records"] + d.stats["session_messages"] + sum(d.stats["rejects"].values()) == 1


# ---- native appendage walker (protocols/ouch50.pyx) --------------------------------------------
from feedhandler.protocols import ouch50 as native50  # noqa: E402

_APP_VALUES = {"s": st.binary(min_size=0, max_size=4).map(lambda b: b.replace(b" ", b"_")),
               "c": st.sampled_from([b"Y", b"N", b"0", b"1"]),
               "u2": st.integers(0, 2**16 - 1), "u4": st.integers(0, 2**32 - 1), "u8": st.integers(0, 2**64 - 1),
               "i4": st.integers(-2**31, 2**31 - 1), "i8": st.integers(-2**63, 2**63 - 1)}


@st.composite
def _appendage_lists(draw):
    tags = draw(st.lists(st.sampled_from(sorted(spec.APPENDAGES)), unique=True, max_size=8))
    return [(t, draw(_APP_VALUES[spec.APPENDAGES[t][1]])) for t in tags]


@settings(max_examples=200, deadline=None)
@given(apps=_appendage_lists(), name=st.sampled_from(["enter_order", "replace_order", "order_accepted",
                                                       "order_replaced", "order_executed", "order_restated"]))
@example(apps=[(1, 0), (2, b"\x00\x00\x00\x00")], name="enter_order")   # NUL-padded alpha (found by CI)
@example(apps=[(2, b"A\x00 ")], name="order_accepted")
def test_native_appendages_match_python_codec(apps, name):
    lay = spec.BY_NAME[name]
    msg = spec.encode(name, appendages=apps)
    got = native50.parse_one(msg, lay.direction == "out")
    ref = spec.decode(msg, lay.direction)[1]["appendages"]
    assert got["status"] == native50.OK and got["count"] == len(apps) and got["unknown"] == 0
    assert {k: v for k, v in got.items() if k not in ("status", "count", "unknown")} == ref


@settings(max_examples=300, deadline=None)
@given(msg=st.binary(max_size=120), fs=st.booleans())
def test_native_appendages_fuzz(msg, fs):
    r = native50.parse_one(msg, fs)
    assert r["status"] in (native50.OK, native50.NO_APPENDAGES, native50.BAD_BLOCK)
    if r["status"] == native50.OK:                          # the Python codec agrees it is well formed
        lay = spec.LAYOUTS.get(("out" if fs else "in", msg[:1]))
        assert lay is not None and lay.has_appendages
        alen = struct.unpack(">H", msg[lay.size - 2:lay.size])[0]
        spec.parse_appendages(msg[lay.size:lay.size + alen])


@needs_data
def test_native_appendages_real_capture():
    from feedhandler.framing.soupbintcp_stream import SoupSessions
    from feedhandler.framing.tcp import pair_streams, reassemble_file
    for fname, fs, exp in (("OrderAcceptedMessage.pcap", True, {"firm": b"MLRO", "bbo_weight_indicator": b"0"}),
                           ("EnterOrderMessage.pcap", False, {"firm": b"LIME"})):
        streams, _ = reassemble_file(DATA / fname)
        sess = SoupSessions()
        for c, s in pair_streams(streams):
            sess.add_pair(c, s)
        r = native50.parse_one(sess.payload(sess.messages()[0]), fs)
        assert r["status"] == 0 and {k: r[k] for k in exp} == exp
