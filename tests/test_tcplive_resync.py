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


GARBLES = ["length_long", "length_short", "length_zero", "length_huge", "type", "body", "junk", "several"]


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
