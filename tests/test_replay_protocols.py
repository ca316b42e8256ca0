"""Replay of MDP3, FIX and OUCH captures (feedhandler.replay): the native batched MDP3 reader
(framing.udp.UdpBatches + Mdp3Decoder.decode_buffer; replay itself goes through the feed core's Feed,
tests/test_feedcore.py) against the pure-Python decode_pcap path record for record, A/B channel mapping, and the FIX/OUCH order-event statistics against the records."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.capture.pcapwriter import write_pcapng
from feedhandler.framing.udp import UdpBatches
from feedhandler.protocols.mdp3 import Mdp3Decoder
from feedhandler.protocols.mdp3.pcap import decode_pcap, read_pcap
from feedhandler.replay import COMMON_KEYS, ReplayOptions, order_event_stats, replay

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
MDP3 = PCAPS / "mdp3_sample.pcap"


def raw(a) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1, records.TICK_SIZE)


def native(path, batch_packets=8192, **kw):
    dec = Mdp3Decoder()
    out = []
    with UdpBatches(path, batch_packets=batch_packets, **kw) as src:
        while (b := src.read()) is not None:
            out.append(raw(dec.decode_buffer(*b)))
        st, ch = src.stats(), src.channels()
    return (np.concatenate(out) if out else np.zeros((0, 64), np.uint8)), dec, st, ch


@pytest.mark.parametrize("batch_packets", [1, 7, 64, 8192])
def test_mdp3_native_batches_equal_decode_pcap(batch_packets):
    ref, rdec = decode_pcap(MDP3, channels={14310: 0, 15310: 0})
    got, dec, st, ch = native(MDP3, batch_packets)
    assert got.shape[0] == len(ref) > 300
    np.testing.assert_array_equal(got, raw(ref))
    assert dec.counters() == rdec.counters()
    assert ch == {14310: 0, 15310: 0, 14320: 1}       # A/B pair shares channel 0 (ports differ by 1000)
    assert st["kept"] == st["frames"] == len(read_pcap(MDP3))
    assert dec.counters()["packet_duplicate"] > 0     # the B copies were arbitrated away


def test_mdp3_channel_mapping_and_no_pairing():
    ref, _ = decode_pcap(MDP3)                          # every port its own channel
    got, dec, _, ch = native(MDP3, ab_offset=0)
    np.testing.assert_array_equal(got, raw(ref))
    assert len(set(ch.values())) == 3 and dec.counters()["packet_duplicate"] == 0
    ref2, _ = decode_pcap(MDP3, channels={15310: 7, 14310: 7})
    got2, _, _, ch2 = native(MDP3, channels={15310: 7, 14310: 7})
    np.testing.assert_array_equal(got2, raw(ref2))
    assert ch2[14320] == 8


def test_mdp3_port_filter_and_containers(tmp_path):
    pk = read_pcap(MDP3)
    a_only = [p for _, port, p in pk if port == 14310]
    with UdpBatches(MDP3, udp_port=14310) as src:
        buf, off, ln, ts, ch = (x.copy() for x in src.read())
        assert src.read() is None
        assert src.stats()["other_port"] == len(pk) - len(a_only)
    assert [bytes(buf[o: o + n]) for o, n in zip(off, ln)] == a_only
    # the same packets from gzip and pcapng containers
    d = MDP3.read_bytes()
    frames, off_ = [], 24
    while off_ + 16 <= len(d):
        sec, frac, incl, _ = struct.unpack_from("<IIII", d, off_)
        frames.append((sec * 10**9 + frac, d[off_ + 16: off_ + 16 + incl]))
        off_ += 16 + incl
    (tmp_path / "a.gz").write_bytes(gzip.compress(d))
    write_pcapng(tmp_path / "b.ng", frames)
    ref = native(MDP3)[0]
    for p in (tmp_path / "a.gz", tmp_path / "b.ng"):
        np.testing.assert_array_equal(native(p, batch_packets=33)[0], ref)


def test_udpbatches_errors(tmp_path):
    from feedhandler.errors import CaptureError, CaptureFormatError

    with pytest.raises(CaptureError):
        UdpBatches(tmp_path / "missing.pcap")
    (tmp_path / "junk").write_bytes(b"\x00" * 100)
    with pytest.raises(CaptureFormatError):
        UdpBatches(tmp_path / "junk")
    with pytest.raises(ValueError):
        UdpBatches(MDP3, channels={14310: 70000})


def test_mdp3_replay_summary_and_books(tmp_path):
    from feedhandler.books import MbpBookSet

    s = replay(MDP3, ReplayOptions(out=str(tmp_path / "all.npy")))
    assert set(COMMON_KEYS) <= set(s) and s["protocol"] == "mdp3"
    ref, rdec = decode_pcap(MDP3, channels={14310: 0, 15310: 0})
    c = rdec.counters()
    assert s["records"] == len(ref) and s["messages"] == c["messages"] and s["packets"] == c["packets"]
    assert s["duplicates"] == c["packet_duplicate"] and s["gaps"] == 0 and s["malformed"] == 0
    from feedhandler.books import BookSet

    enriched = records.concat([ref])     # what the replay writes: the records after the MBO book enriched them
    BookSet().apply(enriched)
    written = np.load(tmp_path / "all.npy").view(np.uint8).reshape(-1, 64)
    np.testing.assert_array_equal(written, raw(enriched))
    # BBO rows: the MBP book of the replay equals an MbpBookSet fed the reference records
    mb = MbpBookSet()
    mb.apply(ref)
    rows = [r for r in s["bbo"] if r["book"] == "mbp"]
    assert rows
    for r in rows:
        bp, bs, ap, as_ = mb.bbo(r["instrument_id"])
        assert (r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]) == (bp, bs, ap, as_)
        assert r["symbol"] and r["symbol"].startswith("ES")   # from the instrument definitions
    assert s["books"] == 4 and s["mbp_books"] == 4


def test_order_event_stats_against_records():
    from feedhandler.protocols import fix_stream, ouch_events

    for recs, _ in (fix_stream.replay_stream(PCAPS / "fix44_sample.pcap", "fix"),
                    ouch_events.replay_stream(PCAPS / "ouch42_sample.pcap", "ouch42")):
        st = order_event_stats(recs)
        oe = [r for r in records.view(recs[recs["rtype"] == records.RTYPE["order_event"]], "order_event")]
        assert st["events"] == len(oe) > 0
        assert sum(st["by_kind"].values()) == len(oe)
        assert st["from_exchange"] == sum(1 for r in oe if r["flags"] & 1)
        lat = sorted(int(r["latency_ns"]) for r in oe if r["flags"] & 8)
        assert st["latency_ns"]["count"] == len(lat) > 0
        assert st["latency_ns"]["max"] == lat[-1] and st["latency_ns"]["min"] == lat[0]
        assert st["latency_ns"]["p50"] == lat[(len(lat) - 1) // 2]


@pytest.mark.parametrize("name,protocol,forced", [
    ("fix44_sample.pcap", "fix", "fix"), ("ouch42_sample.pcap", "ouch42", "ouch42"),
    ("ouch42_sample.pcap", "ouch42", "auto")])
def test_tcp_replay_summary(name, protocol, forced):
    from feedhandler.protocols import fix_stream, ouch_events

    s = replay(PCAPS / name, ReplayOptions(protocol=forced))
    assert set(COMMON_KEYS) <= set(s) and s["protocol"] == protocol
    recs, st = (fix_stream.replay_stream(PCAPS / name, "fix") if protocol == "fix"
                else ouch_events.replay_stream(PCAPS / name, protocol))
    assert s["records"] == len(recs) and s["tcp"] == st["tcp"]
    assert s["order_events"] == order_event_stats(recs)
    assert s["gaps"] == 0 and s["malformed"] == 0 and s["tcp_holes"] == 0
    if protocol == "fix":
        assert s["messages"] == 300 and s["bad_checksums"] == 0
    else:
        assert s["sessions"]["SESSION01"]["last_seq"] > 0


def test_pipelined_mode_for_every_protocol():
    # MDP3, FIX and OUCH run through the same feed core as ITCH, so both modes give the same replay
    single, piped = replay(MDP3, ReplayOptions()), replay(MDP3, ReplayOptions(mode="pipelined"))
    assert piped["mode"] == "pipelined" and piped["records"] == single["records"] > 300
    assert piped["bbo"] == single["bbo"] and piped["mdp3"] == single["mdp3"]
    single = replay(PCAPS / "fix44_sample.pcap", ReplayOptions())
    piped = replay(PCAPS / "fix44_sample.pcap", ReplayOptions(mode="pipelined"))
    assert piped["mode"] == "pipelined" and piped["records"] == single["records"] > 300
    assert piped["bbo"] == single["bbo"] and piped["order_events"] == single["order_events"]
    with pytest.raises(ValueError, match="unknown protocol"):
        replay(MDP3, ReplayOptions(protocol="sbe"))
