"""CME MDP 3.0 live: ``feedhandler run --iface IF --protocol mdp3 --group A --group B`` on a real veth
pair. The sample capture (incremental A and B lines, and a snapshot channel) is played from a network
namespace with tcpreplay; the live records (capture clock fields aside) and books equal a replay of
the same file: A/B arbitration (first copy wins) on the live path as on the file path.

Needs root, iproute2 and tcpreplay (skips with the reason otherwise). The namespace and veth are made
with a unique name and deleted in a finally block (VethPair).
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
MDP3 = ROOT / "pcaps" / "mdp3_sample.pcap"
GROUPS = ["224.0.31.1:14310", "224.0.32.1:15310", "224.0.31.43:14320"]    # A, B, snapshots
SCHEMA_DIR = ROOT.parent / "shared" / "data" / "mdp3" / "schema"

pytestmark = [
    pytest.mark.skipif(veth_unavailable_reason() is not None, reason=str(veth_unavailable_reason())),
    pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="needs tcpreplay (Debian package tcpreplay)"),
]


def _without_capture_time(ticks: np.ndarray) -> np.ndarray:
    """Raw record bytes with the capture-clock fields (ts_recv, and ts_in_delta = ts_recv - sending
    time) zeroed: what live and replay must agree on byte for byte."""
    raw = np.ascontiguousarray(ticks).view(np.uint8).reshape(-1, 64).copy()
    rt = raw[:, 1]
    for name, dt in records.DTYPES.items():
        if name not in records.RTYPE:
            continue
        for f in ("ts_recv", "ts_in_delta"):
            if f in dt.fields:
                off, size = dt.fields[f][1], dt.fields[f][0].itemsize
                raw[rt == records.RTYPE[name], off:off + size] = 0
    return raw


@pytest.mark.parametrize("capture", ["afpacket", "afxdp"])
def test_mdp3_ab_live_equals_replay(capture):
    if capture == "afxdp":
        from feedhandler.capture.live import afxdp
        why = afxdp.unavailable_reason(None)
        if why is None:
            from feedhandler.capture.live._afxdp_source import bpf_object_path
            if bpf_object_path() is None:
                why = "the XDP filter program is not compiled (needs clang at build time)"
        if why:
            pytest.skip(why)
    from feedhandler.books import BookSet
    from feedhandler.books import MbpBookSet
    from feedhandler.live import LiveOptions, run
    from feedhandler.pipeline import Feed

    feed = Feed(MDP3, "mdp3")
    ref = feed.read_all()
    ref_books, ref_mbp = BookSet(), MbpBookSet()
    ref_books.apply(ref)
    ref_mbp.apply(ref)
    n_messages = feed.stats()["messages"]
    assert feed.stats()["duplicates"] > 0       # the B line carries copies that arbitration drops

    got = []
    books = BookSet()
    with VethPair(tag="fhm") as v:
        sent = {}

        def send():
            r = v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "20000", str(MDP3)], check=False)
            sent["rc"], sent["err"] = r.returncode, r.stderr

        sender = threading.Thread(target=send)
        opts = LiveOptions(iface=v.host_if, capture=capture, protocol="mdp3", groups=GROUPS, count=n_messages,
                           duration=30, status_interval=0, on_batch=lambda b: got.append(b.copy()),
                           on_ready=sender.start, books=books, install_signals=False)
        try:
            s = run(opts)
        finally:
            if sender.ident:
                sender.join()
        assert sent.get("rc") == 0, sent
    ticks = records.concat(got) if got else records.empty(0)
    assert s["protocol"] == "mdp3" and s["backend"] == capture
    assert s["messages"] == n_messages and s["gaps"] == 0 and s["drops"]["kernel"] == 0
    assert s["channels"] == {"14310": 0, "15310": 0, "14320": 1}
    assert ticks.shape == ref.shape
    a, b = _without_capture_time(ticks), _without_capture_time(ref)
    bad = np.nonzero((a != b).any(axis=1))[0]
    assert bad.size == 0, f"{bad.size} records differ, first at {bad[:5]}"
    books.check()
    assert np.array_equal(books.bbo_all(), ref_books.bbo_all())
    assert s["live_orders"] == ref_books.live_orders and s["mbp_books"] == len(ref_mbp.instruments())
    # the decoder's counters as replay reports them (the run stops at the last message: trailing copies
    # of the B line may not have arrived, so packet and duplicate counts are left out)
    rep = feed.decoder.counters()
    same = ("messages", "records", "book", "order_book", "trade_summary", "definitions", "snapshots",
            "snapshot_order_books", "packet_gaps", "rptseq_gaps", "recoveries", "mbo_recoveries")
    assert {k: s["mdp3"][k] for k in same} == {k: rep[k] for k in same}


@pytest.fixture(scope="module")
def lossy_capture(tmp_path_factory):
    from test_feedcore import make_lossy_ab
    return make_lossy_ab(tmp_path_factory.mktemp("feedcore_live"))


@pytest.mark.parametrize("pps", ["2000", "20000"])
def test_mdp3_lossy_b_line_live_equals_replay(lossy_capture, pps):
    """Line B drops and reorders packets and A loses a few: at 2,000 packets/s every packet arrives
    alone (the decoder's look-ahead within a batch sees nothing), so only the framer's A/B hold makes
    the live records equal the replay's."""
    from feedhandler.books import BookSet
    from feedhandler.live import LiveOptions, run
    from feedhandler.pipeline import Feed

    feed = Feed(lossy_capture, "mdp3")
    ref = feed.read_all()
    BookSet().apply(ref)        # enriches in place, as the live book consumer does
    st = feed.stats()
    assert st["framing"]["hold_filled"] > 0 and st["gaps"] > 0
    got = []
    with VethPair(tag="fhn") as v:
        sender = threading.Thread(target=lambda: v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", pps,
                                                           str(lossy_capture)], check=False))
        s = run(LiveOptions(iface=v.host_if, capture="afpacket", protocol="mdp3", groups=GROUPS, idle_stop=1.0,
                            duration=30, status_interval=0, on_batch=lambda b: got.append(b.copy()),
                            on_ready=sender.start, books=BookSet(), install_signals=False))
        sender.join()
    ticks = records.concat(got) if got else records.empty(0)
    assert s["messages"] == st["messages"] and s["gaps"] == st["gaps"] and s["drops"]["kernel"] == 0
    assert ticks.shape == ref.shape
    a, b = _without_capture_time(ticks), _without_capture_time(ref)
    bad = np.nonzero((a != b).any(axis=1))[0]
    assert bad.size == 0, f"{bad.size} records differ, first at {bad[:5]}"


