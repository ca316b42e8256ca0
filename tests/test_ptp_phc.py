"""PHC access through the dynamic POSIX clock id (FD_TO_CLOCKID)."""
from __future__ import annotations

import os
import time

import pytest

from feedhandler.time import phc


def test_clock_id_formula():
    # linux/posix-timers.h: FD_TO_CLOCKID(fd) = ((~(clockid_t)(fd)) << 3) | CLOCKFD, CLOCKFD = 3
    assert phc.phc_clock_id(3) == -29
    assert phc.phc_clock_id(0) == -5
    assert all(phc.phc_clock_id(fd) & 7 == 3 and phc.phc_clock_id(fd) < 0 for fd in range(64))


def test_dynamic_clock_on_a_non_ptp_fd_is_refused():
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            time.clock_gettime_ns(phc.phc_clock_id(fd))
    finally:
        os.close(fd)


@pytest.mark.skipif(not phc.phc_devices(), reason="no /dev/ptp* on this machine (no PTP hardware clock)")
def test_read_phc():
    dev = phc.phc_devices()[0]
    with phc.PhcClock(dev) as c:
        a = c.now_ns()
        b = c.now_ns()
        assert b >= a > 0
        # a PHC runs on TAI or near it: within a day of the system clock unless never set
        assert abs(c.offset_to_system_ns()) < 86400 * 10**9 or a < 10**18
