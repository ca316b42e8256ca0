"""FIX tag=value: framing, BodyLength/CheckSum validation and field splitting (native, nogil).

Framing follows QuickFIX's parser so that a FIX client sees the behaviour it expects from an acceptor:
a message starts at ``8=``; the next field must be ``9=<digits>``; the body is the declared number of
bytes after the SOH of BodyLength; the message ends at the first ``<SOH>10=...<SOH>`` at or after the end
of the declared body. A declared length that is too long therefore swallows the following message (both
are then invalid), one that is too short is found invalid by the BodyLength check. Validation (on a
framed message): BodyLength must equal the real body size and CheckSum (sum of every byte before
``10=``, mod 256) must equal the 10= value. Every function takes (buf, offsets) and never reads past
the buffer end; nothing here allocates per message except the returned Python tuples.

Status codes (module constants): ``OK``, ``INCOMPLETE`` (need more bytes), ``GARBLED`` (no valid
BodyLength after 8=: discard up to ``end`` and rescan), ``BAD_BODY_LENGTH``, ``BAD_CHECKSUM`` (a whole
framed message [start, end) that must be ignored).

``split(..., resync=True)`` is the capture decoders' framing (``fix_stream``), which must lose no valid
message to a broken one: a message whose BodyLength is wrong ends where the next message begins (the
next ``<SOH>8=`` after its start) when that comes before the trailer the declared length leads to, so a
cut or lying message costs only itself; and bytes other than NUL, space, CR or LF before a ``8=`` are a
GARBLED row instead of being skipped without a count. The acceptor keeps QuickFIX's behaviour.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memchr

OK = 0
INCOMPLETE = 1
GARBLED = 2
BAD_BODY_LENGTH = 3
BAD_CHECKSUM = 4
STATUS_NAMES = ("ok", "incomplete", "garbled", "bad_body_length", "bad_checksum")

cdef enum:
    _OK = 0
    _INCOMPLETE = 1
    _GARBLED = 2
    _BAD_BODY_LENGTH = 3
    _BAD_CHECKSUM = 4

cdef enum:
    SOH = 1
    MAX_BODY = 1 << 24   # bytes; a larger BodyLength is treated as garbage


cdef inline Py_ssize_t _find2(const uint8_t *p, Py_ssize_t n, Py_ssize_t i, uint8_t a, uint8_t b) noexcept nogil:
    """First index >= i of the two-byte sequence a b, or -1."""
    cdef const uint8_t *q
    while i + 1 < n:
        q = <const uint8_t *> memchr(p + i, a, n - i - 1)
        if q == NULL:
            return -1
        i = q - p
        if p[i + 1] == b:
            return i
        i += 1
    return -1


cdef inline Py_ssize_t _find_trailer(const uint8_t *p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """First index >= i of SOH '1' '0' '=', or -1."""
    cdef const uint8_t *q
    while i + 3 < n:
        q = <const uint8_t *> memchr(p + i, SOH, n - i - 3)
        if q == NULL:
            return -1
        i = q - p
        if p[i + 1] == 49 and p[i + 2] == 48 and p[i + 3] == 61:
            return i
        i += 1
    return -1


cdef inline Py_ssize_t _next_begin(const uint8_t *p, Py_ssize_t n, Py_ssize_t i, Py_ssize_t limit) noexcept nogil:
    """Index of the '8' of the first <SOH>8= at or after i whose '8' is before limit, or -1."""
    cdef Py_ssize_t k = _find2(p, n, i, SOH, 56)
    while k >= 0 and k + 1 < limit:
        if k + 2 < n and p[k + 2] == 61:
            return k + 1
        k = _find2(p, n, k + 1, SOH, 56)
    return -1


cdef inline bint _filler(const uint8_t *p, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Only NUL, space, CR or LF in p[a:b] (padding some engines write between messages)."""
    cdef Py_ssize_t i
    for i in range(a, b):
        if p[i] != 0 and p[i] != 32 and p[i] != 13 and p[i] != 10:
            return False
    return True


