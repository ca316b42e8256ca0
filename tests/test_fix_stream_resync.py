"""The FIX capture decoder loses no valid message to a broken one, and counts every broken one.

Before: a message whose BodyLength lied swallowed the messages up to the trailer the declared length led
to (9=999: six valid messages gone per bad one; 9=5 on a cut message: the next one), and bytes that are no
message (between messages) were skipped without a count. The acceptor keeps QuickFIX's framing."""
from __future__ import annotations

import numpy as np
import pytest

from feedhandler.capture.pcapwriter import write_pcap
from feedhandler.framing.tcp import TcpConversation
from feedhandler.protocols import fix as _fix
from feedhandler.protocols import fix_stream as fs

JUNK = {
    "text_without_soh": (b"garbage-no-soh", "garbled"),
    "fields_without_begin": (b"xx\x01yy\x01", "garbled"),
    "cut_message_short_length": (b"8=FIX.4.4\x019=5\x0135=D\x01", "bad_body_length"),
    "lying_long_length": (b"8=FIX.4.4\x019=999\x0135=0\x0110=000\x01", "bad_body_length"),
    "huge_length_past_the_end": (b"8=FIX.4.4\x019=9999999\x0135=0\x01", "bad_body_length"),
    "begin_string_only": (b"8=FIX.4.4\x01", "garbled"),
    "padding": (b"\r\n\x00 ", None),
}


def _capture(path, junk, at=(10, 20, 30), n=40, bad_checksum=False):
    msgs = fs.synth_messages(n, 3)
    conv = TcpConversation(client=("10.2.0.2", 51000), server=("10.2.0.1", 9878))
    conv.handshake(msgs[0][0] - 10_000)
    valid = 0
    for i, (ts, side, m) in enumerate(msgs):
        if i in at:
            if bad_checksum:
                bad = bytearray(m)
                bad[-4:-1] = b"999" if bad[-4:-1] != b"999" else b"998"
                conv.send(ts, side, bytes(bad))
                continue
            conv.send(ts - 1, side, junk)
        conv.send(ts, side, m)
        valid += 1
    conv.close(msgs[-1][0] + 1000)
    write_pcap(path, conv.frames, nanosecond=True)
    return valid


@pytest.mark.parametrize("kind", sorted(JUNK))
def test_every_valid_message_survives_junk_and_the_junk_is_counted(tmp_path, kind):
    junk, reason = JUNK[kind]
    clean = tmp_path / "clean.pcap"
    dirty = tmp_path / "dirty.pcap"
    n = _capture(clean, b"", at=())
    assert _capture(dirty, junk) == n
    ref, rst = fs.replay_stream(str(clean))
    got, st = fs.replay_stream(str(dirty))
    assert st["fix"]["messages"] == rst["fix"]["messages"] == n
    counts = {k: st["fix"][k] for k in ("garbled", "bad_body_length", "bad_checksum")}
    assert counts == {k: (3 if k == reason else 0) for k in counts}, counts
    assert len(got) == len(ref) and got.tobytes() == ref.tobytes()     # the same records


def test_bad_checksums_cost_only_themselves(tmp_path):
    cap = tmp_path / "ck.pcap"
    n = _capture(cap, None, bad_checksum=True)
    _, st = fs.replay_stream(str(cap))
    assert st["fix"]["messages"] == n and st["fix"]["bad_checksum"] == 3


def test_acceptor_framing_is_quickfix_s():
    """fix.frame (the acceptor's) keeps QuickFIX's rule: a too-long BodyLength swallows the next message;
    split(resync=True) ends the bad message where the next one begins."""
    good = fs._fix_msg(b"FIX.4.4", b"0", 2, b"A", b"B", 1_700_000_000_000_000_000, b"")
    buf = np.frombuffer(b"8=FIX.4.4\x019=999\x0135=0\x0110=000\x01" + good * 2 + b"x" * 1000 + good,
                        np.uint8).copy()
    st, ms, me = _fix.frame(buf, 0)
    assert st == _fix.BAD_BODY_LENGTH and me == buf.shape[0]       # swallowed everything up to the last trailer
    rows = np.empty((8, 3), np.int64)
    k, _ = _fix.split(buf, rows, True)
    assert [int(r[0]) for r in rows[:k]] == [_fix.BAD_BODY_LENGTH, _fix.OK, _fix.OK, _fix.GARBLED, _fix.OK]
    k, _ = _fix.split(buf, rows)                                   # default: QuickFIX's
    assert [int(r[0]) for r in rows[:k]] == [_fix.BAD_BODY_LENGTH]
