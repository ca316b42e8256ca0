"""QuickFIX's session-level acceptance scenarios replayed against our FIX acceptor over TCP.

Each ``*.def`` file of ../shared/data/fix/acceptance/fix4{2,4}/ is a script: ``I`` lines are sent to
the acceptor (``<TIME>``/``<TIME+-N>`` replaced by the current UTC time; 9= and 10= computed when the
line has none, kept when it has one, so deliberately wrong ones stay wrong), ``E`` lines are what the
acceptor must answer, ``iCONNECT``/``eDISCONNECT`` open/expect the end of a connection (``n,`` prefixes
name one of several connections). Answers are framed by an independent parser (simplefix) and compared
field by field as a multiset, ignoring 9/10 (which are checked against the real body separately) and the
values of time fields the scenario writes as zeros. The acceptor runs QuickFIX's test application
(reflect NewOrderSingle and SecurityDefinition) with ResetOnDisconnect, as QuickFIX's own run does.
"""
from __future__ import annotations

import os
import re
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

simplefix = pytest.importorskip("simplefix")

from engine.fix.acceptor import EchoApplication, FixAcceptor, SessionConfig
from engine.fix.message import utc_timestamp

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix"
ACC = DATA / "acceptance"
pytestmark = pytest.mark.skipif(not ACC.is_dir(), reason=f"{ACC} (shared reference data) not present")

# Scenarios we do not pass, with the reason. Empty: all 117 scenarios (fix42: 58, fix44: 59) pass.
KNOWN_FAILING: dict[str, str] = {}
# Scenarios that wait for real heartbeat intervals (108=6: heartbeats, TestRequests and the 2.4 x HeartBtInt
# timeout take 20-40 s each). They pass; they run when FH_RUN_SLOW=1.
SLOW = {"4a_NoDataSentDuringHeartBtInt", "6_SendTestRequest"}

TIME_FIELDS = {52, 60, 122}


def _scenarios():
    out = []
    for ver in ("fix42", "fix44"):
        for f in sorted((ACC / ver).glob("*.def")) if (ACC / ver).is_dir() else []:
            key = f"{ver}/{f.stem}"
            marks = [pytest.mark.skip(reason=KNOWN_FAILING[key])] if key in KNOWN_FAILING else []
            if f.stem in SLOW:
                marks.append(pytest.mark.slow)
                if not os.environ.get("FH_RUN_SLOW"):
                    marks.append(pytest.mark.skip(reason="waits 20-40 s of real HeartBtInt time; FH_RUN_SLOW=1 runs it"))
            out.append(pytest.param(f, id=key, marks=marks))
    return out


def _fill_time(line: str) -> str:
    def rep(m):
        off = int(m.group(1) or 0)
        return utc_timestamp(time.time_ns() + off * 1_000_000_000).decode()
    return re.sub(r"<TIME([+-]\d+)?>", rep, line)


def _prepare_input(text: str) -> bytes:
    msg = _fill_time(text).encode("latin-1")
    fields = [f for f in msg.split(b"\x01") if f]
    tags = [f.split(b"=", 1)[0] for f in fields]
    if b"9" not in tags and fields and tags[0] == b"8":
        body = b"".join(f + b"\x01" for f in fields[1:] if not f.startswith(b"10="))
        fields.insert(1, b"9=%d" % len(body))
        tags.insert(1, b"9")
    if tags and tags[-1] != b"10":
        pre = b"".join(f + b"\x01" for f in fields)
        return pre + b"10=%03d\x01" % (sum(pre) & 255)
    return b"".join(f + b"\x01" for f in fields)


def _expected_fields(text: str) -> list[tuple[int, bytes]]:
    out = []
    for f in text.encode("latin-1").split(b"\x01"):
        if not f:
            continue
        t, _, v = f.partition(b"=")
        out.append((int(t), v))
    return out


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.parser = simplefix.FixParser()
        self.raw = b""

    def send(self, data: bytes):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def recv_msg(self, timeout=20.0):
        end = time.monotonic() + timeout
        while True:
            m = self.parser.get_message()
            if m is not None:
                return m
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError:
                data = b""
            if not data:
                return "EOF"
            self.raw += data
            self.parser.append_buffer(data)

    def expect_disconnect(self, timeout=20.0):
        m = self.recv_msg(timeout)
        return m

    def close(self):
        self.sock.close()


def _compare(got, expected: list[tuple[int, bytes]], where: str):
    pairs = [(int(t), v) for t, v in got.pairs]
    # independent BodyLength / CheckSum check of what we sent
    enc = b"".join(b"%d=%s\x01" % (t, v) for t, v in pairs)
    ten = enc.rfind(b"\x0110=")
    start_body = enc.find(b"\x01", enc.find(b"\x019=") + 1) + 1
    assert int(dict(pairs)[9]) == ten + 1 - start_body, f"{where}: BodyLength wrong"
    assert int(pairs[-1][1]) == sum(enc[: ten + 1]) & 255, f"{where}: CheckSum wrong"

    def norm(fields):
        out = []
        for t, v in fields:
            if t in (9, 10):
                continue
            if t in TIME_FIELDS:
                v = b"<time>"
            out.append((t, v))
        return Counter(out)

    g, e = norm(pairs), norm(expected)
    assert g == e, f"{where}:\n  got      {sorted(g.elements())}\n  expected {sorted(e.elements())}"


def run_scenario(path: Path):
    ver = path.parent.name
    begin = "FIX.4.2" if ver == "fix42" else "FIX.4.4"
    their = "TW42" if ver == "fix42" else "TW44"
    text = path.read_text(encoding="latin-1")
    acc = FixAcceptor([SessionConfig(begin, "ISLD", their)], EchoApplication(), DATA / "spec",
                      reset_on_disconnect=True).start()
    conns: dict[str, Conn] = {}
    try:
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.rstrip("\r\n")
            if not line or line.startswith("#"):
                continue
            kind, rest = line[0], line[1:]
            cid = "1"
            mm = re.match(r"(\d+),(.*)", rest, re.S)
            if mm:
                cid, rest = mm.group(1), mm.group(2)
            where = f"{path.name}:{lineno}"
            if kind == "i" and rest == "CONNECT":
                conns[cid] = Conn(acc.port)
            elif kind == "i" and rest == "DISCONNECT":
                conns.pop(cid).close()
                time.sleep(0.1)
            elif kind == "e" and rest == "DISCONNECT":
                got = conns[cid].expect_disconnect()
                assert got == "EOF", f"{where}: expected disconnect, got {got!r}"
                conns.pop(cid).close()
            elif kind == "I":
                conns[cid].send(_prepare_input(rest))
            elif kind == "E":
                got = conns[cid].recv_msg()
                assert got not in (None, "EOF"), f"{where}: expected {rest!r}, got {got!r}"
                _compare(got, _expected_fields(rest), where)
            else:
                raise AssertionError(f"{where}: unknown line {line!r}")
    finally:
        for c in conns.values():
            c.close()
        acc.stop()


@pytest.mark.parametrize("path", _scenarios())
def test_acceptance(path):
    run_scenario(path)
