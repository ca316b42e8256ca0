"""A strategy's signals that the executor has not acknowledged yet (bounded; resent until acknowledged).

The strategy process keeps every signal here from the moment it is issued until the executor's
acknowledgement arrives. A signal the PUSH socket refused (its high-water mark is reached: the executor
is slow or down) stays unsent and is offered again; a sent signal not acknowledged within
``resend_after_s`` is sent again, the wait doubling up to ``max_resend_s`` (the executor acts on an id
once, so a resend is always safe). When ``capacity`` signals are outstanding, :meth:`add` refuses new
ones: the strategy sees the backpressure instead of the process buffering without bound.

With a ``store`` (:class:`engine.strategy.outbox_file.OutboxFile`, ``feedhandler strategy --outbox``) every
signal is also written to disk before it is first offered to the socket and removed when acknowledged, and
:meth:`restore` takes back what a killed process left unacknowledged: nothing issued is lost on a restart.

Single-threaded (the runner's loop).
"""
from __future__ import annotations

from collections import OrderedDict

__all__ = ["Outbox", "Entry"]


class Entry:
    __slots__ = ("signal", "data", "sends", "next_send", "first_sent")

    def __init__(self, signal, data: bytes):
        self.signal = signal
        self.data = data
        self.sends = 0
        self.next_send = 0.0       # monotonic s; 0: not sent yet (send as soon as the socket takes it)
        self.first_sent = 0.0


class Outbox:
    def __init__(self, capacity: int = 1000, resend_after_s: float = 1.0, max_resend_s: float = 8.0, store=None):
        if capacity < 1:
            raise ValueError(f"outbox capacity must be positive, not {capacity}")
        self.capacity = capacity
        self.resend_after_s = resend_after_s
        self.max_resend_s = max_resend_s
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()
        self.refused = 0
        self.store = store
        self._acked: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def full(self) -> bool:
        return len(self._entries) >= self.capacity

    def add(self, signal, data: bytes, n: int = 0) -> bool:
        """Hold a new signal (the ``n``-th of its sender: what the store counts); False when full."""
        if self.full:
            self.refused += 1
            return False
        if self.store is not None:
            self.store.put(signal.id, signal.sender, n, data)      # on disk before it can leave the process
        self._entries[signal.id] = Entry(signal, data)
        return True

    def restore(self, decode) -> list[Entry]:
        """Take back the store's unacknowledged signals (``decode(data)`` -> signal), oldest first, to be sent
        again at once. They are held even beyond ``capacity`` (then new signals wait until they drain)."""
        if self.store is None:
            return []
        out = []
        for row in self.store.pending():
            if row.id not in self._entries:
                e = self._entries[row.id] = Entry(decode(row.data), row.data)
                out.append(e)
        return out

    def ack(self, signal_id: str) -> Entry | None:
        e = self._entries.pop(signal_id, None)
        if e is not None and self.store is not None:
            self._acked.append(signal_id)          # written by flush_acks: one commit per burst
        return e

    def flush_acks(self) -> None:
        """Remove the acknowledged signals from the store (the runner calls it after each burst of acks)."""
        if self._acked:
            self.store.ack(self._acked)
            self._acked = []

    def due(self, now: float) -> list[Entry]:
        """Entries to send now: never sent, or sent and not acknowledged in time (oldest first)."""
        return [e for e in self._entries.values() if e.next_send <= now]

    def next_due(self) -> float | None:
        return min((e.next_send for e in self._entries.values()), default=None)

    def sent(self, e: Entry, now: float) -> None:
        if not e.sends:
            e.first_sent = now
        e.sends += 1
        e.next_send = now + min(self.resend_after_s * (2 ** (e.sends - 1)), self.max_resend_s)

    def pending_ids(self) -> list[str]:
        return list(self._entries)
