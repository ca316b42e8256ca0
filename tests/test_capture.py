"""Capture file sources: pcap (us/ns, both byte orders), pcapng, NASDAQ BinaryFILE, gzip, detection from
the bytes, damaged files. Packets carry ITCH add-order messages whose order id identifies them, so the
records that come out say exactly which packets were read, in which order, with which time stamps."""
from __future__ import annotations

import errno
import gzip
import struct

import numpy as np
import pytest

from _capture_util import F_BAD_TS_RECV, MIDNIGHT, SESSION, add_msg, events, msg_seqs
from feedhandler.capture import pcapwriter as pw
from feedhandler.errors import CaptureError, CaptureFormatError
from feedhandler.pipeline import Feed, midnight_ns_for_date
from feedhandler.records import DTYPES, TICK_DTYPE

T0 = MIDNIGHT + 34_200 * 10**9 + 123_456_789  # 09:30:00.123456789 New York


def _packets(n=5, first_seq=1, step_ns=1_000_001):
    pk = []
    for i in range(n):
        payload = pw.build_moldudp64(SESSION, first_seq + i, [add_msg(first_seq + i)])
        pk.append((T0 + i * step_ns, pw.build_udp_frame(payload)))
    return pk


def _msgs(path, **kw):
    f = Feed(path, **kw)
    ev = events(f.read_all())
    return f, ev, [e for e in ev if e[0] == "msg"]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [True, False])
