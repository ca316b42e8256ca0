"""feedhandler.tally.BatchTally: one native pass gives what the numpy passes of a replay gave."""
import numpy as np
import pytest

from feedhandler import records
from feedhandler.tally import DENSE_MAX, BatchTally

BOOK = [records.RTYPE["mbo"], records.RTYPE["trade"]]
REF = [records.RTYPE["stock_directory"]]


def _batch(rng, n, top_id):
    t = records.empty(n)
    kinds = np.array(BOOK + REF + [records.RTYPE["system_event"]], np.uint8)
    t["rtype"] = rng.choice(kinds, n, p=[0.6, 0.2, 0.05, 0.15])
    t["instrument_id"] = rng.integers(0, top_id, n, dtype=np.uint32)
    return t


@pytest.mark.parametrize("top_id", [50, 70_000, 3_000_000])   # grow the dense array; the last one past DENSE_MAX
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
    assert got.shape[0] <= DENSE_MAX
    assert got[:top_id].tolist() == activity[:got.shape[0]].tolist() and not got[top_id:].any()
    ids, counts = tally.counts()
    assert ids.tolist() == np.flatnonzero(activity).tolist()
    assert counts.tolist() == activity[activity > 0].tolist()
    for iid in (0, top_id // 2, top_id - 1, top_id, DENSE_MAX - 1, DENSE_MAX, 2**32 - 1):
        assert tally.count(iid) == (int(activity[iid]) if iid < top_id else 0)
    busiest = tally.busiest(10)
    assert busiest == np.argsort(-activity, kind="stable")[:10].tolist()


def test_any_instrument_id_counts_in_bounded_memory():
    """A damaged packet (or a CME security id) can carry any 32-bit id: counted, never an array sized by
    its value (a 1.3 KB MDP3 capture with one flipped id once asked numpy for 22.5 GiB)."""
    tally = BatchTally(BOOK, REF)
    t = records.empty(6)
    t["rtype"] = BOOK[0]
    t["instrument_id"] = [3_020_056_540, 7, 2**32 - 1, 3_020_056_540, DENSE_MAX, 7]
    tally.add(t)
    assert tally.activity.nbytes <= 8 * (1 << 16)
    assert tally.count(3_020_056_540) == 2 and tally.count(2**32 - 1) == 1 and tally.count(DENSE_MAX) == 1
    assert tally.count(7) == 2 and tally.count(8) == 0 and tally.count(2**31) == 0
    ids, counts = tally.counts()
    assert ids.tolist() == [7, DENSE_MAX, 3_020_056_540, 2**32 - 1] and counts.tolist() == [2, 1, 2, 1]
    assert tally.busiest(3) == [7, 3_020_056_540, DENSE_MAX]
    # many distinct large ids: the hash grows and keeps every count
    rng = np.random.default_rng(5)
    big = rng.choice(np.arange(DENSE_MAX + 1, 2**32 - 1, 9973, dtype=np.uint64), 5000, replace=False)
    t = records.empty(big.shape[0] + 100)
    t["rtype"] = BOOK[1]
    t["instrument_id"] = np.concatenate([big, big[:100]])
    tally.add(t)
    assert all(tally.count(int(i)) == (2 if k < 100 else 1) for k, i in enumerate(big))
    assert tally.counts()[0].shape[0] == 4 + 5000 and tally.counts()[1].sum() == 6 + 5100


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


def test_replay_of_large_security_ids(tmp_path):
    """CME security ids are any int32: a replay whose ids are near 2**31 counts and reports them (it used to
    size a per-id array by the largest id: 16 GiB for these)."""
    from feedhandler.protocols.mdp3.synth import generate
    from feedhandler.replay import ReplayOptions, replay

    cap = tmp_path / "big_ids.pcap"
    generate(cap, messages=300, seed=3, instruments=3, first_security_id=2_000_000_000)
    s = replay(cap, ReplayOptions(top=5))
    ids = sorted(row["instrument_id"] for row in s["bbo"])
    assert ids and all(2_000_000_000 <= i <= 2_000_000_014 for i in ids)
    assert all(row["records"] > 0 for row in s["bbo"])
