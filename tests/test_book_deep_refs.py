"""feedhandler.books.mbo.BookSet's order store against the pure-Python reference (tests/reference_book.py)
on ITCH-like order id streams.

Orders are kept by id in pages (ITCH order reference numbers are dense and grow over the day), with a
hash table as the fallback: ids of 2^32 and up, ids too sparse for pages, and the long-lived orders
that an old page moves out when only a few of its orders are left (csrc/book.c, "order nodes"). The
flows here drive every path: ids that grow with gaps, orders that mostly die young while some live
for the whole flow (so old pages are evicted and their survivors relinked in their queues), huge ids
on one instrument, replaces, executions and modifies of moved orders, and a clear of a book whose
orders are of both kinds. Books, queues, BBO events, counters and enriched records must equal the
reference's, and the store statistics must show that both kinds of order were used.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

book_mod = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo is not built (setup.py build_ext)")
BookSet = book_mod.BookSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_book import ReferenceBookSet  # noqa: E402
from test_book import A, C, F, UNDEF, compare_books, mbo_batch  # noqa: E402

TICK = 100
HUGE = 1 << 40


def itch_like_flow(seed: int, n_events: int, gap: int = 9):
    """ITCH-like MBO rows: ids grow (by 1..gap), ~10 % of orders live to the end, the rest die young;
    instrument 3 uses ids above 2^32."""
    rnd = random.Random(seed)
    live: dict[int, list] = {}          # order_id -> [inst, side, price, size]
    young: list[int] = []
    next_id, next_huge = 1, HUGE
    rows: list[dict] = []
    ts = 0
    cleared = False

    def new_id(inst):
        nonlocal next_id, next_huge
        if inst == 3:
            next_huge += rnd.randrange(1, 5000)
            return next_huge
        next_id += rnd.randrange(1, gap + 1)
        return next_id

    def add(inst, side, px, size, replace=False):
        oid = new_id(inst)
        rows.append(A(oid, "N" if replace else side, px, size, inst=inst, ts_event=ts, ts_recv=ts + 1))
        live[oid] = [inst, side, px, size]
        if rnd.random() > 0.1:           # the rest live long: they pin old pages
            young.append(oid)
        return oid

    def pick():
        # mostly a young order, sometimes any live order (long-lived ones, moved to the table)
        while young and rnd.random() < 0.9:
            oid = young.pop(rnd.randrange(max(0, len(young) - 200), len(young)))
            if oid in live:
                return oid
        return rnd.choice(list(live))

    while len(rows) < n_events:
        ts += rnd.randrange(1, 300)
        inst = rnd.choice((1, 2, 3, 4))
        op = rnd.random()
        if op < 0.5 or len(live) < 30:
            side = rnd.choice("BA")
            d = rnd.randrange(40)
            add(inst, side, (5000 - 1 - d) * TICK if side == "B" else (5000 + d) * TICK, rnd.choice([100, 200, 50]))
            continue
        if not cleared and len(rows) > n_events * 2 // 3:
            cleared = True                # a book holding young orders and orders moved to the table
            rows.append(dict(action="R", instrument_id=1, ts_event=ts, ts_recv=ts))
            for k in [k for k, v in live.items() if v[0] == 1]:
                del live[k]
            continue
        oid = pick()
        o = live[oid]
        if op < 0.62:                     # execution
            size = rnd.choice([1, o[3]])
            rows.append(F(oid, size, price=UNDEF, inst=o[0], ts_event=ts, ts_recv=ts))
            o[3] -= size
            if o[3] <= 0:
                del live[oid]
            else:
                young.append(oid)
        elif op < 0.85:                   # delete
            rows.append(C(oid, whole=True, inst=o[0], ts_event=ts, ts_recv=ts))
            del live[oid]
        elif op < 0.95:                   # replace (ITCH U): a new id, same side
            rows.append(C(oid, whole=True, inst=o[0], ts_event=ts, ts_recv=ts))
            del live[oid]
            px = max(TICK, o[2] + rnd.randrange(-3, 4) * TICK)
            add(o[0], o[1], px, rnd.choice([o[3], 100]), replace=True)
        else:                             # modify: new price (loses priority) or smaller size
            px = o[2] + TICK if rnd.random() < 0.5 else o[2]
            size = o[3] + 5 if px != o[2] else max(o[3] - 1, 0)
            rows.append(dict(action="M", order_id=oid, price=px, size=size, instrument_id=o[0], ts_event=ts,
                             ts_recv=ts))
            if size == 0:
                del live[oid]
            else:
                o[2], o[3] = px, size
                young.append(oid)
    return rows


def run_against_reference(rows, seed):
    ticks = mbo_batch(rows)
    mine, theirs = ticks.copy(), ticks.copy()
    b = BookSet(max_instruments=64, track_bbo_events=True)
    ref = ReferenceBookSet(track_bbo_events=True)
    insts = sorted(set(ticks["instrument_id"].tolist()))
    rnd = random.Random(seed)
    i, step, most_table = 0, 0, 0
    while i < len(ticks):
        k = rnd.choice([1, 50, 500, 4000])
        b.apply(mine[i: i + k])
        ref.apply(theirs[i: i + k])
        i += k
        step += 1
        compare_books(b, ref, insts)
        assert b.bbo_events().tolist() == ref.bbo_events()
        most_table = max(most_table, b.store_stats()["table_orders"])
        if step % 10 == 0:
            b.check()
            compare_books(b, ref, insts, full=True)
    b.check()
    compare_books(b, ref, insts, full=True)
    assert mine.tobytes() == theirs.tobytes()   # enriched records are identical
    c = b.counters()
    assert c["unknown_order"] == 0 and c["size_underflow"] == 0 and c["no_memory"] == 0
    return b, most_table


@pytest.mark.parametrize("seed", [1, 2])
def test_itch_like_ids_match_reference(seed):
    b, most_table = run_against_reference(itch_like_flow(seed, 60_000), seed)
    st = b.store_stats()
    assert st["ref_orders"] + st["table_orders"] == b.live_orders
    assert st["ref_orders"] > 0
    # the huge ids and the long-lived orders moved out of old pages: the table was used
    assert most_table > 100, st
    c = b.counters()
    for k in ("adds", "replaces", "fills", "deletes", "modifies", "clears"):
        assert c[k] > 0, k


def test_old_pages_are_evicted_and_memory_stays_bounded():
    """Long-lived orders spread over many pages: old pages that keep few orders move them to the
    table, so the ref pages in use stay far below the id range's page count (about 1/3 here; without
    the eviction nearly every page keeps a long-lived order)."""
    rows = itch_like_flow(5, 60_000, gap=40)
    b, _ = run_against_reference(rows, 5)
    st = b.store_stats()
    span_pages = max(r.get("order_id", 0) for r in rows if r.get("order_id", 0) < HUGE) // 1024 + 1
    assert span_pages > 300
    assert st["ref_pages"] < span_pages // 2, (st, span_pages)   # without eviction: nearly all pinned
    assert st["table_orders"] > 0
