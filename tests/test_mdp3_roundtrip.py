"""Every template of every schema version: encode with the pure-Python SBE codec, decode natively.

Also: generated tables are not stale, newer producers (longer blocks, newer versions) are stepped over
with blockLength, and the decoder is fuzzed (never crashes, every reject counted).
"""
from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedhandler import records as R
from feedhandler.protocols.mdp3 import Mdp3Decoder, encode_message, encode_packet, load_schemas, schema_versions
from feedhandler.protocols.mdp3.schema import PRIM

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT.parent / "shared" / "data" / "mdp3" / "schema"
pytestmark = pytest.mark.skipif(not SCHEMA_DIR.exists(), reason=f"{SCHEMA_DIR} (shared reference data) is absent")


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_mdp3", ROOT / "tools" / "gen_mdp3.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def schemas():
    return load_schemas(SCHEMA_DIR)


def test_generated_tables_are_fresh():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_mdp3.py"), "--check", "--schema-dir",
                        str(SCHEMA_DIR)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_compiled_versions_are_the_schema_files(schemas):
    assert [v for _, v in schema_versions()] == sorted(schemas)


# ---- random messages ---------------------------------------------------------------------------
BOOK_TYPES = "01EF"
STAT_TYPES = "4678BCNOWe"


def _rand(rng, leaf):
    if leaf.const is not None:
        return None
    if leaf.prim == "char":
        return bytes(rng.choice(b"ABCDEFGHXYZ") for _ in range(leaf.length))
    _, size, signed = PRIM[leaf.prim]
    if leaf.exponent is not None and size == 8:
        return rng.randrange(-10**12, 10**12)
    lo, hi = (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1) if signed else (0, 2 ** (8 * size) - 1)
    while True:
        v = rng.randint(max(lo, -10**6) if signed else 0, min(hi, 10**6 if size > 1 else hi))
        if v != leaf.null:
            return v


def _row(rng, leaves, **fixed):
    row = {l.name: _rand(rng, l) for l in leaves}
    row.update({k: v for k, v in fixed.items() if any(l.name == k for l in leaves)})
    return row


def _scale(m, leaf):
    return m * 10 ** (9 + leaf.exponent)


def build(rng, schema, t, kind):
    """(values, groups) for template t with the fields the decoder interprets set to valid values."""
    values = _row(rng, t.leaves, MatchEventIndicator=0, SecurityTradingStatus=17, MDSecurityTradingStatus=17,
                  CurrentChunk=1, NoChunks=1, SecurityUpdateAction=b"A",
                  SecurityID=rng.randrange(1, 10**6))
    groups = {}
    next_sid = iter(range(1000, 10**6, 13))
    for g in t.groups:
        n = rng.randrange(0, 4)
        if g.name == "NoMDEntries":
            rows = []
            for _ in range(max(n, 1)):
                et = {"BOOK": rng.choice(BOOK_TYPES), "ORDER_BOOK": rng.choice("01"),
                      "SNAPSHOT_ORDER_BOOK": rng.choice("01"),
                      "SNAPSHOT": rng.choice(BOOK_TYPES + STAT_TYPES)}.get(kind, rng.choice(STAT_TYPES))
                rows.append(_row(rng, g.leaves, SecurityID=next(next_sid), MDEntryType=et.encode(),
                                 MDUpdateAction=rng.randrange(0, 6 if kind == "BOOK" else 3),
                                 AggressorSide=rng.randrange(0, 3), NumberOfOrders=rng.randrange(0, 3),
                                 RptSeq=rng.randrange(1, 1000), MDPriceLevel=rng.randrange(1, 11)))
            groups[g.name] = rows
        elif g.name == "NoOrderIDEntries":
            nent = len(groups.get("NoMDEntries", [])) or 1
            if kind == "TRADE_SUMMARY":
                n = sum(r.get("NumberOfOrders") or 0 for r in groups["NoMDEntries"])
            groups[g.name] = [_row(rng, g.leaves, ReferenceID=rng.randrange(1, nent + 1),
                                   OrderUpdateAction=rng.randrange(0, 3)) for _ in range(n)]
        else:
            groups[g.name] = [_row(rng, g.leaves) for _ in range(n)]
    return values, groups


def _recs(ticks, name):
    return R.view(ticks[ticks["rtype"] == R.RTYPE[name]], name)


