"""The PTP slave honours the master's logMinDelayReqInterval, and is a real ``feedhandler`` subcommand."""
import struct
import subprocess
import sys

import pytest

from feedhandler.time import ptp
from feedhandler.time.slave import PtpSlave, slave_main

MASTER = (0x00AABBFFFE000001, 1)
ME = (0x1122334455667788, 1)


def _msg(msg_type: int, seq: int, log_interval: int, body: bytes, port=MASTER, control=0) -> bytes:
    hdr = ptp._HEADER.pack(msg_type, 2, ptp.HEADER_LEN + len(body), 0, 0, 0, 0, 0, port[0], port[1], seq,
                           control, log_interval)
    return hdr + body


def _ts(ns: int) -> bytes:
    s, n = divmod(ns, 1_000_000_000)
    return struct.pack(">HII", s >> 32, s & 0xFFFFFFFF, n)


def _announce() -> bytes:
    return _msg(ptp.ANNOUNCE, 1, 1, _ts(0) + bytes(20))


def _delay_resp(seq: int, log_interval: int) -> bytes:
    return _msg(ptp.DELAY_RESP, seq, log_interval, _ts(5_000) + struct.pack(">QH", *ME), control=3)


def _slave(interval):
    s = PtpSlave("lo", delay_req_interval=interval, clock_identity=ME[0])
    s._on_message(_announce(), 1)
    assert s.master == MASTER
    return s


def test_delay_req_never_faster_than_the_master_allows():
    s = _slave(0.25)                          # asks for 4/s
    assert s.delay_req_period() == 1.0        # IEEE 1588 default (logMinDelayReqInterval 0) until told
    s._on_message(_delay_resp(7, 0), 10)      # master: at most 1/s
    assert s.counters["delay_resp"] == 1 and s.log_min_delay_req == 0
    assert s.delay_req_period() == 1.0
    s._on_message(_delay_resp(8, -3), 10)     # master allows 8/s: the wanted 4/s now holds
    assert s.delay_req_period() == 0.25
    s._on_message(_delay_resp(9, 0x7F), 10)   # "unspecified" changes nothing
    assert s.delay_req_period() == 0.25


def test_delay_req_follows_the_master_by_default():
    s = _slave(None)
    s._on_message(_delay_resp(1, 2), 10)
    assert s.delay_req_period() == 4.0
    s._on_message(_delay_resp(2, -4), 10)
    assert s.delay_req_period() == 1 / 16
    assert s.summary()["delay_req_interval_s"] == 1 / 16


def test_delay_resp_for_another_port_is_ignored():
    s = _slave(None)
    other = _msg(ptp.DELAY_RESP, 1, -5, _ts(5) + struct.pack(">QH", ME[0] + 1, 1), control=3)
    s._on_message(other, 10)
    assert s.log_min_delay_req == 0 and s.counters["delay_resp"] == 0


def test_bad_interval_is_refused():
    with pytest.raises(ValueError):
        PtpSlave("lo", delay_req_interval=0)


def test_cli_subcommand_help_and_exit_codes(capsys):
    r = subprocess.run([sys.executable, "-m", "feedhandler", "ptp-slave", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "logMinDelayReqInterval" in r.stdout and "(default 10)" in r.stdout
    r = subprocess.run([sys.executable, "-m", "feedhandler", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "ptp-slave" in r.stdout
    assert slave_main(["--iface", "no-such-if0"]) == 2
    assert "no interface 'no-such-if0'" in capsys.readouterr().err
    assert slave_main(["--iface", "lo", "--delay-req-interval", "-1"]) == 2
    assert slave_main([]) == 2


def test_package_namespace_is_clean():
    import feedhandler
    public = [n for n in dir(feedhandler) if not n.startswith("_")]
    assert "os" not in public and "annotations" not in public
    assert set(feedhandler.__all__) <= set(dir(feedhandler))
