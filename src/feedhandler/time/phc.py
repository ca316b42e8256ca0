"""PTP hardware clocks (/dev/ptpN) read through their dynamic POSIX clock id.

Linux maps an open character-device fd to a clockid: ``((~fd) << 3) | 3`` (CLOCKFD, see
``FD_TO_CLOCKID`` in linux/posix-timers.h), which ``clock_gettime`` accepts like CLOCK_REALTIME.
"""
from __future__ import annotations

import glob
import os
import time

__all__ = ["phc_devices", "phc_clock_id", "read_phc", "PhcClock"]

CLOCKFD = 3


def phc_devices() -> list[str]:
    """The PTP hardware clock devices present (empty on machines without a PHC)."""
    return sorted(glob.glob("/dev/ptp[0-9]*"))


def phc_clock_id(fd: int) -> int:
    """The dynamic clock id of an open /dev/ptpN file descriptor."""
    return ((~fd) << 3) | CLOCKFD


class PhcClock:
    """An open PHC: ``now_ns()`` reads it; ``offset_to_system_ns()`` = PHC - CLOCK_REALTIME (midpoint)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.clock_id = phc_clock_id(self.fd)

    def now_ns(self) -> int:
        return time.clock_gettime_ns(self.clock_id)

    def offset_to_system_ns(self) -> int:
        a = time.clock_gettime_ns(time.CLOCK_REALTIME)
        p = self.now_ns()
        b = time.clock_gettime_ns(time.CLOCK_REALTIME)
        return p - (a + b) // 2

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_phc(path: str) -> int:
    """One read of the PHC at ``path`` (ns on the PHC's timescale, usually TAI)."""
    with PhcClock(path) as c:
        return c.now_ns()
