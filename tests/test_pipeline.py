"""The Feed end to end: the real NASDAQ captures (framing cross-checked against tshark's MoldUDP64
dissector and a few lines of independent Python), the native producer thread into a Ring (same records
as read()), batching edge cases, stats and progress."""
from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest

from _capture_util import ITCH_DIR, MIDNIGHT, SESSION, add_msg, events, mold_packets, msg_seqs
from feedhandler.capture import pcapwriter as pw
from feedhandler.errors import FeedError
from feedhandler.pipeline import Feed
from feedhandler.records import DTYPES, RTYPE, TICK_DTYPE

CAPTURES = sorted(ITCH_DIR.glob("*.pcap")) if ITCH_DIR.is_dir() else []
needs_data = pytest.mark.skipif(not CAPTURES, reason=f"reference captures not found in {ITCH_DIR}")


def _py_mold(path):
    """Independent reference: classic pcap -> Ethernet/IPv4/UDP -> MoldUDP64 (session, seq, [msgs])."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    e = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, out = 24, []
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(e + "IIII", data[off:off + 16])
        frame = data[off + 16: off + 16 + caplen]
        off += 16 + caplen
        l2 = 14
        while frame[l2 - 2:l2] in (b"\x81\x00", b"\x88\xa8"):  # VLAN tags (the real captures have one)
            l2 += 4
        ihl = (frame[l2] & 15) * 4
        udp = frame[l2 + ihl:]
        payload = udp[8:struct.unpack(">H", udp[4:6])[0]]
        sess, seq, cnt = payload[:10], *struct.unpack(">QH", payload[10:20])
        msgs, p = [], 20
        for _ in range(cnt):
            ln = struct.unpack(">H", payload[p:p + 2])[0]
            msgs.append(payload[p + 2:p + 2 + ln])
            p += 2 + ln
        out.append((sess, seq, msgs, sec * 10**9 + frac))
    return out


@needs_data
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_real_captures_framing(path):
    ref = _py_mold(path)
    f = Feed(path, protocol="itch50")
    t = f.read_all()
    st = f.stats()
    assert st["sessions"] == [SESSION.decode()] and all(r[0] == SESSION for r in ref)
    assert st["packets"] == st["moldudp64_packets"] == len(ref)
    assert st["messages"] == sum(len(r[2]) for r in ref)
    assert st["decoder"]["decoded"] == st["messages"]
    assert f.midnight_ns == MIDNIGHT  # 2023-08-22 New York
    # every decoded record carries the sequence number of its message and the capture time of its packet
    expect = {}
    for sess, seq, msgs, ts in ref:
        for i in range(len(msgs)):
            expect[(seq + i) & 0xFFFFFFFF] = ts
    rows = t[t["rtype"] == RTYPE["mbo"]].view(DTYPES["mbo"])
    for r in rows:
        assert expect[int(r["sequence"])] == int(r["ts_recv"])


@needs_data
def test_multiple_packets_gap_is_real():
    path = ITCH_DIR / "Multiple.Packets.pcap"
    ref = _py_mold(path)
    (s0, q0, m0, _), (s1, q1, m1, _) = ref
    f = Feed(path, protocol=None)
    ev = events(f.read_all())
    assert ev[0][:4] == ("gap", 1, q0 + len(m0), q1 - q0 - len(m0))
    assert f.missing_ranges() == [(SESSION.decode(), q0 + len(m0), q1 - 1)]
    assert f.stats()["lost_messages"] == q1 - q0 - len(m0)


@needs_data
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_real_captures_against_tshark():
    for path in CAPTURES:
        out = subprocess.run(
            ["tshark", "-r", str(path), "-d", "udp.port==26477,moldudp64", "-T", "fields",
             "-e", "moldudp64.session", "-e", "moldudp64.sequence", "-e", "moldudp64.count"],
            capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
        rows = [ln.split("\t") for ln in out if ln.strip()]
        f = Feed(path, protocol=None)
        f.read_all()
        st = f.stats()
        assert st["moldudp64_packets"] == len(rows)
        assert st["messages"] == sum(int(r[2]) for r in rows)
        assert {r[0] for r in rows} == set(st["sessions"])
        seqs = [int(r[1]) for r in rows]
        missing = [(a, b) for _, a, b in f.missing_ranges()]
        expect_missing = [(seqs[i] + int(rows[i][2]), seqs[i + 1] - 1) for i in range(len(rows) - 1)
                          if seqs[i + 1] > seqs[i] + int(rows[i][2])]
        assert missing == expect_missing


def _synthetic(tmp_path, n_packets=400, per=7):
    pk = mold_packets(1, [per] * n_packets)
    order = list(range(n_packets))
    if n_packets >= 300:
        order[5], order[6] = order[6], order[5]   # one reordering
        del order[100]                            # one loss
        order.insert(200, 50)                     # one duplicate
    p = tmp_path / "syn.pcap.gz"
    pw.write_pcap(p, [(MIDNIGHT + 3 * 10**13 + i, pw.build_udp_frame(pk[j][2])) for i, j in enumerate(order)],
                  gzip=True)
    return p


def test_read_in_small_batches_equals_read_all(tmp_path):
    p = _synthetic(tmp_path)
    whole = Feed(p).read_all()
    f = Feed(p)
    parts = []
    buf = np.empty(64, dtype=TICK_DTYPE)  # the decoder's minimum room
    while (k := f.read(buf)):
        parts.append(buf[:k].copy())
    small = np.empty(sum(len(x) for x in parts), dtype=TICK_DTYPE)
    pos = 0
    for x in parts:
        small[pos:pos + len(x)] = x
        pos += len(x)
    assert small.tobytes() == whole.tobytes()
    assert f.read(buf) == 0 and f.finished


def test_read_argument_checks(tmp_path):
    p = _synthetic(tmp_path, 3)
    f = Feed(p)
    with pytest.raises(TypeError):
        f.read(np.empty(10, dtype=np.int64))
    with pytest.raises(ValueError):
        f.read(np.empty(1, dtype=TICK_DTYPE))  # ITCH needs 2 slots
    with pytest.raises(ValueError):
        Feed(p, reorder_window=10**6)
    with pytest.raises(ValueError):
        Feed(p, protocol="fix44")


def test_producer_thread_into_ring_equals_read(tmp_path):
    ring_mod = pytest.importorskip("feedhandler.ring")
    p = _synthetic(tmp_path)
    expect = Feed(p).read_all()
    ring = ring_mod.Ring(1024)  # smaller than the output: the producer waits on the consumer
    f = Feed(p)
    f.start(ring)
    got = []
    while True:
        v = ring.read(500, timeout=5.0)
        if len(v) == 0:
            if ring.finished:
                break
            continue
        got.append(v.copy())
        ring.release(len(v))
    f.join()
    out = np.empty(sum(len(x) for x in got), dtype=TICK_DTYPE)
    pos = 0
    for x in got:
        out[pos:pos + len(x)] = x
        pos += len(x)
    assert out.tobytes() == expect.tobytes()
    st = f.stats()
    assert st["records"] == len(expect) and st["lost_messages"] == 7 and st["duplicate_packets"] == 1
    with pytest.raises(FeedError):
        f.read(np.empty(100, dtype=TICK_DTYPE))
    assert f.progress()[0] == f.progress()[1]


def test_stop_and_dealloc_while_producer_blocked(tmp_path):
    ring_mod = pytest.importorskip("feedhandler.ring")
    p = _synthetic(tmp_path)
    ring = ring_mod.Ring(64)
    f = Feed(p)
    f.start(ring)  # nobody consumes: the producer blocks on the full ring
    f.stop()
    f.join()
    assert ring.closed
    g = Feed(p)
    g.start(ring_mod.Ring(64))
    del g  # dealloc stops and joins the blocked producer


def test_stats_and_progress_shape(tmp_path):
    p = _synthetic(tmp_path, 10)
    f = Feed(p)
    assert f.progress()[1] == p.stat().st_size
    f.read_all()
    st = f.stats()
    for key in ("format", "packets", "bytes", "link_rejects", "udp_datagrams", "moldudp64_packets", "heartbeats",
                "end_of_session", "messages", "duplicates", "out_of_order", "gaps", "lost_messages", "truncated",
                "malformed", "decoder", "records"):
        assert key in st
    assert st["decoder"]["messages"] == {"A": st["messages"]}
