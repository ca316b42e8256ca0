"""The feed core (feedhandler.core.producer): one producer loop for every protocol and mode.

MDP3 through the core: ``Feed(path, "mdp3")`` (file -> CME packet framer -> Mdp3Decoder) against the
pure-Python reference (every payload decoded in one ``decode_packets`` call), in batches of any size,
single-threaded and through the producer thread and a ring; ``replay --mode pipelined`` equal to
single; ``run --file`` (the live loop with a file source) detected as MDP3 and equal to replay. And
the loop exists once: no other module frames and decodes packets on its own.
"""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records

ROOT = Path(__file__).resolve().parents[1]
MDP3 = ROOT / "pcaps" / "mdp3_sample.pcap"
ITCH = ROOT / "pcaps" / "itch50_sample.pcap"
SCHEMA_DIR = ROOT.parent / "shared" / "data" / "mdp3" / "schema"


def raw(a) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1, records.TICK_SIZE)


def _ring_records(feed) -> np.ndarray:
    """Every record the feed's producer thread publishes into a ring (read by this thread)."""
    from feedhandler.ring import Ring

    ring = Ring(1 << 12, overflow="block")       # small: the producer wraps the ring many times
    out = []
    feed.start(ring)
    while not ring.finished:
        b = ring.read(1 << 10, timeout=0.05)
        if b.shape[0]:
            out.append(raw(b).copy())
            ring.release(b.shape[0])
    feed.join()
    return np.concatenate(out) if out else np.zeros((0, 64), np.uint8)


@pytest.fixture(scope="module")
def ab_capture(tmp_path_factory):
    return make_lossy_ab(tmp_path_factory.mktemp("feedcore"))


def make_lossy_ab(d: Path) -> Path:
    """A synthetic A/B MDP3 capture where line B drops and reorders packets (and A loses a few)."""
    if not SCHEMA_DIR.exists():
        pytest.skip(f"{SCHEMA_DIR} (shared reference data) is absent")
    from feedhandler.capture.pcapwriter import build_udp_frame, write_pcap
    from feedhandler.protocols.mdp3.synth import INCREMENTAL_A, INCREMENTAL_B, generate, read_pcap

    src = d / "ab.pcap"
    generate(src, messages=3000, seed=5, ab=True)
    pk = read_pcap(src)
    rng = np.random.default_rng(7)
    b_slots = [i for i, (_, port, _) in enumerate(pk) if port == INCREMENTAL_B[1]]
    b = [pk[i] for i in b_slots if rng.random() > 0.2]      # B drops a fifth
    for i in range(0, len(b) - 3, 9):                        # and swaps neighbours now and then
        b[i], b[i + 1] = b[i + 1], b[i]
    groups = {INCREMENTAL_A[1]: INCREMENTAL_A[0], INCREMENTAL_B[1]: INCREMENTAL_B[0]}
    frames, n_a = [], 0
    for i, (ts, port, payload) in enumerate(pk):
        if port == INCREMENTAL_B[1]:
            if not b:
                continue
            _, port, payload = b.pop(0)                      # this slot's time, B's next packet
        elif port == INCREMENTAL_A[1]:
            n_a += 1
            if n_a % 97 == 50:
                continue                                     # A loses a few (B has some of them)
        frames.append((ts, build_udp_frame(payload, dst=groups.get(port, "224.0.31.43"), dport=port)))
    out = d / "ab_lossy.pcap"
    write_pcap(out, frames)
    return out


def _reference(path, channels=None):
    from feedhandler.protocols.mdp3.pcap import decode_pcap

    return decode_pcap(path, channels=channels if channels is not None else {14310: 0, 15310: 0})


