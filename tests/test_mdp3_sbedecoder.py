"""Differential test: the native MDP 3.0 decoder against the independent ``sbedecoder`` package.

Both decode the same UDP payloads with the same schema XML. The expected records are built here from
sbedecoder's raw field values with the documented mapping (mantissas in 1e-9 units, enums to
action/side letters); every field the native decoder emits must equal them.
"""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records as R
from feedhandler.protocols.mdp3 import Mdp3Decoder
from feedhandler.protocols.mdp3.synth import generate, read_pcap

sbedecoder = pytest.importorskip("sbedecoder", reason="sbedecoder (PyPI) is the reference: pip install sbedecoder")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mdp3"
SCHEMA9 = DATA / "schema" / "Cme.Futures.Mdp3.Sbe.v1.9.xml"
SCHEMA12 = DATA / "schema" / "Cme.Futures.Mdp3.Sbe.v1.12.xml"
V9_PCAPS = sorted(glob.glob(str(DATA / "pcap" / "v9_*.pcap")))

needs_data = pytest.mark.skipif(not SCHEMA9.exists() or not V9_PCAPS, reason=f"{DATA} (shared reference data) is absent")

UNDEF = R.UNDEF_PRICE
I32_NULL = 2**31 - 1
MBP_ACTION = {0: b"A", 1: b"M", 2: b"C", 3: b"D", 4: b"F", 5: b"O"}
ORDER_ACTION = {0: b"A", 1: b"M", 2: b"C"}
SIDE = {"0": b"B", "1": b"A", "E": b"B", "F": b"A"}


def _parser(schema_path):
    s = sbedecoder.MDPSchema()
    s.parse(str(schema_path))
    return sbedecoder.SBEParser(sbedecoder.MDPMessageFactory(s))


def _px(raw):
    m, e = raw["mantissa"], raw["exponent"]
    if m == 2**63 - 1:
        return UNDEF
    return m * 10 ** (9 + e) if e >= -9 else m // 10 ** (-9 - e)


def _f(entry, name):
    return entry[name]


def expected_records(parser, payloads, ts_recv):
    """Records the native decoder must produce, from sbedecoder's view (fresh state, in order)."""
    out = []
    BAD_TS = 0  # ts_recv given: a capture clock
    for pl, ts in zip(payloads, ts_recv):
        seq = int.from_bytes(pl[:4], "little")
        for m in parser.parse(pl, 12):
            first = len(out)
            _one_message(m, out, seq, ts, BAD_TS)
            mei = m.match_event_indicator.raw_value if hasattr(m, "match_event_indicator") else 0
            if mei & 0x80 and len(out) > first and "flags" in out[-1][1]:
                out[-1][1]["flags"] |= 0x80  # DBN F_LAST: the message ends a Globex event
    return out


