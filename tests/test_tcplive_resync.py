"""OUCH live resynchronisation after a bad SoupBinTCP packet (``OuchLiveDecoder``): bytes garbled in a
length field, in a packet type, in a message body and across a segment boundary, in OUCH 4.2 and 5.0
sessions split into segments of 1460, 61 and 7 bytes. Live decoding must give replay's records and
damage counters (``soupbintcp``: bad_type, bad_length, truncated, packets; ``ouch``: rejects)."""
from __future__ import annotations

import numpy as np
import pytest

from feedhandler.capture.pcapwriter import write_pcap
from feedhandler.framing.tcp import TcpConversation
from feedhandler.protocols import ouch_events

from test_tcplive_records import _assert_same, _frames, _live_decode

T0 = 1_700_000_000_000_000_000


def _session(version, n=400, seed=21):
    """[(ts, side, soup packet)] of one session (ouch_events.synth_messages), absolute times."""
    ts = T0 + 10_000
    out = []
    for dt, side, p in ouch_events.synth_messages(n, seed=seed, version=version):
        ts += dt
        out.append((ts, side, p))
    return out


def _garble(pkts, how):
    """Damage the server's sequenced packets around the middle of the session; returns the list."""
    pkts = list(pkts)
    srv = [i for i, (_t, side, p) in enumerate(pkts) if side == "s" and p[2:3] == b"S" and len(p) > 30]
    a, b, c = srv[len(srv) // 3], srv[len(srv) // 2], srv[2 * len(srv) // 3]
    def put(i, p):
        pkts[i] = (pkts[i][0], pkts[i][1], p)
    if how == "length_long":                # a length field too large: swallows the next packets
        p = pkts[a][2]
        put(a, (len(p) - 2 + 300).to_bytes(2, "big") + p[2:])
    elif how == "length_short":             # too small: the rest of the packet looks like packets
        p = pkts[a][2]
        put(a, (7).to_bytes(2, "big") + p[2:])
    elif how == "length_zero":
        p = pkts[b][2]
        put(b, b"\x00\x00" + p[2:])
    elif how == "length_huge":              # 0xFFFF: more than the rest of the session
        p = pkts[c][2]
        put(c, b"\xff\xff" + p[2:])
    elif how == "type":                     # a packet type the server never sends
        p = pkts[b][2]
        put(b, p[:2] + b"Q" + p[3:])
    elif how == "body":                     # an OUCH message type that does not exist (framing intact)
        p = pkts[b][2]
        put(b, p[:3] + b"\x7f" + p[4:])
    elif how == "junk":                     # junk between two packets (lands across segment boundaries)
        p = pkts[b][2]
        put(b, b"\x00\x05Szz\x13\x37\xff" + p)
    elif how == "hold":                     # a bad type, then bytes claiming a 65 520-byte data packet
        p = pkts[b][2]
        put(b, b"\x00\x01Q\xff\xf0S" + p)
    elif how == "several":
        for i, k in ((a, 0), (b, 1), (c, 2)):
            p = pkts[i][2]
            put(i, ((len(p) + 40).to_bytes(2, "big"), b"\x00\x00", b"\x01\x02X")[k] + p[2:] if k < 2
                else b"\x01\x02X" + p)
    else:
        raise ValueError(how)
    return pkts


def _capture(path, pkts, mss, coalesce):
    """One TCP connection; ``coalesce``: consecutive packets of a side within 50 us go in one write
    (so that segment boundaries fall inside packets), else one write per packet."""
    conv = TcpConversation(client=("10.7.0.2", 53100), server=("10.7.0.1", 15000), mss=mss, isn_c=5,
                           isn_s=0xFFFFFF00)
    conv.handshake(T0)
    i = 0
    while i < len(pkts):
        ts, side, data = pkts[i]
        j = i + 1
        while coalesce and j < len(pkts) and pkts[j][1] == side and pkts[j][0] - ts < 50_000:
            data += pkts[j][2]
            j += 1
        conv.send(pkts[j - 1][0], side, data)
        i = j
    conv.close(pkts[-1][0] + 1000)
    write_pcap(path, conv.frames, nanosecond=True)


GARBLES = ["length_long", "length_short", "length_zero", "length_huge", "type", "body", "junk", "hold", "several"]


@pytest.mark.parametrize("version", ["4.2", "5.0"])
@pytest.mark.parametrize("how", GARBLES)
@pytest.mark.parametrize("mss,coalesce", [(1460, True), (61, True), (7, False), (1460, False)])
def test_ouch_live_resync_equals_replay(tmp_path, version, how, mss, coalesce):
    p = tmp_path / "g.pcap"
    _capture(p, _garble(_session(version), how), mss, coalesce)
    protocol = "ouch42" if version == "4.2" else "ouch50"
    ref, rst = ouch_events.replay_stream(p, protocol)
    damage = rst["soupbintcp"]
    assert damage["bad_type"] + damage["bad_length"] + damage["truncated"] + sum(rst["ouch"]["rejects"].values()) > 0
    for every, trim in ((1, None), (3, 1)):
        got, st, _ = _live_decode(_frames(p), ouch_events.OuchLiveDecoder(protocol), every, trim)
        assert st["soupbintcp"] == rst["soupbintcp"], (every, trim)
        assert st["ouch"] == rst["ouch"], (every, trim)
        _assert_same(got, ref)


@pytest.mark.parametrize("version", ["4.2", "5.0"])
@pytest.mark.parametrize("how", ["length_long", "length_zero", "type", "junk"])
def test_ouch_live_resync_after_a_hole_equals_replay(tmp_path, version, how):
    """A server segment lost near the damage: the piece after the hole resynchronises (resync_first)
    on the bytes so far live, on the whole stream in replay; holes declared while the capture goes on."""
    p = tmp_path / "h.pcap"
    _capture(p, _garble(_session(version), how), 61, True)
    frames = _frames(p)
    srv = [i for i, (_ts, _lt, fr) in enumerate(frames) if len(fr) > 80 and fr[34:36] == (15000).to_bytes(2, "big")]
    del frames[srv[len(srv) // 2 + 3]]
    q = tmp_path / "hq.pcap"
    write_pcap(q, [(ts, fr) for ts, _lt, fr in frames], nanosecond=True)
    protocol = "ouch42" if version == "4.2" else "ouch50"
    ref, rst = ouch_events.replay_stream(q, protocol, max_ooo_segments=4)
    assert rst["soupbintcp"]["holes"] == 1
    for every in (1, 4):
        got, st, _ = _live_decode(_frames(q), ouch_events.OuchLiveDecoder(protocol), every, None, max_ooo_segments=4)
        assert st["soupbintcp"] == rst["soupbintcp"] and st["ouch"] == rst["ouch"], every
        _assert_same(got, ref)


@pytest.mark.parametrize("version", ["4.2", "5.0"])
def test_held_bytes_are_bounded_and_released_before_the_end(tmp_path, version):
    """A length field of 0xFFFF in the middle of a long session: live holds the bytes after it until
    the resync point is decided (about one claimed packet, 64 KiB, later), then the records of the
    packets after the damage come out while the capture goes on, equal to replay's."""
    p = tmp_path / "big.pcap"
    _capture(p, _garble(_session(version, n=6000), "hold"), 1460, True)
    protocol = "ouch42" if version == "4.2" else "ouch50"
    ref, rst = ouch_events.replay_stream(p, protocol)
    frames = _frames(p)
    got, st, ready_at = _live_decode(frames, ouch_events.OuchLiveDecoder(protocol), 1)
    assert st["soupbintcp"] == rst["soupbintcp"] and rst["soupbintcp"]["bad_type"] >= 1
    _assert_same(got, ref)
    # the damage is at 2/3 of the session: most records after it are out before the last packet
    ready = np.asarray(ready_at)
    after = ready[len(ready) * 3 // 4:]
    assert (after < len(frames) - 5).mean() > 0.9


def test_held_bytes_framed_when_the_connection_closes(tmp_path):
    """Damage near the end of a connection followed by a second connection: the first one's held bytes
    are framed as final when it closes (before it is retired), as replay frames them."""
    from feedhandler.framing.tcp import TcpConversation as Conv
    frames = []
    for k, how in enumerate(("length_long", None)):
        pk = _session("5.0", n=300, seed=40 + k)
        if how:
            srv = [i for i, (_t, side, q) in enumerate(pk) if side == "s" and q[2:3] == b"S" and len(q) > 30]
            i = srv[-2]
            q = pk[i][2]
            pk[i] = (pk[i][0], "s", (len(q) - 2 + 50).to_bytes(2, "big") + q[2:])
        shift = k * 10**9
        conv = Conv(client=("10.7.1.2", 53200 + k), server=("10.7.1.1", 15000), mss=61, isn_c=9 + k, isn_s=77)
        conv.handshake(T0 + shift)
        for ts, side, q in pk:
            conv.send(ts + shift, side, q)
        conv.close(pk[-1][0] + shift + 1000)
        frames += conv.frames
    p = tmp_path / "two.pcap"
    write_pcap(p, frames, nanosecond=True)
    ref, rst = ouch_events.replay_stream(p, "ouch50")
    dec = ouch_events.OuchLiveDecoder("ouch50")
    got, st, _ = _live_decode(_frames(p), dec, 1)
    assert st["live"]["connections_retired"] == 2 and not dec.hist and not dec.cheld
    assert st["soupbintcp"] == rst["soupbintcp"] and st["ouch"] == rst["ouch"]
    _assert_same(got, ref)


def test_split_not_final_waits_for_the_resync_point():
    """``split(final=False)`` on a prefix stops at a bad packet whose resync point is not decided yet;
    continued on the whole buffer it gives the rows one final call gives."""
    from feedhandler.framing.soupbintcp_stream import split
    from feedhandler.protocols import soupbintcp as sb
    good = [sb.sequenced(b"X" * (10 + i)) for i in range(12)]
    bad = b"\x00\x03Qzz"                            # a type the server never sends
    buf = bytearray(b"".join(good[:3]) + bad + b"".join(good[3:]))
    whole, consumed = split(buf, 0, len(buf), True)
    assert consumed == len(buf)
    cut = len(b"".join(good[:3])) + len(bad) + 20
    part, c1 = split(buf, 0, cut, True, False, False)
    assert c1 == len(b"".join(good[:3])) and len(part) == 3          # held at the bad packet
    rest, c2 = split(buf, c1, len(buf), True, False, False)
    assert c2 == len(buf)
    assert np.array_equal(np.concatenate([part, rest]), whole)
    old, _ = split(buf, 0, cut, True)                                  # final: decided on the prefix
    assert not np.array_equal(old, whole[:len(old)]) or len(old) != 3
