"""feedhandler.books.mbo.BookSet on deep books (hundreds to thousands of price levels a side) against the
pure-Python reference (tests/reference_book.py).

The random flows of test_book.py stay within ten ticks of the top, where a side never has more than
a handful of levels. Here orders are added anywhere up to 1500 ticks from the top, and deletes,
executions, partial cancels, replaces and modifies hit orders at every depth; bands of levels are
swept empty (every order in them deleted) and refilled; a book is cleared and rebuilt. That drives
the price ladder (csrc/book.c) through block splits, merges, emptied blocks and a changing top
block on both sides. The full depth, every level's FIFO queue, the BBO events, the counters and the
enriched records must equal the reference's.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from feedhandler import records as R

book_mod = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo is not built (setup.py build_ext)")
BookSet = book_mod.BookSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_book import ReferenceBookSet  # noqa: E402
from test_book import A, C, F, UNDEF, compare_books, mbo_batch  # noqa: E402

TICK = 100


def deep_flow(seed: int, n_events: int, insts=(1, 2, 70000)):
    """A consistent order flow over deep books, as MBO rows (see the module docstring)."""
    rnd = random.Random(seed)
    live: dict[int, list] = {}          # order_id -> [inst, side, price, size]
    mid = {i: rnd.randrange(3000, 5000) * TICK for i in insts}
    next_id = 1
    rows: list[dict] = []
    ts = 0
    cleared = False

    def add(inst, side, px, size):
        nonlocal next_id
        rows.append(A(next_id, side, px, size, inst=inst, ts_event=ts, ts_recv=ts + 3))
        live[next_id] = [inst, side, px, size]
        next_id += 1

    def price(inst, side, far):
        # a third at or next to the top, the rest anywhere up to `far` ticks away
        d = rnd.randrange(3) if rnd.random() < 0.33 else rnd.randrange(far)
        return mid[inst] - TICK - d * TICK if side == "B" else mid[inst] + d * TICK

    while len(rows) < n_events:
        ts += rnd.randrange(1, 500)
        op = rnd.random()
        inst = rnd.choice(insts)
        if op < 0.52 or len(live) < 50:
            side = rnd.choice("BA")
            add(inst, side, price(inst, side, 1500), rnd.choice([1, 100, 100, 200, 300, 1000]))
            continue
        if op < 0.47:
            # sweep a band of levels of one instrument and side empty, then refill part of it
            side = rnd.choice("BA")
            lo = rnd.randrange(0, 1200)
            band = [(mid[inst] - TICK - d * TICK) if side == "B" else (mid[inst] + d * TICK)
                    for d in (lo, lo + 250)]
            pmin, pmax = min(band), max(band)
            for oid in [k for k, v in live.items() if v[0] == inst and v[1] == side and pmin <= v[2] <= pmax]:
                rows.append(C(oid, whole=True, inst=inst, ts_event=ts, ts_recv=ts))
                del live[oid]
            for _ in range(rnd.randrange(0, 60)):
                add(inst, side, rnd.randrange(pmin // TICK, pmax // TICK + 1) * TICK, 100)
            continue
        if not cleared and len(rows) > n_events // 2:
            cleared = True
            rows.append(dict(action="R", instrument_id=inst, ts_event=ts, ts_recv=ts))   # clear, then rebuild
            for k in [k for k, v in live.items() if v[0] == inst]:
                del live[k]
            for _ in range(200):
                side = rnd.choice("BA")
                add(inst, side, price(inst, side, 800), 100)
            continue
        oid = rnd.choice(list(live))
        o = live[oid]
        if op < 0.55:      # execution: the best-priced oldest order of a side, or any order
            if rnd.random() < 0.5:
                same = [(k, v) for k, v in live.items() if v[0] == o[0] and v[1] == o[1]]
                best = max(v[2] for _, v in same) if o[1] == "B" else min(v[2] for _, v in same)
                oid, o = next((k, v) for k, v in same if v[2] == best)
            size = rnd.choice([1, o[3] // 2 or 1, o[3]])
            rows.append(F(oid, size, price=rnd.choice([UNDEF, o[2]]), inst=o[0], ts_event=ts, ts_recv=ts))
            o[3] -= size
            if o[3] <= 0:
                del live[oid]
        elif op < 0.60:    # partial cancel
            size = rnd.randrange(1, o[3] + 1)
            rows.append(C(oid, size, inst=o[0], ts_event=ts, ts_recv=ts))
            o[3] -= size
            if o[3] <= 0:
                del live[oid]
        elif op < 0.85:    # delete, at any depth
            rows.append(C(oid, whole=True, inst=o[0], ts_event=ts, ts_recv=ts))
            del live[oid]
        elif op < 0.97:    # replace (ITCH U): a new order up to 400 ticks away, same side
            rows.append(C(oid, whole=True, inst=o[0], ts_event=ts, ts_recv=ts))
            del live[oid]
            px = max(TICK, o[2] + rnd.randrange(-400, 401) * TICK)
            size = rnd.choice([o[3], 100, 300])
            rows.append(A(next_id, "N", px, size, inst=o[0], ts_event=ts, ts_recv=ts))
            live[next_id] = [o[0], o[1], px, size]
            next_id += 1
        else:              # modify: a new price anywhere (loses priority) or a smaller size
            px = max(TICK, o[2] + rnd.randrange(-1000, 1001) * TICK) if rnd.random() < 0.7 else o[2]
            size = o[3] + 10 if px != o[2] else max(o[3] - 1, 0)
            rows.append(dict(action="M", order_id=oid, price=px, size=size, instrument_id=o[0], ts_event=ts,
                             ts_recv=ts))
            if size == 0:
                del live[oid]
            else:
                o[2], o[3] = px, size
    return rows


@pytest.mark.parametrize("seed", [1, 2])
def test_deep_books_match_reference(seed):
    rows = deep_flow(seed, 40_000)
    ticks = mbo_batch(rows)
    mine, theirs = ticks.copy(), ticks.copy()
    b = BookSet(max_instruments=4096, track_bbo_events=True, depth_hint=4)
    ref = ReferenceBookSet(track_bbo_events=True)
    insts = sorted(set(ticks["instrument_id"].tolist()))
    rnd = random.Random(seed)
    i, step, most = 0, 0, 0
    while i < len(ticks):
        k = rnd.choice([1, 7, 64, 300, 1000])
        b.apply(mine[i: i + k])
        ref.apply(theirs[i: i + k])
        i += k
        step += 1
        compare_books(b, ref, insts)
        assert b.bbo_events().tolist() == ref.bbo_events()
        if step % 15 == 0:
            b.check()
            compare_books(b, ref, insts, full=True)
        for inst in insts:
            bids, asks = b.depth(inst, 10**6)
            most = max(most, len(bids), len(asks))
    b.check()
    compare_books(b, ref, insts, full=True)
    assert mine.tobytes() == theirs.tobytes()   # enriched records are identical
    c = b.counters()
    assert c["unknown_order"] == 0 and c["size_underflow"] == 0 and c["no_memory"] == 0
    for k in ("adds", "replaces", "fills", "cancels", "deletes", "modifies", "clears"):
        assert c[k] > 0, k
    assert most > 500, f"the books were not deep: {most} levels at most on a side"


def test_deep_side_emptied_and_refilled_from_the_far_end():
    """Every level of a 3000-level side removed from the far end first (then from the top), the
    side refilled in reverse price order: each step leaves a consistent ladder with the right top."""
    b = BookSet(max_instruments=16)
    ref = ReferenceBookSet()
    n = 3000
    rows = [A(1 + j, "B", (10_000 + j) * TICK, 1 + j % 7) for j in range(n)]
    rows += [A(10_000 + j, "A", (20_000 + j) * TICK, 5) for j in range(n)]
    for part in (rows[:n], rows[n:]):
        t1, t2 = mbo_batch(part), mbo_batch(part)
        b.apply(t1)
        ref.apply(t2)
    b.check()
    assert b.bbo(1)[0] == (10_000 + n - 1) * TICK and b.bbo(1)[3] == 20_000 * TICK
    # bids: delete the deepest half first, one at a time; asks: delete from the top down
    order = [C(1 + j, whole=True) for j in range(n // 2)] + [C(1 + j, whole=True) for j in range(n - 1, n // 2 - 1, -1)]
    order += [C(10_000 + j, whole=True) for j in range(n)]
    for j in range(0, len(order), 97):
        part = order[j: j + 97]
        b.apply(mbo_batch(part))
        ref.apply(mbo_batch(part))
        b.check()
        assert b.bbo(1) == ref.bbo(1)
    assert b.live_orders == 0 and all(len(x) == 0 for x in b.depth(1, 10))
    assert b.bbo(1) == (R.UNDEF_PRICE, 0, 0, R.UNDEF_PRICE, 0, 0)
    refill = [A(50_000 + j, "A", (30_000 - j) * TICK, 2) for j in range(n)]   # each one a new best ask
    b.apply(mbo_batch(refill))
    ref.apply(mbo_batch(refill))
    b.check()
    compare_books(b, ref, [1], full=True)
