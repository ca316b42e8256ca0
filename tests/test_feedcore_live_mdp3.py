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
