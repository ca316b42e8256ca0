"""FIX acceptor abuse limits (issue 10, item 5): unauthenticated connections are closed after the logon
timeout, what they may send before a Logon is capped, a logged-on session's message size is capped."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from engine.fix.acceptor import MAX_PRELOGON_BYTES, EchoApplication, FixAcceptor, SessionConfig
from engine.fix.message import utc_timestamp

SPEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"
pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")


def acceptor(**kw):
    return FixAcceptor([SessionConfig("FIX.4.4", "EXCH", "BUYSIDE1")], EchoApplication(), SPEC, **kw).start()


def closed_by_peer(s, timeout=3.0) -> bool:
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_idle_connections_closed_after_logon_timeout():
    acc = acceptor(logon_timeout_s=1.0)
    socks = []
    try:
        for _ in range(200):
            socks.append(socket.create_connection(("127.0.0.1", acc.port), timeout=5))
        t0 = time.monotonic()
        time.sleep(1.5)
        assert all(closed_by_peer(s, timeout=5.0) for s in socks)
        assert time.monotonic() - t0 < 10
        assert acc.stats["logon_timeouts"] == 200
    finally:
        for s in socks:
            s.close()
        acc.stop()


def _stream_until_closed(port, head: bytes, total: int) -> int:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    sent = 0
    chunk = b"x" * 65536
    try:
        s.sendall(head)
        sent = len(head)
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    finally:
        s.close()
    return sent


@pytest.mark.parametrize("head", [b"", b"8=FIX.4.4\x019=16777216\x0135=A\x0134=1\x0149=BUYSIDE1\x0156=EXCH\x01"],
                         ids=["garbage", "huge-logon"])
def test_prelogon_stream_cut_at_the_cap(head):
    acc = acceptor()
    try:
        sent = _stream_until_closed(acc.port, head, 16 * 1024 * 1024)
        # the acceptor stopped reading at the cap: the sender was cut off long before 16 MB (what is
        # in flight is the kernel's socket buffers, not the acceptor's memory)
        assert sent < 16 * 1024 * 1024
        deadline = time.monotonic() + 3
        while acc.stats["prelogon_overflows"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert acc.stats["prelogon_overflows"] == 1
        assert MAX_PRELOGON_BYTES <= 65_536
    finally:
        acc.stop()


def _msg(begin, msgtype, seq, body):
    rest = b"35=%s\x0134=%d\x0149=BUYSIDE1\x0152=%s\x0156=EXCH\x01" % (msgtype, seq, utc_timestamp()) + body
    m = b"8=%s\x019=%d\x01" % (begin, len(rest)) + rest
    return m + b"10=%03d\x01" % (sum(m) & 255)


def test_logged_on_message_size_capped():
    acc = acceptor(max_message_bytes=100_000)
    s = socket.create_connection(("127.0.0.1", acc.port), timeout=5)
    try:
        s.sendall(_msg(b"FIX.4.4", b"A", 1, b"98=0\x01108=30\x01"))
        assert b"35=A" in s.recv(65536)
        big = _msg(b"FIX.4.4", b"D", 2, b"11=" + b"x" * 200_000 + b"\x0155=AAPL\x01")
        try:
            s.sendall(big)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_peer(s)
        sess = acc.sessions[(b"FIX.4.4", b"EXCH", b"BUYSIDE1")]
        assert sess.oversized == 1
    finally:
        s.close()
        acc.stop()
