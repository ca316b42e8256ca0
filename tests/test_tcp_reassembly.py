"""TCP reassembly (feedhandler.framing.tcp): ordering, retransmissions, overlaps, holes, SYN/FIN/RST.

The reference is the byte string the test itself sent: whatever the capture does to the segments
(reorder, duplicate, overlap, drop), the reassembled stream must equal the sent bytes with the dropped
ranges reported as holes at the right offsets.
"""
import random

import pytest
from hypothesis import given, settings, strategies as st

from feedhandler.capture.pcapwriter import build_udp_frame, write_pcap
from feedhandler.framing import tcp
from feedhandler.framing.tcp import (TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Reassembler,
                                     TcpConversation, build_tcp_frame, pair_streams, reassemble_file)

C, S = ("10.1.0.2", 40000), ("10.1.0.1", 9000)


def seg(payload, seq, flags=TCP_ACK | TCP_PSH, src=C, dst=S):
    return build_tcp_frame(payload, src[0], dst[0], src[1], dst[1], seq, 0, flags)


def run(frames, **kw):
    r = Reassembler(**kw)
    for i, f in enumerate(frames):
        r.feed(1000 + i, f)
    return r.finish(), r


def test_in_order_and_both_directions():
    conv = TcpConversation()
    conv.handshake(1)
    conv.send(10, "c", b"hello ")
    conv.send(20, "s", b"ack")
    conv.send(30, "c", b"world")
    conv.close(40)
    r = Reassembler()
    for ts, f in conv.frames:
        r.feed(ts, f)
    streams = r.finish()
    (cl, sv), = pair_streams(streams)
    assert cl.data == b"hello world" and sv.data == b"ack"
    assert cl.is_client is True and sv.is_client is False
    assert cl.syn and cl.fin and sv.fin
    assert list(cl.ts_at([6, 11])) == [10, 30]
    assert r.stats["holes"] == 0 and r.stats["retrans_segments"] == 0
    assert r.stats["connections"] == 1 and r.stats["streams"] == 2


def test_sequence_wraparound():
    conv = TcpConversation(isn_c=0xFFFFFFF0)
    conv.handshake(1)
    data = bytes(range(256)) * 20
    conv.mss = 100
    conv.send(5, "c", data)
    streams, r = run([f for _, f in conv.frames])
    assert streams[0].data == data


def test_retransmission_and_reordering():
    base = 5000
    frames = [seg(b"", base - 1, TCP_SYN)]
    frames += [seg(b"BBBB", base + 4), seg(b"AAAA", base), seg(b"AAAA", base), seg(b"CCCC", base + 8),
               seg(b"BBBB", base + 4)]
    streams, r = run(frames)
    s = streams[0]
    assert s.data == b"AAAABBBBCCCC"
    assert s.ooo_segments == 1
    assert s.retrans_segments == 2 and s.retrans_bytes == 8
    assert s.overlap_conflicts == 0


def test_overlap_delivers_only_new_bytes_and_flags_conflicts():
    base = 100
    frames = [seg(b"", base - 1, TCP_SYN), seg(b"0123456789", base), seg(b"6789abcdef", base + 6),
              seg(b"XXcd", base + 10)]          # overlaps 'abcd' with different bytes 'XX'
    streams, _ = run(frames)
    s = streams[0]
    assert s.data == b"0123456789abcdef"
    assert s.overlap_segments == 1 and s.overlap_bytes == 4
    assert s.overlap_conflicts == 1


def test_hole_is_reported_and_stream_resumes():
    base = 1
    frames = [seg(b"", base - 1, TCP_SYN), seg(b"aaaa", base), seg(b"cccc", base + 8), seg(b"dddd", base + 12)]
    streams, r = run(frames)
    s = streams[0]
    assert s.data == b"aaaaccccdddd"
    assert s.holes == [(4, 4)]
    assert s.pieces() == [(0, 4), (4, 12)]
    assert r.stats["hole_bytes"] == 4


def test_ooo_bound_declares_hole_early():
    base = 1
    frames = [seg(b"", base - 1, TCP_SYN), seg(b"a", base)]
    frames += [seg(b"x", base + 2 + i) for i in range(5)]       # byte base+1 never arrives
    streams, _ = run(frames, max_ooo_segments=3)
    s = streams[0]
    assert s.holes and s.holes[0] == (1, 1)
    assert s.data == b"a" + b"x" * 5


def test_rst_flushes_and_data_after_fin_counted():
    frames = [seg(b"", 9, TCP_SYN), seg(b"ab", 10), seg(b"", 12, TCP_FIN | TCP_ACK), seg(b"zz", 13)]
    streams, _ = run(frames)
    assert streams[0].data == b"ab" and streams[0].after_fin_bytes == 2
    frames = [seg(b"", 9, TCP_SYN), seg(b"ab", 10), seg(b"cd", 14), seg(b"", 0, TCP_RST, src=S, dst=C)]
    streams, _ = run(frames)
    s = [x for x in streams if x.key[1] == C[1]][0]
    assert s.rst and s.holes == [(2, 2)] and s.data == b"abcd"


