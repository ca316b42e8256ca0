"""LatencyMonitor: HDR-style buckets (bounded relative error), stage deltas, CSV report."""
from __future__ import annotations

import csv

import numpy as np

from engine.latency import CSV_FIELDS, STAGES, Histogram, LatencyMonitor, bucket_high, bucket_index


def test_buckets_monotonic_and_precise():
    v = np.unique(np.concatenate([np.arange(0, 5000), np.random.default_rng(0).integers(0, 2**40, 20000)]))
    idx = bucket_index(v)
    assert (np.diff(idx) >= 0).all()
    hi = bucket_high(idx)
    assert (hi >= v).all()
    assert ((hi - v) <= np.maximum(v // 128, 0)).all()  # < 1/128 relative error
    assert (bucket_high(idx[v < 256]) == v[v < 256]).all()  # exact below 256 ns


def test_percentiles_against_numpy():
    rng = np.random.default_rng(1)
    data = rng.lognormal(8, 1, 100_000).astype(np.int64)
    h = Histogram()
    h.record_many(data[:50_000])
    for x in data[50_000:60_000]:
        h.record(int(x))
    h.record_many(data[60_000:])
    for p in (50, 90, 99, 99.9):
        exact = np.percentile(data, p, method="inverted_cdf")
        assert exact <= h.percentile(p) <= exact * 1.01 + 1
    assert h.percentile(100) == data.max() == h.max and h.total == len(data)


def test_monitor_stages_and_csv(tmp_path):
    mon = LatencyMonitor()
    n = 1000
    base = np.arange(n, dtype=np.int64) * 10_000
    deltas = np.array([500, 2_000, 300, 4_000])
    stamps = np.column_stack([base] + [base + deltas[: i + 1].sum() for i in range(4)])
    mon.record_many(stamps[:500])
    for row in stamps[500:]:
        mon.record(dict(zip(STAGES, (int(x) for x in row))))
    s = mon.stats()
    assert [s[name]["p50_ns"] for name in STAGES[1:]] == [500, 2000, 300, 4000]  # clamped to the max seen
    assert s["total"]["count"] == n and s["total"]["max_ns"] == deltas.sum()
    path = tmp_path / "lat.csv"
    mon.write_csv(str(path), now_ns=1)
    mon.write_csv(str(path), now_ns=2)
    rows = list(csv.DictReader(open(path)))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 2 * len(s)
    assert {r["stage"] for r in rows} == set(STAGES[1:]) | {"total"}


def test_periodic_reporter(tmp_path):
    mon = LatencyMonitor()
    path = tmp_path / "lat.csv"
    mon.start(str(path), interval_s=0.01)
    mon.record([0, 1, 2, 3, 4])
    mon.stop()
    assert path.exists() and len(path.read_text().splitlines()) >= 1 + 5
