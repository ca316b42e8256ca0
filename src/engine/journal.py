"""Write-ahead journal of engine inputs: length + crc32 framed binary records, replay and live tailing.

File format (little endian)::

    header  b"FHJRNL\\x00\\x01"                     8 bytes, once
    frame   u32 length | u32 crc32(payload) | payload (length bytes), repeated

Every input the engine accepts is sequenced and appended here BEFORE it is applied, so replaying the
journal from the start (or from a snapshot) rebuilds the exact state. A torn tail (a crash in the middle of
a write: a cut frame, or bytes the file system never wrote, which read back as zeros or stale data) ends
the valid journal: readers stop at the last whole frame whose crc32 matches, and a writer reopening the
file truncates the tail away before appending (``JournalWriter.truncated_bytes``). A frame that fails its
check with valid frames AFTER it is not a torn tail but damage in the middle of acknowledged inputs:
recovery refuses it (:class:`JournalCorrupt`, with the offsets) and truncates nothing. A payload is never
empty, so a zero length field always means bytes that were never written.

Durability policies (``fsync=``) and their data-loss windows
-----------------------------------------------------------
Writes go straight to the file descriptor with ``os.write`` (no user-space buffer), so a crash of the
engine PROCESS (SIGKILL, segfault) never loses an input that :meth:`JournalWriter.commit` returned for.
The policies differ only for a crash of the machine or OS (power loss, kernel panic):

``"every"``     fsync after every appended record. Loss window: nothing that was committed; an input is
                on stable storage before it is applied and acknowledged. Slowest (one fsync per input).
``"batch"``     one write + fsync per batch (:meth:`commit`), before the batch is applied. Loss window:
                nothing acknowledged; the inputs of a batch not yet committed were never applied or
                acknowledged either. The EngineManager commits once per drained queue batch.
``"interval"``  write per commit, fsync at most every ``interval_ms`` (and by a background timer when
                idle). Loss window: up to ``interval_ms`` of acknowledged inputs on a machine crash.
``"none"``      write per commit, never fsync (the OS flushes when it likes, typically within 30 s).
                Loss window: whatever the page cache held at a machine crash.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator

MAGIC = b"FHJRNL\x00\x01"
log = logging.getLogger("engine.journal")
_FRAME = struct.Struct("<II")
MAX_FRAME = 1 << 24  # bytes; a larger length field means corruption
POLICIES = ("every", "batch", "interval", "none")


class JournalError(Exception):
    """The journal cannot be used (bad magic, unknown fsync policy, closed writer)."""


class JournalCorrupt(JournalError):
    """A frame fails its check and valid frames follow it: damage in the middle of the journal, not the torn
    tail of a crash. Recovering the frames before it and truncating the rest would silently drop inputs that
    were acknowledged, so it is refused; nothing is truncated. ``offset``: where the valid part ends;
    ``next_valid``: the first valid frame after it; ``size``: the file's size."""

    def __init__(self, path: str, offset: int, next_valid: int, size: int):
        self.path, self.offset, self.next_valid, self.size = path, offset, next_valid, size
        super().__init__(
            f"{path}: corrupt journal frame at byte {offset:,}, with valid frames after it (from byte "
            f"{next_valid:,} of {size:,}): not a torn tail, so nothing was truncated; restore the journal "
            "from a replica (the standby's copy) or a backup, or, to recover only the inputs before the "
            f"damage, truncate a copy at that byte (truncate -s {offset} ...)")


def frame(payload: bytes) -> bytes:
    """One framed record (the payload is never empty: a zero length marks unwritten bytes)."""
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _valid_frame_at(data, pos: int, n: int) -> bool:
    """A whole frame at pos whose length is 1..MAX_FRAME and whose crc32 matches."""
    if pos + _FRAME.size > n:
        return False
    length, crc = _FRAME.unpack_from(data, pos)
    end = pos + _FRAME.size + length
    return 0 < length <= MAX_FRAME and end <= n and zlib.crc32(data[pos + _FRAME.size:end]) == crc


