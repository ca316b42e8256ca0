"""feedhandler.tally.BatchTally: one native pass gives what the numpy passes of a replay gave."""
import numpy as np
import pytest

from feedhandler import records
from feedhandler.tally import BatchTally

BOOK = [records.RTYPE["mbo"], records.RTYPE["trade"]]
REF = [records.RTYPE["stock_directory"]]


def _batch(rng, n, top_id):
    t = records.empty(n)
    kinds = np.array(BOOK + REF + [records.RTYPE["system_event"]], np.uint8)
    t["rtype"] = rng.choice(kinds, n, p=[0.6, 0.2, 0.05, 0.15])
    t["instrument_id"] = rng.integers(0, top_id, n, dtype=np.uint32)
    return t


@pytest.mark.parametrize("top_id", [50, 70_000, 3_000_000])   # the last two grow the activity array
def test_counts_equal_numpy(top_id):
    rng = np.random.default_rng(top_id)
    tally = BatchTally(BOOK, REF)
    by_rtype = np.zeros(256, np.int64)
    activity = np.zeros(top_id, np.int64)
    for _ in range(4):
        t = _batch(rng, 5000, top_id)
        refs = tally.add(t)
        rt = t["rtype"]
        by_rtype += np.bincount(rt, minlength=256)
        book = np.isin(rt, BOOK)
        activity += np.bincount(t["instrument_id"][book], minlength=top_id)
        assert refs.tolist() == np.flatnonzero(rt == REF[0]).tolist()
    assert tally.by_rtype.tolist() == by_rtype.tolist()
    got = tally.activity
    top = int(np.flatnonzero(activity).max())
    assert got.shape[0] > top            # grown to hold the largest id counted
    assert got[:top_id].tolist() == activity[:got.shape[0]].tolist() and not got[top_id:].any()


def test_activity_only_and_rtypes_only():
    rng = np.random.default_rng(1)
    t = _batch(rng, 1000, 10)
    tally = BatchTally(BOOK, REF)
    assert tally.add(t, activity=False).shape[0] == int((t["rtype"] == REF[0]).sum())
    assert not tally.activity.any() and tally.by_rtype.sum() == 1000
    assert tally.add(t, rtypes=False).shape[0] == 0
    assert tally.by_rtype.sum() == 1000 and tally.activity.sum() == int(np.isin(t["rtype"], BOOK).sum())


def test_rejects_records_of_another_size():
    with pytest.raises(ValueError, match="64 bytes"):
        BatchTally(BOOK, REF).add(np.zeros(10, np.int32))