@pytest.mark.parametrize("batch", [1024, 1500, 65536])
def test_feed_mdp3_equals_the_reference_decoder(batch):
    from feedhandler.pipeline import Feed

    ref, rdec = _reference(MDP3)
    feed = Feed(MDP3, "mdp3")
    buf = records.empty(batch)
    got = []
    while (n := feed.read(buf)):
        got.append(raw(buf[:n]).copy())
    got = np.concatenate(got)
    assert got.shape[0] == len(ref) > 300
    np.testing.assert_array_equal(got, raw(ref))
    assert feed.decoder.counters() == rdec.counters()
    st = feed.stats()
    assert st["channels"] == {14310: 0, 15310: 0, 14320: 1}
    assert st["duplicates"] == rdec.counters()["packet_duplicate"] > 0     # B copies arbitrated away
    assert st["framing"]["kept"] == st["packets"] and st["messages"] == rdec.counters()["messages"]
    assert st["sessions"] == ["14310/15310", "14320"]


def test_feed_mdp3_too_small_a_batch_is_a_clear_error():
    from feedhandler.pipeline import Feed

    with pytest.raises(ValueError, match="at least 1024 records"):
        Feed(MDP3, "mdp3").read(records.empty(16))


def test_feed_mdp3_without_hold_is_the_decoders_arbitration(ab_capture):
    """reorder_window=0: no A/B hold in the framer, the decoder's look-ahead alone (the reference)."""
    from feedhandler.pipeline import Feed

    ref, rdec = _reference(ab_capture)
    c = rdec.counters()
    assert c["packet_reordered"] > 0 and c["packet_gaps"] > 0 and c["packet_duplicate"] > 0
    feed = Feed(ab_capture, "mdp3", reorder_window=0)
    np.testing.assert_array_equal(raw(feed.read_all()), raw(ref))
    assert feed.decoder.counters() == c and feed.stats()["framing"]["held_packets"] == 0


def test_feed_mdp3_ab_hold_fills_holes_from_the_other_line(ab_capture):
    """The framer holds packets ahead of their channel's MsgSeqNum until the other line's copy comes:
    no more gaps than the decoder alone finds, every hole it fills is counted, and the records of a
    Feed equal those of its producer thread through a small ring (wrapping many times)."""
    from feedhandler.pipeline import Feed

    _, rdec = _reference(ab_capture)
    feed = Feed(ab_capture, "mdp3")
    single = raw(feed.read_all())
    st = feed.stats()
    assert st["framing"]["hold_filled"] > 0 and st["framing"]["held_max"] <= 64
    assert 0 < st["gaps"] <= rdec.counters()["packet_gaps"]
    assert st["messages"] >= rdec.counters()["messages"]
    feed2 = Feed(ab_capture, "mdp3")
    np.testing.assert_array_equal(_ring_records(feed2), single)
    assert feed2.decoder.counters() == feed.decoder.counters()


def test_feed_itch_thread_and_ring_equal_read():
    from feedhandler.pipeline import Feed

    single = raw(Feed(ITCH, date="2024-03-15").read_all())
    assert single.shape[0] > 20000
    np.testing.assert_array_equal(_ring_records(Feed(ITCH, date="2024-03-15")), single)


def test_feed_protocol_options_are_checked():
    from feedhandler.pipeline import Feed

    with pytest.raises(ValueError, match="unknown protocol"):
        Feed(MDP3, "sbe")
    with pytest.raises(ValueError, match="MoldUDP64 options"):
        Feed(MDP3, "mdp3", sequencing=False)
    with pytest.raises(ValueError, match="mdp3 only"):
        Feed(ITCH, "itch50", channels={1: 0})


def test_replay_mdp3_reorder_window(ab_capture, tmp_path):
    """--reorder-window applies to MDP3's A/B hold as to MoldUDP64's: 0 is the decoder's look-ahead alone."""
    from feedhandler.pipeline import Feed

    s0, r0 = _replay_npy(ab_capture, "single", tmp_path, reorder_window=0)
    s64, r64 = _replay_npy(ab_capture, "single", tmp_path)
    from feedhandler.books import BookSet

    for recs, window in ((r0, 0), (r64, 64)):
        ref = Feed(ab_capture, "mdp3", reorder_window=window).read_all()
        BookSet().apply(ref)        # replay's records are enriched by the books
        np.testing.assert_array_equal(recs, raw(ref))
    assert s0["gaps"] >= s64["gaps"] and not np.array_equal(r0, r64)