def test_pcap_variants(tmp_path, nanosecond, big_endian, gz):
    pk = _packets()
    p = tmp_path / "cap.pcap"
    pw.write_pcap(p, pk, nanosecond=nanosecond, big_endian=big_endian, gzip=gz)
    f, ev, msgs = _msgs(p)
    st = f.stats()
    assert st["format"] == ("pcap-ns" if nanosecond else "pcap")
    assert st["gzip"] is gz and st["big_endian"] is big_endian
    assert st["packets"] == 5 and st["messages"] == 5 and st["truncated"] == 0
    assert [m[2] for m in msgs] == [1, 2, 3, 4, 5]
    expect = [ts if nanosecond else ts // 1000 * 1000 for ts, _ in pk]
    assert [m[3] for m in msgs] == expect
    assert all(not (m[4] & F_BAD_TS_RECV) for m in msgs)
    assert f.progress() == (p.stat().st_size, p.stat().st_size)
    assert f.midnight_ns == MIDNIGHT  # derived from the first packet, America/New_York


def _pcapng_expected_ts(ts_ns, res):
    per_s = 2 ** (res & 0x7F) if res & 0x80 else 10 ** res
    units = ts_ns * per_s // 10**9
    if res & 0x80:
        return (units * 10**9) >> (res & 0x7F)
    return units * 10**9 // per_s


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("tsresol", [6, 9, 3, 0x80 | 20])
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_variants(tmp_path, big_endian, tsresol, gz):
    pk = _packets()
    p = tmp_path / "cap.pcapng"
    pw.write_pcapng(p, pk, big_endian=big_endian, tsresol=tsresol, gzip=gz)
    f, ev, msgs = _msgs(p)
    st = f.stats()
    assert st["format"] == "pcapng" and st["big_endian"] is big_endian and st["gzip"] is gz
    assert st["pcapng_blocks_skipped"] == 2  # the name-resolution block and the unknown custom block
    assert [m[2] for m in msgs] == [1, 2, 3, 4, 5]
    assert [m[3] for m in msgs] == [_pcapng_expected_ts(ts, tsresol) for ts, _ in pk]


def test_pcapng_two_interfaces_and_sll(tmp_path):
    pk = _packets(4)
    ip0 = pk[1][1][14:]  # the IPv4 packet of frame 1
    sll = pw.build_sll_frame(ip0)
    itfs = [{"linktype": pw.LINKTYPE_ETHERNET, "tsresol": 9}, {"linktype": pw.LINKTYPE_LINUX_SLL, "tsresol": 6}]
    packets = [(pk[0][0], pk[0][1], 0), (pk[1][0], sll, 1), (pk[2][0], pk[2][1], 0), (pk[3][0], pk[3][1], 0)]
    p = tmp_path / "two.pcapng"
    pw.write_pcapng(p, packets, interfaces=itfs)
    f, ev, msgs = _msgs(p)
    assert [m[2] for m in msgs] == [1, 2, 3, 4]
    assert msgs[1][3] == pk[1][0] // 1000 * 1000  # microsecond interface
    assert msgs[0][3] == pk[0][0]


def test_pcapng_simple_packet_blocks_have_no_time(tmp_path):
    p = tmp_path / "spb.pcapng"
    pw.write_pcapng(p, _packets(3), simple=True)
    f, ev, msgs = _msgs(p)
    assert [m[2] for m in msgs] == [1, 2, 3]
    assert all(m[3] == 0 and m[4] & F_BAD_TS_RECV for m in msgs)


def test_pcapng_undeclared_interface_is_counted(tmp_path):
    pk = _packets(3)
    p = tmp_path / "bad_if.pcapng"
    pw.write_pcapng(p, [(pk[0][0], pk[0][1], 0), (pk[1][0], pk[1][1], 5), (pk[2][0], pk[2][1], 0)],
                    interfaces=[{"linktype": 1, "tsresol": 9}])
    f, ev, msgs = _msgs(p)
    assert f.stats()["file_damage"]["no_interface"] == 1
    assert [m[2] for m in msgs] == [1, 3]


@pytest.mark.parametrize("gz", [False, True])
def test_binaryfile(tmp_path, gz):
    msgs_in = [add_msg(100 + i, ts=5_000 + i) for i in range(50)]
    p = tmp_path / "day.bin"
    pw.write_binaryfile(p, msgs_in, gzip=gz)
    f = Feed(p)
    t = f.read_all()
    ev = events(t)
    st = f.stats()
    assert st["format"] == "binaryfile" and st["gzip"] is gz
    assert st["messages"] == 50 and st["moldudp64_packets"] == 0
    assert msg_seqs(ev) == list(range(1, 51))
    assert [e[2] for e in ev] == [100 + i for i in range(50)]
    assert all(e[3] == 0 and e[4] & F_BAD_TS_RECV for e in ev)
    assert f.midnight_ns == 0  # no date, no capture clock: ts_event is ns since midnight
    assert list(t["ts_event"]) == [5_000 + i for i in range(50)]
    f2 = Feed(p, date="2023-08-22")
    assert list(f2.read_all()["ts_event"]) == [MIDNIGHT + 5_000 + i for i in range(50)]
    assert midnight_ns_for_date("2023-08-22") == MIDNIGHT


def test_large_binaryfile_crosses_chunks(tmp_path):
    # > 4 MiB of messages, so the chunked reader refills and compacts with records cut at chunk edges
    n = 130_000
    p = tmp_path / "big.bin.gz"
    pw.write_binaryfile(p, (add_msg(i) for i in range(n)), gzip=True)
    f = Feed(p)
    total, last = 0, -1
    buf = np.empty(9_999, dtype=TICK_DTYPE)
    while (k := f.read(buf)):
        ids = buf[:k].view(DTYPES["mbo"])["order_id"]
        assert ids[0] == last + 1 and np.all(np.diff(ids.astype(np.int64)) == 1)
        last = int(ids[-1])
        total += k
    assert total == n and last == n - 1


def test_format_detected_from_bytes_not_name(tmp_path):
    pk = _packets(3)
    a = tmp_path / "really_pcap.txt"
    pw.write_pcap(a, pk)
    b = tmp_path / "really_pcapng.pcap"
    pw.write_pcapng(b, pk)
    c = tmp_path / "really_binaryfile.pcap.gz"  # neither pcap nor gzip
    pw.write_binaryfile(c, [add_msg(1), add_msg(2)])
    d = tmp_path / "gzipped_pcap.pcap"  # gzip without the .gz name
    pw.write_pcap(d, pk, gzip=True)
    assert Feed(a).stats()["format"] == "pcap-ns"
    assert Feed(b).stats()["format"] == "pcapng"
    assert Feed(c).stats()["format"] == "binaryfile"
    st = Feed(d).stats()
    assert st["format"] == "pcap-ns" and st["gzip"]


def test_unknown_format_empty_and_missing(tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all\n" * 10)
    with pytest.raises(CaptureFormatError, match="unknown capture format"):
        Feed(junk)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(CaptureFormatError, match="empty"):
        Feed(empty)
    gzjunk = tmp_path / "junk.gz"
    gzjunk.write_bytes(gzip.compress(b"\xff" * 100))
    with pytest.raises(CaptureFormatError):
        Feed(gzjunk)
    with pytest.raises(CaptureError) as ei:
        Feed(tmp_path / "does-not-exist.pcap")
    assert ei.value.errno == errno.ENOENT
    assert issubclass(CaptureFormatError, ValueError)


def test_truncated_pcap_last_record(tmp_path):
    pk = _packets(4)
    img = pw.pcap_bytes(pk)
    for cut in (5, 17, len(pk[-1][1]) + 10):  # inside the frame, inside the record header
        p = tmp_path / f"cut{cut}.pcap"
        p.write_bytes(img[:-cut])
        f, ev, msgs = _msgs(p)
        assert [m[2] for m in msgs] == [1, 2, 3]
        assert f.stats()["file_damage"]["truncated_record"] == 1
        assert f.stats()["truncated"] == 1
    p = tmp_path / "hdr.pcap"
    p.write_bytes(img[:10])  # inside the global header
    f, ev, msgs = _msgs(p)
    assert msgs == [] and f.stats()["file_damage"]["truncated_header"] == 1


def test_truncated_gzip(tmp_path):
    img = gzip.compress(pw.pcap_bytes(_packets(200)))
    p = tmp_path / "cut.pcap.gz"
    p.write_bytes(img[: len(img) * 2 // 3])
    f, ev, msgs = _msgs(p)
    st = f.stats()
    assert st["file_damage"]["gzip_truncated"] == 1
    ids = [m[2] for m in msgs]
    assert ids == list(range(1, len(ids) + 1)) and 0 < len(ids) < 200


def test_truncated_pcapng_and_bad_block_length(tmp_path):
    img = pw.pcapng_bytes(_packets(3))
    p = tmp_path / "cut.pcapng"
    p.write_bytes(img[:-7])
    f, ev, msgs = _msgs(p)
    assert [m[2] for m in msgs] == [1, 2]
    assert f.stats()["file_damage"]["truncated_record"] == 1
    # corrupt the trailing length of the last block: reading stops there, counted
    bad = bytearray(img)
    bad[-4:] = struct.pack("<I", 0xDEADBEEC)
    p.write_bytes(bytes(bad))
    f, ev, msgs = _msgs(p)
    assert [m[2] for m in msgs] == [1, 2]
    assert f.stats()["file_damage"]["bad_block_length"] == 1


def test_garbage_after_pcap_records(tmp_path):
    img = pw.pcap_bytes(_packets(3)) + b"\xff\xfe" * 40
    p = tmp_path / "garbage.pcap"
    p.write_bytes(img)
    f, ev, msgs = _msgs(p)
    assert [m[2] for m in msgs] == [1, 2, 3]
    dmg = f.stats()["file_damage"]
    assert dmg["bad_caplen"] + dmg["truncated_record"] == 1


def test_snaplen_cut_frames_are_counted(tmp_path):
    pk = _packets(3)
    p = tmp_path / "snap.pcap"
    pw.write_pcap(p, pk, snaplen=60)  # frames are 98 bytes: the UDP payload is cut
    f, ev, msgs = _msgs(p)
    st = f.stats()
    assert msgs == [] and st["packets"] == 3
    assert st["link_rejects"]["truncated_ipv4"] == 3


def test_pcapng_two_sections_with_different_byte_orders(tmp_path):
    pk = _packets(4)
    p = tmp_path / "two_sections.pcapng"
    p.write_bytes(pw.pcapng_bytes(pk[:2], tsresol=9) + pw.pcapng_bytes(pk[2:], big_endian=True, tsresol=6))
    f, ev, msgs = _msgs(p)
    assert [m[2] for m in msgs] == [1, 2, 3, 4]
    assert [m[3] for m in msgs] == [pk[0][0], pk[1][0], pk[2][0] // 1000 * 1000, pk[3][0] // 1000 * 1000]
    assert f.stats()["big_endian"] is False  # the first section's
