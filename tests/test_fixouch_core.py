"""Issue 13 ("one feed core"): FIX and OUCH (SoupBinTCP) captures through the feed core.

``Feed(path, "fix" | "ouch42" | "ouch50" | "ouch")`` frames TCP captures with
``framing.tcp.TcpSessionFramer`` (reassembly + the session decoder) and hands the records out through
the producer loop like ITCH and MDP3: ``read(buf)`` batches, or the native producer thread into a Ring.
The records must be byte for byte those of ``replay_stream`` (the path ``feedhandler replay`` used
before), and ``feedhandler replay --mode single|pipelined`` must give the summary it gave before
(tests/golden/summaries.json, made with the code before the change) apart from times and the mode.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.errors import FeedError
from feedhandler.pipeline import Feed
from feedhandler.protocols import fix_stream, ouch_events
from feedhandler.replay import ReplayOptions, replay
from feedhandler.ring import Ring

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
SHARED = ROOT.parent / "shared" / "data"
FIX_SPEC = SHARED / "fix" / "spec"
GOLDEN = ROOT / "tests" / "golden" / "summaries.json"

SAMPLES = [("fix44_sample.pcap", "fix"), ("ouch42_sample.pcap", "ouch42"), ("ouch42_sample.pcap", "ouch"),
           ("ouch50_sample.pcap", "ouch50"), ("ouch50_sample.pcap", "ouch")]


def _old(path, protocol):
    """The records and stats of the whole-capture path (what replay used before the feed core)."""
    if protocol == "fix":
        return fix_stream.replay_stream(path, "fix")
    return ouch_events.replay_stream(path, protocol)


def _bytes(recs) -> bytes:
    return np.ascontiguousarray(recs).view(np.uint8).tobytes()


def _read_batches(feed, batch: int):
    buf = records.empty(batch)
    parts = []
    while (n := feed.read(buf)):
        parts.append(buf[:n].copy())
    return b"".join(_bytes(p) for p in parts), len(parts)


def _ring_records(feed) -> bytes:
    ring = Ring(1 << 12, overflow="block")      # smaller than the captures' records: the ring wraps
    feed.start(ring)
    out = []
    try:
        while True:
            b = ring.read(1 << 10, timeout=0.5)
            if b.shape[0]:
                out.append(_bytes(b))
                ring.release(b.shape[0])
            elif ring.finished:
                break
    finally:
        feed.join()
    return b"".join(out)


def _shared_tcp_captures():
    out = []
    for p in sorted((SHARED / "ouch50").glob("*.pcap")) if (SHARED / "ouch50").is_dir() else []:
        out.append((p, "ouch50"))
    return out


@pytest.mark.parametrize("name,protocol", SAMPLES)
def test_feed_records_equal_replay_stream(name, protocol):
    path = PCAPS / name
    want, st = _old(path, protocol)
    assert len(want) > 100
    feed = Feed(path, protocol)
    got, n_batches = _read_batches(feed, 97)          # odd batch size: records split across reads
    assert got == _bytes(want)
    assert n_batches == -(-len(want) // 97)
    assert feed.read(records.empty(16)) == 0           # the end stays the end
    fst = feed.stats()
    assert fst["decoded"] and fst["records"] == len(want)
    assert fst["tcp"] == st["tcp"]
    assert fst["protocol"] == st["protocol"]
    assert fst["symbols"] == st["symbols"]
    assert fst["packets"] == st["tcp"]["frames"]
    assert fst["sessions"] and all(">" in s for s in fst["sessions"])
    # one big read: the same bytes
    assert _bytes(Feed(path, protocol).read_all()) == _bytes(want)


@pytest.mark.parametrize("name,protocol", SAMPLES[:2] + SAMPLES[3:4])
def test_feed_producer_thread_into_ring_equals_replay_stream(name, protocol):
    path = PCAPS / name
    want, _ = _old(path, protocol)
    feed = Feed(path, protocol)
    assert _ring_records(feed) == _bytes(want)
    assert feed.finished
    assert feed.producer_stats()["records"] == len(want)


def test_shared_real_ouch_captures_equal():
    caps = _shared_tcp_captures()
    if not caps:
        pytest.skip(f"no real OUCH captures under {SHARED / 'ouch50'}")
    for path, protocol in caps:
        want, st = _old(path, protocol)
        feed = Feed(path, protocol)
        got, _ = _read_batches(feed, 64)
        assert got == _bytes(want), path.name
        assert feed.stats()["ouch"] == st["ouch"], path.name
        assert _ring_records(Feed(path, protocol)) == _bytes(want), path.name


def test_several_connections_merge_by_capture_time(tmp_path):
    """Two FIX connections in one capture: the whole-capture merge (symbol ids per connection, records
    by capture time) is the same through the feed core."""
    from feedhandler.capture.pcapwriter import write_pcap
    from feedhandler.framing.tcp import TcpConversation

    frames = []
    for i, seed in enumerate((3, 4)):
        msgs = fix_stream.synth_messages(120, seed, t0=1_700_000_000_000_000_000 + i * 3_000_000)
        conv = TcpConversation(client=("10.2.0.%d" % (2 + i), 51000 + i), server=("10.2.0.1", 9878),
                               isn_c=1000 + i, isn_s=0xFFFFF000)
        conv.handshake(msgs[0][0] - 10_000)
        for ts, side, m in msgs:
            conv.send(ts, side, m)
        conv.close(msgs[-1][0] + 1000)
        frames += conv.frames
    frames.sort(key=lambda f: f[0])
    path = tmp_path / "two.pcap"
    write_pcap(path, frames, nanosecond=True)
    want, st = _old(path, "fix")
    assert st["tcp"]["connections"] == 2
    got, _ = _read_batches(Feed(path, "fix"), 1000)
    assert got == _bytes(want)
    assert _ring_records(Feed(path, "fix")) == _bytes(want)


def test_damaged_capture_counts_the_same(tmp_path):
    """A truncated capture: the file damage joins the TCP statistics as in the whole-capture path."""
    data = (PCAPS / "fix44_sample.pcap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) * 2 // 3])
    want, st = _old(path, "fix")
    feed = Feed(path, "fix")
    got, _ = _read_batches(feed, 4096)
    assert got == _bytes(want)
    assert feed.stats()["tcp"] == st["tcp"]
    assert st["tcp"].get("file_damage")          # the cut is counted, not silent


def test_decoder_failure_is_raised_from_read_and_join(monkeypatch):
    def broken(reassembler, **kw):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(fix_stream, "decode_streams", broken)
    feed = Feed(PCAPS / "fix44_sample.pcap", "fix")
    with pytest.raises(RuntimeError, match="decoder exploded"):
        feed.read(records.empty(1024))
    assert feed.read(records.empty(1024)) == 0       # raised once; the input has ended
    feed = Feed(PCAPS / "fix44_sample.pcap", "fix")
    ring = Ring(1 << 12, overflow="block")
    feed.start(ring)
    while not ring.finished:
        b = ring.read(1 << 10, timeout=0.2)
        ring.release(b.shape[0])
    with pytest.raises(RuntimeError, match="decoder exploded"):
        feed.join()


def test_udp_options_refused_for_tcp_sessions():
    with pytest.raises(ValueError, match="TCP session"):
        Feed(PCAPS / "fix44_sample.pcap", "fix", udp_port=9878)
    with pytest.raises(ValueError, match="TCP session"):
        Feed(PCAPS / "ouch42_sample.pcap", "ouch42", reorder_window=8)
    with pytest.raises(ValueError, match="fix only"):
        Feed(PCAPS / "ouch42_sample.pcap", "ouch42", dictionary_dir="/nonexistent")
    with pytest.raises(ValueError, match="TCP protocols"):
        Feed(PCAPS / "itch50_sample.pcap", "itch50", symbols={"AAPL": 1})


def _clean(x):
    volatile = {"elapsed_s", "messages_per_s", "mode"}
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if k not in volatile}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


@pytest.mark.parametrize("name,kw", [("fix44_sample.pcap", {}), ("ouch42_sample.pcap", {}),
                                     ("ouch50_sample.pcap", {"symbols": ["AAPL"]})])
@pytest.mark.parametrize("mode", ["single", "pipelined"])
def test_replay_summary_as_before_in_both_modes(name, kw, mode, monkeypatch):
    """The JSON summary of `replay` equals the one the whole-capture path gave (golden copy made before
    the feed core took FIX and OUCH), apart from times and the mode, in both modes."""
    if not (FIX_SPEC / "FIX44.xml").is_file():
        pytest.skip(f"the FIX dictionaries the golden summaries were made with are not at {FIX_SPEC}")
    monkeypatch.setenv("FH_FIX_SPEC_DIR", str(FIX_SPEC))
    s = replay(str(PCAPS / name), ReplayOptions(mode=mode, **kw))
    s = json.loads(json.dumps(s, default=int))
    assert s["mode"] == mode
    s["file"] = Path(s["file"]).name
    want = json.loads(GOLDEN.read_text())[name]["json"]
    assert _clean(s) == _clean(want)


@pytest.mark.parametrize("name,protocol", [("fix44_sample.pcap", "fix"), ("ouch50_sample.pcap", "ouch50")])
def test_replay_outputs_equal_in_both_modes(tmp_path, name, protocol):
    """--out: the same records written in both modes (the enriched records of the books)."""
    outs = {}
    for mode in ("single", "pipelined"):
        out = tmp_path / f"{mode}.npy"
        s = replay(str(PCAPS / name), ReplayOptions(mode=mode, out=str(out), protocol=protocol))
        assert s["records"] > 0 and s["output"]["records"] == s["records"]
        outs[mode] = np.load(out)
    assert outs["single"].tobytes() == outs["pipelined"].tobytes()
    want, _ = _old(PCAPS / name, protocol)
    assert len(outs["single"]) == len(want)


def test_cli_replay_pipelined_fix_and_ouch():
    """`feedhandler replay X --mode pipelined` on FIX and OUCH: exit 0 (it was refused with exit 2)."""
    exe = shutil.which("feedhandler") or str(Path(sys.executable).with_name("feedhandler"))
    for name in ("fix44_sample.pcap", "ouch42_sample.pcap"):
        r = subprocess.run([exe, "replay", str(PCAPS / name), "--mode", "pipelined", "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert s["mode"] == "pipelined" and s["records"] > 0


def test_replay_symbols_keeps_the_records_of_the_symbol(tmp_path):
    """--symbols on an OUCH replay keeps that symbol's records (the whole-capture path found the symbol
    but wrote no record: the ids were only learnt from instrument-definition records, which OUCH has not)."""
    want, st = _old(PCAPS / "ouch50_sample.pcap", "ouch50")
    iid = st["symbols"]["AAPL"]
    n_aapl = int((records.view(want, "order_event")["instrument_id"] == iid).sum())
    assert n_aapl > 0
    for mode in ("single", "pipelined"):
        out = tmp_path / f"{mode}.npy"
        s = replay(str(PCAPS / "ouch50_sample.pcap"), ReplayOptions(mode=mode, out=str(out), symbols=["AAPL"]))
        got = np.load(out)
        assert s["output"]["records"] == len(got) == n_aapl, mode
        assert set(records.view(got, "order_event")["instrument_id"].tolist()) == {iid}


@pytest.mark.parametrize("name,protocol", [("fix44_sample.pcap", "fix"), ("ouch42_sample.pcap", "ouch42")])
def test_order_event_tally_over_batches_equals_whole(name, protocol):
    """The replay's per-batch order-event statistics equal order_event_stats over the whole array."""
    from feedhandler.replay import _OrderEventTally, order_event_stats

    recs, _ = _old(PCAPS / name, protocol)
    for size in (1, 7, 64, len(recs)):
        t = _OrderEventTally()
        for i in range(0, len(recs), size):
            t.add(recs[i:i + size])
        assert t.stats() == order_event_stats(recs), size
    assert _OrderEventTally().stats() == order_event_stats(recs[:0])
