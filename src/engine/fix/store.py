"""Persistent FIX message store: sent messages (for ResendRequest) and both sequence numbers.

Layout of ``<dir>/<session>``:

- ``.seqnums``: ``"<next_sender> <next_target>\\n"``, rewritten in place on every change (fixed width,
  so a torn write cannot leave a shorter, valid-looking number), fsynced when ``fsync=True``.
- ``.body``: append-only log of sent messages, each ``"<seq> <len>\\n" + raw bytes + "\\n"``; the last
  record of a sequence number wins (a sequence reset may reuse numbers).

Sequence numbers therefore survive a restart of the acceptor (issue: "persisted across restarts").
A sequence reset (ResetSeqNumFlag, ResetOnLogon/Disconnect) does not erase the log: it appends a reset
record (``"0 0\n\n"``), after which resends see only the new messages, while :meth:`MemoryStore.history`
keeps every message sent before it. The order-entry application rebuilds its state (orders, used
ClOrdIDs, ExecIDs) from ``history() + current``, so a reset never makes it forget the day.
:class:`MemoryStore` has the same interface without files. One store belongs to one session; the
session's thread (the asyncio loop) is the only caller.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("engine.fix.store")

_SEQ_FMT = "{:>20d} {:>20d}\n"


class MemoryStore:
    def __init__(self):
        self.next_sender = 1
        self.next_target = 1
        self._msgs: dict[int, bytes] = {}
        self._history: list[bytes] = []      # messages sent before the last sequence reset, in order

    def history(self) -> list[bytes]:
        """Every message this store has been given, in the order sent (across sequence resets)."""
        return self._history + [self._msgs[s] for s in sorted(self._msgs)]

    def set_seqnums(self, sender: int, target: int) -> None:
        self.next_sender, self.next_target = sender, target

    def save(self, seq: int, raw: bytes) -> None:
        self._msgs[seq] = raw

    def get(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return [(s, self._msgs[s]) for s in sorted(self._msgs) if begin <= s <= end]

    def reset(self) -> None:
        self.next_sender = self.next_target = 1
        self._history.extend(self._msgs[s] for s in sorted(self._msgs))
        self._msgs.clear()

    def close(self) -> None:
        pass


class FileStore(MemoryStore):
    """File-backed store (see module doc). ``fsync``: fsync the sequence file and log on every write."""

    def __init__(self, directory: str | Path, session: str, fsync: bool = False):
        super().__init__()
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in session)
        self.seq_path = self.dir / f"{safe}.seqnums"
        self.body_path = self.dir / f"{safe}.body"
        self.fsync = fsync
        self._load()
        self._seq_f = open(self.seq_path, "r+b" if self.seq_path.exists() else "w+b")
        self._body_f = open(self.body_path, "ab")
        self._write_seq()

    def _load(self) -> None:
        reset_seen = False
        if self.body_path.exists():
            data = self.body_path.read_bytes()
            pos = 0
            while pos < len(data):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    break
                try:
                    seq, n = (int(x) for x in data[pos:nl].split())
                except ValueError:
                    break  # torn tail: everything before it is kept
                if n < 0 or nl + 1 + n + 1 > len(data) or data[nl + 1 + n] != 0x0A:
                    break
                if seq == 0 and n == 0:
                    MemoryStore.reset(self)      # a reset record: what came before is history
                    reset_seen = True
                else:
                    self._msgs[seq] = data[nl + 1 : nl + 1 + n]
                pos = nl + 1 + n + 1
            if pos < len(data):
                # a record cut by a crash: cut it off, or the records appended from now on would be read
                # as its rest after the next restart (and lost from resends)
                with open(self.body_path, "r+b") as f:
                    f.truncate(pos)
                    if self.fsync:
                        os.fsync(f.fileno())
                log.warning("%s: a torn last record (%d bytes) was cut off", self.body_path, len(data) - pos)
        if self.seq_path.exists():                # after the log: its reset records set the numbers to 1
            parts = self.seq_path.read_text().split()
            if len(parts) == 2:
                self.next_sender, self.next_target = int(parts[0]), int(parts[1])
        # The log is written before the sequence file (save, then set_seqnums; a reset record, then the
        # numbers): a crash between the two leaves the file one step behind. The next sender number is
        # therefore never below what the log says was sent, else a stored message's MsgSeqNum would be
        # reused for another message (the first one lost from resends, and its report counted again by
        # the application's catch-up after the next restart). After a reset record only the log counts.
        log_next = max(self._msgs) + 1 if self._msgs else 1
        if reset_seen:
            self.next_sender = log_next
        elif log_next > self.next_sender:
            self.next_sender = log_next

    def _write_seq(self) -> None:
        self._seq_f.seek(0)
        self._seq_f.write(_SEQ_FMT.format(self.next_sender, self.next_target).encode())
        self._seq_f.flush()
        if self.fsync:
            os.fsync(self._seq_f.fileno())

    def set_seqnums(self, sender: int, target: int) -> None:
        if (sender, target) != (self.next_sender, self.next_target):
            super().set_seqnums(sender, target)
            self._write_seq()

    def save(self, seq: int, raw: bytes) -> None:
        super().save(seq, raw)
        self._body_f.write(b"%d %d\n" % (seq, len(raw)) + raw + b"\n")
        self._body_f.flush()
        if self.fsync:
            os.fsync(self._body_f.fileno())

    def reset(self) -> None:
        super().reset()
        self._body_f.write(b"0 0\n\n")          # reset record (see module doc): the log is never truncated
        self._body_f.flush()
        if self.fsync:
            os.fsync(self._body_f.fileno())
        self._write_seq()

    def close(self) -> None:
        self._write_seq()
        self._seq_f.close()
        self._body_f.close()
