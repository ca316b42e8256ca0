"""Hypothesis fuzzing of every capture/framing entry point: the pcap, pcapng and BinaryFILE readers
(random and mutated files, gzip or not) and the MoldUDP64 parser/sequencer (random payloads, random
sequence numbers). Never a crash, never an exception from the data path, and every frame / datagram /
message is accounted for by exactly one counter."""
from __future__ import annotations

import gzip
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _capture_util import SESSION, add_msg
from feedhandler.capture import pcapwriter as pw
from feedhandler.errors import CaptureFormatError
from feedhandler.pipeline import Feed

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run(tmp_path, data: bytes, protocol="itch50", **kw):
    p = tmp_path / "fuzz.bin"
    p.write_bytes(data)
    try:
        f = Feed(p, protocol=protocol, **kw)
    except CaptureFormatError:
        return None
    t = f.read_all()
    st_ = f.stats()
    # accounting: frames -> link rejects | UDP; UDP -> filtered | short | MoldUDP64 packets
    if st_["format"] != "binaryfile":
        assert st_["packets"] == st_["udp_datagrams"] + sum(st_["link_rejects"].values())
        assert st_["udp_datagrams"] == st_["filtered"] + st_["malformed"]["short_header"] + st_["moldudp64_packets"]
    else:
        assert st_["messages"] == st_["packets"]
    if protocol == "itch50":
        d = st_["decoder"]
        assert d["decoded"] + d["unknown"] + d["bad_length"] + d["empty"] == st_["messages"]
    assert st_["records"] == len(t)
    assert st_["gap_records"] == int((t["rtype"] == 0xE0).sum())
    assert f.progress()[0] <= f.progress()[1]
    return f


frames = st.lists(st.binary(max_size=200), max_size=12)


@SETTINGS
@given(ns=st.booleans(), be=st.booleans(), linktype=st.sampled_from([0, 1, 101, 113, 228, 276, 999]),
       body=st.binary(max_size=600))
def test_fuzz_pcap_random_body(tmp_path, ns, be, linktype, body):
    hdr = pw.pcap_bytes([], nanosecond=ns, big_endian=be, linktype=linktype)
    _run(tmp_path, hdr + body)


@SETTINGS
@given(ns=st.booleans(), be=st.booleans(), fr=frames, gz=st.booleans())
def test_fuzz_pcap_random_frames(tmp_path, ns, be, fr, gz):
    img = pw.pcap_bytes([(i, f) for i, f in enumerate(fr)], nanosecond=ns, big_endian=be)
    _run(tmp_path, gzip.compress(img) if gz else img)


@SETTINGS
@given(payloads=st.lists(st.binary(max_size=120), max_size=10), vlan=st.sampled_from([None, 5, [1, 2]]))
def test_fuzz_udp_payloads(tmp_path, payloads, vlan):
    img = pw.pcap_bytes([(i, pw.build_udp_frame(p, vlan=vlan)) for i, p in enumerate(payloads)])
    _run(tmp_path, img)


mold_pkt = st.builds(
    lambda sess, seq, msgs, count, cut: pw.build_moldudp64(sess, seq, msgs, count=count)[: cut or None],
    st.sampled_from([SESSION, b"OTHERSESS1", b"X"]),
    st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1)),
    st.lists(st.one_of(st.builds(add_msg, st.integers(0, 99)), st.binary(max_size=40)), max_size=6),
    st.one_of(st.none(), st.sampled_from([0, 0xFFFF]), st.integers(0, 10)),
    st.integers(0, 300),
)


@SETTINGS
@given(pkts=st.lists(mold_pkt, max_size=25), window=st.integers(0, 5))
def test_fuzz_moldudp64_sequencer(tmp_path, pkts, window):
    img = pw.pcap_bytes([(i, pw.build_udp_frame(p)) for i, p in enumerate(pkts)])
    f = _run(tmp_path, img, reorder_window=window)
    st_ = f.stats()
    assert st_["lost_messages"] == sum(b - a + 1 for _, a, b in f.missing_ranges())
    # every message delivered is a complete message of some packet, each sequence at most once
    assert st_["messages"] <= sum(max(0, (len(p) - 20) // 2) for p in pkts)


@SETTINGS
@given(be=st.booleans(), tsresol=st.sampled_from([6, 9, 0x80 | 10, 200]), body=st.binary(max_size=400),
       simple=st.booleans())
def test_fuzz_pcapng(tmp_path, be, tsresol, body, simple):
    base = pw.pcapng_bytes([(1, pw.build_udp_frame(pw.build_moldudp64(SESSION, 1, [add_msg(1)])))],
                           big_endian=be, tsresol=tsresol, simple=simple)
    _run(tmp_path, base + body)


@SETTINGS
@given(be=st.booleans(), data=st.data())
def test_fuzz_mutated_pcapng_and_pcap(tmp_path, be, data):
    pk = [(i * 1000, pw.build_udp_frame(pw.build_moldudp64(SESSION, i + 1, [add_msg(i + 1)]))) for i in range(4)]
    img = bytearray(data.draw(st.sampled_from([pw.pcapng_bytes(pk, big_endian=be), pw.pcap_bytes(pk, big_endian=be)])))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(img) - 1))
        img[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(img)))
    _run(tmp_path, bytes(img[:cut] if cut else img))


@SETTINGS
@given(msgs=st.lists(st.binary(min_size=1, max_size=60), max_size=30), tail=st.binary(max_size=5),
       gz=st.booleans())
def test_fuzz_binaryfile(tmp_path, msgs, tail, gz):
    img = pw.binaryfile_bytes([b"S" + m for m in msgs]) + tail
    f = _run(tmp_path, gzip.compress(img) if gz else img)
    if f is not None and f.stats()["format"] == "binaryfile":
        assert f.stats()["messages"] <= len(msgs) + len(tail)


@SETTINGS
@given(blob=st.binary(max_size=300))
def test_fuzz_random_files(tmp_path, blob):
    _run(tmp_path, blob)
    _run(tmp_path, gzip.compress(blob))
    _run(tmp_path, b"\x1f\x8b" + blob)  # a broken gzip header
