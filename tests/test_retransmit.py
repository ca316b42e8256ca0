"""MoldUDP64 retransmission: the server answers requests from a capture file; on the live path, packets
dropped on the sending side are recovered through it and the books equal a clean replay. Also A/B
arbitration: two lines with disjoint losses give the clean books and count the duplicates."""
from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason
from feedhandler.retransmit import (HEADER, MessageStore, RetransmitServer, _pcap_records, decode_request,
                                    encode_request)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "itch50_sample.pcap"
DATE = "2024-03-15"
PORT = 26477
N_MESSAGES = 20000

needs_sample = pytest.mark.skipif(not SAMPLE.exists(), reason=f"missing {SAMPLE}")
needs_live = [
    pytest.mark.skipif(veth_unavailable_reason() is not None, reason=str(veth_unavailable_reason())),
    pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="needs tcpreplay"),
    needs_sample,
]


def _records_with_counts():
    """[(raw pcap record bytes incl. its 16-byte header, MoldUDP64 count)] of the sample."""
    data = SAMPLE.read_bytes()
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frame = data[off + 16: off + 16 + incl]
        count = struct.unpack_from(">H", frame, 14 + 20 + 8 + 18)[0]   # eth + ipv4 + udp + session/seq
        out.append((data[off: off + 16 + incl], count))
        off += 16 + incl
    return data[:24], out


def _set_dport(rec: bytes, port: int) -> bytes:
    b = bytearray(rec)
    u = 16 + 14 + 20
    struct.pack_into(">HH", b, u + 2, port, struct.unpack_from(">H", b, u + 4)[0])
    struct.pack_into(">H", b, u + 6, 0)           # no UDP checksum (IPv4 allows it)
    return bytes(b)


def test_request_round_trip():
    raw = encode_request("SYNTH00001", 1234, 56)
    assert len(raw) == 20 and decode_request(raw) == (b"SYNTH00001", 1234, 56)
    with pytest.raises(ValueError):
        decode_request(raw[:19])


@needs_sample
def test_server_answers_from_capture():
    store = MessageStore.from_capture(str(SAMPLE))
    (session,) = store.messages
    assert len(store.messages[session]) == N_MESSAGES
    srv = RetransmitServer(store, "127.0.0.1", 0).start()
    try:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(2)
        c.sendto(encode_request(session, 101, 500), srv.address)
        got = {}
        while len(got) < 500:
            p, _ = c.recvfrom(65536)
            assert len(p) <= 1400
            s, first, count = HEADER.unpack_from(p, 0)
            assert s == session
            off = HEADER.size
            for i in range(count):
                n = struct.unpack_from(">H", p, off)[0]
                got[first + i] = p[off + 2: off + 2 + n]
                off += 2 + n
            assert off == len(p)
        c.close()
    finally:
        srv.stop()
    # independent check: the messages equal the ones the Feed decodes from the same file
    assert sorted(got) == list(range(101, 601))
    assert all(got[s] == store.messages[session][s] for s in got)
    assert got[101][:1] in {bytes([t]) for t in b"SRHYLVWKJhAFEXCXDUPQBIN O"}
    assert srv.stats["requests"] == 1 and srv.stats["messages_sent"] == 500


def _reference_books():
    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed
    ticks = Feed(SAMPLE, date=DATE).read_all()
    b = BookSet()
    b.apply(ticks)
    return ticks, b


def _book_records(ticks):
    rt = ticks["rtype"]
    keep = (rt == records.RTYPE["mbo"]) | (rt == records.RTYPE["trade"])
    raw = ticks[keep].view(np.uint8).reshape(-1, 64).copy()
    k = ticks["rtype"][keep]
    raw[k == records.RTYPE["mbo"], 40:48] = 0            # ts_recv (capture clock)
    raw[k == records.RTYPE["trade"], 32:40] = 0
    raw[:, 36] &= ~np.uint8(0x04 | 0x08)                  # (mbo flags: MAYBE_BAD_BOOK after a gap)
    return raw


