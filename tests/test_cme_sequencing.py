"""CME MDP 3.0 sequencing: A/B arbitration, packet gaps, RptSeq gaps, snapshot recovery, books.

The native decoder's packet counters are checked against the pure-Python reference
(feedhandler.framing.cme.ChannelSequencer); books built from the decoded records are checked against
the synthetic generator's own model of the book (MBP) and against the L3 BookSet (MBO).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandler import records as R
from feedhandler.framing.cme import ChannelSequencer, FramingError, arbitrate, split_packet
from feedhandler.protocols.mdp3 import Mdp3Decoder, encode_message, encode_packet, load_schemas
from feedhandler.protocols.mdp3.synth import INCREMENTAL_A, INCREMENTAL_B, SNAPSHOT, generate, read_pcap
from feedhandler.books import MbpBookSet

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mdp3" / "schema"
pytestmark = pytest.mark.skipif(not SCHEMA_DIR.exists(), reason=f"{SCHEMA_DIR} (shared reference data) is absent")

GAP_OPENED, GAP_FILLED, GAP_LOST, GAP_RESET = 1, 2, 3, 4


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    p = tmp_path_factory.mktemp("mdp3") / "ab.pcap"
    summary = generate(p, messages=1500, seed=21, ab=True)
    return summary, read_pcap(p)


def _decode(pk, dec=None):
    dec = dec or Mdp3Decoder()
    ch = [1 if port == SNAPSHOT[1] else 0 for _, port, _ in pk]
    ticks = dec.decode_packets([p for _, _, p in pk], ts_recv=[t for t, _, _ in pk], channel=ch)
    return dec, ticks


def _gaps(ticks):
    return R.view(ticks[ticks["rtype"] == R.RTYPE["gap"]], "gap")


_HB = []


def _heartbeat_packet(seq):
    if not _HB:
        _HB.append(encode_message(load_schemas(SCHEMA_DIR)[9], "AdminHeartbeat12"))
    return encode_packet(seq, seq * 1000, [_HB[0]])


def test_ab_arbitration_first_copy_wins(capture):
    summary, pk = capture
    a_only = [x for x in pk if x[1] == INCREMENTAL_A[1]]
    b_count = sum(1 for x in pk if x[1] == INCREMENTAL_B[1])
    dec_ab, ticks_ab = _decode([x for x in pk if x[1] != SNAPSHOT[1]])
    dec_a, ticks_a = _decode(a_only)
    assert b_count == len(a_only) > 0
    assert dec_ab.counters()["packet_duplicate"] == b_count
    assert dec_ab.counters()["packet_gaps"] == 0
    assert ticks_ab.tobytes() == ticks_a.tobytes()


def _without_ts_recv(ticks):
    """Records as tuples without ts_recv and ts_in_delta (the B copy of a packet arrives later)."""
    out = []
    for t in ticks:
        name = R.RTYPE_NAME[int(t["rtype"])]
        rec = np.asarray(t).view(R.DTYPES[name])
        out.append(tuple(rec[f].item() for f in R.DTYPES[name].names if f not in ("ts_recv", "ts_in_delta")))
    return out


def test_b_feed_fills_what_a_lost(capture):
    _, pk = capture
    inc = [x for x in pk if x[1] != SNAPSHOT[1]]
    a_seqs = sorted({int.from_bytes(p[:4], "little") for _, port, p in inc if port == INCREMENTAL_A[1]})
    lost = set(random.Random(3).sample(a_seqs[5:], 40))
    lossy = [x for x in inc if not (x[1] == INCREMENTAL_A[1] and int.from_bytes(x[2][:4], "little") in lost)]
    dec, ticks = _decode(lossy)
    ref_seq = ChannelSequencer()
    for _, _, p in lossy:
        ref_seq.accept(int.from_bytes(p[:4], "little"))
    c = dec.counters()
    # B arrives 6 us after A: a lost A packet is taken from B unless A's next packet overtook it
    assert c["packet_duplicate"] == ref_seq.counts["duplicate"] == len(lossy) - len(a_seqs) - c["packet_late"]
    assert c["packet_late"] == ref_seq.counts["late"] and c["packet_gaps"] == ref_seq.counts["gap"]
    if c["packet_gaps"] == 0:
        _, ref = _decode([x for x in inc if x[1] == INCREMENTAL_A[1]])
        assert _without_ts_recv(ticks) == _without_ts_recv(ref)


def test_packet_gap_record_and_count():
    pkts = [_heartbeat_packet(s) for s in (1, 2, 3, 7, 8, 8, 4, 9)]
    dec = Mdp3Decoder()
    ticks = dec.decode_packets(pkts)
    c = dec.counters()
    # 7 arrives: 4 is found 3 payloads ahead and applied first; 5 and 6 are lost
    assert c["packet_reordered"] == 1 and c["packet_gaps"] == 1 and c["packet_missing"] == 2
    assert c["packet_duplicate"] == 1 and c["packet_late"] == 0 and c["heartbeats"] == 7
    g = _gaps(ticks)
    assert len(g) == 1 and g["kind"][0] == GAP_LOST and g["first_missing"][0] == 5 and g["count"][0] == 2
    # out of the window: 4 is late
    dec = Mdp3Decoder()
    dec.decode_packets([_heartbeat_packet(s) for s in [1, 2, 3, 7] + [8] * 32 + [4]])
    c = dec.counters()
    assert c["packet_reordered"] == 0 and c["packet_missing"] == 3 and c["packet_late"] == 1


def test_sequence_reset_to_one_is_a_reset():
    pkts = [_heartbeat_packet(s) for s in (100, 101, 1, 2)]
    dec = Mdp3Decoder()
    ticks = dec.decode_packets(pkts)
    assert dec.counters()["packet_resets"] == 1
    assert list(_gaps(ticks)["kind"]) == [GAP_RESET]


_VOL = []
_SID = iter(range(1, 10**9))


def _volume_packet(seq):
    """A packet whose one record says which packet it came from (quantity = MsgSeqNum)."""
    if not _VOL:
        _VOL.append(load_schemas(SCHEMA_DIR)[9])
    m = encode_message(_VOL[0], "MDIncrementalRefreshVolume37", {"TransactTime": seq},
                       {"NoMDEntries": [{"MDEntrySize": seq, "SecurityID": next(_SID), "RptSeq": 1,
                                         "MDUpdateAction": 0}]})
    return encode_packet(seq, seq * 1000, [m])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=120), st.integers(0, 3))
def test_packet_sequencing_matches_python_reference(seqs, nchan):
    chans = [s % (nchan + 1) for s in seqs]
    dec = Mdp3Decoder()
    ticks = dec.decode_packets([_volume_packet(s) for s in seqs], channel=chans)
    order, tot = arbitrate(seqs, chans)
    c = dec.counters()
    assert c["packet_duplicate"] == tot["duplicate"]
    assert c["packet_late"] == tot["late"]
    assert c["packet_reordered"] == tot["reordered"]
    assert c["packet_gaps"] == tot["gap"]
    assert c["packet_missing"] == tot["missing"]
    assert c["packet_resets"] == tot["reset"]
    assert c["packets_ok"] == tot["ok"] + tot["gap"] + tot["reset"]
    # the packets were applied in the reference's order
    stats = R.view(ticks[ticks["rtype"] == R.RTYPE["statistic"]], "statistic")
    assert [int(q) for q in stats["quantity"]] == [seqs[i] for i in order]


def test_interleaved_ab_feeds_are_reordered_not_lost():
    # A lost 3 and 4; B is two packets behind A
    a = [1, 2, 5, 6, 7]
    b = [1, 2, 3, 4, 5, 6, 7]
    merged = [("A", 1), ("A", 2), ("B", 1), ("A", 5), ("B", 2), ("B", 3), ("A", 6), ("B", 4), ("B", 5),
              ("A", 7), ("B", 6), ("B", 7)]
    assert sorted(s for f, s in merged if f == "A") == a and sorted(s for f, s in merged if f == "B") == b
    dec = Mdp3Decoder()
    ticks = dec.decode_packets([_volume_packet(s) for _, s in merged])
    c = dec.counters()
    assert c["packet_gaps"] == 0 and c["packet_reordered"] == 2 and c["packets_ok"] == 7
    assert c["packet_duplicate"] == 5
    assert [int(q) for q in R.view(ticks, "statistic")["quantity"]] == [1, 2, 3, 4, 5, 6, 7]


def _decode_fn_in_chunks(payloads, cap):
    """Drive the fh_decode_fn entry point with an output buffer of `cap` records."""
    import ctypes

    dec = Mdp3Decoder()
    fn_cap, ctx_cap = dec.decode_fn()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    fn = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                          ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t))(get(fn_cap, b"fh_decode_fn"))
    ctx = get(ctx_cap, b"fh_mdp3_ctx")
    bufs = [np.frombuffer(p, dtype=np.uint8) for p in payloads]
    msgs = np.zeros(len(bufs), dtype=[("data", "<u8"), ("len", "<u4"), ("channel", "<u2"), ("flags", "<u2"),
                                      ("ts_recv", "<u8"), ("sequence", "<u8")])
    msgs["data"] = [b.ctypes.data for b in bufs]
    msgs["len"] = [len(b) for b in bufs]
    out = R.empty(cap)
    got, done, n_out, calls = b"", 0, ctypes.c_size_t(), 0
    while done < len(bufs):
        k = fn(ctx, msgs.ctypes.data + done * 32, len(bufs) - done, out.ctypes.data, cap, ctypes.byref(n_out))
        assert k > 0 or n_out.value > 0
        got += out[: n_out.value].tobytes()
        done += k
        calls += 1
    return np.frombuffer(got, dtype=R.TICK_DTYPE), dec, calls


def test_reordering_survives_a_small_output_buffer():
    # A volume packet needs 9 free slots, two of them 18: with 20 the decoder must hand packets back
    seqs = [1, 2, 4, 5, 3, 6, 7, 3, 4, 8, 10, 9, 12, 11, 13]
    pk = [_volume_packet(s) for s in seqs]
    ref = Mdp3Decoder().decode_packets(pk)
    assert [int(q) for q in R.view(ref, "statistic")["quantity"]] == list(range(1, 14))
    for cap in (18, 19, 20):
        got, dec, calls = _decode_fn_in_chunks(pk, cap)
        assert calls > 1
        assert [int(q) for q in R.view(got, "statistic")["quantity"]] == list(range(1, 14)), cap
        assert dec.counters()["packet_gaps"] == 0
    # room for one packet only: no reordering, but progress (gaps instead of a stall)
    got, dec, calls = _decode_fn_in_chunks(pk, 9)
    assert dec.counters()["packet_gaps"] > 0 and dec.counters()["packet_reordered"] == 0


def test_split_packet_reference():
    s = load_schemas(SCHEMA_DIR)[9]
    m = encode_message(s, "AdminHeartbeat12")
    assert split_packet(encode_packet(5, 9, [m, m])) == (5, 9, [m, m])
    with pytest.raises(FramingError):
        split_packet(encode_packet(5, 9, [m])[:-1])


def _template_ids(payload):
    _, _, msgs = split_packet(payload)
    return [int.from_bytes(m[2:4], "little") for m in msgs]


def test_rptseq_gap_marks_stale_and_snapshot_recovers(capture):
    summary, pk = capture
    inc = [x for x in pk if x[1] == INCREMENTAL_A[1]]
    snaps = [x for x in pk if x[1] == SNAPSHOT[1]]
    # lose one packet of book updates for good (on both feeds): a packet gap and a RptSeq gap
    victim = next(p for _, _, p in inc[len(inc) // 2 :] if _template_ids(p)[0] == 46)
    vseq = int.from_bytes(victim[:4], "little")
    lossy = [x for x in pk if x[1] != SNAPSHOT[1] and int.from_bytes(x[2][:4], "little") != vseq]
    dec, ticks = _decode(lossy)
    c = dec.counters()
    assert c["packet_gaps"] == 1 and c["packet_missing"] == 1
    assert c["rptseq_gaps"] >= 1
    stale = dec.stale_instruments("mbp")
    assert stale
    # a packet gap may have lost MBO-only messages of any instrument: every MBO book needs a snapshot
    assert dec.stale_instruments("mbo") == sorted(summary["books"])
    g = _gaps(ticks)
    assert set(g["instrument_id"][g["kind"] == GAP_OPENED]) == set(stale)
    books = MbpBookSet()
    books.apply(ticks)
    assert books.stale_instruments() == stale
    # flagged records while stale
    m = R.view(ticks[ticks["rtype"] == R.RTYPE["mbp_update"]], "mbp_update")
    assert c["stale_records"] > 0 and (m["flags"] & 0x04).sum() > 0
    # the snapshot loop: stale instruments recover, the others' snapshots are ignored
    ticks2 = _decode(snaps, dec)[1]
    c = dec.counters()
    assert c["recoveries"] == len(stale) and c["mbo_recoveries"] == len(summary["books"])
    assert c["snapshots_ignored"] == len(summary["books"]) - len(stale)
    assert dec.stale_instruments() == []
    g2 = _gaps(ticks2)
    assert sorted(g2["instrument_id"][g2["kind"] == GAP_FILLED]) == stale
    books.apply(ticks2)
    assert books.stale_instruments() == []
    assert books.counters()["recovered"] == len(stale)
    _assert_books_equal(books, summary)
    # the L3 books: a packet gap makes every MBO book stale until its SnapshotFullRefreshOrderBook
    engine_book = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo (L3 BookSet) is not built")
    bs = engine_book.BookSet()
    bs.apply(ticks)
    assert all(bs.stale(sid) for sid in summary["books"])
    bs.apply(ticks2)
    for sid, bk in summary["books"].items():
        assert not bs.stale(sid)
        bids, asks = bs.depth(sid, 10)
        for levels, side in ((bids, "0"), (asks, "1")):
            assert [(int(l["price"]), int(l["size"]), int(l["count"])) for l in levels] == list(bk[side])
    # incrementals after the snapshot that it already contains are dropped as duplicates
    before = dec.counters()["rptseq_duplicate"]
    _decode([x for x in inc if int.from_bytes(x[2][:4], "little") > vseq][-3:], Mdp3Decoder())
    assert dec.counters()["rptseq_duplicate"] == before


def _assert_books_equal(books, summary):
    for sid, bk in summary["books"].items():
        for side, ch in (("0", "B"), ("1", "A")):
            exp = [tuple(l) for l in bk[side][:10]]
            got = [(int(p), int(s), int(n)) for p, s, n in books.levels(sid, ch)]
            assert got == exp, (sid, side)


def test_mbp_books_equal_generator_model(capture):
    summary, pk = capture
    dec, ticks = _decode([x for x in pk if x[1] == INCREMENTAL_A[1]])
    books = MbpBookSet()
    books.apply(ticks)
    assert books.counters()["bad_level"] == 0 and books.counters()["bad_action"] == 0
    _assert_books_equal(books, summary)
    assert books.bbo(999_999) == (R.UNDEF_PRICE, 0, R.UNDEF_PRICE, 0)


def test_mbo_books_match_mbp_books(capture):
    engine_book = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo (L3 BookSet) is not built")
    summary, pk = capture
    _, ticks = _decode([x for x in pk if x[1] == INCREMENTAL_A[1]])
    bs = engine_book.BookSet()
    bs.apply(ticks)
    for sid, bk in summary["books"].items():
        bids, asks = bs.depth(sid, 10)
        for levels, side in ((bids, "0"), (asks, "1")):
            exp = [(p, q, n) for p, q, n in bk[side]]
            got = [(int(l["price"]), int(l["size"]), int(l["count"])) for l in levels]
            assert got == exp, (sid, side)
    live = sum(len(v) for v in summary["orders"].values())
    assert bs.live_orders == live


def test_implied_levels_kept_apart():
    s = load_schemas(SCHEMA_DIR)[9]

    def entry(et, px, lvl, rpt, action=0):
        return {"MDEntryPx": px, "MDEntrySize": 5, "SecurityID": 42, "RptSeq": rpt, "NumberOfOrders": None,
                "MDPriceLevel": lvl, "MDUpdateAction": action, "MDEntryType": et}

    m = encode_message(s, "MDIncrementalRefreshBook46", {"TransactTime": 1, "MatchEventIndicator": 0x80},
                       {"NoMDEntries": [entry(b"0", 100, 1, 1), entry(b"E", 101, 1, 2), entry(b"F", 103, 1, 3),
                                        entry(b"1", 104, 1, 4), entry(b"E", 99, 2, 5)]})
    dec = Mdp3Decoder()
    ticks = dec.decode_packets([encode_packet(1, 0, [m])])
    books = MbpBookSet(depth=2)
    books.apply(ticks)
    assert books.bbo(42) == (100, 5, 104, 5)
    assert books.bbo(42, implied=True) == (101, 5, 103, 5)
    assert [int(x) for x in books.levels(42, "B", implied=True)["price"]] == [101, 99]
    u = R.view(ticks, "mbp_update")
    assert list(u["implied"]) == [0, 1, 1, 0, 1]
    assert u["flags"][-1] & 0x80  # F_LAST: EndOfEvent


def test_mbp_actions_delete_thru_from_overlay():
    s = load_schemas(SCHEMA_DIR)[9]
    rpt = iter(range(1, 100))

    def e(px, lvl, action):
        return {"MDEntryPx": px, "MDEntrySize": px, "SecurityID": 7, "RptSeq": next(rpt), "NumberOfOrders": 1,
                "MDPriceLevel": lvl, "MDUpdateAction": action, "MDEntryType": b"0"}

    m = encode_message(s, "MDIncrementalRefreshBook46", {"TransactTime": 1},
                       {"NoMDEntries": [e(10, 1, 0), e(9, 2, 0), e(8, 3, 0), e(7, 4, 0), e(95, 1, 0)]})
    books = MbpBookSet(depth=4)
    dec = Mdp3Decoder()
    books.apply(dec.decode_packets([encode_packet(1, 0, [m])]))
    assert [int(x) for x in books.levels(7, "B")["price"]] == [95, 10, 9, 8]  # 7 fell off at depth 4
    m = encode_message(s, "MDIncrementalRefreshBook46", {"TransactTime": 2},
                       {"NoMDEntries": [e(0, 2, 4), e(55, 2, 5)]})  # DeleteFrom level 2, Overlay level 2
    books.apply(dec.decode_packets([encode_packet(2, 0, [m])]))
    assert [int(x) for x in books.levels(7, "B")["price"]] == [9, 55]
    m = encode_message(s, "MDIncrementalRefreshBook46", {"TransactTime": 3}, {"NoMDEntries": [e(0, 1, 3)]})
    books.apply(dec.decode_packets([encode_packet(3, 0, [m])]))
    assert len(books.levels(7, "B")) == 0


def test_channel_reset_clears_books_and_rptseq():
    s = load_schemas(SCHEMA_DIR)[9]
    book = lambda rpt: encode_message(s, "MDIncrementalRefreshBook46", {"TransactTime": 1}, {"NoMDEntries": [
        {"MDEntryPx": 5, "MDEntrySize": 1, "SecurityID": 3, "RptSeq": rpt, "NumberOfOrders": 1, "MDPriceLevel": 1,
         "MDUpdateAction": 0, "MDEntryType": b"1"}]})
    reset = encode_message(s, "ChannelReset4", {"TransactTime": 9}, {"NoMDEntries": [{"ApplID": 310}]})
    dec = Mdp3Decoder()
    books = MbpBookSet()
    ticks = dec.decode_packets([encode_packet(1, 0, [book(50)]), encode_packet(2, 0, [reset]),
                                encode_packet(3, 0, [book(1)])])
    books.apply(ticks[:2])
    assert len(books.levels(3, "A")) == 0
    c = dec.counters()
    assert c["channel_resets"] == 1 and c["rptseq_gaps"] == 0 and c["rptseq_duplicate"] == 0
    assert list(_gaps(ticks)["kind"]) == [GAP_RESET]


def test_replayed_trade_is_dropped_with_its_fills():
    s = load_schemas(SCHEMA_DIR)[9]
    m = encode_message(s, "MDIncrementalRefreshTradeSummary48", {"TransactTime": 1, "MatchEventIndicator": 1}, {
        "NoMDEntries": [{"MDEntryPx": 10, "MDEntrySize": 2, "SecurityID": 5, "RptSeq": 1, "NumberOfOrders": 2,
                         "AggressorSide": 1, "MDUpdateAction": 0, "MDTradeEntryID": 77},
                        {"MDEntryPx": 11, "MDEntrySize": 1, "SecurityID": 6, "RptSeq": 1, "NumberOfOrders": 1,
                         "AggressorSide": 1, "MDUpdateAction": 0, "MDTradeEntryID": 78}],
        "NoOrderIDEntries": [{"OrderID": 1, "LastQty": 2}, {"OrderID": 2, "LastQty": 2}, {"OrderID": 3, "LastQty": 1}]})
    m2 = encode_message(s, "MDIncrementalRefreshTradeSummary48", {"TransactTime": 2, "MatchEventIndicator": 1}, {
        "NoMDEntries": [{"MDEntryPx": 10, "MDEntrySize": 2, "SecurityID": 5, "RptSeq": 1, "NumberOfOrders": 2,
                         "AggressorSide": 1, "MDUpdateAction": 0, "MDTradeEntryID": 77},
                        {"MDEntryPx": 12, "MDEntrySize": 1, "SecurityID": 6, "RptSeq": 2, "NumberOfOrders": 1,
                         "AggressorSide": 2, "MDUpdateAction": 0, "MDTradeEntryID": 79}],
        "NoOrderIDEntries": [{"OrderID": 1, "LastQty": 2}, {"OrderID": 2, "LastQty": 2}, {"OrderID": 4, "LastQty": 1}]})
    dec = Mdp3Decoder()
    ticks = dec.decode_packets([encode_packet(1, 0, [m]), encode_packet(2, 0, [m2])])
    tr = R.view(ticks, "trade")
    assert dec.counters()["rptseq_duplicate"] == 1
    # packet 1: trades 77, 78 and fills 1, 2 (of 77), 3 (of 78); packet 2: only trade 79 and its fill 4
    assert [(bytes(a), int(o), int(mn)) for a, o, mn in zip(tr["action"], tr["order_id"], tr["match_number"])] == [
        (b"T", 0, 77), (b"T", 0, 78), (b"F", 1, 77), (b"F", 2, 77), (b"F", 3, 78), (b"T", 0, 79), (b"F", 4, 79)]
    assert list(tr["side"]) == [b"B", b"B", b"N", b"N", b"N", b"A", b"N"]