def _one_message(m, out, seq, ts, BAD_TS):
    """Append the records of one sbedecoder message to out."""
    name = m.name.replace("LongQty", "")  # schema 12's 64-bit quantity variants map the same way
    tt = m.transact_time.value if hasattr(m, "transact_time") else None
    # sbedecoder re-wraps shared field objects: read each entry while it is current
    groups = {g.name: [{f.name: f.raw_value for f in rg.fields} for rg in g.repeating_groups]
              for g in m.groups}
    if name == "MDIncrementalRefreshBook":
        refs = []
        for e in groups.get("no_md_entries", []):
            et = _f(e, "md_entry_type")
            nord = _f(e, "number_of_orders")
            refs.append((_f(e, "security_id"), _px(_f(e, "md_entry_px")), SIDE[et]))
            out.append(("mbp_update", dict(
                instrument_id=_f(e, "security_id"), ts_event=tt, ts_recv=ts, sequence=seq,
                price=_px(_f(e, "md_entry_px")), size=_f(e, "md_entry_size") % (I32_NULL),
                number_of_orders=0 if nord == I32_NULL else nord, rpt_seq=_f(e, "rpt_seq"),
                level=_f(e, "md_price_level"), action=MBP_ACTION[_f(e, "md_update_action")],
                side=SIDE[et], entry_type=et.encode(), implied=int(et in "EF"))))
        for o in groups.get("no_order_id_entries", []):
            sid, px, side = refs[_f(o, "reference_id") - 1]
            out.append(("mbo", dict(
                instrument_id=sid, ts_event=tt, ts_recv=ts, sequence=seq, order_id=_f(o, "order_id"),
                price=px, size=_f(o, "md_display_qty"), action=ORDER_ACTION[_f(o, "order_update_action")],
                side=side, match_number=_f(o, "md_order_priority"))))
    elif name == "MDIncrementalRefreshOrderBook":
        for e in groups.get("no_md_entries", []):
            out.append(("mbo", dict(
                instrument_id=_f(e, "security_id"), ts_event=tt, ts_recv=ts, sequence=seq,
                order_id=_f(e, "order_id"), price=_px(_f(e, "md_entry_px")), size=_f(e, "md_display_qty"),
                action=ORDER_ACTION[_f(e, "md_update_action")], side=SIDE[_f(e, "md_entry_type")],
                match_number=_f(e, "md_order_priority"),
                flags=(0x02 if _f(e, "md_update_action") == 2 else 0) | BAD_TS)))
    elif name == "MDIncrementalRefreshTradeSummary":
        ents = groups.get("no_md_entries", [])
        for e in ents:
            aggr = _f(e, "aggressor_side")
            out.append(("trade", dict(
                instrument_id=_f(e, "security_id"), ts_event=tt, ts_recv=ts, sequence=seq,
                price=_px(_f(e, "md_entry_px")), size=_f(e, "md_entry_size"),
                side={1: b"B", 2: b"A"}.get(aggr, b"N"), match_number=_f(e, "md_trade_entry_id"),
                action=b"C" if _f(e, "md_update_action") == 2 else b"T")))
        owners = [e for e in ents for _ in range(max(_f(e, "number_of_orders"), 0))]
        for k, o in enumerate(groups.get("no_order_id_entries", [])):
            e = owners[min(k, len(owners) - 1)]
            out.append(("trade", dict(
                instrument_id=_f(e, "security_id"), ts_event=tt, sequence=seq, order_id=_f(o, "order_id"),
                price=_px(_f(e, "md_entry_px")), size=_f(o, "last_qty"), action=b"F", side=b"N",
                match_number=_f(e, "md_trade_entry_id"))))
    elif name == "MDIncrementalRefreshVolume":
        for e in groups.get("no_md_entries", []):
            out.append(("statistic", dict(
                instrument_id=_f(e, "security_id"), ts_event=tt, ts_recv=ts, sequence=seq,
                quantity=_f(e, "md_entry_size"), rpt_seq=_f(e, "rpt_seq"), stat_type=b"e",
                price=UNDEF, action=MBP_ACTION[_f(e, "md_update_action")])))
    elif name == "MDIncrementalRefreshSessionStatistics":
        for e in groups.get("no_md_entries", []):
            q = _f(e, "md_entry_size")
            out.append(("statistic", dict(
                instrument_id=_f(e, "security_id"), ts_event=tt, sequence=seq,
                price=_px(_f(e, "md_entry_px")), quantity=(2**63 - 1) if q == I32_NULL else q,
                rpt_seq=_f(e, "rpt_seq"), stat_type=_f(e, "md_entry_type").encode())))
    elif name == "MDInstrumentDefinitionFuture":
        out.append(("instrument_def", dict(
            instrument_id=m.security_id.value, ts_event=m.last_update_time.value,
            symbol=m.symbol.value.encode(), min_price_increment=_px(m.min_price_increment.raw_value),
            display_factor=_px(m.display_factor.raw_value), instrument_class=b"F")))
    elif name == "SnapshotFullRefresh":
        pass  # snapshots are checked in test_cme_sequencing.py (they depend on instrument state)


def _compare(ticks, expected):
    assert len(ticks) >= len(expected)
    got = [t for t in ticks if R.RTYPE_NAME[int(t["rtype"])] != "gap"]
    assert len(got) == len(expected), (len(got), len(expected))
    for i, (t, (name, fields)) in enumerate(zip(got, expected)):
        assert R.RTYPE_NAME[int(t["rtype"])] == name, (i, name)
        rec = np.asarray(t).view(R.DTYPES[name])
        for k, v in fields.items():
            assert rec[k] == v, (i, name, k, rec[k], v)


