"""The live consumer's fast path (issue 3, "livefast"): BookSet.consume fills the wire->book latency
histogram natively (checked against the numpy reference in feedhandler.live._BookLatency and the
bucket function of feedhandler.capture.live._live), gathers larger batches for a Python callback,
and still applies exactly what BookSet.apply applies. No root or network needed."""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from feedhandler import records as R

book_mod = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo is not built (setup.py build_ext)")
ring_mod = pytest.importorskip("feedhandler.ring", reason="feedhandler.ring is not built")
live_ext = pytest.importorskip("feedhandler.capture.live._live", reason="feedhandler.capture.live._live is not built")

from feedhandler.books import BookSet  # noqa: E402
from feedhandler.live import _BookLatency  # noqa: E402

MBO, TRADE = R.RTYPE["mbo"], R.RTYPE["trade"]


def _ticks(n: int, seed: int, ts_recv_of) -> np.ndarray:
    """n records: MBO adds on a few instruments, some trades and some system events (not book
    events: never counted), with ts_recv = ts_recv_of(i) written at each layout's own offset."""
    rnd = random.Random(seed)
    t = R.empty(n)
    mbo = t.view(R.DTYPES["mbo"])
    trade = t.view(R.DTYPES["trade"])
    for i in range(n):
        kind = rnd.random()
        ts = ts_recv_of(i)
        if kind < 0.75:
            mbo[i] = 0
            mbo["length"][i] = 14
            mbo["rtype"][i] = MBO
            mbo["instrument_id"][i] = rnd.randrange(1, 6)
            mbo["order_id"][i] = i + 1
            mbo["price"][i] = rnd.randrange(90, 110) * 10**9
            mbo["size"][i] = rnd.randrange(1, 500)
            mbo["action"][i] = b"A"
            mbo["side"][i] = rnd.choice([b"B", b"A"])
            mbo["ts_recv"][i] = ts
        elif kind < 0.9:
            trade[i] = 0
            trade["length"][i] = 12
            trade["rtype"][i] = TRADE
            trade["instrument_id"][i] = rnd.randrange(1, 6)
            trade["price"][i] = 100 * 10**9
            trade["size"][i] = 10
            trade["action"][i] = b"T"
            trade["side"][i] = b"N"
            trade["ts_recv"][i] = ts
        else:
            # another record type, with the ts_recv bytes of an MBO set: must not be counted
            mbo[i] = 0
            mbo["length"][i] = 16
            mbo["rtype"][i] = R.RTYPE["system_event"]
            mbo["ts_recv"][i] = ts
    return t


def _concat(parts):
    """np.concatenate would repack the overlapping TICK_DTYPE fields: copy the raw slots."""
    return np.concatenate([p["raw"] for p in parts]) if parts else np.zeros((0, 64), np.uint8)


def _mid_of_bucket_ns(b: int) -> int:
    lo = int(live_ext.lat_bucket_lower_ns(b))
    hi = int(live_ext.lat_bucket_lower_ns(b + 1))
    return (lo + hi) // 2


def _produce(ring, ticks, seed):
    rnd = random.Random(seed)
    i = 0
    while i < len(ticks):
        k = rnd.choice([1, 3, 50, 700])
        ring.push(ticks[i:i + k])
        i += k
        if rnd.random() < 0.05:
            time.sleep(0.001)
    ring.close()


@pytest.mark.parametrize("with_callback,idle_sleep_us", [(False, 0.0), (True, 0.0), (False, 20.0), (True, 20.0)])
def test_consume_native_latency_hist_matches_numpy_reference(with_callback, idle_sleep_us):
    # Latencies are placed mid-bucket in buckets at least 8 s wide, so the "now" of the native
    # histogram (read per batch, during consume) and of the reference (read once, afterwards) fall
    # in the same bucket; ts_recv == 0 and future stamps must not be counted.
    now0 = time.time_ns()
    buckets = [b for b in range(35 * 8, 45 * 8)]
    rnd = random.Random(3)
    plan = {}

    def ts_recv_of(i):
        c = rnd.random()
        if c < 0.05:
            return 0
        if c < 0.1:
            return now0 + 3600 * 10**9          # in the future: not counted
        b = rnd.choice(buckets)
        plan[i] = b
        return now0 - _mid_of_bucket_ns(b)

    ticks = _ticks(6000, 11, ts_recv_of)
    expected = ticks.copy()
    BookSet().apply(expected)

    ring = ring_mod.Ring(1024, overflow="block")
    hist = np.zeros(book_mod.LATENCY_BUCKETS, np.uint64)
    seen = []
    b = BookSet()
    th = threading.Thread(target=_produce, args=(ring, ticks, 5))
    th.start()
    try:
        cb = (lambda v: seen.append(v.copy())) if with_callback else None
        n = b.consume(ring, max_batch=500, callback=cb, latency_hist=hist, gather_us=300.0,
                      idle_sleep_us=idle_sleep_us)
    finally:
        th.join()
    assert n == len(ticks)
    ref = _BookLatency()
    ref.add(expected, now=time.time_ns())
    assert hist.shape == ref.hist.shape
    assert np.array_equal(hist, ref.hist)
    # and an independent count: one per planned MBO/trade latency, in its planned bucket
    rt = ticks["rtype"]
    want = np.zeros_like(hist)
    for i, bk in plan.items():
        if rt[i] in (MBO, TRADE):
            want[bk] += 1
    assert np.array_equal(hist, want)
    assert int(hist.sum()) > 4000
    if with_callback:
        assert _concat(seen).tobytes() == expected.tobytes()
        assert all(0 < len(v) <= 500 for v in seen)
    else:
        assert not seen
    assert b.counters() == (lambda d: (d.apply(ticks.copy()), d.counters())[1])(BookSet())


