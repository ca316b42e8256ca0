"""feedhandler.books.mbo: the result of applying an ITCH day must not depend on where the batches split.

The ring hands BookSet.consume runs that end anywhere (its wrap, the producer's pace), so a replace
(a whole-order cancel then the add half) may straddle two apply calls. Books, counters and the BBO
event stream must equal a single apply of the whole day, for every split, including the split right
between the two halves of each replace.
"""
from __future__ import annotations

import datetime
import random

import numpy as np
import pytest

from feedhandler import records as R

book_mod = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo is not built (setup.py build_ext)")
itch50 = pytest.importorskip("feedhandler.protocols.itch50", reason="feedhandler.protocols.itch50 is not built")
synth = pytest.importorskip("feedhandler.synth", reason="feedhandler.synth is not available")

DATE = datetime.date(2024, 3, 15)


@pytest.fixture(scope="module")
def ticks():
    d = synth.generate_day(messages=40_000, symbols=12, seed=11, date=DATE)
    return np.array(itch50.Itch50Decoder(midnight_ns=synth.midnight_ns_of(DATE)).decode_binaryfile(d.binaryfile()))


def _run(ticks, cuts):
    work = ticks.copy()
    b = book_mod.BookSet(track_bbo_events=True)
    events = []
    prev = 0
    for c in list(cuts) + [len(work)]:
        b.apply(work[prev:c])
        prev = c
    events += b.bbo_events().tolist()
    return b, work, events


def _replace_splits(ticks):
    """Indices i + 1 where record i is a whole-order cancel and record i + 1 the add half of a replace."""
    mbo = R.view(ticks, "mbo")
    is_mbo = ticks["rtype"] == R.RTYPE["mbo"]
    act, side = mbo["action"], mbo["side"]
    return [i + 1 for i in np.flatnonzero(is_mbo[:-1] & is_mbo[1:] & (act[:-1] == b"C") & (act[1:] == b"A")
                                          & (side[1:] == b"N")).tolist()]


def test_split_between_replace_halves_changes_nothing(ticks):
    whole, whole_ticks, whole_events = _run(ticks, [])
    splits = _replace_splits(ticks)
    assert len(splits) > 500, "the day should have plenty of replaces"
    b, t, events = _run(ticks, splits)
    assert events == whole_events
    assert b.counters() == whole.counters()
    assert t.tobytes() == whole_ticks.tobytes()          # the same enrichment
    assert b.bbo_all().tolist() == whole.bbo_all().tolist()
    b.check()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_batch_sizes_change_nothing(ticks, seed):
    whole, whole_ticks, whole_events = _run(ticks, [])
    rnd = random.Random(seed)
    cuts, i = [], 0
    while True:
        i += rnd.choice([1, 2, 3, 17, 300, 4096])
        if i >= len(ticks):
            break
        cuts.append(i)
    b, t, events = _run(ticks, cuts)
    assert events == whole_events
    assert b.counters() == whole.counters()
    assert t.tobytes() == whole_ticks.tobytes()


def test_pending_report_settles_on_query(ticks):
    # a batch that ends with the delete half of a replace: its BBO report is settled by bbo_events()
    splits = _replace_splits(ticks)
    cut = splits[len(splits) // 2]
    b = book_mod.BookSet(track_bbo_events=True)
    b.apply(ticks[:cut].copy())
    ev_now = b.bbo_events().tolist()
    ref = book_mod.BookSet(track_bbo_events=True)
    part = ticks[:cut].copy()
    ref.apply(part)
    # the same prefix ending in a delete: events as if the day stopped there (the delete reported)
    assert ev_now == ref.bbo_events().tolist()
    b.apply(ticks[cut:].copy())
    b.bbo_events()
    b.check()
