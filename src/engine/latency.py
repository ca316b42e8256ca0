"""LatencyMonitor: per-stage latencies in HDR-style log-bucketed histograms, periodic CSV percentiles.

Stages of an order through the exchange, each a timestamp in ns taken by the component that owns it:
``gateway_recv`` -> ``risk_done`` -> ``ring_enqueue`` -> ``match_done`` -> ``ack_sent``. For every order
the monitor records the time spent in each hop (``risk_done`` = risk_done - gateway_recv, ...) and the
end-to-end ``total`` (ack_sent - gateway_recv).

Histogram: values below 2**(SUB_BITS+1) ns have their own bucket; above, each power of two is split
into 2**SUB_BITS linear sub-buckets (SUB_BITS = 7: relative error < 0.8 %, like HdrHistogram with 2
significant digits). Percentiles report the highest value equivalent to the bucket, as HdrHistogram
does. Counts are a numpy int64 array; recording a batch is vectorized. The hot path only records; a
reporter thread (start()) writes the CSV, never the recording thread.
"""
from __future__ import annotations

import csv
import os
import threading
import time

import numpy as np

SUB_BITS = 7
MAX_EXP = 42  # values up to 2**42 ns (~73 minutes); larger ones are clamped into the last bucket
N_BUCKETS = (MAX_EXP - SUB_BITS + 1) * (1 << SUB_BITS) + (1 << SUB_BITS)
STAGES = ("gateway_recv", "risk_done", "ring_enqueue", "match_done", "ack_sent")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
CSV_FIELDS = ("ts_ns", "stage", "count", "p50_ns", "p90_ns", "p99_ns", "p99_9_ns", "max_ns", "mean_ns")


def bucket_index(values: np.ndarray) -> np.ndarray:
    """Bucket of each non-negative int value (vectorized)."""
    v = np.clip(np.asarray(values, dtype=np.int64), 0, (1 << MAX_EXP) - 1)
    bitlen = np.frexp(v.astype(np.float64))[1].astype(np.int64)  # exact for v < 2**53
    e = np.maximum(bitlen - (SUB_BITS + 1), 0)
    return e * (1 << SUB_BITS) + (v >> e)


def bucket_high(index: np.ndarray) -> np.ndarray:
    """Highest value that falls into each bucket."""
    i = np.asarray(index, dtype=np.int64)
    e = np.maximum(i // (1 << SUB_BITS) - 1, 0)
    m = i - e * (1 << SUB_BITS)
    return ((m + 1) << e) - 1


class Histogram:
    """Log-bucketed histogram of non-negative integer values (ns)."""

    def __init__(self):
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64)
        self.total = 0
        self.sum = 0
        self.max = 0
        self.min = None

    def record(self, value: int) -> None:
        value = max(0, int(value))
        self.counts[int(bucket_index(np.array([value]))[0])] += 1
        self.total += 1
        self.sum += value
        self.max = max(self.max, value)
        self.min = value if self.min is None else min(self.min, value)

    def record_many(self, values) -> None:
        v = np.maximum(np.asarray(values, dtype=np.int64), 0)
        if v.size == 0:
            return
        np.add.at(self.counts, bucket_index(v), 1)
        self.total += int(v.size)
        self.sum += int(v.sum())
        self.max = max(self.max, int(v.max()))
        self.min = int(v.min()) if self.min is None else min(self.min, int(v.min()))

    def percentile(self, p: float) -> int:
        if self.total == 0:
            return 0
        rank = max(1, int(np.ceil(p / 100.0 * self.total)))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(int(bucket_high(np.array([idx]))[0]), self.max)

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
        self.total += other.total
        self.sum += other.sum
        self.max = max(self.max, other.max)
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)

    def summary(self) -> dict:
        out = {"count": self.total, "max_ns": self.max, "mean_ns": (self.sum // self.total) if self.total else 0}
        for p in PERCENTILES:
            out[f"p{p:g}_ns".replace(".", "_")] = self.percentile(p)
        return out


class LatencyMonitor:
    """Histograms per hop between consecutive stages, plus ``total``; thread-safe recording.

    Parameters
    ----------
    stages : sequence of str
        Stage names in order (default: STAGES).
    """

    def __init__(self, stages=STAGES):
        self.stages = tuple(stages)
        self.names = self.stages[1:] + ("total",)
        self.hist = {name: Histogram() for name in self.names}
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()

    def record(self, stamps) -> None:
        """One order: a dict stage -> ns, or a sequence of ns in stage order (missing stages skipped)."""
        if isinstance(stamps, dict):
            ts = [stamps.get(s) for s in self.stages]
        else:
            ts = list(stamps)
        with self._lock:
            prev = None
            for name, t in zip(self.stages, ts):
                if t is None:
                    continue
                if prev is not None and name != self.stages[0]:
                    self.hist[name].record(t - prev)
                prev = t
            known = [t for t in ts if t is not None]
            if len(known) >= 2 and ts[0] is not None:
                self.hist["total"].record(known[-1] - ts[0])

    def record_many(self, stamps: np.ndarray) -> None:
        """Many orders at once: an int64 array of shape (n, len(stages)), every stage present."""
        a = np.asarray(stamps, dtype=np.int64)
        if a.ndim != 2 or a.shape[1] != len(self.stages):
            raise ValueError(f"stamps must have shape (n, {len(self.stages)})")
        d = np.diff(a, axis=1)
        with self._lock:
            for j, name in enumerate(self.stages[1:]):
                self.hist[name].record_many(d[:, j])
            self.hist["total"].record_many(a[:, -1] - a[:, 0])

    def record_value(self, name: str, ns: int) -> None:
        """Record a latency under any name (creates the histogram on first use)."""
        with self._lock:
            self.hist.setdefault(name, Histogram()).record(ns)

    def stats(self) -> dict[str, dict]:
        with self._lock:
            return {name: h.summary() for name, h in self.hist.items()}

    def write_csv(self, path: str, now_ns: int | None = None) -> None:
        """Append one row per stage (count, p50, p90, p99, p99.9, max, mean in ns) to path."""
        ts = time.time_ns() if now_ns is None else now_ns
        stats = self.stats()
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            if new:
                w.writerow(CSV_FIELDS)
            for name, s in stats.items():
                w.writerow((ts, name, s["count"], s["p50_ns"], s["p90_ns"], s["p99_ns"], s["p99_9_ns"], s["max_ns"],
                            s["mean_ns"]))

    def start(self, path: str, interval_s: float = 10.0) -> None:
        """Write the CSV every interval_s seconds from a reporter thread until stop()."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop():
            while not self._stop.wait(interval_s):
                self.write_csv(path)

        self._thread = threading.Thread(target=loop, name="latency-report", daemon=True)
        self._thread.start()
        self._path = path

    def stop(self) -> None:
        """Stop the reporter thread after writing one last report."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.write_csv(self._path)
