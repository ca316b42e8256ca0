"""FIX and OUCH decoded as the packets arrive (``framing.tcp.TcpSessionFramer`` incremental mode,
``fix_stream.FixLiveDecoder``, ``ouch_events.OuchLiveDecoder``) and ``feedhandler run --file`` for them:
records equal ``replay``'s on the shipped samples, synthetic sessions split into tiny segments, and the
real OUCH 5.0 captures in ../shared/data; records come out before the end of the input; the live rules
(reference data after use, version held until decided) and bad input counted as replay counts it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.framing.tcp import Reassembler, TcpConversation
from feedhandler.protocols import fix_stream, ouch_events

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
SHARED_OUCH = ROOT.parent / "shared" / "data" / "ouch50"


def _replay(path, protocol):
    if protocol == "fix":
        return fix_stream.replay_stream(path)
    return ouch_events.replay_stream(path, protocol)


def _run_file(path, protocol):
    """``feedhandler run --file path --protocol protocol``'s records (as its consumer saw them) and summary."""
    from feedhandler.live import LiveOptions, run
    got = []
    s = run(LiveOptions(iface=None, file=str(path), protocol=protocol, status_interval=0, install_signals=False,
                        on_batch=lambda b: got.append(b.copy())))
    return (records.concat(got) if got else records.empty(0)), s


def _raw(recs):
    return np.frombuffer(np.ascontiguousarray(recs).tobytes(), np.uint8).reshape(-1, 64)


def _unenriched(recs):
    """Records as the decoder made them: the book consumer enriches some in place (MBO flags), so the
    replay reference goes through a BookSet too."""
    from feedhandler.books import BookSet
    r = np.ascontiguousarray(recs).copy()
    BookSet().apply(r)
    return r


def _assert_same(a, b):
    assert len(a) == len(b), (len(a), len(b))
    A, B = _raw(a), _raw(b)
    bad = np.nonzero((A != B).any(axis=1))[0]
    assert bad.size == 0, f"{bad.size} records differ, first at {bad[:5]}"


def _frames(path):
    from feedhandler.capture.fallback import iter_frames
    return list(iter_frames(path))


def _live_decode(frames, dec, every=1, trim=None, **kw):
    """Drive an incremental decoder by hand: feed ``every`` frames, take the records ready (``trim``:
    the decoder's trim_bytes, 1 = the streams drop what is decoded after every call)."""
    if trim is not None:
        dec.trim_bytes = trim
    r = Reassembler(**kw).track()
    out, ready_at = [], []
    for i, (ts, lt, fr) in enumerate(frames):
        r.feed(ts, fr, lt)
        if (i + 1) % every == 0:
            got = dec.feed_marks(r, r.take_marks())
            out.append(got)
            ready_at += [i] * len(got)
    got, st = dec.finish(r)
    out.append(got)
    ready_at += [len(frames)] * len(got)
    out = [o for o in out if len(o)]
    return (records.concat(out) if out else records.empty(0)), st, ready_at


# ---- run --file equals replay ----------------------------------------------------------------------
@pytest.mark.parametrize("name,protocol", [("fix44_sample.pcap", "fix"), ("ouch42_sample.pcap", "ouch"),
                                           ("ouch50_sample.pcap", "ouch"), ("ouch50_sample.pcap", "ouch50")])
def test_run_file_records_equal_replay(name, protocol):
    ref, rst = _replay(PCAPS / name, protocol)
    got, s = _run_file(PCAPS / name, protocol)
    _assert_same(got, _unenriched(ref))
    t = s["tcp_session"]
    assert s["protocol"] == rst["protocol"] and s["records"] == len(ref)     # "ouch": the version told
    assert s["messages"] == (rst["fix"]["messages"] if protocol == "fix" else rst["ouch"]["messages"])
    if protocol == "fix":
        assert {k: v for k, v in t["fix"].items() if k != "ref_after_use"} == \
            {k: int(v) for k, v in rst["fix"].items() if k != "by_msg_type"}
        assert t["messages_by_type"] == {k: int(v) for k, v in rst["fix"]["by_msg_type"].items()}
    else:
        assert t["soupbintcp"] == {k: int(v) for k, v in rst["soupbintcp"].items()}
        assert t["sessions"] == rst["sessions"] and t["logins"] == [list(x) for x in rst["logins"]]