def check(kind, t, values, groups, ticks, c):
    ents = groups.get("NoMDEntries", [])
    ords = groups.get("NoOrderIDEntries", [])
    eg = next((g for g in t.groups if g.name == "NoMDEntries"), None)
    if kind == "BOOK":
        m = _recs(ticks, "mbp_update")
        assert len(m) == len(ents)
        px = eg.leaf("MDEntryPx")
        for r, e in zip(m, ents):
            assert r["instrument_id"] == e["SecurityID"] and r["rpt_seq"] == e["RptSeq"]
            assert r["price"] == _scale(e["MDEntryPx"], px)
            assert r["entry_type"] == e["MDEntryType"] and r["level"] == e["MDPriceLevel"]
            assert r["action"] == b"AMCDFO"[e["MDUpdateAction"]:][:1]
        o = _recs(ticks, "mbo")
        assert len(o) == len(ords)
        for r, e in zip(o, ords):
            ref = ents[e["ReferenceID"] - 1]
            assert r["order_id"] == e["OrderID"] and r["instrument_id"] == ref["SecurityID"]
            assert r["price"] == _scale(ref["MDEntryPx"], px)
    elif kind in ("ORDER_BOOK", "SNAPSHOT_ORDER_BOOK"):
        o = _recs(ticks, "mbo")
        o = o[o["action"] != b"R"]
        assert len(o) == len(ents)
        for r, e in zip(o, ents):
            assert r["order_id"] == e["OrderID"] and r["size"] == max(e["MDDisplayQty"], 0)
            assert r["price"] == _scale(e["MDEntryPx"], eg.leaf("MDEntryPx"))
    elif kind == "TRADE_SUMMARY":
        tr = _recs(ticks, "trade")
        fills = tr[tr["action"] == b"F"]
        tr = tr[tr["action"] != b"F"]
        assert len(tr) == len(ents) and (tr["order_id"] == 0).all()
        for r, e in zip(tr, ents):
            assert r["price"] == _scale(e["MDEntryPx"], eg.leaf("MDEntryPx")) and r["size"] == max(e["MDEntrySize"], 0)
        assert len(fills) == len(ords)
        assert [int(x) for x in fills["order_id"]] == [o["OrderID"] for o in ords]
    elif kind in ("VOLUME", "SESSION_STATS", "DAILY_STATS"):
        s = _recs(ticks, "statistic")
        assert len(s) == len(ents)
        for r, e in zip(s, ents):
            assert r["instrument_id"] == e["SecurityID"] and r["rpt_seq"] == e["RptSeq"]
            if "MDEntrySize" in e:
                assert r["quantity"] == e["MDEntrySize"]
    elif kind == "LIMITS":
        assert len(_recs(ticks, "statistic")) == 3 * len(ents)
    elif kind == "STATUS":
        s = _recs(ticks, "security_status")
        assert len(s) == 1 and s["trading_status"][0] == 17
    elif kind.startswith("DEF_"):
        d = _recs(ticks, "instrument_def")
        assert len(d) == 1 and d["instrument_id"][0] == values["SecurityID"]
        assert d["symbol"][0] == values["Symbol"].rstrip(b"\0")
        mpi = t.leaf("MinPriceIncrement")
        if mpi is not None:
            assert d["min_price_increment"][0] == _scale(values["MinPriceIncrement"], mpi)
        assert d["instrument_class"][0] == {"DEF_FUTURE": b"F", "DEF_OPTION": b"O", "DEF_SPREAD": b"S"}.get(kind, b"X")
    elif kind == "SNAPSHOT":
        m = _recs(ticks, "mbp_update")
        nbook = sum(1 for e in ents if e["MDEntryType"].decode() in BOOK_TYPES)
        assert len(m) == 1 + nbook and m["action"][0] == b"R"
        assert len(_recs(ticks, "statistic")) == len(ents) - nbook
        assert (m["instrument_id"] == values["SecurityID"]).all()
    elif kind == "CHANNEL_RESET":
        assert c["channel_resets"] == 1
        g = _recs(ticks, "gap")
        assert (g["kind"] == 4).sum() == 1
    elif kind == "HEARTBEAT":
        assert c["heartbeats"] == 1 and len(ticks) == 0
    else:
        assert c["msg_skipped"] == 1 and len(ticks) == 0


def test_every_template_of_every_version_round_trips(schemas):
    gen = _gen_module()
    rng = random.Random(4)
    seen_kinds = set()
    for v, s in sorted(schemas.items()):
        for t in sorted(s.templates.values(), key=lambda t: t.id):
            kind = gen.KIND_OF.get(t.description, "OTHER")
            seen_kinds.add(kind)
            for _ in range(3):
                values, groups = build(rng, s, t, kind)
                msg = encode_message(s, t.id, values, groups)
                dec = Mdp3Decoder(apply_all_snapshots=True)
                ticks = dec.decode_packets([encode_packet(7, 1, [msg])])
                c = dec.counters()
                assert dec.rejects() == 0, (v, t.name, {k: x for k, x in c.items() if x})
                assert c["msg_version_fallback"] == 0
                check(kind, t, values, groups, ticks, c)
                # a newer producer: 6 extension bytes in the root block and (where the next version
                # number is not a known schema) a version the decoder has no schema for
                newer = v + 1 if v + 1 not in schemas else v
                msg2 = encode_message(s, t.id, values, groups, block_length=t.block_length + 6, version=newer)
                dec2 = Mdp3Decoder(apply_all_snapshots=True)
                ticks2 = dec2.decode_packets([encode_packet(7, 1, [msg2])])
                assert dec2.counters()["msg_version_fallback"] == (newer != v)
                assert ticks2.tobytes() == ticks.tobytes(), (v, t.name)
    assert {"BOOK", "ORDER_BOOK", "TRADE_SUMMARY", "VOLUME", "SESSION_STATS", "DAILY_STATS", "STATUS",
            "DEF_FUTURE", "DEF_OPTION", "DEF_SPREAD", "SNAPSHOT", "SNAPSHOT_ORDER_BOOK", "CHANNEL_RESET",
            "HEARTBEAT"} <= seen_kinds


