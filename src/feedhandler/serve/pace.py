"""Replay at the recorded pace: hand out the records of a batch as their time comes.

The schedule is the records' ``ts_event`` (the exchange's time stamps, in every record's header): record i is due
at ``wall0 + (ts_i - ts_0) / speed``. :meth:`Pacer.parts` cuts a batch into the slices that are due, sleeping
in between (in short naps, so a signal stops it promptly). Records without a time stamp (0) go with the record
before them. ``lag_ns`` histograms how late each slice was handed out (the replay's schedule lag).
"""
from __future__ import annotations

import time

import numpy as np

MAX_NAP_S = 0.05


class Pacer:
    def __init__(self, speed: float = 1.0, clock=time.monotonic_ns, sleep=time.sleep):
        if not speed > 0:
            raise ValueError(f"pace must be a positive speed factor, not {speed!r}")
        self.speed = float(speed)
        self.clock = clock
        self.sleep = sleep
        self.ts0: int | None = None
        self.wall0 = 0
        self.last_lag_ns = 0
        self.max_lag_ns = 0
        self.slices = 0

    def _due(self, now: int) -> float:
        """The capture time that is due now."""
        return self.ts0 + (now - self.wall0) * self.speed

    def parts(self, batch: np.ndarray):
        """Yield consecutive slices of ``batch`` (views), each once its records are due."""
        n = batch.shape[0]
        if n == 0:
            return
        ts = batch["ts_event"].astype(np.int64, copy=False)
        if self.ts0 is None:
            nz = np.flatnonzero(ts > 0)
            if nz.size == 0:
                yield batch
                return
            self.ts0 = int(ts[nz[0]])
            self.wall0 = self.clock()
        sched = np.maximum.accumulate(np.where(ts > 0, ts, 0))
        i = 0
        while i < n:
            now = self.clock()
            due = self._due(now)
            k = int(np.searchsorted(sched, due, side="right"))
            if k > i:
                # how late the last record of the slice is (0 when we are on time)
                late = now - (self.wall0 + (int(sched[k - 1]) - self.ts0) / self.speed)
                self.last_lag_ns = max(int(late), 0) if sched[k - 1] >= self.ts0 else 0
                self.max_lag_ns = max(self.max_lag_ns, self.last_lag_ns)
                self.slices += 1
                yield batch[i:k]
                i = k
            else:
                wait_s = (int(sched[i]) - due) / self.speed / 1e9
                self.sleep(min(max(wait_s, 0.0005), MAX_NAP_S))