def next_valid_frame(data: bytes | memoryview, start: int) -> int:
    """Offset of the first valid frame at or after ``start`` that is followed by another valid frame or by
    the end of ``data`` (two checks in a row: a stray match in damaged bytes is ~2**-32 per candidate), or
    -1 when there is none: then ``data[start:]`` is a torn tail. Candidates are the offsets whose length field
    is plausible (1..MAX_FRAME and within ``data``), found a chunk at a time with numpy, so zeros and short
    tails cost nothing and damage early in a long journal is found at the next intact frame."""
    import numpy as np

    mv = memoryview(data).cast("B")
    n = len(mv)
    last = n - _FRAME.size                   # the last offset a header fits at
    chunk = 1 << 20
    pos = start
    while pos <= last:
        stop = min(last, pos + chunk - 1)
        seg = np.frombuffer(mv[pos:stop + 4], dtype=np.uint8).astype(np.uint32)
        lengths = seg[:-3] | (seg[1:-2] << 8) | (seg[2:-1] << 16) | (seg[3:] << 24)
        offs = np.arange(pos, stop + 1, dtype=np.int64)
        ok = (lengths >= 1) & (lengths <= MAX_FRAME) & (offs + _FRAME.size + lengths.astype(np.int64) <= n)
        for i in np.flatnonzero(ok).tolist():
            p = pos + i
            if not _valid_frame_at(mv, p, n):
                continue
            after = p + _FRAME.size + int(lengths[i])
            if after == n or _valid_frame_at(mv, after, n):
                return p
        pos = stop + 1
    return -1


def scan(data: bytes | memoryview, start: int = len(MAGIC)) -> tuple[list[bytes], int]:
    """Parse whole, valid frames from data[start:]; return (payloads, offset just past the last valid one)."""
    out = []
    pos = start
    n = len(data)
    while pos + _FRAME.size <= n:
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if length == 0 or length > MAX_FRAME or end > n:
            break
        payload = bytes(data[pos + _FRAME.size : end])
        if zlib.crc32(payload) != crc:
            break
        out.append(payload)
        pos = end
    return out, pos


def read_journal(path: str) -> tuple[list[bytes], int]:
    """All valid payloads of a journal file and the byte offset where the valid part ends."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return [], 0
    if data[: len(MAGIC)] != MAGIC:
        raise JournalError(f"{path}: not a journal (bad magic)")
    payloads, end = scan(data)
    if end < len(data):
        nxt = next_valid_frame(data, end + 1)
        if nxt >= 0:
            raise JournalCorrupt(path, end, nxt, len(data))
    return payloads, end


def iter_journal(path: str) -> Iterator[bytes]:
    """Iterate over the valid payloads of a journal file."""
    yield from read_journal(path)[0]


class JournalLocked(JournalError):
    """Another writer holds the journal (fencing: one sequencer per journal)."""


class JournalLock:
    """The exclusive right to append to one journal: ``flock(LOCK_EX)`` on ``<journal>.lock``.

    The kernel releases the lock when the holding process dies (SIGKILL included) or closes it, so a hot
    standby that obtains it knows the primary is gone, and a primary that is alive can never be joined by
    a second writer: two sequencers can never both append. The file records the holder (host, pid) and an
    epoch that grows by one with every new holder (each takeover), for the operator and the logs.
    """

    def __init__(self, journal_path: str):
        self.path = journal_path + ".lock"
        self.fd = -1
        self.epoch = 0

    def holder(self) -> dict:
        """What the lock file says about the last holder (host, pid, epoch); {} when unreadable."""
        try:
            with open(self.path) as f:
                host, pid, epoch = f.read().split()[:3]
            return {"host": host, "pid": int(pid), "epoch": int(epoch)}
        except (OSError, ValueError):
            return {}

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False (nothing changed) when another writer does."""
        if self.fd >= 0:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        prev = self.holder().get("epoch", 0)
        self.epoch = prev + 1
        data = f"{socket.gethostname()} {os.getpid()} {self.epoch}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self.fd = fd
        return True

    def acquire(self) -> "JournalLock":
        if not self.try_acquire():
            h = self.holder()
            who = f" (pid {h['pid']} on {h['host']}, epoch {h['epoch']})" if h else ""
            raise JournalLocked(f"{self.path[:-5]} is being written by another process{who}: one writer per "
                                "journal (stop it first, or run this one as its standby)")
        return self

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def is_free(self) -> bool:
        """Whether nobody holds the lock right now (checked by taking and dropping it; changes nothing)."""
        if self.fd >= 0:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)       # closing drops the lock if we took it
        return True


