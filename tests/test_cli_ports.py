"""Every port option takes 0..65535 and says so: ``feedhandler exchange --port 99999`` used to listen on
34463 (ZeroMQ's bind takes the port modulo 65536), and a group's bad port was an OverflowError."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pcaps", "itch50_sample.pcap")


def _fh(*args):
    return subprocess.run([sys.executable, "-m", "feedhandler", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,msg", [
    (["exchange", "--port", "99999"], "argument --port: 99999 is not a port number (0..65535)"),
    (["exchange", "--md-port", "65536"], "argument --md-port: 65536 is not a port number"),
    (["exchange", "--http-port", "-1"], "argument --http-port: -1 is not a port number"),
    (["exchange", "--fix-port", "x"], "argument --fix-port: 'x' is not a port number"),
    (["exchange", "--ouch-port", "70000"], "argument --ouch-port: 70000 is not a port number"),
    (["bot", "--port", "123456"], "argument --port: 123456 is not a port number"),
    (["replay", SAMPLE, "--udp-port", "70000"], "argument --udp-port: 70000 is not a port"),
    (["run", "--iface", "lo", "--group", "233.1.1.1:99999"], "group '233.1.1.1:99999': 99999 is not a UDP port"),
    (["run", "--iface", "lo", "--group", "233.1.1:7"], "group '233.1.1:7' is not ADDR or ADDR:PORT"),
])
def test_out_of_range_ports_are_usage_errors(args, msg):
    r = _fh(*args)
    assert r.returncode == 2, (r.returncode, r.stdout[-300:], r.stderr[-300:])
    assert msg in r.stderr, r.stderr


def test_port_number_type():
    import argparse

    from feedhandler.cliopts import port_number
    assert port_number("0") == 0 and port_number("65535") == 65535
    for bad in ("65536", "-1", "1e3", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            port_number(bad)


@pytest.mark.parametrize("ep,ok", [("tcp://127.0.0.1:99999", False), ("tcp://h:abc", False), ("tcp://127.0.0.1:*", True),
                                   ("tcp://*:5555", True), ("ipc:///tmp/fh-x", True), ("tcp://[::1]:65535", True)])
def test_config_endpoints_take_a_port_in_range(ep, ok):
    from engine.errors import ConfigError
    from engine.exchange import load_config
    for sect in ("gateway", "marketdata"):
        if ok:
            load_config(None, {f"{sect}.endpoint": ep})
        else:
            with pytest.raises(ConfigError, match=f"{sect}.endpoint .* the port must be 0..65535"):
                load_config(None, {f"{sect}.endpoint": ep})
