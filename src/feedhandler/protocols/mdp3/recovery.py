"""CME MDP 3.0 market recovery on a live feed: join the snapshot group on a gap, leave it once recovered.

The decoder marks instruments stale when it sees a gap (an incremental packet lost on both lines makes
every MBO book stale; a RptSeq jump makes that instrument's MBP book stale) and recovers each from the
snapshot loop (SnapshotFullRefresh for the MBP book and statistics, SnapshotFullRefreshOrderBook for
the MBO book). :class:`SnapshotRecovery` is the monitor that drives the membership: while any
instrument is stale it keeps the snapshot group(s) joined and the framer's snapshot gate open; once
none is, it shuts the gate and drops the membership. The decoder runs on the receive thread; this
monitor runs on the thread that prints the status line and only reads a count (``stale_count()``) and
flips the gate, as the architecture's "monitor reads counters" rule wants.

Nothing arrives from the snapshot group between a leave and the next join: a switched network forwards
only joined groups, and on a veth or a mirror port (where every frame arrives anyway) the framer's gate
drops them (counted as ``snapshot_skipped``).

A late join (a run started mid-session, books empty) is recovered the same way: the decoder runs with
``late_join`` whenever snapshot groups are given, so an instrument whose first incremental carries
RptSeq > 1 is stale from the start (its earlier updates were missed) and the monitor joins the loop for it.

Limits: a snapshot older than the incremental stream it is applied to is taken as the book's state and
the incrementals after it apply with their RptSeq (the decoder's rules), so the books are right once
the incrementals the snapshot did not cover have arrived.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["SnapshotRecovery", "channel_plan"]


def channel_plan(incremental_ports: Sequence[int], snapshot_ports: Sequence[int], ab_offset: int = 1000) -> dict[int, int]:
    """Fixed channels {udp_port: channel} for a run with snapshot groups (the decoder must know the
    snapshot channels before the first packet): the incremental ports in the order given, then the
    snapshot ports, from 0 up; a port ``ab_offset`` away from one already placed (its A/B partner)
    shares that one's channel, as the framer pairs ports it was not told about."""
    out: dict[int, int] = {}
    nxt = 0
    for kind in (incremental_ports, snapshot_ports):      # a snapshot port never pairs with an incremental one
        placed: dict[int, int] = {}
        for p in (int(x) for x in kind):
            if p in out:
                raise ValueError(f"port {p} is given as an incremental and as a snapshot group")
            if p in placed:
                continue
            partner = None
            if ab_offset:
                partner = placed.get(p - ab_offset, placed.get(p + ab_offset))
            if partner is None:
                partner, nxt = nxt, nxt + 1
            placed[p] = partner
        out.update(placed)
    if nxt > 256:
        raise ValueError("more than 256 MDP3 channels")
    return out


@dataclass
class SnapshotRecovery:
    """Join/leave the snapshot groups as instruments go stale and recover (module docstring).

    ``join(groups) -> handle`` and ``leave(handle)`` do the membership (``live.join_groups`` and
    closing its sockets); ``decoder`` has ``stale_count()``; ``framer`` has ``open_snapshots(bool)``.
    Call :meth:`poll` periodically (the run's monitor loop) and :meth:`close` at the end.
    """

    groups: Sequence[str]
    decoder: object
    framer: object
    join: Callable[[Sequence[str]], object]
    leave: Callable[[object], None]
    clock: Callable[[], float] = time.monotonic
    joins: int = 0
    leaves: int = 0
    joined_s: float = 0.0
    events: list = field(default_factory=list)      # (seconds since start, "join"/"leave", stale count)
    _handle: object = None
    _since: float | None = None
    _t0: float | None = None

    @property
    def joined(self) -> bool:
        return self._handle is not None

    def poll(self) -> int:
        """One look: join when something is stale and we are out, leave when nothing is and we are in.
        Returns the stale count seen."""
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        stale = int(self.decoder.stale_count())
        if stale and self._handle is None:
            self.framer.open_snapshots(True)
            try:
                self._handle = self.join(self.groups)
            except BaseException:
                self.framer.open_snapshots(False)
                raise
            self.joins += 1
            self._since = now
            self.events.append((round(now - self._t0, 6), "join", stale))
        elif not stale and self._handle is not None:
            self._drop(now)
            self.events.append((round(now - self._t0, 6), "leave", stale))
        return stale

    def _drop(self, now: float) -> None:
        self.framer.open_snapshots(False)
        handle, self._handle = self._handle, None
        self.leave(handle)
        self.leaves += 1
        if self._since is not None:
            self.joined_s += now - self._since
        self._since = None

    def close(self) -> None:
        """End of the run: leave if still joined (counted in ``joined_at_end``, not as a leave)."""
        if self._handle is not None:
            self.framer.open_snapshots(False)
            handle, self._handle = self._handle, None
            self.leave(handle)
            if self._since is not None:
                self.joined_s += self.clock() - self._since

    def summary(self, joined_at_end: bool) -> dict:
        fs = self.framer.stats()
        dc = self.decoder.counters()
        return {"groups": list(self.groups), "joins": self.joins, "leaves": self.leaves,
                "joined_at_end": joined_at_end, "joined_s": round(self.joined_s, 6),
                "stale_at_end": int(self.decoder.stale_count()),
                "snapshot_packets": fs.get("snapshot_kept", 0), "snapshot_skipped": fs.get("snapshot_skipped", 0),
                "recoveries": dc.get("recoveries", 0), "mbo_recoveries": dc.get("mbo_recoveries", 0),
                "snapshot_resyncs": dc.get("snapshot_resyncs", 0), "late_joins": dc.get("late_joins", 0),
                "events": [list(e) for e in self.events]}