def test_run_cli_auto_detects_fix_and_prints_replays_sections():
    out = subprocess.run([sys.executable, "-m", "feedhandler", "run", "--file", str(PCAPS / "fix44_sample.pcap"),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    rep = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(PCAPS / "fix44_sample.pcap"),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    r = json.loads(rep.stdout)
    assert s["protocol"] == "fix"
    t = s["tcp_session"]
    for k in ("connections", "order_events", "tcp_holes", "messages_by_type", "malformed_by_reason", "truncated",
              "mbp_books"):
        assert t[k] == r[k], k
    txt = subprocess.run([sys.executable, "-m", "feedhandler", "run", "--file", str(PCAPS / "fix44_sample.pcap")],
                         capture_output=True, text=True, timeout=120)
    assert txt.returncode == 0 and "order events 218" in txt.stdout and "by type: 8 ExecutionReport" in txt.stdout


@pytest.mark.skipif(not SHARED_OUCH.is_dir(), reason="../shared/data/ouch50 (real OUCH 5.0 captures) is absent")
@pytest.mark.parametrize("name", sorted(p.name for p in SHARED_OUCH.glob("*.pcap")) if SHARED_OUCH.is_dir() else [])
def test_run_file_equals_replay_on_real_ouch50_captures(name):
    ref, rst = _replay(SHARED_OUCH / name, "ouch")
    got, s = _run_file(SHARED_OUCH / name, "ouch")
    _assert_same(got, _unenriched(ref))
    assert s["tcp_session"]["soupbintcp"] == {k: int(v) for k, v in rst["soupbintcp"].items()}
    assert s["tcp_session"]["ouch"]["rejects"] == rst["ouch"]["rejects"]


# ---- incremental decoding ------------------------------------------------------------------------
@pytest.mark.parametrize("mss,every,trim", [(1460, 1, None), (61, 1, None), (7, 5, None), (61, 1, 1),
                                           (7, 3, 200)])
def test_fix_live_equals_replay_with_messages_split_across_segments(tmp_path, mss, every, trim):
    """Messages split across many segments wait for their last byte; with ``trim`` the streams drop
    the decoded bytes as they go (a long live session's memory) and the records do not change."""
    p = tmp_path / "fix.pcap"
    fix_stream.synth(p, 800, seed=3, mss=mss)
    ref, rst = fix_stream.replay_stream(p)
    got, st, _ = _live_decode(_frames(p), fix_stream.FixLiveDecoder(), every, trim)
    if trim:
        from feedhandler.framing.tcp import reassemble_file
        total = sum(len(x.data) for x in reassemble_file(p)[0])
        assert total - 2 * (trim + 1000) <= st["live"]["bytes_discarded"] <= total
        assert st["tcp"] == rst["tcp"]
    _assert_same(got, ref)
    assert {k: v for k, v in st["fix"].items() if k != "ref_after_use"} == rst["fix"]


def test_records_come_out_as_the_messages_complete(tmp_path):
    """The first order's record is ready right after the packet carrying the end of the NewOrderSingle,
    long before the end of the input (the whole-capture mode gives nothing before finish)."""
    p = tmp_path / "fix.pcap"
    fix_stream.synth(p, 400, seed=5)
    frames = _frames(p)
    got, st, ready_at = _live_decode(frames, fix_stream.FixLiveDecoder(), 1)
    assert len(got) == st["records"] > 0
    assert ready_at[0] < 10 and sum(1 for i in ready_at if i < len(frames) // 2) > len(got) // 3
    # every record was ready by the packet after the one carrying its message's last byte
    ts = fix_stream._ts_recv(got)
    frame_ts = np.array([f[0] for f in frames], dtype=np.uint64)
    for i in range(0, len(got), 37):
        if ts[i]:
            assert frame_ts[ready_at[i]] == ts[i] or ready_at[i] == len(frames)


def test_fix_reference_data_after_use_keeps_first_appearance_id(tmp_path):
    """Live rule: a symbol traded before its SecurityDefinition keeps the id of its first appearance,
    the definition record follows the reference message and carries that id; counted ref_after_use."""
    msgs = [(1_700_000_000_000_000_000 + i * 1000, side, m) for i, (side, m) in enumerate([
        ("c", fix_stream._fix_msg(b"FIX.4.4", b"A", 1, b"C", b"E", 1_700_000_000_000_000_000, [(98, 0), (108, 30)])),
        ("s", fix_stream._fix_msg(b"FIX.4.4", b"A", 1, b"E", b"C", 1_700_000_000_000_001_000, [(98, 0), (108, 30)])),
        ("c", fix_stream._fix_msg(b"FIX.4.4", b"D", 2, b"C", b"E", 1_700_000_000_000_002_000,
                                  [(11, b"O1"), (55, b"ZZZ"), (54, b"1"), (38, 100), (40, b"2"), (44, b"10.5")])),
        ("s", fix_stream._fix_msg(b"FIX.4.4", b"d", 2, b"E", b"C", 1_700_000_000_000_003_000,
                                  [(320, b"R"), (322, b"S"), (323, 1), (55, b"ZZZ"), (48, b"777"), (22, b"8")])),
        ("c", fix_stream._fix_msg(b"FIX.4.4", b"D", 3, b"C", b"E", 1_700_000_000_000_004_000,
                                  [(11, b"O2"), (55, b"ZZZ"), (54, b"2"), (38, 100), (40, b"2"), (44, b"10.6")])),
    ])]
    conv = TcpConversation()
    conv.handshake(msgs[0][0] - 10_000)
    for ts, side, m in msgs:
        conv.send(ts, side, m)
    from feedhandler.capture.pcapwriter import write_pcap
    p = tmp_path / "ref.pcap"
    write_pcap(p, conv.frames, nanosecond=True)
    ref, rst = fix_stream.replay_stream(p)
    got, st, _ = _live_decode(_frames(p), fix_stream.FixLiveDecoder())
    rt = got["rtype"]
    assert list(rt) == [records.RTYPE["order_event"], records.RTYPE["instrument_def"], records.RTYPE["order_event"]]
    assert set(got["instrument_id"].tolist()) == {1}
    assert st["fix"]["ref_after_use"] == 1 and st["symbols"] == {"ZZZ": 1}
    # replay: the definition names every record of the connection (SecurityID 777), first
    assert list(ref["rtype"])[0] == records.RTYPE["instrument_def"] and set(ref["instrument_id"].tolist()) == {777}


def test_fix_live_reference_data_ids_differ_from_replay_only_by_naming(tmp_path):
    """With a SecurityList then a SecurityDefinition, replay gives the non-numeric SecurityID the id after
    every numeric id of the connection; live gives it the next free id when its message arrives. The
    records are otherwise byte-identical: compare with ids mapped back to symbols."""
    p = tmp_path / "ref.pcap"
    fix_stream.synth(p, 1500, seed=2, reference_data=True, begin=b"FIX.4.2")
    ref, rst = fix_stream.replay_stream(p)
    got, st, _ = _live_decode(_frames(p), fix_stream.FixLiveDecoder(), 3)
    assert rst["symbols"]["GOOG"] != st["symbols"]["GOOG"]
    assert {k: v for k, v in rst["symbols"].items() if k != "GOOG"} == \
        {k: v for k, v in st["symbols"].items() if k != "GOOG"}
    to_live = {rst["symbols"][s]: st["symbols"][s] for s in rst["symbols"]}
    ref = ref.copy()
    ref["instrument_id"] = [to_live.get(int(i), int(i)) for i in ref["instrument_id"]]
    _assert_same(got, ref)


def _damaged_fix(tmp_path):
    msgs = fix_stream.synth_messages(300, seed=9)
    conv = TcpConversation(mss=200)
    conv.handshake(msgs[0][0] - 10_000)
    for j, (ts, side, m) in enumerate(msgs):
        if j == 50:
            m = m[:-4] + b"999\x01"                         # bad checksum
        if j == 80:
            m = m.replace(b"\x019=", b"\x019=9", 1)          # bad BodyLength
        if j == 120:
            conv.send(ts, side, b"garbage 8=FIX.4.4\x01junk\x01")   # garbled
        conv.send(ts, side, m)
    last_side = msgs[-1][1]
    conv.send(msgs[-1][0] + 10, last_side, msgs[-1][2][:30])      # truncated at the end
    frames = list(conv.frames)
    # a hole: drop one data segment of the server side in the middle
    victim = next(i for i in range(len(frames) // 2, len(frames)) if len(frames[i][1]) > 100)
    del frames[victim]
    from feedhandler.capture.pcapwriter import write_pcap
    p = tmp_path / "damaged.pcap"
    write_pcap(p, frames, nanosecond=True)
    return p


def test_fix_bad_input_counted_as_replay(tmp_path):
    """Bad checksum, bad BodyLength, garbled bytes, a TCP hole and a truncated last message: counted as
    replay counts them. The bytes after a hole wait in the reassembler until the hole is declared
    (``max_ooo_segments`` later, or at FIN/RST/the end): live, their records come out then; replay sorts
    them by the capture time of the segment that delivered them, which is the same order when the hole
    is declared while the capture goes on (a small bound here), not when it is declared at the end."""
    p = _damaged_fix(tmp_path)
    for bound in (4, 1024):
        ref, rst = fix_stream.replay_stream(p, max_ooo_segments=bound)
        f = rst["fix"]
        assert f["bad_checksum"] >= 1 and f["bad_body_length"] >= 1 and f["holes"] == 1 and f["truncated_tail"] >= 1
        got, st, _ = _live_decode(_frames(p), fix_stream.FixLiveDecoder(), 4, 1, max_ooo_segments=bound)
        for k in ("bad_checksum", "bad_body_length", "garbled", "holes", "truncated_tail", "messages", "seq_gaps",
                  "bad_field"):
            assert st["fix"][k] == f[k], (bound, k)
        assert st["tcp"]["holes"] == rst["tcp"]["holes"] == 1
        if bound == 4:
            _assert_same(got, ref)
        else:
            assert len(got) == len(ref)
    g, s = _run_file(p, "fix")
    t = s["tcp_session"]
    assert t["malformed_by_reason"].get("bad_checksum") == f["bad_checksum"]
    assert t["truncated"] == f["truncated_tail"] and t["tcp_holes"] == 1


def test_ouch_version_held_until_decided(tmp_path):
    p = tmp_path / "o.pcap"
    ouch_events.synth(p, 400, seed=4, version="5.0")
    ref, rst = ouch_events.replay_stream(p, "ouch")
    frames = _frames(p)
    dec = ouch_events.OuchLiveDecoder("ouch")
    got, st, ready_at = _live_decode(frames, dec, 1, 64)
    assert st["protocol"] == rst["protocol"] == "ouch50"
    _assert_same(got, ref)
    # nothing before the 64th data message, then the held ones at once, then as they come
    assert ready_at[0] == ready_at[ouch_events.DETECT_SAMPLE - 1] < len(frames) // 2
    # a fixed version holds nothing
    got2, st2, ready2 = _live_decode(frames, ouch_events.OuchLiveDecoder("ouch50"), 1)
    _assert_same(got2, ref)
    assert ready2[0] < ready_at[0]


def test_ouch_bad_input_counted_as_replay(tmp_path):
    p = tmp_path / "o.pcap"
    ouch_events.synth(p, 300, seed=6, version="4.2", mss=90)
    frames = _frames(p)
    mid = next(i for i in range(len(frames) // 2, len(frames)) if len(frames[i][2]) > 100)
    del frames[mid]
    from feedhandler.capture.pcapwriter import write_pcap
    q = tmp_path / "holed.pcap"
    write_pcap(q, [(ts, fr) for ts, _lt, fr in frames], nanosecond=True)
    ref, rst = ouch_events.replay_stream(q, "ouch42", max_ooo_segments=4)
    got, st, _ = _live_decode(_frames(q), ouch_events.OuchLiveDecoder("ouch42"), 2, 1, max_ooo_segments=4)
    assert st["live"]["bytes_discarded"] > 0
    assert rst["soupbintcp"]["holes"] == 1
    assert st["soupbintcp"] == rst["soupbintcp"]
    _assert_same(got, ref)


@pytest.mark.parametrize("protocol", ["fix", "ouch42"])
def test_feed_core_hands_records_out_of_run_before_the_end(tmp_path, protocol):
    """Through the feed core (LiveFeed over a capture file, what ``run --file`` drives): the first records
    come out of the framer's ``run`` op while the input is still being read (``decoded`` False: the
    whole-capture mode has none before ``finish``), and all of them equal replay's."""
    from feedhandler.capture.live._live import FileSource, LiveFeed
    p = tmp_path / "s.pcap"
    if protocol == "fix":
        fix_stream.synth(p, 6000, seed=1)
        ref, _ = fix_stream.replay_stream(p)
    else:
        ouch_events.synth(p, 6000, seed=1, version="4.2")
        ref, _ = ouch_events.replay_stream(p, protocol)
    src = FileSource(str(p))
    try:
        f = LiveFeed(src, protocol, midnight_ns=0)
        b = records.empty(256)
        out = []
        n = f.read(b)
        assert n == 256 and not f.framer.decoded and f.framer.result is None
        assert not src.eof             # the capture is not read through yet
        out.append(b[:n].copy())
        while n:
            n = f.read(b)
            out.append(b[:n].copy())
        f.stop()                        # the end of a live input: holes declared, the rest decoded
        n = 1
        while n:
            n = f.read(b)
            out.append(b[:n].copy())
        assert f.framer.decoded and f.stats()["records"] == len(ref)
        _assert_same(records.concat([o for o in out if len(o)]), ref)
    finally:
        del f
        src.close()


def test_run_refuses_afxdp_for_tcp_sessions_and_retransmit():
    """AF_XDP's program redirects UDP only: a TCP session asked on it is refused with the reason (auto
    picks AF_PACKET); --retransmit is MoldUDP64's."""
    from feedhandler.live import LiveOptions, run
    with pytest.raises(ValueError, match="redirects UDP only"):
        run(LiveOptions(iface="lo", capture="afxdp", protocol="fix", install_signals=False))
    with pytest.raises(ValueError, match="--retransmit"):
        run(LiveOptions(iface="lo", protocol="ouch", retransmit="127.0.0.1:1", install_signals=False))


def test_run_file_dbn_output_equals_replays(tmp_path):
    """``run --file X --out Y.dbn`` writes the bytes ``replay X --out Y.dbn`` writes (records, the MBP-1
    companion file, and the metadata: dataset FH.FIX, the session's symbols)."""
    cap = PCAPS / "fix44_sample.pcap"
    for cmd, out in ((["run", "--file", str(cap)], tmp_path / "run.dbn"), (["replay", str(cap)], tmp_path / "rep.dbn")):
        r = subprocess.run([sys.executable, "-m", "feedhandler", *cmd, "--out", str(out)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "run.dbn").read_bytes() == (tmp_path / "rep.dbn").read_bytes()
    assert (tmp_path / "run.mbp-1.dbn").read_bytes() == (tmp_path / "rep.mbp-1.dbn").read_bytes()


def test_run_strict_fails_on_damaged_fix_session(tmp_path):
    """``run --strict`` exits 3 on a FIX session with bad checksums, a TCP hole and a truncated message
    (as replay --strict does), 0 on the clean sample."""
    p = _damaged_fix(tmp_path)
    for cap, code in ((p, 3), (PCAPS / "fix44_sample.pcap", 0)):
        r = subprocess.run([sys.executable, "-m", "feedhandler", "run", "--file", str(cap), "--strict"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == code, (cap, r.stderr)
    r = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(p), "--strict"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 3


def _two_sessions(path, protocol):
    """Two concurrent sessions (different client ports, interleaved by capture time) in one pcap."""
    from feedhandler.capture.pcapwriter import write_pcap
    frames = []
    t0 = 1_700_000_000_000_000_000
    for k in range(2):
        conv = TcpConversation(client=(f"10.4.0.{2 + k}", 53000 + k), server=("10.4.0.1", 9100), mss=300,
                               isn_c=1000 + 77 * k, isn_s=0xFFFFFF00 - 999 * k)
        if protocol == "fix":
            msgs = fix_stream.synth_messages(500, seed=11 + k, t0=t0 + 333 * k + 20_000)
            conv.handshake(t0 + 333 * k)
            for ts, side, m in msgs:
                conv.send(ts, side, m)
            conv.close(msgs[-1][0] + 1000)
        else:
            ts = t0 + 333 * k
            conv.handshake(ts)
            ts += 10_000
            for dt, side, p in ouch_events.synth_messages(500, seed=11 + k, version="5.0"):
                ts += dt
                conv.send(ts, side, p.replace(b"SESSION01", b"SESSION0%d" % (k + 1)))    # a session each
            conv.close(ts + 1000)
        frames += conv.frames
    frames.sort(key=lambda f: f[0])
    assert len({f[0] for f in frames if len(f[1]) > 66}) == sum(1 for f in frames if len(f[1]) > 66)
    write_pcap(path, frames, nanosecond=True)


def _renamed(ref, ref_symbols, live_symbols):
    """``ref`` with its instrument ids replaced by the live decoder's ids of the same symbols."""
    to_live = {ref_symbols[s]: live_symbols[s] for s in ref_symbols}
    ref = ref.copy()
    ref["instrument_id"] = [to_live.get(int(i), int(i)) for i in ref["instrument_id"]]
    return ref


@pytest.mark.parametrize("protocol", ["fix", "ouch"])
def test_two_interleaved_connections_equal_replay(tmp_path, protocol):
    """Connections interleave in packet order live; replay merges them by capture time: the same records
    on a capture whose data segments have distinct time stamps (checked), whatever the batching. FIX
    symbol ids: replay assigns them connection by connection, live in order of first appearance across
    the capture (the same symbols, other numbers: compared through the symbol maps)."""
    p = tmp_path / "two.pcap"
    _two_sessions(p, protocol)
    ref, rst = _replay(p, protocol)
    assert rst["tcp"]["connections"] == 2 and len(ref) > 500
    for every in (1, 16):
        dec = fix_stream.FixLiveDecoder() if protocol == "fix" else ouch_events.OuchLiveDecoder(protocol)
        got, st, _ = _live_decode(_frames(p), dec, every, 4096)
        if protocol == "fix":
            assert set(st["symbols"]) == set(rst["symbols"]) and st["symbols"] != rst["symbols"]
            _assert_same(got, _renamed(ref, rst["symbols"], st["symbols"]))
        else:
            assert st["symbols"] == rst["symbols"]
            _assert_same(got, ref)
            assert st["logins"] == rst["logins"] and st["sessions"] == rst["sessions"]
    got, s = _run_file(p, protocol)
    if protocol == "fix":
        ref = _renamed(ref, rst["symbols"], st["symbols"])
    _assert_same(got, _unenriched(ref))
