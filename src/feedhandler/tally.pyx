"""Per-batch counters of a replay in one native pass over the records (no per-record Python object).

A replay keeps three running counts over every batch it reads: records by rtype, book records (those
whose rtype is in a set, e.g. MBO and trades) per ``instrument_id``, and where the reference-data records
are (stock directory, instrument definition), so that the symbol map learns them. Done with numpy these
took five passes and three temporary arrays a batch (about 0.1 s of a 10 M message ITCH day); here it is
one loop over the 64-byte records' headers.
"""
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE, PyObject_GetBuffer, PyBuffer_Release
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from feedhandler.includes.record cimport FH_TICK_SIZE, fh_tick

import numpy as np


#: instrument ids below this are counted in a dense array (grown on demand up to it: 8 MiB of int64);
#: ids at or above it (CME security ids can be any int32; a damaged packet can carry any value) in an
#: open-addressing hash, so that one bad id never sizes an array by its value
cdef enum:
    _DENSE_MAX = 1 << 20
DENSE_MAX = _DENSE_MAX


cdef class BatchTally:
    """Running counts over batches of tick records.

    Parameters
    ----------
    book_rtypes : sequence of int
        rtypes counted per instrument (``activity``).
    ref_rtypes : sequence of int
        rtypes whose positions :meth:`add` returns (the symbol map reads those records).

    Attributes (numpy arrays, read at the end)
    ----------
    by_rtype : int64[256]
        records seen per rtype.
    activity : int64[n]
        book records per instrument_id below ``n`` (grown on demand; ``n <= DENSE_MAX``); ids at or above
        ``DENSE_MAX`` are counted apart (:meth:`count`, :meth:`counts`, :meth:`busiest` see every id).
    """
    cdef uint8_t book_mask[256]
    cdef uint8_t ref_mask[256]
    cdef public object by_rtype
    cdef public object activity
    cdef int64_t[::1] _by_rtype
    cdef int64_t[::1] _activity
    # ids >= DENSE_MAX: linear probing over (key + 1, count); key slot 0 = empty
    cdef object _hkeys_arr
    cdef object _hcounts_arr
    cdef uint64_t[::1] _hkeys
    cdef int64_t[::1] _hcounts
    cdef size_t _hused

    def __cinit__(self, book_rtypes=(), ref_rtypes=(), size_t ids=1 << 16):
        cdef int i
        for i in range(256):
            self.book_mask[i] = 0
            self.ref_mask[i] = 0
        for r in book_rtypes:
            self.book_mask[<uint8_t>r] = 1
        for r in ref_rtypes:
            self.ref_mask[<uint8_t>r] = 1
        self.by_rtype = np.zeros(256, np.int64)
        self._by_rtype = self.by_rtype
        self.activity = np.zeros(min(max(ids, 1), _DENSE_MAX), np.int64)
        self._activity = self.activity
        self._hash_alloc(64)

    cdef _hash_alloc(self, size_t cap):
        self._hkeys_arr = np.zeros(cap, np.uint64)
        self._hcounts_arr = np.zeros(cap, np.int64)
        self._hkeys = self._hkeys_arr
        self._hcounts = self._hcounts_arr
        self._hused = 0

    cdef void _hash_add(self, uint32_t iid, int64_t k) noexcept nogil:
        # the caller keeps the table at most half full
        cdef size_t mask = <size_t>self._hkeys.shape[0] - 1
        cdef size_t j = (<size_t>iid * 0x9E3779B1u) & mask
        cdef uint64_t key = <uint64_t>iid + 1
        while self._hkeys[j] != 0 and self._hkeys[j] != key:
            j = (j + 1) & mask
        if self._hkeys[j] == 0:
            self._hkeys[j] = key
            self._hused += 1
        self._hcounts[j] += k

    cdef _hash_reserve(self, size_t more):
        """Room for ``more`` new keys at most half full (rehashed into a bigger table when needed)."""
        cdef size_t cap = <size_t>self._hkeys.shape[0], j
        if 2 * (self._hused + more) <= cap:
            return
        while 2 * (self._hused + more) > cap:
            cap *= 2
        keys, counts = self._hkeys_arr, self._hcounts_arr
        self._hash_alloc(cap)
        for j in range(keys.shape[0]):
            if keys[j]:
                self._hash_add(<uint32_t>(keys[j] - 1), counts[j])

    def add(self, ticks, bint rtypes=True, bint activity=True):
        """Count one batch (a C-contiguous array of 64-byte records): its records by rtype (``rtypes``)
        and its book records per instrument (``activity``). Returns the indices (int64 array) of its
        reference-data records, in order (usually empty; always empty when ``rtypes`` is false)."""
        cdef Py_buffer view
        cdef size_t n, i, nref = 0, nbig = 0
        cdef uint32_t top = 0
        cdef const fh_tick *t
        cdef uint8_t rt
        cdef uint32_t iid
        cdef size_t cap
        PyObject_GetBuffer(ticks, &view, PyBUF_C_CONTIGUOUS)
        try:
            if view.len % FH_TICK_SIZE or (view.ndim and view.itemsize != FH_TICK_SIZE):
                raise ValueError(f"records must be {FH_TICK_SIZE} bytes, got itemsize {view.itemsize}")
            n = <size_t>view.len // FH_TICK_SIZE
            t = <const fh_tick *>view.buf
            cap = <size_t>self._activity.shape[0]
            with nogil:
                for i in range(n):
                    rt = t[i].hd.rtype
                    if rtypes:
                        self._by_rtype[rt] += 1
                        nref += self.ref_mask[rt]
                    if activity and self.book_mask[rt]:
                        iid = t[i].hd.instrument_id
                        if iid < cap:
                            self._activity[iid] += 1
                        elif iid < _DENSE_MAX:
                            if iid > top:
                                top = iid
                        else:
                            nbig += 1
            if top or nbig:   # ids beyond the dense array: grow it (up to DENSE_MAX) or hash them
                if top:
                    self._grow(top)
                if nbig:
                    self._hash_reserve(nbig)
                with nogil:
                    for i in range(n):   # the records the first pass did not count (ids >= cap)
                        rt = t[i].hd.rtype
                        if self.book_mask[rt]:
                            iid = t[i].hd.instrument_id
                            if iid >= _DENSE_MAX:
                                self._hash_add(iid, 1)
                            elif iid >= cap:
                                self._activity[iid] += 1
            refs = np.empty(nref, np.int64)
            if nref:
                self._ref_positions(t, n, refs)
            return refs
        finally:
            PyBuffer_Release(&view)

    cdef void _ref_positions(self, const fh_tick *t, size_t n, int64_t[::1] out):
        cdef size_t i, k = 0
        for i in range(n):
            if self.ref_mask[t[i].hd.rtype]:
                out[k] = <int64_t>i
                k += 1

    cdef _grow(self, uint32_t top):
        cdef size_t old = <size_t>self._activity.shape[0]
        grown = np.zeros(min(max(<size_t>top + 1, 2 * old), <size_t>_DENSE_MAX), np.int64)
        grown[:old] = self.activity
        self.activity = grown
        self._activity = grown

    def count(self, uint32_t iid):
        """Book records counted for one instrument id (any id)."""
        cdef size_t mask, j
        cdef uint64_t key
        if iid < <size_t>self._activity.shape[0]:
            return int(self._activity[iid])
        if iid < _DENSE_MAX:
            return 0
        mask = <size_t>self._hkeys.shape[0] - 1
        j = (<size_t>iid * 0x9E3779B1u) & mask
        key = <uint64_t>iid + 1
        while self._hkeys[j] != 0:
            if self._hkeys[j] == key:
                return int(self._hcounts[j])
            j = (j + 1) & mask
        return 0

    def counts(self):
        """(ids uint32[k], counts int64[k]) of every instrument with a book record, ids ascending."""
        ids = np.flatnonzero(self.activity).astype(np.uint32)
        dense = self.activity[ids]
        used = self._hkeys_arr != 0
        big_ids = (self._hkeys_arr[used] - 1).astype(np.uint32)
        big = self._hcounts_arr[used]
        order = np.argsort(big_ids, kind="stable")
        return np.concatenate([ids, big_ids[order]]), np.concatenate([dense, big[order]])

    def busiest(self, size_t n):
        """Up to ``n`` instrument ids by book records, most first (ties: the lower id first)."""
        ids, counts = self.counts()
        order = np.argsort(-counts, kind="stable")[:n]
        return ids[order].tolist()