class JournalWriter:
    """Appends framed records to one journal file (one writer thread).

    Parameters
    ----------
    path : str
        Journal file; created with its header if missing. An existing file is validated and any torn
        tail is truncated away.
    fsync : {"every", "batch", "interval", "none"}
        Durability policy (see the module docstring).
    interval_ms : int
        fsync period for ``"interval"``, milliseconds.

    The writer holds the journal's :class:`JournalLock` from construction to :meth:`close`; a second
    writer of the same journal (another process, or another writer in this one) gets
    :class:`JournalLocked`. ``lock`` hands over a lock the caller already holds (a standby that fenced the
    primary).
    """

    def __init__(self, path: str, fsync: str = "batch", interval_ms: int = 10, lock: JournalLock | None = None):
        if fsync not in POLICIES:
            raise JournalError(f"fsync must be one of {POLICIES}, not {fsync!r}")
        if lock is not None and (not lock.held or lock.path != path + ".lock"):
            raise JournalError(f"the lock handed to the writer of {path} is not held")
        self.lock = lock if lock is not None else JournalLock(path).acquire()
        self.path = path
        try:
            self.policy = fsync
            self.interval = interval_ms / 1000.0
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            size = os.fstat(self.fd).st_size
            if size == 0:
                os.write(self.fd, MAGIC)
                os.fsync(self.fd)
                self.records = 0
                end = len(MAGIC)
            else:
                payloads, end = read_journal(path)
                self.records = len(payloads)
                if end < size:      # (read_journal raised JournalCorrupt if valid frames followed)
                    os.ftruncate(self.fd, end)  # drop the torn tail of a crashed writer
                    os.fsync(self.fd)
                    log.warning("%s: a torn tail of %d bytes after byte %d (a crash in the middle of a write) "
                                "was truncated; %d records kept", path, size - end, end, self.records)
            os.lseek(self.fd, end, os.SEEK_SET)
        except BaseException:
            self.lock.release()
            raise
        self.truncated_bytes = size - end if size else 0
        self._pending: list[bytes] = []
        self._dirty = False
        self._last_sync = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer = None
        if fsync == "interval":
            self._timer = threading.Thread(target=self._sync_loop, name="journal-fsync", daemon=True)
            self._timer.start()

    def append(self, payload: bytes) -> None:
        """Queue one record; under ``"every"`` it is written and fsynced at once, else at commit()."""
        if self.fd < 0:
            raise JournalError("journal closed")
        if not payload:
            raise JournalError("an empty journal record (a zero length field marks bytes never written)")
        self._pending.append(frame(payload))
        self.records += 1
        if self.policy == "every":
            self.commit()

    def commit(self) -> None:
        """Write every queued record, then fsync as the policy says. Call before applying them."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        with self._lock:
            start = os.lseek(self.fd, 0, os.SEEK_CUR)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
                self._dirty = True
                if self.policy in ("every", "batch") or (
                    self.policy == "interval" and time.monotonic() - self._last_sync >= self.interval
                ):
                    os.fsync(self.fd)
                    self._dirty = False
                    self._last_sync = time.monotonic()
            except BaseException:
                # A write that failed part-way (ENOSPC, EIO) may have left whole frames of this batch in the
                # file, which the engine will NOT apply (the caller answers them as failed): recovery would
                # apply them. Cut the file back to where this commit began so that it equals what was applied.
                self._rollback(start)
                raise

    def _rollback(self, start: int) -> None:
        try:
            os.ftruncate(self.fd, start)
            os.lseek(self.fd, start, os.SEEK_SET)
            os.fsync(self.fd)
        except OSError as e:     # the journal may now hold frames that were never applied: say so loudly
            log.error("%s: a failed commit could not be cut back to byte %d (%r): its tail may hold inputs "
                      "that were answered as failed", self.path, start, e)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._dirty and self.fd >= 0:
                    os.fsync(self.fd)
                    self._dirty = False
                    self._last_sync = time.monotonic()

    def sync(self) -> None:
        """Commit and fsync now, whatever the policy."""
        self.commit()
        with self._lock:
            if self.fd >= 0:
                os.fsync(self.fd)
                self._dirty = False

    def close(self) -> None:
        """Commit, fsync and close. Idempotent."""
        if self.fd < 0:
            return
        self.sync()
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        with self._lock:
            os.close(self.fd)
            self.fd = -1
        self.lock.release()


class JournalFollower:
    """Tails a journal that another process is writing (hot standby).

    :meth:`poll` returns the payloads that became complete since the last call; a frame still being
    written stays pending until it is whole. A frame that is whole but fails its crc32 stops the
    follower there (``corrupt`` is set), exactly as recovery would.
    """

    def __init__(self, path: str):
        self.path = path
        self.offset = 0  # next byte to parse
        self.corrupt = False
        self._f = None

    def _open(self) -> bool:
        if self._f is None:
            try:
                self._f = open(self.path, "rb")
            except FileNotFoundError:
                return False
        return True

    def poll(self) -> list[bytes]:
        if self.corrupt or not self._open():
            return []
        self._f.seek(self.offset)
        data = self._f.read()
        if self.offset == 0:
            if len(data) < len(MAGIC):
                return []
            if data[: len(MAGIC)] != MAGIC:
                raise JournalError(f"{self.path}: not a journal (bad magic)")
            data = data[len(MAGIC) :]
            self.offset = len(MAGIC)
        payloads, end = scan(data, 0)
        self.offset += end
        rest = data[end:]
        if len(rest) >= _FRAME.size:
            length, _crc = _FRAME.unpack_from(rest, 0)
            if length > MAX_FRAME or len(rest) >= _FRAME.size + length:
                self.corrupt = True  # a whole frame that does not check out
        return payloads

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
