"""core13: one link-layer walk for every UDP framer (fh_net_udp reports the IPv4 protocol of a frame
that is not UDP, so the framers count TCP without a second parser), and one MBP level-rule
implementation (books.mbp.MbpBookSet.apply_one) behind both the MBP books and the DBN MBP-1 converter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.capture.pcapwriter import build_ipv4_udp, build_sll_frame, build_udp_frame, write_pcap

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT.parent / "shared" / "data" / "mdp3" / "schema"


def _frames():
    """(frames, TCP frames among them): TCP over Ethernet, VLAN and QinQ, Linux SLL; ICMP and IGMP (not
    TCP); UDP to the feed (an empty MDP3 packet header)."""
    payload = b"\x01\x00\x00\x00" + b"\x00" * 8
    tcp = [build_udp_frame(b"x" * 20, proto=6), build_udp_frame(b"x" * 20, proto=6, vlan=7),
           build_udp_frame(b"x" * 20, proto=6, vlan=[5, 6])]
    other = [build_udp_frame(b"x" * 20, proto=1), build_udp_frame(b"x" * 20, proto=2)]
    udp = [build_udp_frame(payload, dport=14310)]
    frames = [(1_700_000_000_000_000_000 + i, f) for i, f in enumerate(tcp + other + udp)]
    return frames, len(tcp)


def test_udp_framers_count_tcp_through_fh_net_udp(tmp_path):
    from feedhandler.framing.udp import UdpBatches
    from feedhandler.pipeline import Feed

    frames, n_tcp = _frames()
    p = tmp_path / "mixed.pcap"
    write_pcap(p, frames)
    with UdpBatches(str(p)) as u:
        while u.read() is not None:
            pass
        st = u.stats()
    assert st["tcp_frames"] == n_tcp and st["kept"] == 1
    feed = Feed(p, "mdp3")
    feed.read_all()
    fs = feed.stats()["framing"]
    assert fs["tcp_frames"] == n_tcp and fs["kept"] == 1
    assert fs["link_rejects"]["not_udp"] == n_tcp + 2


def test_sll_tcp_counted(tmp_path):
    from feedhandler.pipeline import Feed

    p = tmp_path / "sll.pcap"
    ip = build_ipv4_udp(b"y" * 30, proto=6)
    write_pcap(p, [(1, build_sll_frame(ip)), (2, build_sll_frame(build_ipv4_udp(b"y" * 30, proto=1)))],
               linktype=113)
    feed = Feed(p, "mdp3")
    feed.read_all()
    assert feed.stats()["framing"]["tcp_frames"] == 1


# ---- MBP: one set of level rules ---------------------------------------------------------------------
def _mbp(iid, action, side, level, price=0, size=0, orders=0, implied=0, flags=0):
    t = records.empty(1)
    v = records.view(t, "mbp_update")
    v["rtype"] = records.RTYPE["mbp_update"]
    v["instrument_id"] = iid
    v["action"] = action
    v["side"] = side
    v["level"] = level
    v["price"] = price
    v["size"] = size
    v["number_of_orders"] = orders
    v["implied"] = implied
    v["flags"] = flags
    return t


def _random_updates(n, seed):
    """Level updates of every action, some invalid (level 0, beyond depth, change of a missing level,
    bad side), some implied, over three instruments."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        act = rng.choice(list(b"AAAAMMCCODFR"))
        side = b"B" if rng.random() < 0.48 else (b"A" if rng.random() < 0.96 else b"X")
        lvl = int(rng.integers(0, 13))
        out.append(_mbp(int(rng.integers(1, 4)), bytes([act]), side, lvl, price=int(rng.integers(1, 500)) * 10**9,
                        size=int(rng.integers(1, 100)), orders=int(rng.integers(1, 9)),
                        implied=int(rng.random() < 0.1)))
    return records.concat(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mbp1_converter_and_mbp_books_share_the_level_rules(seed):
    """Random updates, valid and not: the converter's book (the one it writes MBP-1 tops from) equals
    an MbpBookSet fed the same records, after every batch; and each written MBP-1 row carries the
    MbpBookSet's top after that update."""
    from feedhandler.books import MbpBookSet
    from feedhandler.output._mbp1 import Mbp1Converter

    ticks = _random_updates(3000, seed)
    conv, book = Mbp1Converter(), MbpBookSet()
    rows = []
    for i in range(0, len(ticks), 7):
        rows.append(conv.convert(ticks[i:i + 7]))
        book.apply(ticks[i:i + 7])
        for iid in (1, 2, 3):
            assert conv.bbo(iid) == book.bbo(iid)
    rows = np.concatenate(rows)
    assert conv.written == rows.shape[0] > 100 and conv.rejected > 0 and conv.skipped_implied > 0
    # record by record: a row is written exactly for each outright update the book applied that
    # changed its top (or cleared it), and carries the book's top after it
    dt = np.dtype([("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"),
                   ("ts_event", "<u8"), ("price", "<i8"), ("size", "<u4"), ("action", "S1"), ("side", "S1"),
                   ("flags", "u1"), ("depth", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"),
                   ("sequence", "<u4"), ("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u4"),
                   ("ask_sz", "<u4"), ("bid_ct", "<u4"), ("ask_ct", "<u4")])
    assert dt.itemsize == 80
    got = rows.view(dt).ravel()

    def top(mbp, iid):
        out = []
        for side in "BA":
            lv = mbp.levels(iid, side)
            out += [int(lv["price"][0]), int(lv["size"][0]), int(lv["orders"][0])] if len(lv) else \
                [records.UNDEF_PRICE, 0, 0]
        return out

    ref = MbpBookSet()
    expect = []
    for i in range(len(ticks)):
        iid = int(ticks["instrument_id"][i])
        r = records.view(ticks[i:i + 1], "mbp_update")[0]
        before = top(ref, iid)
        applied = ref.apply(ticks[i:i + 1])
        after = top(ref, iid)
        if not r["implied"] and applied and (r["action"] == b"R" or after != before):
            expect.append([iid, int(r["price"])] + after)
    have = [[int(g["instrument_id"]), int(g["price"]), int(g["bid_px"]), int(g["bid_sz"]), int(g["bid_ct"]),
             int(g["ask_px"]), int(g["ask_sz"]), int(g["ask_ct"])] for g in got]
    assert have == expect


def test_mbp1_converter_channel_reset_clears():
    from feedhandler.output._mbp1 import Mbp1Converter

    conv = Mbp1Converter()
    conv.convert(records.concat([_mbp(9, b"A", b"B", 1, price=5 * 10**9, size=3, orders=1)]))
    assert conv.bbo(9)[1] == 3
    gap = records.empty(1)
    g = records.view(gap, "gap")
    g["rtype"] = records.RTYPE["gap"]
    g["instrument_id"] = 0
    g["kind"] = 4       # FH_GAP_RESET (fh/record.h): an MDP3 ChannelReset
    conv.convert(gap)
    assert conv.bbo(9)[1] == 0
