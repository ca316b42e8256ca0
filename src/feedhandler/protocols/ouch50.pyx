"""OUCH 5.0 TagValue appendages, decoded natively for a batch of messages.

The fixed part of every OUCH 5.0 message is decoded by ``ouch_events`` (offsets derived from
``ouch50_spec.TABLE``); this module walks the appendage block that follows the 2-byte
``appendage_length`` of enter / replace / accepted / replaced / executed / restated messages and
fills one row per message of :data:`APPENDAGE_DTYPE`. The dtype's fields, their wire kinds and
tags come from ``ouch50_spec.APPENDAGES`` (one table); unknown tags are counted, not fatal.

``parse(buf, offsets, lengths, from_server)`` checks the message length against the fixed size
first and never reads past a message; a block whose entries overrun it is reported per row
(``status`` = 2) and counted.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, int32_t
from libc.string cimport memcpy, memset

import numpy as np

from feedhandler.protocols import ouch50_spec as _spec

cdef extern from "fh/endian.h" nogil:
    uint16_t fh_load_be16(const void *p)
    uint32_t fh_load_be32(const void *p)
    uint64_t fh_load_be64(const void *p)

# status per row
cdef enum:
    _OK = 0
    _NO_APPENDAGES = 1      # message type without appendages, or unknown type / too short
    _BAD_BLOCK = 2          # appendage_length disagrees with the message, or an entry overruns
OK, NO_APPENDAGES, BAD_BLOCK = _OK, _NO_APPENDAGES, _BAD_BLOCK

_KIND_DTYPE = {"s": None, "c": "S1", "u2": "<u2", "u4": "<u4", "u8": "<u8", "i4": "<i4", "i8": "<i8"}


def _make_dtype():
    names, formats = ["status", "count", "unknown"], ["u1", "u1", "u1"]
    for tag in sorted(_spec.APPENDAGES):
        name, kind, n = _spec.APPENDAGES[tag]
        names.append(name)
        formats.append(f"S{n}" if kind == "s" else _KIND_DTYPE[kind])
        names.append("has_" + name)
        formats.append("u1")
    return np.dtype({"names": names, "formats": formats}, align=False)


APPENDAGE_DTYPE = _make_dtype()

# tag -> (byte offset of the value field in a row, value bytes, kind code, offset of has_ flag)
cdef int32_t _T_OFF[256]
cdef int32_t _T_N[256]
cdef uint8_t _T_KIND[256]     # 0 unknown, 1 bytes (s/c), 2 u2, 3 u4, 4 u8, 5 i4, 6 i8
cdef int32_t _T_HAS[256]
cdef int32_t _FIX_SIZE[2][256]   # fixed size of messages with appendages (0: none)


def _load():
    memset(_T_KIND, 0, sizeof(_T_KIND))
    memset(_FIX_SIZE, 0, sizeof(_FIX_SIZE))
    codes = {"s": 1, "c": 1, "u2": 2, "u4": 3, "u8": 4, "i4": 5, "i8": 6}
    for tag, (name, kind, n) in _spec.APPENDAGES.items():
        _T_OFF[tag] = APPENDAGE_DTYPE.fields[name][1]
        _T_N[tag] = n
        _T_KIND[tag] = codes[kind]
        _T_HAS[tag] = APPENDAGE_DTYPE.fields["has_" + name][1]
    for (direction, t), lay in _spec.LAYOUTS.items():
        if lay.has_appendages:
            _FIX_SIZE[1 if direction == "out" else 0][t[0]] = lay.size

_load()


cdef int _row(const uint8_t *p, uint32_t ln, int fs, uint8_t *row) noexcept nogil:
    cdef int32_t fix
    cdef uint32_t alen, i = 0, vl
    cdef uint8_t tag
    cdef uint8_t *dst
    cdef uint16_t v2
    cdef uint32_t v4
    cdef uint64_t v8
    if ln == 0:
        return _NO_APPENDAGES
    fix = _FIX_SIZE[fs][p[0]]
    if fix == 0 or ln < <uint32_t> fix:
        return _NO_APPENDAGES
    alen = fh_load_be16(p + fix - 2)
    if ln != fix + alen:
        return _BAD_BLOCK
    p += fix
    while i < alen:
        vl = p[i]
        if vl < 1 or i + 1 + vl > alen:
            return _BAD_BLOCK
        tag = p[i + 1]
        vl -= 1                      # value bytes
        if row[1] < 255:
            row[1] += 1
        if _T_KIND[tag] == 0 or vl != <uint32_t> _T_N[tag]:
            if row[2] < 255:
                row[2] += 1
        else:
            dst = row + _T_OFF[tag]
            if _T_KIND[tag] == 1:
                memcpy(dst, p + i + 2, vl)
            elif _T_KIND[tag] == 2:
                v2 = fh_load_be16(p + i + 2)
                memcpy(dst, &v2, 2)
            elif _T_KIND[tag] == 3 or _T_KIND[tag] == 5:
                v4 = fh_load_be32(p + i + 2)
                memcpy(dst, &v4, 4)
            else:
                v8 = fh_load_be64(p + i + 2)
                memcpy(dst, &v8, 8)
            row[_T_HAS[tag]] = 1
        i += 2 + vl
    return _OK


def parse(const uint8_t[::1] buf, const int64_t[::1] offsets, const int64_t[::1] lengths,
          const uint8_t[::1] from_server):
    """Rows of APPENDAGE_DTYPE, one per message buf[offsets[i]:offsets[i]+lengths[i]] (one nogil pass).

    Alphanumeric values keep their space padding (as on the wire); prices stay in OUCH units (1e-4).
    """
    cdef Py_ssize_t n = offsets.shape[0], i, size = APPENDAGE_DTYPE.itemsize
    if lengths.shape[0] != n or from_server.shape[0] != n:
        raise ValueError("offsets, lengths and from_server must have the same length")
    for i in range(n):
        if offsets[i] < 0 or lengths[i] < 0 or offsets[i] + lengths[i] > buf.shape[0]:
            raise ValueError(f"message {i} lies outside the buffer")
    out = np.zeros(n, dtype=APPENDAGE_DTYPE)
    if n == 0:
        return out
    cdef uint8_t[::1] raw = out.view(np.uint8)
    with nogil:
        for i in range(n):
            if lengths[i] == 0:
                raw[i * size] = _NO_APPENDAGES
                continue
            raw[i * size] = <uint8_t> _row(&buf[0] + offsets[i], <uint32_t> lengths[i], from_server[i] != 0,
                                           &raw[i * size])
    return out


def parse_one(msg, bint from_server):
    """Appendages of one message as a dict {name: value} of the fields present (tests, tools)."""
    b = np.frombuffer(bytes(msg) or b"\0", dtype=np.uint8)
    row = parse(b, np.zeros(1, np.int64), np.array([len(msg)], np.int64), np.array([from_server], np.uint8))[0]
    out = {"status": int(row["status"]), "count": int(row["count"]), "unknown": int(row["unknown"])}
    for tag in sorted(_spec.APPENDAGES):
        name = _spec.APPENDAGES[tag][0]
        if row["has_" + name]:
            v = row[name]
            out[name] = v.rstrip(b" \x00") if isinstance(v, bytes) else int(v)   # padding as in ouch50_spec
    return out