@pytest.mark.parametrize("capture", ["afpacket", "dpdk"])
def test_run_cli_mdp3_ab_groups(tmp_path, capture):
    """``feedhandler run --iface IF --protocol mdp3 --group A --group B --group S --out x.npy`` in its own
    process (the DPDK EAL runs once per process): the records written equal the replay's."""
    import json
    import subprocess
    import sys

    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed

    if capture == "dpdk":
        from feedhandler.capture.live import dpdk
        why = dpdk.unavailable_reason(None)
        if why:
            pytest.skip(why)
    feed = Feed(MDP3, "mdp3")
    ref = feed.read_all()
    BookSet().apply(ref)
    out_npy = tmp_path / "mdp3.npy"
    groups = [a for g in GROUPS for a in ("--group", g)]
    with VethPair(tag="fhq") as v:
        p = subprocess.Popen([sys.executable, "-m", "feedhandler.live", "--iface", v.host_if, "--capture", capture,
                              "--protocol", "mdp3", *groups, "--count", str(feed.stats()["messages"]),
                              "--duration", "30", "--status-interval", "0.2", "--json", "--out", str(out_npy)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = p.stderr.readline()          # the first status line: capture is running
            assert capture in first, first + p.stderr.read()
            v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "20000", str(MDP3)])
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert p.returncode == 0, err
    s = json.loads(out)
    assert s["protocol"] == "mdp3" and s["backend"] == capture and s["sessions"] == ["14310/15310", "14320"]
    ticks = np.load(out_npy)
    assert ticks.shape[0] == ref.shape[0]
    a, b = _without_capture_time(ticks.view(records.TICK_DTYPE)), _without_capture_time(ref)
    assert (a == b).all()