def test_new_syn_after_fin_starts_new_connection():
    frames = [seg(b"", 9, TCP_SYN), seg(b"one", 10), seg(b"", 13, TCP_FIN | TCP_ACK),
              seg(b"", 5000, TCP_SYN), seg(b"two", 5001)]
    streams, r = run(frames)
    assert [bytes(s.data) for s in streams] == [b"one", b"two"]
    assert r.stats["connections"] == 2 and r.stats["streams"] == 2


def test_midstream_capture_without_syn():
    streams, _ = run([seg(b"xyz", 123456), seg(b"w", 123459)])
    assert streams[0].data == b"xyzw" and streams[0].is_client is None


def test_non_tcp_and_damaged_frames_are_counted():
    r = Reassembler()
    r.feed(1, build_udp_frame(b"payload"))
    r.feed(2, b"\x00" * 10)
    good = seg(b"data", 1)
    r.feed(3, good[:40])                          # IPv4 header claims more than was captured
    r.feed(4, good)
    r.finish()
    nt = r.stats["not_tcp"]
    assert nt["not_tcp"] == 1 and nt["truncated_link"] == 1 and nt["truncated_ipv4"] == 1
    assert r.stats["tcp_segments"] == 1


def test_feed_file_matches_feed(tmp_path):
    conv = TcpConversation()
    conv.handshake(1)
    conv.send(2, "c", b"x" * 5000)
    conv.send(3, "s", b"y" * 300)
    p = tmp_path / "c.pcap"
    write_pcap(p, conv.frames)
    streams, stats = reassemble_file(p)
    assert [bytes(s.data) for s in streams] == [b"x" * 5000, b"y" * 300]
    assert stats["tcp_segments"] == len(conv.frames)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), seed=st.integers(0, 2**32 - 1),
       isn=st.integers(0, 2**32 - 1))
def test_random_segmentation_reorder_duplicates(data, seed, isn):
    """Differential: any segmentation, order and duplication of the sent bytes reassembles to them."""
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 20)))) if len(data) > 1 else []
    bounds = [0] + cuts + [len(data)]
    segs = []
    for a, b in zip(bounds, bounds[1:]):
        # widen some segments backwards to create overlaps carrying the same bytes
        a2 = max(0, a - rnd.randint(0, 5)) if rnd.random() < 0.3 else a
        segs.append(seg(data[a2:b], (isn + 1 + a2) & 0xFFFFFFFF))
    segs += [rnd.choice(segs) for _ in range(rnd.randint(0, 5))]
    rnd.shuffle(segs)
    streams, r = run([seg(b"", isn, TCP_SYN)] + segs)
    assert streams[0].data == data
    assert streams[0].holes == [] and streams[0].overlap_conflicts == 0


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=20, max_size=2000), seed=st.integers(0, 2**32 - 1))
def test_dropped_segments_become_holes_at_right_offsets(data, seed):
    rnd = random.Random(seed)
    n = len(data)
    cuts = sorted(rnd.sample(range(1, n), min(n - 1, 10)))
    bounds = [0] + cuts + [n]
    pieces = list(zip(bounds, bounds[1:]))
    drop = {i for i in range(1, len(pieces) - 1) if rnd.random() < 0.3}
    frames = [seg(b"", 0, TCP_SYN)] + [seg(data[a:b], 1 + a) for i, (a, b) in enumerate(pieces) if i not in drop]
    streams, _ = run(frames)
    s = streams[0]
    expect = b"".join(data[a:b] for i, (a, b) in enumerate(pieces) if i not in drop)
    assert bytes(s.data) == expect
    # merge adjacent dropped pieces into the holes the reassembler must report
    holes, off, i = [], 0, 0
    while i < len(pieces):
        if i in drop:
            j, size = i, 0
            while j in drop:
                size += pieces[j][1] - pieces[j][0]
                j += 1
            holes.append((off, size))
            i = j
        else:
            off += pieces[i][1] - pieces[i][0]
            i += 1
    assert s.holes == holes


@settings(max_examples=200, deadline=None)
@given(frame=st.binary(max_size=200), lt=st.sampled_from([1, 101, 113, 228, 0, 147]))
def test_fuzz_frames_never_crash(frame, lt):
    r = Reassembler()
    r.feed(1, frame, lt)
    r.finish()
    assert r.stats["frames"] == 1
    assert r.stats["tcp_segments"] + sum(r.stats["not_tcp"].values()) == 1