def _play_and_run(v: VethPair, pcap: Path, tmp_path, **live_kw):
    from feedhandler.books import BookSet
    from feedhandler.live import LiveOptions, run
    got = []
    books = BookSet()
    sender = threading.Thread(target=lambda: v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "10000",
                                                       str(pcap)], check=False))
    opts = LiveOptions(iface=v.host_if, capture="afpacket", date=DATE, until_end_of_session=True, duration=30,
                       status_interval=0, on_batch=lambda b: got.append(b.copy()), on_ready=sender.start,
                       books=books, **live_kw)
    try:
        summary = run(opts)
    finally:
        if sender.ident:
            sender.join()
    ticks = np.empty(sum(len(g) for g in got), dtype=records.TICK_DTYPE)
    pos = 0
    for g in got:
        ticks[pos:pos + len(g)] = g
        pos += len(g)
    return summary, ticks, books


@pytest.mark.parametrize("x", [0], ids=["gap-injection"])
def test_live_gap_recovery(tmp_path, x):
    for m in needs_live:
        if m.args[0]:
            pytest.skip(m.kwargs["reason"])
    head, recs = _records_with_counts()
    data_idx = [i for i, (_, c) in enumerate(recs) if 0 < c < 0xFFFF]
    drop = {data_idx[10], data_idx[11], data_idx[12], data_idx[500], data_idx[2000], data_idx[-3]}
    lossy = tmp_path / "lossy.pcap"
    lossy.write_bytes(head + b"".join(r for i, (r, _) in enumerate(recs) if i not in drop))
    dropped_msgs = sum(recs[i][1] for i in drop)
    with VethPair(tag="fhr") as v:
        srv = subprocess.Popen(v.ns_cmd([sys.executable, "-m", "feedhandler.retransmit", "serve", str(SAMPLE),
                                         "--bind", f"{v.ns_addr}:17001", "--duration", "40"]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "serving" in srv.stdout.readline()
            summary, ticks, books = _play_and_run(v, lossy, tmp_path, udp_port=PORT, reorder_window=4096,
                                                  retransmit=f"{v.ns_addr}:17001")
        finally:
            srv.terminate()
            srv.wait(timeout=10)
    ref, ref_books = _reference_books()
    assert summary["gaps"] == 4 and summary["gaps_filled"] == 4, summary["framing"]
    assert summary["lost_messages"] == 0
    assert summary["framing"]["filled_messages"] == dropped_msgs
    assert summary["retransmission"]["filled"] == 4
    assert np.array_equal(_book_records(ticks), _book_records(ref))
    books.check()
    assert np.array_equal(books.bbo_all(), ref_books.bbo_all())
    assert books.live_orders == ref_books.live_orders


def test_live_ab_arbitration(tmp_path):
    for m in needs_live:
        if m.args[0]:
            pytest.skip(m.kwargs["reason"])
    head, recs = _records_with_counts()
    data_idx = [i for i, (_, c) in enumerate(recs) if 0 < c < 0xFFFF]
    lost_a = set(data_idx[5:40:3]) | {data_idx[1000]}
    lost_b = set(data_idx[100:140:4]) | {data_idx[1001]}
    out = []
    for i, (r, _) in enumerate(recs):        # A on PORT, B on PORT + 1, interleaved
        if i not in lost_a:
            out.append(r)
        if i not in lost_b:
            out.append(_set_dport(r, PORT + 1))
    ab = tmp_path / "ab.pcap"
    ab.write_bytes(head + b"".join(out))
    with VethPair(tag="fha") as v:
        summary, ticks, books = _play_and_run(v, ab, tmp_path, groups=[f"233.54.12.111:{PORT}",
                                                                        f"233.54.12.111:{PORT + 1}"])
    ref, ref_books = _reference_books()
    assert summary["lost_messages"] == 0
    # every message arrived twice except those lost on one line
    lost_msgs = sum(recs[i][1] for i in lost_a | lost_b)
    assert summary["duplicates"] == N_MESSAGES - lost_msgs
    assert np.array_equal(_book_records(ticks), _book_records(ref))
    assert np.array_equal(books.bbo_all(), ref_books.bbo_all())
