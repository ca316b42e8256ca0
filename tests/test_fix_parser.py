"""Native FIX framing/splitting (feedhandler.protocols.fix) against a small pure-Python reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from feedhandler.protocols import fix

SOH = b"\x01"


def make(body_fields: list[tuple[int, bytes]], begin=b"FIX.4.4") -> bytes:
    body = b"".join(b"%d=%s\x01" % (t, v) for t, v in body_fields)
    head = b"8=" + begin + SOH + b"9=%d\x01" % len(body)
    m = head + body
    return m + b"10=%03d\x01" % (sum(m) % 256)


def ref_frame(buf: bytes, start: int = 0):
    """Reference of QuickFIX framing + validation (independent, straightforward Python)."""
    s = buf.find(b"8=", start)
    if s < 0:
        return fix.INCOMPLETE, None
    soh = buf.find(SOH, s)
    if soh < 0:
        return fix.INCOMPLETE, None
    i = soh + 1
    if len(buf) < i + 2:
        return fix.INCOMPLETE, None
    if buf[i : i + 2] != b"9=":
        return fix.GARBLED, None
    j = i + 2
    while j < len(buf) and buf[j : j + 1].isdigit():
        j += 1
    if j >= len(buf):
        return fix.INCOMPLETE, None
    if j == i + 2 or buf[j : j + 1] != SOH:
        return fix.GARBLED, None
    length = int(buf[i + 2 : j])
    body_start = j + 1
    if body_start + length > len(buf):
        return fix.INCOMPLETE, None
    tr = buf.find(b"\x0110=", body_start + length - 1 if length else body_start - 1)
    if tr < 0:
        return fix.INCOMPLETE, None
    end = buf.find(SOH, tr + 4)
    if end < 0:
        return fix.INCOMPLETE, None
    msg = buf[s : end + 1]
    if tr + 1 - body_start != length:
        return fix.BAD_BODY_LENGTH, msg
    ck = buf[tr + 4 : end]
    if not ck.isdigit() or len(ck) > 3 or int(ck) != sum(buf[s : tr + 1]) % 256:
        return fix.BAD_CHECKSUM, msg
    return fix.OK, msg


def native_frame(buf: bytes, start: int = 0):
    st_, ms, me = fix.frame(buf, start)
    if st_ in (fix.INCOMPLETE, fix.GARBLED):
        return st_, None
    return st_, buf[ms:me]


def test_valid_message_fields():
    m = make([(35, b"D"), (34, b"2"), (49, b"A"), (56, b"B"), (11, b"ID"), (44, b"")])
    st_, pairs = fix.parse(m)
    assert st_ == fix.OK
    assert pairs[:3] == [(8, b"FIX.4.4"), (9, pairs[1][1]), (35, b"D")]
    assert (44, b"") in pairs and pairs[-1][0] == 10


def test_bad_checksum_and_body_length():
    m = make([(35, b"0"), (34, b"2")])
    bad_ck = m[:-4] + b"%03d\x01" % ((int(m[-4:-1]) + 1) % 256)
    assert fix.frame(bad_ck)[0] == fix.BAD_CHECKSUM
    short = m.replace(b"9=10", b"9=8")
    assert fix.frame(short)[0] == fix.BAD_BODY_LENGTH
    # too long swallows the next message (QuickFIX behaviour): one framed, invalid message
    long_ = m.replace(b"9=10", b"9=14") + make([(35, b"0"), (34, b"3")])
    st_, ms, me = fix.frame(long_)
    assert st_ == fix.BAD_BODY_LENGTH and me == len(long_)


def test_incomplete_never_reads_past_end():
    m = make([(35, b"0"), (34, b"2"), (112, b"HELLO")])
    for k in range(len(m)):
        st_, ms, me = fix.frame(m[:k])
        assert st_ in (fix.INCOMPLETE, fix.GARBLED), k
    assert fix.frame(m)[0] == fix.OK


def test_split_batch():
    msgs = [make([(35, b"0"), (34, str(i).encode())]) for i in range(1, 6)]
    stream = b"garbage" + b"".join(msgs) + msgs[0][:10]
    out = np.zeros((16, 3), dtype=np.int64)
    n, consumed = fix.split(stream, out)
    frames = [(int(s), stream[a:b]) for s, a, b in out[:n]]
    assert [f for s, f in frames if s == fix.OK] == msgs
    assert stream[consumed:] == msgs[0][:10]


def test_fields_malformed_and_negative_tags():
    out = np.zeros((8, 3), dtype=np.int32)
    buf = b"1=a\x01-1=b\x010=c\x01"
    assert fix.fields(buf, 0, len(buf), out) == 3 and out[1, 0] == -1 and out[2, 0] == 0
    assert fix.fields(b"x=1\x01", 0, 4, out) == -1
    assert fix.fields(b"1=2\x0135", 0, 6, out) == -2        # no '=' / no SOH in field 2
    assert fix.fields(b"1=2", 0, 3, out) == -1


field = st.tuples(st.integers(1, 2000), st.binary(min_size=0, max_size=12).filter(lambda b: SOH not in b))


@settings(max_examples=500, deadline=None)
@given(st.lists(field, min_size=1, max_size=12), st.integers(0, 3), st.data())
def test_differential_against_reference(fields_, mutation, data):
    m = make([(35, b"D")] + fields_)
    if mutation == 1:    # flip one byte
        i = data.draw(st.integers(0, len(m) - 1))
        m = m[:i] + bytes([m[i] ^ data.draw(st.integers(1, 255))]) + m[i + 1 :]
    elif mutation == 2:  # truncate
        m = m[: data.draw(st.integers(0, len(m)))]
    elif mutation == 3:  # two messages glued, with junk in front
        m = data.draw(st.binary(max_size=8)) + m + make([(35, b"0")])
    assert native_frame(m) == ref_frame(m)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(buf):
    st_, ms, me = fix.frame(buf)
    assert 0 <= ms <= len(buf) and 0 <= me <= len(buf)
    out = np.zeros((64, 3), dtype=np.int32)
    n = fix.fields(buf, 0, len(buf), out)
    assert -65 <= n <= 64
    assert (st_, None if st_ in (fix.INCOMPLETE, fix.GARBLED) else buf[ms:me]) == ref_frame(buf)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40),
                          st.lists(field, min_size=1, max_size=6).map(lambda f: make([(35, b"0"), (34, b"2"),
                                                                                          (49, b"C"), (56, b"S")] + f))),
                max_size=8))
def test_session_survives_garbage(chunks):
    """A logged-on session fed random bytes and near-valid messages never raises; it answers or ignores."""
    from pathlib import Path
    from engine.fix.acceptor import EchoApplication
    from engine.fix.message import utc_timestamp
    from engine.fix.session import FixSession
    from engine.fix.store import MemoryStore
    from feedhandler.protocols.fix_dictionary import FixDictionary
    spec = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec" / "FIX44.xml"
    if not spec.exists():
        pytest.skip("FIX44.xml (shared reference data) not present")
    global _DD
    try:
        dd = _DD
    except NameError:
        dd = _DD = FixDictionary.load(spec)
    sess = FixSession(dd, "S", "C", MemoryStore(), EchoApplication())
    out = []
    sess.connection_made(out.append, lambda: None)
    sess.data_received(make([(35, b"A"), (34, b"1"), (49, b"C"), (52, utc_timestamp()), (56, b"S"), (98, b"0"),
                             (108, b"30")]))
    assert sess.logged_on and out
    for c in chunks:
        sess.data_received(c)
        sess.on_timer()
    for raw in out:
        assert fix.frame(raw)[0] == fix.OK      # everything we sent is well formed
