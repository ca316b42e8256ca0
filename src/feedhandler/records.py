"""numpy views of the normalized tick record, derived from the C header (never typed twice).

Every batch of ticks is a numpy array of ``TICK_DTYPE`` (64 bytes a record: the DBN record header plus
the raw slot). ``view(ticks, "mbo")`` reinterprets the same memory with the MBO layout; select the
rows first with ``ticks["rtype"] == RTYPE["mbo"]``.
"""
from __future__ import annotations

import numpy as np

from feedhandler._records import TICK_SIZE, record_layouts

_KIND = {"u": "<u", "i": "<i"}


def dtype_from_fields(fields, itemsize: int = TICK_SIZE) -> np.dtype:
    """numpy dtype from a C descriptor table [(name, offset, size, count, kind), ...] (fh_field_desc)."""
    names, formats, offsets = [], [], []
    for name, offset, size, count, kind in fields:
        if kind == "V":
            continue  # padding: stays in the raw bytes, not a named field
        if kind == "c":
            fmt = f"S{count}"
        else:
            fmt = f"{_KIND[kind]}{size}"
            if count > 1:
                fmt = (fmt, (count,))
        names.append(name)
        formats.append(fmt)
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


LAYOUTS = {name: (rtype, size, dbn_length, fields) for name, rtype, size, dbn_length, fields in record_layouts()}
DTYPES: dict[str, np.dtype] = {name: dtype_from_fields(v[3]) for name, v in LAYOUTS.items()}
RTYPE: dict[str, int] = {name: v[0] for name, v in LAYOUTS.items()}
RTYPE_NAME: dict[int, str] = {v: k for k, v in RTYPE.items()}
DBN_LENGTH: dict[str, int] = {name: v[2] for name, v in LAYOUTS.items()}

# The generic slot: header fields named, the rest raw.
TICK_DTYPE = np.dtype(
    {
        "names": ["length", "rtype", "publisher_id", "instrument_id", "ts_event", "raw"],
        "formats": ["<u1", "<u1", "<u2", "<u4", "<u8", ("u1", (TICK_SIZE,))],
        "offsets": [0, 1, 2, 4, 8, 0],
        "itemsize": TICK_SIZE,
    }
)

PRICE_SCALE = 1_000_000_000
UNDEF_PRICE = np.iinfo(np.int64).max


def view(ticks: np.ndarray, name: str) -> np.ndarray:
    """Reinterpret a tick array (any 64-byte dtype) as the record layout ``name`` without copying."""
    return ticks.view(DTYPES[name])


def empty(n: int) -> np.ndarray:
    """A zeroed, 64-byte aligned batch of n ticks."""
    buf = np.zeros(n * TICK_SIZE + 64, dtype=np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off : off + n * TICK_SIZE].view(TICK_DTYPE)


def concat(batches) -> np.ndarray:
    """Join tick batches into one 64-byte-per-record array.

    ``np.concatenate`` would repack ``TICK_DTYPE`` (its ``raw`` field overlays the header fields), so
    batches are joined as raw bytes and viewed again.
    """
    parts = [np.ascontiguousarray(b).view(np.uint8).reshape(-1) for b in batches]
    out = empty(sum(p.size for p in parts) // TICK_SIZE)
    flat = out.view(np.uint8).reshape(-1)
    pos = 0
    for p in parts:
        flat[pos : pos + p.size] = p
        pos += p.size
    return out
