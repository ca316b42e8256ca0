# distutils: sources = csrc/ring.c csrc/record.c
"""The SPSC tick ring from Python: one producer, one consumer, batches of 64-byte records.

A :class:`Ring` lives on the heap (threads of one process) or in POSIX shared memory (a second
process attaches to it by name with :meth:`Ring.attach`). Python touches it once per batch: ``push``
copies a whole numpy batch in, ``read`` returns a zero-copy view of every ready slot in one
contiguous run, ``release`` hands them back. Cython code reaches the C ring through
``from feedhandler.ring cimport Ring`` and ``r.ring`` (see ``feedhandler/includes/ring.pxd``).

Threading: one thread may produce (push, close) and one other thread may consume (read, release) at
the same time; both release the GIL while they wait. The contract is written at the top of
``fh/ring.h``.
"""
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport uint64_t

from feedhandler.includes.record cimport fh_tick, FH_TICK_SIZE
from feedhandler.includes.ring cimport *

import errno as _errno
import time as _time

import numpy as np

from feedhandler.records import TICK_DTYPE

__all__ = ["Ring", "RingClosedError"]

cdef enum:
    # Longest time one wait runs with the GIL released before Python checks for signals (Ctrl-C), ns.
    _WAIT_SLICE_NS = 50000000

_POLICY = {"block": FH_RING_BLOCK, "drop": FH_RING_DROP}
_POLICY_NAME = {FH_RING_BLOCK: "block", FH_RING_DROP: "drop"}


class RingClosedError(RuntimeError):
    """Raised by :meth:`Ring.push` on a ring that the producer has already closed."""


cdef _raise_rc(int rc, str what):
    err = -rc
    msg = f"{what}: {fh_ring_strerror(rc).decode()}"
    if err == _errno.EINVAL:
        raise ValueError(msg)
    if err == _errno.ENOMEM:
        raise MemoryError(msg)
    raise OSError(err, msg)  # errno picks the subclass: FileNotFoundError, FileExistsError, ...


cdef inline fh_ring *_get(Ring ring) except NULL:
    if ring.ring is NULL:
        raise ValueError("Ring is not initialised")
    return ring.ring


