"""glibc malloc settings for a process that serves HTTP from an asyncio event loop thread.

asyncio reads a socket with ``sock.recv(256 KiB)``: CPython allocates a 256 KiB bytes object, shrinks it to
what arrived and frees it, once per request. glibc serves an allocation of that size with ``mmap`` while it
is above its *dynamic* mmap threshold (128 KiB at start, raised only when a larger mmapped block is freed:
a shrunk read buffer never raises it). Whether a run pays ``mmap`` + ``mremap`` + ``munmap`` and the page
faults of a fresh mapping on every request thus depended on the process's allocation history (strace of two
runs of the same exchange: 0 and 1 of each per order). A fixed threshold above the read size keeps those
buffers in the heap in every run; a fixed trim threshold stops the heap from shrinking and growing by the
same buffer (fixing either one disables glibc's dynamic adjustment of both).

:func:`tune` is called once by the HTTP gateway before it serves; elsewhere (not glibc, or a libc without
``mallopt``) it does nothing and says why.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1      # glibc <malloc.h>
M_MMAP_THRESHOLD = -3

#: above asyncio's 256 KiB socket read size (selector_events.max_size)
MMAP_THRESHOLD = 1 << 20
#: free memory at the top of a heap that glibc keeps before it gives it back to the kernel
TRIM_THRESHOLD = 16 << 20

_done: str | None = None


def tune() -> str:
    """Set the two thresholds (once per process). Returns what was done, or why nothing was."""
    global _done
    if _done is not None:
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        _done = f"unchanged: no mallopt in this C library ({e})"
        return _done
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _done = (f"mmap_threshold={MMAP_THRESHOLD} trim_threshold={TRIM_THRESHOLD}" if ok
             else "unchanged: mallopt refused the thresholds")
    return _done
