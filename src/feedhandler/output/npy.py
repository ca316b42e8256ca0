"""Write normalized records as one ``.npy`` file: every 64-byte record, unchanged, in stream order.

``TICK_DTYPE`` names the header fields and overlays the whole slot as ``raw``; numpy's ``.npy``
format cannot describe overlapping fields, so the file's dtype is the same 64 bytes without the
overlay (``NPY_DTYPE``: the header fields plus ``body``, 48 bytes). Read it back with::

    ticks = np.load(path).view(feedhandler.records.TICK_DTYPE)
    mbo = feedhandler.records.view(ticks[ticks["rtype"] == RTYPE["mbo"]], "mbo")
"""
from __future__ import annotations

import os

import numpy as np
import numpy.lib.format as npformat

from feedhandler import records
from feedhandler.output._spool import SpoolWriter, names_the_output

__all__ = ["NpyWriter", "NPY_DTYPE"]

NPY_DTYPE = np.dtype(
    {
        "names": ["length", "rtype", "publisher_id", "instrument_id", "ts_event", "body"],
        "formats": ["<u1", "<u1", "<u2", "<u4", "<u8", ("u1", (records.TICK_DTYPE.itemsize - 16,))],
        "offsets": [0, 1, 2, 4, 8, 16],
        "itemsize": records.TICK_DTYPE.itemsize,
    }
)


class NpyWriter(SpoolWriter):
    """Streaming ``.npy`` writer of raw tick records (``write(batch)``, then ``close()``)."""

    def __init__(self, path: str | os.PathLike, **_ignored):
        super().__init__(path)

    @names_the_output
    def write(self, ticks: np.ndarray) -> int:
        if ticks.dtype.itemsize != records.TICK_DTYPE.itemsize:
            raise ValueError("expected 64-byte tick records")
        self._append(np.ascontiguousarray(ticks).view(np.uint8))
        self.records += ticks.shape[0]
        return ticks.shape[0]

    def header(self) -> bytes:
        import io

        buf = io.BytesIO()
        hdr = {"descr": npformat.dtype_to_descr(NPY_DTYPE), "fortran_order": False, "shape": (self.records,)}
        npformat.write_array_header_1_0(buf, hdr)
        return buf.getvalue()