cdef class _Slots:
    """Read-only buffer over ready slots; holds its Ring so a view never outlives the mapping."""
    cdef Ring owner
    cdef const fh_tick *first
    cdef Py_ssize_t nbytes

    def __getbuffer__(self, Py_buffer *buf, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("ring slots are read-only for the consumer")
        PyBuffer_FillInfo(buf, self, <void *>self.first, self.nbytes, 1, flags)

    def __releasebuffer__(self, Py_buffer *buf):
        pass


cdef class Ring:
    """Lock-free single-producer/single-consumer ring of 64-byte tick records.

    Parameters
    ----------
    capacity : int
        Slots, a power of two (>= 2).
    overflow : {"block", "drop"}
        What :meth:`push` does when the ring is full: wait for the consumer, or drop the records that
        do not fit and count them in ``stats()["dropped"]``.
    shm_name : str, optional
        Create the ring in POSIX shared memory under this name ("/name" or "name") so another process
        can :meth:`attach` to it. The creating Ring unlinks the name when it is destroyed.
    """

    def __init__(self, capacity, overflow="block", shm_name=None):
        cdef fh_ring *r = NULL
        cdef int rc
        if self.ring is not NULL:
            raise RuntimeError("Ring is already initialised")
        if overflow not in _POLICY:
            raise ValueError(f"overflow must be 'block' or 'drop', not {overflow!r}")
        cap = int(capacity)
        if cap < 2 or cap > FH_RING_MAX_CAPACITY or cap & (cap - 1):
            raise ValueError(f"capacity must be a power of two in [2, 2**36], not {capacity!r}")
        if shm_name is None:
            rc = fh_ring_create(&r, cap, _POLICY[overflow])
            what = "cannot create ring"
        else:
            rc = fh_ring_create_shm(&r, _encode_name(shm_name), cap, _POLICY[overflow])
            what = f"cannot create shared memory ring {shm_name!r}"
        if rc != 0:
            _raise_rc(rc, what)
        self.ring = r

    @classmethod
    def attach(cls, shm_name):
        """Attach to a shared memory ring that another process created (as its consumer, usually).

        Raises ``FileNotFoundError`` when no ring has that name, ``ValueError`` for a malformed name,
        ``OSError`` (EPROTO) when the object is not a feedhandler ring.
        """
        cdef fh_ring *r = NULL
        cdef Ring ring
        rc = fh_ring_attach_shm(&r, _encode_name(shm_name))
        if rc != 0:
            _raise_rc(rc, f"cannot attach to shared memory ring {shm_name!r}")
        ring = Ring.__new__(cls)
        ring.ring = r
        return ring

    def __dealloc__(self):
        if self.ring is not NULL:
            fh_ring_destroy(self.ring)
            self.ring = NULL

    # ---- queries ---------------------------------------------------------------------------------
    @property
    def capacity(self):
        """Slots in the ring."""
        return fh_ring_capacity(_get(self))

    @property
    def name(self):
        """Shared memory name with its leading '/', or None for a heap ring."""
        cdef const char *n = fh_ring_name(_get(self))
        return n.decode() if n[0] else None

    @property
    def overflow(self):
        """The overflow policy, "block" or "drop"."""
        return _POLICY_NAME[fh_ring_policy(_get(self))]

    @property
    def closed(self):
        """True once the producer has closed the ring (there may still be records to read)."""
        return bool(fh_ring_is_closed(_get(self)))

    @property
    def finished(self):
        """True when the ring is closed and every record has been released: the stream has ended."""
        return bool(fh_ring_is_finished(_get(self)))

    @property
    def readable(self):
        """Records published and not yet released. Consumer side: call it from the consumer thread."""
        return fh_ring_readable(_get(self))

    def stats(self):
        """Counters: capacity, published, consumed, dropped, producer_waits, consumer_empty_polls."""
        cdef fh_ring_stats s
        fh_ring_get_stats(_get(self), &s)
        return {
            "capacity": s.capacity,
            "published": s.published,
            "consumed": s.consumed,
            "dropped": s.dropped,
            "producer_waits": s.producer_waits,
            "consumer_empty_polls": s.consumer_empty_polls,
        }

    # ---- producer --------------------------------------------------------------------------------
    def push(self, ticks):
        """Copy a batch of 64-byte records into the ring and publish it.

        Parameters
        ----------
        ticks : numpy.ndarray or bytes-like
            Records of 64 bytes each (any 64-byte dtype, e.g. ``feedhandler.records.TICK_DTYPE``), or
            a C-contiguous buffer whose length is a multiple of 64.

        Returns
        -------
        int
            Records written. Under "block" that is all of them (it waits for room, releasing the
            GIL, and stays interruptible by signals); under "drop" the rest was dropped and counted.
        """
        cdef fh_ring *r = _get(self)
        cdef Py_buffer view
        cdef const fh_tick *src
        cdef uint64_t n, k, written = 0
        if fh_ring_is_closed(r):
            raise RingClosedError("push on a closed ring")
        if isinstance(ticks, np.ndarray):
            if ticks.dtype.itemsize != FH_TICK_SIZE:
                raise ValueError(f"records must be {FH_TICK_SIZE} bytes, not {ticks.dtype.itemsize} ({ticks.dtype})")
            ticks = np.ascontiguousarray(ticks)
        PyObject_GetBuffer(ticks, &view, PyBUF_C_CONTIGUOUS)
        try:
            if view.len % FH_TICK_SIZE:
                raise ValueError(f"buffer of {view.len} bytes is not a whole number of {FH_TICK_SIZE}-byte records")
            src = <const fh_tick *>view.buf
            n = <uint64_t>(view.len // FH_TICK_SIZE)
            if fh_ring_policy(r) == FH_RING_DROP:
                with nogil:
                    written = fh_ring_push(r, src, n)
                return written
            while True:
                with nogil:
                    k = fh_ring_push_for(r, src + written, n - written, _WAIT_SLICE_NS)
                written += k
                if written == n:
                    return written
                PyErr_CheckSignals()
        finally:
            PyBuffer_Release(&view)

    def close(self):
        """End of stream: the consumer drains what is left, then sees ``finished``."""
        fh_ring_close(_get(self))

    # ---- consumer --------------------------------------------------------------------------------
    def read(self, Py_ssize_t max=65536, timeout=0.0):
        """Zero-copy view of the ready records (one contiguous run, at most ``max``).

        Parameters
        ----------
        max : int
            Most records to return.
        timeout : float or None
            Seconds to wait for at least one record: 0 (default) does not wait, None waits until a
            record arrives or the stream ends (interruptible).

        Returns
        -------
        numpy.ndarray
            Read-only array of ``TICK_DTYPE`` over the ring's own slots: valid until those records are
            released with :meth:`release` (the producer then reuses the memory). Empty when nothing is
            ready. The array keeps the Ring alive.
        """
        cdef fh_ring *r = _get(self)
        cdef const fh_tick *first = NULL
        cdef uint64_t n, slice_ns
        cdef double remaining
        cdef _Slots span
        if max <= 0:
            raise ValueError("max must be positive")
        if timeout is not None and timeout <= 0:
            n = fh_ring_peek(r, <uint64_t>max, &first)
        else:
            deadline = None if timeout is None else _time.monotonic() + float(timeout)
            while True:
                slice_ns = _WAIT_SLICE_NS
                if deadline is not None:
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0:
                        n = fh_ring_peek(r, <uint64_t>max, &first)
                        break
                    if remaining * 1e9 < slice_ns:
                        slice_ns = <uint64_t>(remaining * 1e9) + 1
                with nogil:
                    n = fh_ring_wait_for(r, <uint64_t>max, &first, slice_ns)
                if n != 0 or fh_ring_is_finished(r):
                    break
                PyErr_CheckSignals()
        if n == 0:
            return np.empty(0, dtype=TICK_DTYPE)
        span = _Slots.__new__(_Slots)
        span.owner = self
        span.first = first
        span.nbytes = <Py_ssize_t>(n * FH_TICK_SIZE)
        return np.frombuffer(span, dtype=TICK_DTYPE)

    def release(self, n):
        """Hand the first ``n`` records read back to the producer; views over them become invalid."""
        cdef fh_ring *r = _get(self)
        cdef uint64_t ready = fh_ring_readable(r)
        if n < 0 or n > ready:
            raise ValueError(f"cannot release {n} records: {ready} are ready")
        fh_ring_release(r, <uint64_t>n)

    def __repr__(self):
        if self.ring is NULL:
            return "<Ring (not initialised)>"
        s = self.stats()  # any thread may print a Ring: only atomic loads here
        where = f" shm={self.name!r}" if self.name else ""
        return (f"<Ring capacity={self.capacity} overflow={self.overflow!r}{where} "
                f"published={s['published']} consumed={s['consumed']} closed={self.closed}>")


cdef bytes _encode_name(name):
    if not isinstance(name, str):
        raise TypeError(f"shm_name must be a str, not {type(name).__name__}")
    b = name.encode()
    if b"\0" in b:
        raise ValueError("shm_name must not contain NUL")
    return b