# ---- market recovery: join the snapshot group on a gap, rebuild, leave -------------------------------
SNAPSHOT_GROUP = "224.0.31.43:14320"


@pytest.fixture(scope="module")
def recovery_captures(tmp_path_factory):
    """(unbroken A/B capture, lossy incrementals only, the snapshot loop only). Lossy: line B drops a
    fifth of its packets and swaps neighbours now and then; both lines lose the same three packets
    (a quarter and half way through: real gaps, each followed by far more packets than the A/B hold
    window, so live sees them as soon as a replay does). The snapshot packets (the state at the end of
    the day) go to a file of their own, played by a second sender as a snapshot loop."""
    if not SCHEMA_DIR.exists():
        pytest.skip(f"{SCHEMA_DIR} (shared reference data) is absent")
    from feedhandler.capture.pcapwriter import build_udp_frame, write_pcap
    from feedhandler.protocols.mdp3.synth import INCREMENTAL_A, INCREMENTAL_B, SNAPSHOT, generate, read_pcap

    d = tmp_path_factory.mktemp("feedcore_recovery")
    unbroken = d / "ab.pcap"
    generate(unbroken, messages=3000, seed=5, ab=True)
    pk = read_pcap(unbroken)
    seqs = [int.from_bytes(p[:4], "little") for _, port, p in pk if port == INCREMENTAL_A[1]]
    top = max(seqs)
    lost = {top // 4, top // 4 + 1, top // 2}
    rng = np.random.default_rng(11)
    dst = {INCREMENTAL_A[1]: INCREMENTAL_A[0], INCREMENTAL_B[1]: INCREMENTAL_B[0], SNAPSHOT[1]: SNAPSHOT[0]}
    incr, b_line, snaps = [], [], []
    for ts, port, payload in pk:
        if port == SNAPSHOT[1]:
            snaps.append((ts, build_udp_frame(payload, dst=SNAPSHOT[0], dport=port)))
        elif int.from_bytes(payload[:4], "little") in lost:
            continue
        elif port == INCREMENTAL_B[1]:
            if rng.random() > 0.2:
                b_line.append(len(incr))
            incr.append((ts, build_udp_frame(payload, dst=dst[port], dport=port)))
        else:
            incr.append((ts, build_udp_frame(payload, dst=dst[port], dport=port)))
    keep_b = set(b_line)
    out, bs = [], [incr[i] for i in b_line]
    for i in range(0, len(bs) - 3, 9):                       # B swaps neighbours now and then
        bs[i], bs[i + 1] = bs[i + 1], bs[i]
    k = 0
    for i, (ts, frame) in enumerate(incr):
        port = int.from_bytes(frame[36:38], "big")
        if port == INCREMENTAL_B[1]:
            if i in keep_b:
                out.append((ts, bs[k][1]))
                k += 1
            continue
        out.append((ts, frame))
    assert snaps and len(out) > 500 and top // 2 + 200 < top
    write_pcap(d / "incremental.pcap", out)
    write_pcap(d / "snapshots.pcap", snaps)
    return unbroken, d / "incremental.pcap", d / "snapshots.pcap"


def _books_of(records_):
    from feedhandler.books import BookSet, MbpBookSet

    mbo, mbp = BookSet(), MbpBookSet()
    mbo.apply(records_)
    mbp.apply(records_)
    return mbo, mbp


def _mbp_state(mbp):
    """Every MBP book's levels (both sides, outright and implied) and staleness, comparable with ==."""
    return {iid: ([mbp.levels(iid, side, implied).tolist() for side in "BA" for implied in (False, True)],
                  mbp.is_stale(iid)) for iid in mbp.instruments()}


def test_mdp3_live_snapshot_recovery(recovery_captures):
    """`run --group A --group B --snapshot-group S` over a veth: line B drops and reorders, both lines
    lose three packets (gaps: every MBO book and some MBP books go stale); the run joins the snapshot
    group on the gap, rebuilds the MBO and MBP books from the snapshot loop a second sender plays, and
    leaves the group once nothing is stale (the loop's later rounds are not taken). The books then equal
    those of an unbroken replay, and the instrument definitions are all there; the same loss replayed
    without the snapshots leaves the books wrong."""
    from feedhandler.live import LiveOptions, run
    from feedhandler.pipeline import Feed

    unbroken, incremental, snapshots = recovery_captures
    ref = Feed(unbroken, "mdp3").read_all()
    ref_mbo, ref_mbp = _books_of(ref)
    n_defs = int((ref["rtype"] == records.RTYPE["instrument_def"]).sum())
    assert n_defs > 0

    got = []
    with VethPair(tag="fhr") as v:
        def send():
            v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "5000", str(incremental)], check=False)
            # the snapshot loop: four rounds (the first recovers; later ones find the group left)
            v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "200", "--loop", "4", str(snapshots)],
                     check=False)
        sender = threading.Thread(target=send)
        s = run(LiveOptions(iface=v.host_if, capture="afpacket", protocol="mdp3", groups=GROUPS[:2],
                            snapshot_groups=[SNAPSHOT_GROUP], idle_stop=1.5, duration=60, status_interval=0,
                            on_batch=lambda b: got.append(b.copy()), on_ready=sender.start,
                            install_signals=False))
        sender.join()
    ticks = records.concat(got) if got else records.empty(0)

    assert s["gaps"] > 0 and s["drops"]["kernel"] == 0
    assert s["channels"] == {"14310": 0, "15310": 0, "14320": 1}
    rec = s["snapshot_recovery"]
    assert rec["joins"] >= 1 and rec["leaves"] == rec["joins"] and not rec["joined_at_end"], rec
    assert rec["stale_at_end"] == 0 and rec["recoveries"] > 0 and rec["mbo_recoveries"] > 0, rec
    assert rec["snapshot_skipped"] > 0, rec        # later rounds of the loop arrived after the leave
    assert rec["events"][0][1] == "join" and rec["events"][-1][1] == "leave"
    from feedhandler.live import format_summary
    text = format_summary(s)
    assert f"snapshot recovery ({SNAPSHOT_GROUP}): joined {rec['joins']}x" in text and "STILL JOINED" not in text
    assert int((ticks["rtype"] == records.RTYPE["instrument_def"]).sum()) == n_defs   # definitions applied
    mbo, mbp = _books_of(ticks)
    mbo.check()
    assert np.array_equal(mbo.bbo_all(), ref_mbo.bbo_all())
    assert mbo.live_orders == ref_mbo.live_orders
    assert _mbp_state(mbp) == _mbp_state(ref_mbp)

    # the same loss without recovery (a replay of the incrementals alone): the books are stale and wrong
    lossy = Feed(incremental, "mdp3").read_all()
    mbo2, mbp2 = _books_of(lossy)
    assert not np.array_equal(mbo2.bbo_all(), ref_mbo.bbo_all()) and _mbp_state(mbp2) != _mbp_state(ref_mbp)


def test_snapshot_group_needs_mdp3_and_a_port():
    from feedhandler.live import LiveOptions, run

    with pytest.raises(ValueError, match="mdp3"):
        run(LiveOptions(iface="lo", protocol="itch50", snapshot_groups=[SNAPSHOT_GROUP]))
    with pytest.raises(ValueError, match="ADDR:PORT"):
        run(LiveOptions(iface="lo", protocol="mdp3", snapshot_groups=["224.0.31.43"]))