def _replay_npy(path, mode, tmp_path, **kw):
    from feedhandler.replay import ReplayOptions, replay

    out = tmp_path / f"{mode}.npy"
    s = replay(path, ReplayOptions(protocol="mdp3", mode=mode, out=str(out), **kw))
    return s, raw(np.load(out))


def test_replay_mdp3_pipelined_equals_single(ab_capture, tmp_path):
    from feedhandler.pipeline import Feed

    s1, r1 = _replay_npy(ab_capture, "single", tmp_path)
    s2, r2 = _replay_npy(ab_capture, "pipelined", tmp_path)
    assert s1["mode"] == "single" and s2["mode"] == "pipelined"
    assert r1.shape[0] == s1["records"] > 1000
    np.testing.assert_array_equal(r1, r2)
    for k in ("messages", "records", "gaps", "lost_messages", "duplicates", "out_of_order", "books",
              "live_orders", "mbp_books", "book_counters", "mbp_book_counters", "mdp3", "bbo"):
        assert s1[k] == s2[k], k
    assert s1["records"] == len(Feed(ab_capture, "mdp3").read_all())


def _run_file(path, **kw):
    from feedhandler.books import BookSet
    from feedhandler.live import LiveOptions, run

    got = []
    opts = LiveOptions(iface=None, file=str(path), status_interval=0, install_signals=False,
                       on_batch=lambda b: got.append(raw(b).copy()), books=BookSet(), **kw)
    s = run(opts)
    return s, (np.concatenate(got) if got else np.zeros((0, 64), np.uint8))


@pytest.mark.parametrize("protocol", ["mdp3", "auto"])
def test_run_file_mdp3_equals_replay(ab_capture, tmp_path, protocol):
    s, got = _run_file(ab_capture, protocol=protocol)
    rs, ref = _replay_npy(ab_capture, "single", tmp_path)
    assert s["protocol"] == "mdp3" and s["backend"] == "pcap"
    # books enrich records in place on both paths: the enriched records are equal byte for byte
    np.testing.assert_array_equal(got, ref)
    assert s["messages"] == rs["messages"] and s["gaps"] == rs["gaps"] and s["duplicates"] == rs["duplicates"]
    assert s["sessions"] == ["14310/15310", "14320"]            # channels by port, never binary names
    assert s["live_orders"] == rs["live_orders"] and s["mbp_books"] == rs["mbp_books"]


def test_run_main_file_detects_mdp3(capsys):
    from feedhandler.live import run_main

    assert run_main(["--file", str(MDP3), "--status-interval", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["protocol"] == "mdp3" and s["messages"] > 0 and s["moldudp64_packets"] == 0
    assert all(re.fullmatch(r"[0-9/]+", name) for name in s["sessions"])
    ref, rdec = _reference(MDP3)
    assert s["messages"] == rdec.counters()["messages"] and s["records"] == len(ref)


def test_run_main_file_itch_still_itch(capsys):
    from feedhandler.live import run_main

    assert run_main(["--file", str(ITCH), "--date", "2024-03-15", "--status-interval", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["protocol"] == "itch50" and s["moldudp64_packets"] > 0


def test_one_producer_loop():
    """The framer -> decoder loop is written once, in feedhandler/core/producer.pyx: no other module
    calls a framer's run or a decoder's fn on framed messages itself."""
    src = ROOT / "src" / "feedhandler"
    loops = []
    for p in sorted(src.rglob("*.pyx")):
        text = p.read_text()
        if re.search(r"fh_framer_run\(|\.fr\.run\(", text) and re.search(r"\bc\.fn\(|\.fn\(\w+\.ctx", text):
            loops.append(str(p.relative_to(src)))
    assert loops == ["core/producer.pyx"]