cdef int _frame(const uint8_t *p, Py_ssize_t n, Py_ssize_t start, Py_ssize_t *mstart, Py_ssize_t *mend,
                bint resync=False) noexcept nogil:
    cdef Py_ssize_t i, s, body_start, tr, j, ck_end, nx
    cdef int64_t length = 0, ck = 0
    cdef unsigned int sum8 = 0
    s = _find2(p, n, start, 56, 61)  # "8="
    if s < 0:
        mstart[0] = n - 1 if n - 1 > start else start   # keep a trailing '8' that may start "8="
        mend[0] = mstart[0]
        return _INCOMPLETE
    if resync and s > start and not _filler(p, start, s):
        mstart[0] = start                # bytes that are no message: one GARBLED row for them
        mend[0] = s
        return _GARBLED
    mstart[0] = s
    # end of the BeginString field
    i = s + 2
    while i < n and p[i] != SOH:
        i += 1
    if i >= n:
        mend[0] = s
        return _INCOMPLETE
    i += 1
    if i + 2 > n:
        mend[0] = s
        return _INCOMPLETE
    if p[i] != 57 or p[i + 1] != 61:     # "9="
        mend[0] = i
        return _GARBLED
    i += 2
    j = i
    while i < n and 48 <= p[i] <= 57 and i - j < 9:
        length = length * 10 + (p[i] - 48)
        i += 1
    if i >= n:
        mend[0] = s
        return _INCOMPLETE
    if i == j or p[i] != SOH or length > MAX_BODY:
        mend[0] = i
        return _GARBLED
    body_start = i + 1
    if body_start + length > n:
        if resync:
            nx = _next_begin(p, n, body_start, n)
            if nx >= 0:                  # a message begins before the declared end: this one lies
                mend[0] = nx
                return _BAD_BODY_LENGTH
        mend[0] = s
        return _INCOMPLETE
    tr = _find_trailer(p, n, body_start + length - 1 if length > 0 else body_start - 1)
    if tr < 0:
        if resync:
            nx = _next_begin(p, n, body_start, n)
            if nx >= 0:
                mend[0] = nx
                return _BAD_BODY_LENGTH
        mend[0] = s
        return _INCOMPLETE
    if resync and tr + 1 - body_start != length:
        nx = _next_begin(p, n, body_start, tr)
        if nx >= 0:                      # the declared length ran into the next message
            mend[0] = nx
            return _BAD_BODY_LENGTH
    j = tr + 4
    ck_end = j
    while j < n and p[j] != SOH:
        j += 1
    if j >= n:
        mend[0] = s
        return _INCOMPLETE
    mend[0] = j + 1
    if tr + 1 - body_start != length:
        return _BAD_BODY_LENGTH
    if j == ck_end or j - ck_end > 3:
        return _BAD_CHECKSUM
    for i in range(ck_end, j):
        if not (48 <= p[i] <= 57):
            return _BAD_CHECKSUM
        ck = ck * 10 + (p[i] - 48)
    for i in range(s, tr + 1):
        sum8 += p[i]
    if <int64_t> (sum8 & 255) != ck:
        return _BAD_CHECKSUM
    return _OK


def frame(const uint8_t[::1] buf, Py_ssize_t start=0):
    """Frame one message at or after ``start``: returns (status, msg_start, msg_end).

    OK / BAD_*: the message is buf[msg_start:msg_end]. INCOMPLETE: keep buf[msg_start:] and read more.
    GARBLED: discard buf[:msg_end] and call again.
    """
    cdef Py_ssize_t ms = 0, me = 0
    cdef int st
    if start < 0 or start > buf.shape[0]:
        raise ValueError("start out of range")
    if buf.shape[0] == 0:
        return INCOMPLETE, 0, 0
    with nogil:
        st = _frame(&buf[0], buf.shape[0], start, &ms, &me)
    return st, ms, me


