"""feedhandler.books.mbo.BookSet: every action, every reject reason, and differential runs against the
pure-Python reference in tests/reference_book.py (random order flows and hypothesis sequences)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records as R

book_mod = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo is not built (setup.py build_ext)")
BookSet = book_mod.BookSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_book import COUNTERS, ReferenceBookSet  # noqa: E402

UNDEF = R.UNDEF_PRICE
WHOLE = 0x02
MAYBE_BAD = 0x04
MBO = R.RTYPE["mbo"]


def mbo_batch(rows):
    """rows: dicts with instrument_id, action, side, order_id, price, size, flags, ts_event, ts_recv."""
    ticks = R.empty(len(rows))
    m = R.view(ticks, "mbo")
    m["length"] = R.DBN_LENGTH["mbo"] // 4
    m["rtype"] = MBO
    for i, r in enumerate(rows):
        m[i]["instrument_id"] = r.get("instrument_id", 1)
        m[i]["action"] = r["action"].encode()
        m[i]["side"] = r.get("side", "N").encode()
        m[i]["order_id"] = r.get("order_id", 0)
        m[i]["price"] = r.get("price", UNDEF)
        m[i]["size"] = r.get("size", 0)
        m[i]["flags"] = r.get("flags", 0)
        m[i]["ts_event"] = r.get("ts_event", 1000 + i)
        m[i]["ts_recv"] = r.get("ts_recv", 2000 + i)
    return ticks


def concat(parts):
    """np.concatenate would repack the overlapping TICK_DTYPE fields; copy the raw slots instead."""
    out = R.empty(sum(len(p) for p in parts))
    i = 0
    for p in parts:
        out["raw"][i: i + len(p)] = p["raw"]
        i += len(p)
    return out


def A(oid, side, price, size, inst=1, **kw):
    return dict(action="A", side=side, order_id=oid, price=price, size=size, instrument_id=inst, **kw)


def F(oid, size, price=UNDEF, inst=1, **kw):
    return dict(action="F", order_id=oid, size=size, price=price, instrument_id=inst, **kw)


def C(oid, size=0, inst=1, whole=False, **kw):
    return dict(action="C", order_id=oid, size=size, flags=WHOLE if whole else 0, instrument_id=inst, **kw)


def apply(b, rows):
    t = mbo_batch(rows)
    b.apply(t)
    b.check()
    return R.view(t, "mbo")


def nonzero(counters):
    return {k: v for k, v in counters.items() if v and k not in ("records", "bbo_events")}


# ---- one test per action ---------------------------------------------------------------------------

def test_add_fifo_bbo_depth():
    b = BookSet()
    apply(b, [A(1, "B", 100, 10), A(2, "B", 100, 20), A(3, "B", 99, 5), A(4, "A", 101, 7), A(5, "A", 103, 1)])
    assert b.bbo(1) == (100, 30, 2, 101, 7, 1)
    assert b.live_orders == 5 and b.instrument_count == 1
    bids, asks = b.depth(1)
    assert bids.tolist() == [(100, 30, 2), (99, 5, 1)]
    assert asks.tolist() == [(101, 7, 1), (103, 1, 1)]
    assert b.depth(1, n=1)[0].tolist() == [(100, 30, 2)]
    assert b.orders(1, "B", 100) == [(1, 10), (2, 20)]
    assert b.orders(1, "A", 100) == []
    assert b.queue_position(1) == (0, 0) and b.queue_position(2) == (10, 1)
    assert b.order(3) == (1, "B", 99, 5)
    with pytest.raises(KeyError):
        b.queue_position(42)
    assert b.bbo(2) == (UNDEF, 0, 0, UNDEF, 0, 0)
    assert nonzero(b.counters()) == {"adds": 5}


def test_partial_and_full_fill_enrich():
    b = BookSet()
    apply(b, [A(1, "B", 100, 10), A(2, "B", 100, 20)])
    m = apply(b, [F(1, 4)])
    assert m["price"][0] == 100 and m["side"][0] == b"B"
    assert b.orders(1, "B", 100) == [(1, 6), (2, 20)]
    assert b.queue_position(2) == (6, 1)
    m = apply(b, [F(1, 6, price=100)])
    assert m["side"][0] == b"B"
    assert b.orders(1, "B", 100) == [(2, 20)] and b.live_orders == 1
    assert b.bbo(1)[:3] == (100, 20, 1)
    assert nonzero(b.counters()) == {"adds": 2, "fills": 2}


def test_fill_keeps_given_price():
    b = BookSet()
    apply(b, [A(1, "A", 100, 10)])
    m = apply(b, [F(1, 3, price=99)])   # a cross at another price: the record's price stays
    assert m["price"][0] == 99 and m["side"][0] == b"A"


def test_partial_cancel_and_delete():
    b = BookSet()
    apply(b, [A(1, "A", 101, 10), A(2, "A", 101, 5)])
    m = apply(b, [C(1, 3)])
    assert (m["price"][0], m["side"][0], m["size"][0]) == (101, b"A", 3)
    assert b.orders(1, "A", 101) == [(1, 7), (2, 5)]
    m = apply(b, [C(1, whole=True)])
    assert (m["price"][0], m["side"][0], m["size"][0]) == (101, b"A", 7)
    assert b.orders(1, "A", 101) == [(2, 5)]
    assert nonzero(b.counters()) == {"adds": 2, "cancels": 1, "deletes": 1}


def test_replace_keeps_side_loses_priority():
    b = BookSet()
    apply(b, [A(1, "A", 101, 10), A(2, "A", 101, 5)])
    m = apply(b, [C(1, whole=True), A(9, "N", 101, 12)])
    assert m["side"].tolist() == [b"A", b"A"] and m["size"][0] == 10
    assert b.orders(1, "A", 101) == [(2, 5), (9, 12)]
    assert b.queue_position(9) == (5, 1)
    assert b.counters()["replaces"] == 1
    # the replace pair split over two batches still works
    apply(b, [C(2, whole=True)])
    apply(b, [A(10, "N", 102, 1)])
    assert b.order(10) == (1, "A", 102, 1)
    # a side-N add after anything but a delete is rejected
    apply(b, [A(11, "B", 90, 1), A(12, "N", 90, 1)])
    assert b.counters()["replace_without_delete"] == 1
    # ... and after a delete of another instrument
    apply(b, [A(20, "B", 50, 1, inst=2), C(20, whole=True, inst=2), A(21, "N", 50, 1, inst=1)])
    assert b.counters()["replace_without_delete"] == 2


def test_modify():
    b = BookSet()
    apply(b, [A(1, "B", 100, 10), A(2, "B", 100, 5)])
    apply(b, [dict(action="M", order_id=1, price=100, size=8, instrument_id=1)])   # size down: keeps place
    assert b.orders(1, "B", 100) == [(1, 8), (2, 5)]
    apply(b, [dict(action="M", order_id=1, price=100, size=9, instrument_id=1)])   # size up: to the back
    assert b.orders(1, "B", 100) == [(2, 5), (1, 9)]
    m = apply(b, [dict(action="M", order_id=2, price=101, size=5, instrument_id=1)])
    assert m["side"][0] == b"B" and b.bbo(1)[:3] == (101, 5, 1)
    apply(b, [dict(action="M", order_id=2, price=101, size=0, instrument_id=1)])
    assert b.live_orders == 1 and b.counters()["modifies"] == 4


def test_clear_trade_none():
    b = BookSet()
    apply(b, [A(1, "B", 100, 10), A(2, "A", 101, 10), A(3, "B", 50, 1, inst=2)])
    apply(b, [dict(action="T", side="B", price=100, size=1), dict(action="N")])
    assert b.live_orders == 3
    apply(b, [dict(action="R", instrument_id=1)])
    assert b.live_orders == 1 and b.bbo(1) == (UNDEF, 0, 0, UNDEF, 0, 0) and b.bbo(2)[0] == 50
    with pytest.raises(KeyError):
        b.order(1)
    apply(b, [A(1, "B", 100, 10)])   # the id is free again
    assert nonzero(b.counters()) == {"adds": 4, "trades": 1, "nones": 1, "clears": 1}


def test_every_reject_is_counted():
    b = BookSet()
    apply(b, [A(1, "B", 100, 10), A(2, "A", 101, 10)])
    before = b.bbo(1)
    apply(b, [
        F(99, 1),                                 # unknown_order
        C(99, whole=True),                        # unknown_order
        dict(action="M", order_id=99, price=1, size=1, instrument_id=1),   # unknown_order
        A(1, "B", 100, 5),                        # duplicate_add
        A(3, "B", 100, 0),                        # zero_size_add
        A(4, "B", UNDEF, 5),                      # bad_price
        A(5, "X", 100, 5),                        # bad_side
        A(6, "N", 100, 5),                        # replace_without_delete
        F(1, 1, inst=7),                          # instrument_mismatch
        dict(action="Z", order_id=1, instrument_id=1),  # bad_action
    ])
    assert b.bbo(1) == before and b.live_orders == 2
    c = nonzero(b.counters())
    assert c == {"adds": 2, "unknown_order": 3, "duplicate_add": 1, "zero_size_add": 1, "bad_price": 1,
                 "bad_side": 1, "replace_without_delete": 1, "instrument_mismatch": 1, "bad_action": 1}
    apply(b, [F(1, 15), C(2, 11)])                # size_underflow x2: removed
    assert b.live_orders == 0 and b.counters()["size_underflow"] == 2
    apply(b, [A(7, "B", 105, 1), A(8, "A", 104, 1)])   # crossed: kept and counted
    assert b.counters()["crossed"] == 1 and b.live_orders == 2


def test_stale_marks():
    b = BookSet()
    apply(b, [A(1, "B", 100, 10, inst=1), A(2, "B", 100, 10, inst=2)])
    assert not b.stale(1)
    apply(b, [dict(action="N", instrument_id=2, flags=MAYBE_BAD)])
    assert b.stale(2) and not b.stale(1)
    gap = R.empty(1)
    g = R.view(gap, "gap")
    g["rtype"] = R.RTYPE["gap"]
    g["kind"] = 1   # opened: not a loss
    b.apply(gap)
    assert not b.stale(1)
    g["kind"] = 3   # lost
    b.apply(gap)
    assert b.stale(1) and b.stale(2) and b.stale(3)   # books made later are stale too
    apply(b, [dict(action="R", instrument_id=1)])
    assert not b.stale(1) and b.stale(2)
    assert b.counters()["gaps_lost"] == 1 and b.counters()["ignored"] == 1
    summary = b.bbo_all()
    assert dict(zip(summary["instrument_id"].tolist(), summary["stale"].tolist())) == {1: False, 2: True}


def test_bbo_all_and_events():
    b = BookSet(track_bbo_events=True)
    apply(b, [A(1, "B", 100, 10, ts_event=5, ts_recv=6), A(2, "B", 99, 10), A(3, "A", 105, 2, inst=4)])
    ev = b.bbo_events()
    assert ev.tolist() == [(1, 5, 6, 100, 10, UNDEF, 0), (4, 1002, 2002, UNDEF, 0, 105, 2)]
    assert len(b.bbo_events()) == 0   # drained
    # a replace at the top reports once, after the add half
    apply(b, [C(1, whole=True), A(5, "N", 101, 3)])
    assert b.bbo_events()[["bid_px", "bid_sz"]].tolist() == [(101, 3)]
    apply(b, [C(5, whole=True)])
    assert b.bbo_events()[["bid_px", "bid_sz"]].tolist() == [(99, 10)]
    s = b.bbo_all()
    assert s.dtype.names == ("instrument_id", "bid_px", "bid_sz", "ask_px", "ask_sz", "live_orders", "stale")
    assert s.tolist() == [(1, 99, 10, UNDEF, 0, 1, False), (4, UNDEF, 0, 105, 2, 1, False)]


def test_apply_input_checks():
    b = BookSet()
    with pytest.raises(ValueError):
        b.apply(np.zeros(4, dtype=np.uint64))                 # 8-byte items
    t = mbo_batch([A(1, "B", 100, 1)])
    t.flags.writeable = False
    with pytest.raises((BufferError, ValueError)):
        b.apply(t)
    raw = np.zeros(64 * 2 + 4, dtype=np.uint8)[4:].view(R.TICK_DTYPE)   # misaligned
    with pytest.raises(ValueError):
        b.apply(raw)
    assert b.apply(R.empty(0)) == 0
    # any 64-byte dtype is accepted: the mbo view itself
    assert b.apply(R.view(mbo_batch([A(1, "B", 100, 1)]), "mbo")) == 1 and b.live_orders == 1


def test_large_instrument_ids_and_growth():
    b = BookSet(max_instruments=16, depth_hint=1)
    rows = []
    for i in range(3000):
        rows.append(A(i + 1, "B" if i % 2 else "A", 1000 + (i % 97) * (1 if i % 2 else -1) + (0 if i % 2 else 2000),
                      1 + i % 7, inst=(i % 5) * 1_000_003 + 4_000_000_000 % (i % 3 + 2)))
    ref = ReferenceBookSet()
    t = mbo_batch(rows)
    t2 = t.copy()
    b.apply(t)
    ref.apply(t2)
    b.check()
    assert b.live_orders == ref.live_orders == 3000
    for inst in ref.books:
        assert b.bbo(inst) == ref.bbo(inst)
        bids, asks = b.depth(inst, 1000)
        rb, ra = ref.depth(inst, 1000)
        assert bids.tolist() == rb and asks.tolist() == ra


# ---- differential: random consistent flows with injected bad events --------------------------------

def random_flow(seed, n_events, n_inst=6):
    """A consistent random order flow (with replaces, fills, deletes, modifies, clears) plus bad
    events, as MBO rows; also gap and trade records as separate markers."""
    rnd = random.Random(seed)
    live = {}   # order_id -> [inst, side, price, size]
    insts = [1, 2, 3, 70000, 5, 123456789][:n_inst]
    mid = {i: rnd.randrange(1000, 2000) * 100 for i in insts}
    next_id = 1
    rows = []
    ts = 0
    while len(rows) < n_events:
        ts += rnd.randrange(1, 1000)
        op = rnd.random()
        inst = rnd.choice(insts)
        if op < 0.40 or not live:
            side = rnd.choice("BA")
            off = rnd.choice([0, 0, 1, 1, 2, 3, 5, 10]) * 100
            px = mid[inst] - off - 100 if side == "B" else mid[inst] + off
            if rnd.random() < 0.01:
                px = mid[inst] + 500 if side == "B" else mid[inst] - 600   # crosses
            size = rnd.choice([1, 100, 100, 200, 500, 37])
            rows.append(A(next_id, side, px, size, inst=inst, ts_event=ts, ts_recv=ts + 7))
            live[next_id] = [inst, side, px, size]
            next_id += 1
            continue
        oid = rnd.choice(list(live))
        o = live[oid]
        if op < 0.55:   # fill: partial, full or over
            size = rnd.choice([1, o[3] // 2 or 1, o[3], o[3] + 1 if rnd.random() < 0.05 else o[3]])
            rows.append(F(oid, size, price=rnd.choice([UNDEF, o[2]]), inst=o[0], ts_event=ts, ts_recv=ts))
            o[3] -= size
            if o[3] <= 0:
                del live[oid]
        elif op < 0.65:  # partial cancel
            size = rnd.randrange(1, o[3] + 2)
            rows.append(C(oid, size, inst=o[0], ts_event=ts, ts_recv=ts))
            o[3] -= size
            if o[3] <= 0:
                del live[oid]
        elif op < 0.78:  # delete
            rows.append(C(oid, whole=True, inst=o[0], ts_event=ts, ts_recv=ts))
            del live[oid]
        elif op < 0.90:  # replace (ITCH U)
            rows.append(C(oid, whole=True, inst=o[0], ts_event=ts, ts_recv=ts))
            del live[oid]
            px = o[2] + rnd.choice([-100, 0, 100])
            size = rnd.choice([o[3], 100, 300])
            rows.append(A(next_id, "N", px, size, inst=o[0], ts_event=ts, ts_recv=ts))
            live[next_id] = [o[0], o[1], px, size]
            next_id += 1
        elif op < 0.92:  # modify
            px = o[2] + rnd.choice([0, 0, 100])
            size = rnd.choice([max(o[3] - 1, 0), o[3] + 5])
            rows.append(dict(action="M", order_id=oid, price=px, size=size, instrument_id=o[0], ts_event=ts, ts_recv=ts))
            if size == 0:
                del live[oid]
            else:
                o[2], o[3] = px, size
        elif op < 0.925:  # clear
            rows.append(dict(action="R", instrument_id=inst, ts_event=ts, ts_recv=ts))
            for k in [k for k, v in live.items() if v[0] == inst]:
                del live[k]
        elif op < 0.95:   # trades, nones, stale flags
            rows.append(dict(action=rnd.choice("TN"), instrument_id=inst, flags=MAYBE_BAD if rnd.random() < 0.1 else 0,
                             ts_event=ts, ts_recv=ts))
        else:             # injected bad events (none changes a book)
            bad = rnd.randrange(7)
            if bad == 0:
                rows.append(F(10**12 + rnd.randrange(100), 5, inst=inst))
            elif bad == 1:
                rows.append(A(oid, o[1], o[2], 5, inst=o[0]))
            elif bad == 2:
                rows.append(A(10**13 + next_id, "B", 100, 0, inst=inst))
            elif bad == 3:
                rows.append(A(10**13 + next_id, "N", 100, 5, inst=inst))
            elif bad == 4:
                rows.append(C(oid, 1, inst=o[0] + 1))
            elif bad == 5:
                rows.append(A(10**13 + next_id, "?", 100, 5, inst=inst))
            else:
                rows.append(dict(action="Q", order_id=oid, instrument_id=inst))
    return rows


def compare_books(b, ref, insts, full=False):
    assert b.live_orders == ref.live_orders
    assert b.counters() == ref.c
    for inst in insts:
        assert b.bbo(inst) == ref.bbo(inst), inst
        assert b.stale(inst) == ref.stale(inst), inst
    if full:
        s = b.bbo_all()
        assert sorted(s["instrument_id"].tolist()) == sorted(ref.books)
        for row in s.tolist():
            inst = row[0]
            bp, bs, _, ap, as_, _ = ref.bbo(inst)
            assert row[1:] == (bp, bs, ap, as_, ref.live_in(inst), ref.stale(inst))
            bids, asks = b.depth(inst, 10**6)
            rb, ra = ref.depth(inst, 10**6)
            assert bids.tolist() == rb and asks.tolist() == ra
            for side, levels in (("B", rb), ("A", ra)):
                for px, _, _ in levels:
                    assert b.orders(inst, side, px) == ref.level_orders(inst, side, px)
        for oid in list(ref.orders)[:: max(1, len(ref.orders) // 200)]:
            assert b.queue_position(oid) == ref.queue_position(oid)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_random_flow(seed):
    rows = random_flow(seed, 6000)
    ticks = mbo_batch(rows)
    rnd = random.Random(seed)
    # sprinkle in trade records and a lost gap
    extra = R.empty(2)
    R.view(extra, "trade")[0]["rtype"] = R.RTYPE["trade"]
    R.view(extra, "trade")[0]["instrument_id"] = 2
    R.view(extra, "trade")[0]["flags"] = MAYBE_BAD
    g = R.view(extra, "gap")
    g[1]["rtype"] = R.RTYPE["gap"]
    g[1]["kind"] = 3
    pos = sorted(rnd.sample(range(len(ticks)), 2))
    ticks = concat([ticks[: pos[0]], extra[:1], ticks[pos[0]: pos[1]], extra[1:], ticks[pos[1]:]])
    mine, theirs = ticks.copy(), ticks.copy()
    b = BookSet(max_instruments=4096, track_bbo_events=True)
    ref = ReferenceBookSet(track_bbo_events=True)
    insts = sorted(set(ticks["instrument_id"].tolist()))
    i = 0
    while i < len(ticks):
        k = rnd.choice([1, 2, 3, 17, 64, 250])
        b.apply(mine[i: i + k])
        ref.apply(theirs[i: i + k])
        i += k
        compare_books(b, ref, insts)
        assert b.bbo_events().tolist() == ref.bbo_events()
    b.check()
    compare_books(b, ref, insts, full=True)
    assert mine.tobytes() == theirs.tobytes()   # enriched records are identical
    c = b.counters()
    # the flow exercised every path
    for k in ("adds", "replaces", "fills", "cancels", "deletes", "modifies", "clears", "unknown_order",
              "duplicate_add", "size_underflow", "zero_size_add", "bad_side", "replace_without_delete",
              "instrument_mismatch", "crossed", "bad_action", "gaps_lost", "maybe_bad_book", "trade_records"):
        assert c[k] > 0, k


def test_enrichment_of_itch_style_flow():
    """Deletes carry no size/price/side (ITCH D), fills no price (ITCH E): the book fills them in."""
    rows = random_flow(11, 3000)
    ticks = mbo_batch(rows)
    b = BookSet()
    b.apply(ticks)
    m = R.view(ticks, "mbo")
    ok = (m["action"] == b"C") & (m["flags"] & WHOLE != 0)
    assert ok.sum() > 100
    # whole-order cancels of live orders got their size, price and side
    known = ok & (m["side"] != b"N")
    assert known.sum() > 0.9 * ok.sum()
    assert (m["size"][known] > 0).all() and (m["price"][known] != UNDEF).all()
    fills = (m["action"] == b"F") & (m["side"] != b"N")
    assert (m["price"][fills] != UNDEF).all()


# ---- hypothesis: any record sequence never crashes and matches the reference ------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def record_rows(draw):
    # Small domains, mostly valid values: events must hit live orders, shared levels and both sides
    # often, while every kind of bad value still shows up.
    return dict(
        rtype=draw(st.sampled_from([MBO] * 20 + [R.RTYPE["trade"], R.RTYPE["gap"], 0xE1])),
        action=draw(st.sampled_from("AAAAAFFFCCCCMMRTN\x00Z")),
        side=draw(st.sampled_from("BABABAN\x00?")),
        order_id=draw(st.sampled_from([1, 2, 3, 4, 5, 6] * 3 + [0, 2**64 - 1, 2**32 + 1])),
        price=draw(st.sampled_from([1, 2, 3, 4, 5] * 3 + [UNDEF, -1, 2**40])),
        size=draw(st.sampled_from([1, 2, 3, 5] * 2 + [0, 2**32 - 1])),
        flags=draw(st.sampled_from([0] * 4 + [WHOLE] * 2 + [MAYBE_BAD, 0xFF])),
        instrument_id=draw(st.sampled_from([1] * 6 + [2, 0, 2**32 - 1, 65536])),
        kind=draw(st.integers(0, 4)),
    )


def rows_to_ticks(rows):
    ticks = mbo_batch([{k: v for k, v in r.items() if k not in ("rtype", "kind")} for r in rows])
    ticks["rtype"] = [r["rtype"] for r in rows]
    g = R.view(ticks, "gap")
    for i, r in enumerate(rows):
        if r["rtype"] == R.RTYPE["gap"]:
            g[i]["kind"] = r["kind"]
    return ticks


@hypothesis.settings(max_examples=250, deadline=None)
@hypothesis.given(st.lists(record_rows(), min_size=15, max_size=100), st.lists(st.integers(1, 8), min_size=1, max_size=10),
                  st.booleans())
def test_hypothesis_matches_reference(rows, cuts, track):
    ticks = rows_to_ticks(rows)
    mine, theirs = ticks.copy(), ticks.copy()
    b = BookSet(max_instruments=2, track_bbo_events=track)
    ref = ReferenceBookSet(track_bbo_events=track)
    i = j = 0
    while i < len(ticks):
        k = cuts[j % len(cuts)]
        j += 1
        b.apply(mine[i: i + k])
        ref.apply(theirs[i: i + k])
        i += k
        b.check()
        compare_books(b, ref, [0, 1, 2, 2**32 - 1, 65536])
        assert b.bbo_events().tolist() == ref.bbo_events()
    compare_books(b, ref, [0, 1, 2, 2**32 - 1, 65536], full=True)
    assert mine.tobytes() == theirs.tobytes()
    # uncrossed, or the crossing was counted
    for inst in ref.books:
        bp, _, _, ap, _, _ = b.bbo(inst)
        if bp != UNDEF and ap != UNDEF and bp >= ap:
            assert b.counters()["crossed"] > 0


def test_counter_names_match_reference():
    assert list(BookSet().counters()) == COUNTERS


# ---- consume: drain a ring fed by another thread -----------------------------------------------------

def test_consume_ring_matches_apply():
    ring_mod = pytest.importorskip("feedhandler.ring", reason="feedhandler.ring is not built")
    import threading

    ticks = mbo_batch(random_flow(21, 5000))
    expected = ticks.copy()
    direct = BookSet(track_bbo_events=True)
    direct.apply(expected)

    ring = ring_mod.Ring(1024, overflow="block")

    def produce():
        rnd = random.Random(5)
        i = 0
        while i < len(ticks):
            k = rnd.choice([1, 7, 100, 600])
            ring.push(ticks[i: i + k])
            i += k
        ring.close()

    seen = []
    b = BookSet(track_bbo_events=True)
    th = threading.Thread(target=produce)
    th.start()
    try:
        n = b.consume(ring, max_batch=300, callback=lambda v: seen.append(v.copy()))
    finally:
        th.join()
    assert n == len(ticks)
    assert all(0 < len(v) <= 300 for v in seen)
    got = concat(seen)
    assert got.tobytes() == expected.tobytes()      # the callback saw the enriched records, in order
    assert b.counters() == direct.counters()
    assert b.bbo_events().tolist() == direct.bbo_events().tolist()
    b.check()
    # without a callback, and a callback that raises stops consume
    ring2 = ring_mod.Ring(64)
    ring2.push(mbo_batch([A(1, "B", 100, 1)]))
    ring2.close()
    b2 = BookSet()
    assert b2.consume(ring2) == 1 and b2.live_orders == 1
    ring3 = ring_mod.Ring(64)
    ring3.push(mbo_batch([A(1, "B", 100, 1), A(2, "B", 100, 1)]))
    ring3.close()

    def boom(v):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        BookSet().consume(ring3, callback=boom)
    assert ring3.finished   # the batch was released before the exception propagated


def test_one_owner_at_a_time():
    """While consume runs native code (or waits on the ring) another thread's calls raise instead of
    racing; the consume callback itself may query the books."""
    ring_mod = pytest.importorskip("feedhandler.ring", reason="feedhandler.ring is not built")
    import threading
    import time

    ring = ring_mod.Ring(64)
    b = BookSet()
    seen = []
    th = threading.Thread(target=lambda: seen.append(b.consume(ring, callback=lambda v: seen.append(b.live_orders))))
    th.start()
    try:
        deadline = time.monotonic() + 30
        while True:   # until the consumer thread is inside consume
            try:
                b.live_orders
            except RuntimeError:
                break
            assert time.monotonic() < deadline, "consume never started"
            time.sleep(0.001)
        with pytest.raises(RuntimeError):
            b.apply(mbo_batch([A(1, "B", 100, 1)]))
        ring.push(mbo_batch([A(1, "B", 100, 1), A(2, "A", 101, 1)]))
    finally:
        ring.close()   # also on failure, so that the consumer thread ends
        th.join()
    assert seen == [2, 2] and b.live_orders == 2


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.binary(min_size=64 * 40, max_size=64 * 40), st.integers(0, 2**32 - 1))
def test_hypothesis_random_bytes(blob, seed):
    """Arbitrary record bytes (most with the MBO rtype and ids folded into small ranges so that
    events meet): no crash, consistent structures, same result as the reference."""
    ticks = R.empty(40)
    ticks["raw"] = np.frombuffer(blob, dtype=np.uint8).reshape(40, 64)
    rnd = random.Random(seed)
    m = R.view(ticks, "mbo")
    for i in range(40):
        if rnd.random() < 0.8:
            m[i]["rtype"] = MBO
            m[i]["order_id"] %= 6
            m[i]["instrument_id"] %= 3
            m[i]["size"] %= 7
            if rnd.random() < 0.6:
                m[i]["action"] = rnd.choice([b"A", b"F", b"C", b"M", b"R"])
                m[i]["side"] = rnd.choice([b"B", b"A", b"N"])
                m[i]["price"] = rnd.choice([UNDEF, 1, 2, 3])
    mine, theirs = ticks.copy(), ticks.copy()
    b = BookSet(max_instruments=2, track_bbo_events=True)
    ref = ReferenceBookSet(track_bbo_events=True)
    b.apply(mine)
    ref.apply(theirs)
    b.check()
    compare_books(b, ref, [0, 1, 2], full=True)
    assert b.bbo_events().tolist() == ref.bbo_events()
    assert mine.tobytes() == theirs.tobytes()