@needs_data
@pytest.mark.parametrize("path", V9_PCAPS, ids=lambda p: Path(p).name)
def test_real_v9_captures_match_sbedecoder(path):
    pk = read_pcap(path)
    payloads, ts = [p for _, _, p in pk], [t for t, _, _ in pk]
    dec = Mdp3Decoder()
    ticks = dec.decode_packets(payloads, ts_recv=ts)
    exp = expected_records(_parser(SCHEMA9), payloads, ts)
    assert exp, "sbedecoder found nothing to compare"
    _compare(ticks, exp)
    c = dec.counters()
    assert dec.rejects() == 0, c
    assert c["messages"] == sum(1 for pl in payloads for _ in _parser(SCHEMA9).parse(pl, 12))


@needs_data
def test_real_book_message_has_23_levels_and_16_orders():
    pk = read_pcap(DATA / "pcap" / "v9_MdIncrementalRefreshBook.pcap")
    ticks = Mdp3Decoder().decode_packets([p for _, _, p in pk])
    assert (ticks["rtype"] == R.RTYPE["mbp_update"]).sum() == 23
    assert (ticks["rtype"] == R.RTYPE["mbo"]).sum() == 16
    # every record of this capture lacks a capture clock here
    assert all(np.asarray(t).view(R.DTYPES["mbp_update"])["flags"] & 0x08 for t in ticks
               if t["rtype"] == R.RTYPE["mbp_update"])


@needs_data
def test_synthetic_capture_matches_sbedecoder(tmp_path):
    p = tmp_path / "s.pcap"
    generate(p, messages=600, seed=11)
    pk = [x for x in read_pcap(p) if x[1] == 14310]  # the incremental feed
    payloads, ts = [x[2] for x in pk], [x[0] for x in pk]
    dec = Mdp3Decoder()
    ticks = dec.decode_packets(payloads, ts_recv=ts)
    exp = expected_records(_parser(SCHEMA9), payloads, ts)
    kinds = {name for name, _ in exp}
    assert {"mbp_update", "mbo", "trade", "statistic", "instrument_def"} <= kinds
    got = ticks[np.isin(ticks["rtype"], [R.RTYPE[k] for k in ("mbp_update", "mbo", "trade", "statistic",
                                                              "instrument_def")])]
    got = got[~((got["rtype"] == R.RTYPE["instrument_def"]) & (got["instrument_id"] > 800_000))]
    _compare(got, exp)
    assert dec.rejects() == 0


def _tcp_payloads(path):
    """TCP payloads of a classic pcap (Ethernet/IPv4/TCP), for the v12 TCP recovery captures."""
    import struct
    d = Path(path).read_bytes()
    off, out = 24, []
    while off + 16 <= len(d):
        _, _, incl, _ = struct.unpack_from("<IIII", d, off)
        fr = d[off + 16 : off + 16 + incl]
        off += 16 + incl
        ihl = (fr[14] & 15) * 4
        if fr[14 + 9] == 6:
            th = (fr[14 + ihl + 12] >> 4) * 4
            out.append(fr[14 + ihl + th :])
    return out


V12_TCP = sorted(glob.glob(str(DATA / "pcap" / "v12_*.pcap")))


@pytest.mark.skipif(not SCHEMA12.exists() or not V12_TCP, reason=f"{DATA} (shared reference data) is absent")
@pytest.mark.parametrize("path", V12_TCP, ids=lambda p: Path(p).name)
def test_real_v12_tcp_payloads_match_sbedecoder(path):
    """CME's TCP recovery frames a packet behind a 2-byte 0xCAFE marker; what follows is the UDP layout.
    Schema 1 (market data) messages decode like the UDP ones; schema 2 (the TCP session layer) is not
    ours and is counted as unknown."""
    payloads = [p[2:] for p in _tcp_payloads(path) if p[:2] == b"\xfe\xca"]
    assert payloads
    dec = Mdp3Decoder()
    ticks = dec.decode_packets(payloads, ts_recv=[1] * len(payloads))
    c = dec.counters()
    schema_ids = [int.from_bytes(p[18:20], "little") for p in payloads]
    if all(sid == 2 for sid in schema_ids):
        assert c["msg_unknown_schema"] == c["messages"] == len(payloads) and len(ticks) == 0
        return
    exp = expected_records(_parser(SCHEMA12), payloads, [1] * len(payloads))
    if "SnapshotFullRefreshTcp" in path:
        assert c["msg_skipped"] == 1 and len(ticks) == 0  # TCP-only snapshot template: not normalized
        return
    assert exp
    _compare(ticks, exp)
    assert dec.rejects() == 0