def test_unknown_template_and_schema_are_skipped_and_counted(schemas):
    s = schemas[9]
    good = encode_message(s, "MDIncrementalRefreshVolume37", {"TransactTime": 5},
                          {"NoMDEntries": [{"MDEntrySize": 3, "SecurityID": 1, "RptSeq": 1, "MDUpdateAction": 0}]})
    unknown_tid = bytearray(good)
    unknown_tid[2:4] = (120).to_bytes(2, "little")
    unknown_schema = bytearray(good)
    unknown_schema[4:6] = (77).to_bytes(2, "little")
    dec = Mdp3Decoder()
    ticks = dec.decode_packets([encode_packet(1, 0, [bytes(unknown_tid), bytes(unknown_schema), good])])
    c = dec.counters()
    assert c["msg_unknown_template"] == 1 and c["msg_unknown_schema"] == 1 and c["volume"] == 1
    assert len(ticks) == 1 and _recs(ticks, "statistic")["quantity"][0] == 3
    # only version 9 enabled: a version 5 message falls back to nothing older -> unknown schema
    dec5 = Mdp3Decoder(schemas=[9])
    dec5.decode_packets([encode_packet(1, 0, [encode_message(schemas[5], "AdminHeartbeat12")])])
    assert dec5.counters()["msg_unknown_schema"] == 1
    with pytest.raises(ValueError):
        Mdp3Decoder(schemas=[4])


def test_truncations_are_counted_with_a_reason(schemas):
    s = schemas[9]
    msg = encode_message(s, "MDIncrementalRefreshBook46", {"TransactTime": 5},
                         {"NoMDEntries": [{"MDEntryPx": 1, "MDEntrySize": 1, "SecurityID": 1, "RptSeq": 1,
                                           "MDPriceLevel": 1, "MDUpdateAction": 0, "MDEntryType": b"0"}] * 3})
    pkt = encode_packet(1, 0, [msg])
    dec = Mdp3Decoder()
    for cut in range(len(pkt)):
        dec.reset()
        ticks = dec.decode_packets([pkt[:cut]])
        c = dec.counters()
        assert len(ticks) == 0
        # a bare 12-byte packet header is an empty packet, not an error
        assert dec.rejects() == (cut != 12), (cut, {k: v for k, v in c.items() if v})
    # a MsgSize that understates the message: the groups no longer fit
    bad = bytearray(pkt)
    bad[12:14] = (len(msg) + 2 - 10).to_bytes(2, "little")
    dec.reset()
    dec.decode_packets([bytes(bad)])
    assert dec.counters()["msg_truncated"] == 1
    # group block length below the schema's
    bad = bytearray(pkt)
    bad[14 + 8 + 11 : 14 + 8 + 13] = (20).to_bytes(2, "little")
    dec.reset()
    dec.decode_packets([bytes(bad)])
    assert dec.counters()["msg_bad_block_length"] == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=8))
def test_fuzz_garbage_never_crashes(payloads):
    dec = Mdp3Decoder()
    ticks = dec.decode_packets(payloads)
    c = dec.counters()
    assert c["packets"] == len(payloads)
    assert len(ticks) == c["records"] and c["output_overflow"] == 0


_FUZZ_BASE = None


def _base_packets():
    global _FUZZ_BASE
    if _FUZZ_BASE is None:
        from feedhandler.protocols.mdp3.synth import generate, read_pcap
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            generate(Path(d) / "f.pcap", messages=60, seed=2)
            _FUZZ_BASE = [p for _, _, p in read_pcap(Path(d) / "f.pcap")]
    return _FUZZ_BASE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_packets(data):
    base = _base_packets()
    i = data.draw(st.integers(0, len(base) - 1))
    pkt = bytearray(base[i])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(pkt) - 1))
        pkt[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(pkt)))
    dec = Mdp3Decoder()
    ticks = dec.decode_packets([bytes(pkt[:cut]), bytes(pkt)])
    c = dec.counters()
    assert len(ticks) == c["records"] and c["output_overflow"] == 0
    # every framed message is accounted for: decoded by kind, skipped, or rejected with a reason
    handled = sum(c[k] for k in ("book", "order_book", "trade_summary", "volume", "session_stats", "daily_stats",
                                 "limits", "status", "definitions", "snapshots", "snapshot_order_books",
                                 "channel_resets", "heartbeats", "msg_skipped", "msg_truncated",
                                 "msg_bad_block_length", "msg_unknown_schema", "msg_unknown_template"))
    assert handled == c["messages"]
    assert np.all(ticks["length"] > 0)