def split(const uint8_t[::1] buf, int64_t[:, ::1] out, bint resync=False):
    """Frame every complete message in ``buf`` in one call.

    ``out`` has shape (m, 3); row k receives (status, msg_start, msg_end) of message k (GARBLED rows
    mark discarded bytes). Returns (n_rows, consumed): bytes before ``consumed`` are done with.
    ``resync``: the capture decoders' framing (module docstring).
    """
    cdef Py_ssize_t n = buf.shape[0], pos = 0, ms = 0, me = 0, k = 0, cap = out.shape[0]
    cdef int st
    if out.shape[1] != 3:
        raise ValueError("out must have shape (m, 3)")
    if n == 0:
        return 0, 0
    with nogil:
        while k < cap and pos < n:
            st = _frame(&buf[0], n, pos, &ms, &me, resync)
            if st == _INCOMPLETE:
                pos = ms
                break
            out[k, 0] = st
            out[k, 1] = ms
            out[k, 2] = me
            k += 1
            pos = me
    return k, pos


cdef Py_ssize_t _fields(const uint8_t *buf, Py_ssize_t start, Py_ssize_t end, int32_t *out,
                        Py_ssize_t cap) noexcept nogil:
    cdef Py_ssize_t i = start, k = 0, vs
    cdef int64_t tag
    cdef int neg
    while i < end:
        if k >= cap:
            return -(k + 1)
        tag = 0
        neg = 0
        if i < end and buf[i] == 45:      # '-': a negative tag is malformed but reported as such
            neg = 1
            i += 1
        vs = i
        while i < end and 48 <= buf[i] <= 57 and i - vs < 9:
            tag = tag * 10 + (buf[i] - 48)
            i += 1
        if i == vs or i >= end or buf[i] != 61:
            return -(k + 1)
        if neg:
            tag = -tag
        i += 1
        vs = i
        while i < end and buf[i] != SOH:
            i += 1
        if i >= end:
            return -(k + 1)
        out[3 * k] = <int32_t> tag
        out[3 * k + 1] = <int32_t> vs
        out[3 * k + 2] = <int32_t> i
        k += 1
        i += 1
    return k


def fields(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t end, int32_t[:, ::1] out):
    """Split buf[start:end] into fields: row k of ``out`` (shape (m, 3)) = (tag, value_start, value_end).

    Returns the number of fields, or ``-(k + 1)`` when field k is malformed (tag not a decimal
    number, no ``=``, no closing SOH, or more than m fields). Tags 0 and negative tags are returned as
    they are (the session layer answers them with "Invalid tag number", as QuickFIX does). Offsets are
    absolute indexes into ``buf``.
    """
    cdef Py_ssize_t r
    if start < 0 or end > buf.shape[0] or start > end:
        raise ValueError("bad range")
    if out.shape[1] != 3:
        raise ValueError("out must have shape (m, 3)")
    if end == start:
        return 0
    if out.shape[0] == 0:
        return -1
    with nogil:
        r = _fields(&buf[0], start, end, &out[0, 0], out.shape[0])
    return r


def checksum(const uint8_t[::1] buf) -> int:
    """Sum of the bytes mod 256 (the FIX CheckSum of a message prefix ending with SOH)."""
    cdef Py_ssize_t i
    cdef unsigned int s = 0
    with nogil:
        for i in range(buf.shape[0]):
            s += buf[i]
    return s & 255


def parse(const uint8_t[::1] buf):
    """Convenience: validate one whole message; returns (status, [(tag, value_bytes), ...])."""
    cdef int32_t[:, ::1] out
    st, ms, me = frame(buf, 0)
    if st != OK:
        return st, []
    import numpy as np
    arr = np.empty((max(8, (me - ms) // 2), 3), dtype=np.int32)
    out = arr
    n = fields(buf, ms, me, out)
    if n < 0:
        return GARBLED, []
    b = bytes(buf)
    return OK, [(int(arr[k, 0]), b[arr[k, 1]:arr[k, 2]]) for k in range(n)]