def test_native_buckets_small_latencies_match_lat_buckets_of():
    # Fine buckets (< 1 ms) cannot be placed exactly from Python, but every count must land in a
    # bucket no lower than the ts_recv's latency at push time and within a few ms above it.
    now0 = time.time_ns()
    lat = [0, 1, 5, 7, 8, 9, 15, 16, 100, 1000, 12345]
    ticks = _ticks(len(lat) * 20, 2, lambda i: now0 - lat[i % len(lat)])
    ring = ring_mod.Ring(1024)
    ring.push(ticks)
    ring.close()
    hist = np.zeros(book_mod.LATENCY_BUCKETS, np.uint64)
    BookSet().consume(ring, latency_hist=hist)
    elapsed = time.time_ns() - now0
    rt = ticks["rtype"]
    lats = np.array([lat[i % len(lat)] for i in range(len(ticks)) if rt[i] in (MBO, TRADE)], np.uint64)
    lo_b = live_ext.lat_buckets_of(lats)
    hi_b = live_ext.lat_buckets_of(lats + np.uint64(elapsed))
    assert int(hist.sum()) == len(lats)
    got = np.repeat(np.arange(hist.shape[0]), hist.astype(np.int64))
    assert got.min() >= lo_b.min() and got.max() <= hi_b.max()


def test_consume_latency_hist_short_array_clips_and_bad_arrays_raise():
    now0 = time.time_ns()
    ticks = _ticks(300, 4, lambda i: now0 - 10**12)     # ~17 minutes: bucket ~ 37*8
    ring = ring_mod.Ring(1024)
    ring.push(ticks)
    ring.close()
    hist = np.zeros(16, np.uint64)
    BookSet().consume(ring, latency_hist=hist)
    rt = ticks["rtype"]
    n_book = int(np.isin(rt, [MBO, TRADE]).sum())
    assert hist[:15].sum() == 0 and int(hist[15]) == n_book
    for bad in (np.zeros(8, np.int64), np.zeros(8, np.float64), np.zeros(0, np.uint64),
                np.zeros(16, np.uint64)[::2], [0] * 8):
        r = ring_mod.Ring(64)
        r.close()
        with pytest.raises(ValueError):
            BookSet().consume(r, latency_hist=bad)
    r = ring_mod.Ring(64)
    r.close()
    with pytest.raises(ValueError):
        BookSet().consume(r, gather_us=-1)
    with pytest.raises(ValueError):
        BookSet().consume(r, idle_sleep_us=-1)


def test_gather_makes_larger_batches_and_keeps_order():
    # a producer publishing one record at a time: with gather_us the callback sees batches of many
    # records (the run grows while the consumer waits), and the result equals apply()
    ticks = _ticks(4000, 9, lambda i: 0)
    expected = ticks.copy()
    BookSet().apply(expected)

    def run(gather_us):
        ring = ring_mod.Ring(8192, overflow="block")
        sizes, seen = [], []

        def produce():
            for i in range(len(ticks)):
                ring.push(ticks[i:i + 1])
            ring.close()

        th = threading.Thread(target=produce)
        th.start()
        try:
            BookSet().consume(ring, max_batch=4096,
                              callback=lambda v: (sizes.append(len(v)), seen.append(v.copy())),
                              gather_us=gather_us)
        finally:
            th.join()
        assert _concat(seen).tobytes() == expected.tobytes()
        return sizes

    gathered = run(20000.0)
    # 4000 one-record pushes take a few ms: with 20 ms of gathering only a handful of batches
    assert len(gathered) < 100, gathered[:20]
    assert max(gathered) >= 40


def test_idle_sleep_consume_ends_when_idle_ring_closes():
    """With idle_sleep_us the consumer sleeps on an empty ring, and still returns once the ring is
    closed; a record published after an idle spell is applied."""
    ticks = _ticks(50, 1, lambda i: 0)
    ring = ring_mod.Ring(64)
    b = BookSet()
    out = []
    th = threading.Thread(target=lambda: out.append(b.consume(ring, idle_sleep_us=50.0)))
    th.start()
    try:
        time.sleep(0.25)               # idle across more than one CONSUME_POLL_NS period
        ring.push(ticks)
        time.sleep(0.05)
    finally:
        ring.close()
        th.join(10)
    assert not th.is_alive()
    assert out == [len(ticks)]
    d = BookSet()
    d.apply(ticks.copy())
    assert b.counters() == d.counters() and b.live_orders == d.live_orders
