"""CME MDP 3.0 late join: a run that starts mid-session (books empty, every instrument's RptSeq already
past 1) rebuilds its books from the snapshot loop, as after a gap.

Decoder level (no network): the second half of a day's incrementals, then the snapshot loop, decoded
with ``late_join``: every instrument seen first with RptSeq > 1 is stale (a gap record, records flagged
maybe-bad) until its SnapshotFullRefresh / SnapshotFullRefreshOrderBook, and the books then equal those
of the whole day. Without ``late_join`` the same packets leave the books wrong (the snapshots of
instruments already seen are ignored). Live: ``run --snapshot-group`` over a veth pair does the same.
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from test_feedcore_live_mdp3 import _books_of, _mbp_state   # the books and MBP state compared there too

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT.parent / "shared" / "data" / "mdp3" / "schema"
GROUPS = ["224.0.31.1:14310", "224.0.32.1:15310"]
SNAPSHOT_GROUP = "224.0.31.43:14320"


@pytest.fixture(scope="module")
def late_captures(tmp_path_factory):
    """(the whole day A/B, the late day: incrementals from 40 % of the day on followed by the snapshot
    loop (the state at the end of the day), the late incrementals alone, the snapshot loop alone)."""
    if not SCHEMA_DIR.exists():
        pytest.skip(f"{SCHEMA_DIR} (shared reference data) is absent")
    from feedhandler.capture.pcapwriter import build_udp_frame, write_pcap
    from feedhandler.protocols.mdp3.synth import INCREMENTAL_A, INCREMENTAL_B, SNAPSHOT, generate, read_pcap

    d = tmp_path_factory.mktemp("mdp3_late_join")
    whole = d / "whole.pcap"
    generate(whole, messages=3000, seed=9, ab=True)
    pk = read_pcap(whole)
    top = max(int.from_bytes(p[:4], "little") for _, port, p in pk if port == INCREMENTAL_A[1])
    start = int(top * 0.4)
    dst = {INCREMENTAL_A[1]: INCREMENTAL_A[0], INCREMENTAL_B[1]: INCREMENTAL_B[0], SNAPSHOT[1]: SNAPSHOT[0]}
    incr, snaps = [], []
    for ts, port, payload in pk:
        frame = (ts, build_udp_frame(payload, dst=dst[port], dport=port))
        if port == SNAPSHOT[1]:
            snaps.append(frame)
        elif int.from_bytes(payload[:4], "little") >= start:
            incr.append(frame)
    assert snaps and len(incr) > 500
    last = incr[-1][0]
    late = incr + [(last + 1 + i, f) for i, (_, f) in enumerate(snaps)]   # the loop after the incrementals
    write_pcap(d / "late.pcap", late)
    write_pcap(d / "incremental.pcap", incr)
    write_pcap(d / "snapshots.pcap", snaps)
    return whole, d / "late.pcap", d / "incremental.pcap", d / "snapshots.pcap"


def _bbo(mbo):
    """Every book's BBO, in instrument order (a late join meets the instruments in another order)."""
    b = mbo.bbo_all()
    return b[np.argsort(b["instrument_id"], kind="stable")]


def _decode(path, late_join: bool):
    from feedhandler.pipeline import Feed
    from feedhandler.protocols.mdp3 import Mdp3Decoder
    from feedhandler.protocols.mdp3.recovery import channel_plan
    from feedhandler.protocols.mdp3.synth import INCREMENTAL_A, INCREMENTAL_B, SNAPSHOT

    plan = channel_plan([INCREMENTAL_A[1], INCREMENTAL_B[1]], [SNAPSHOT[1]])
    dec = Mdp3Decoder(snapshot_channels={plan[SNAPSHOT[1]]}, late_join=late_join)
    feed = Feed(path, "mdp3", channels=plan, decoder=dec)
    return feed.read_all(), dec


def test_late_join_rebuilds_every_book_from_the_snapshot_loop(late_captures):
    from feedhandler.pipeline import Feed

    whole, late, _, _ = late_captures
    ref_mbo, ref_mbp = _books_of(Feed(whole, "mdp3").read_all())

    ticks, dec = _decode(late, late_join=True)
    c = dec.counters()
    assert c["late_joins"] > 0 and c["packet_gaps"] == 0
    assert c["recoveries"] >= c["late_joins"] and c["mbo_recoveries"] > 0
    assert dec.stale_count() == 0
    gaps = ticks[ticks["rtype"] == records.RTYPE["gap"]].view(records.DTYPES["gap"])
    assert int((gaps["first_missing"] == 1).sum()) >= c["late_joins"]    # RptSeq 1..n-1 were missed
    mbo_rt = ticks["rtype"] == records.RTYPE["mbo"]
    assert (ticks[mbo_rt].view(records.DTYPES["mbo"])["flags"] & 0x04).any()   # FH_F_MAYBE_BAD_BOOK (csrc fh/record.h): stale until recovered
    mbo, mbp = _books_of(ticks)
    mbo.check()
    assert np.array_equal(_bbo(mbo), _bbo(ref_mbo))
    assert mbo.live_orders == ref_mbo.live_orders
    assert _mbp_state(mbp) == _mbp_state(ref_mbp)

    # the same packets without late_join: the first RptSeq is taken as the start, snapshots of instruments
    # already seen are ignored, and the books are wrong
    plain, pdec = _decode(late, late_join=False)
    assert pdec.counters()["late_joins"] == 0 and pdec.counters()["snapshots_ignored"] > 0
    mbo2, mbp2 = _books_of(plain)
    assert not np.array_equal(_bbo(mbo2), _bbo(ref_mbo)) or _mbp_state(mbp2) != _mbp_state(ref_mbp)


def test_a_day_from_its_start_is_no_late_join(late_captures):
    whole, _, _, _ = late_captures
    _, dec = _decode(whole, late_join=True)
    assert dec.counters()["late_joins"] == 0 and dec.counters()["rptseq_gaps"] == 0


@pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="needs tcpreplay (Debian package tcpreplay)")
def test_mdp3_live_late_join(late_captures):
    """`run --group A --group B --snapshot-group S` started when 40 % of the day is over: the run joins
    the snapshot group as soon as instruments show up with RptSeq > 1, rebuilds them, leaves, and its
    books equal those of the whole day."""
    from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason
    from feedhandler.live import LiveOptions, format_summary, run
    from feedhandler.pipeline import Feed

    if veth_unavailable_reason() is not None:
        pytest.skip(str(veth_unavailable_reason()))
    whole, _, incremental, snapshots = late_captures
    ref_mbo, ref_mbp = _books_of(Feed(whole, "mdp3").read_all())
    got = []
    with VethPair(tag="fhl") as v:
        def send():
            v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "5000", str(incremental)], check=False)
            v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "200", "--loop", "3", str(snapshots)],
                     check=False)
        sender = threading.Thread(target=send)
        s = run(LiveOptions(iface=v.host_if, capture="afpacket", protocol="mdp3", groups=GROUPS,
                            snapshot_groups=[SNAPSHOT_GROUP], idle_stop=1.5, duration=60, status_interval=0,
                            on_batch=lambda b: got.append(b.copy()), on_ready=sender.start,
                            install_signals=False))
        sender.join()
    ticks = records.concat(got) if got else records.empty(0)
    rec = s["snapshot_recovery"]
    assert rec["late_joins"] > 0 and rec["joins"] >= 1 and rec["leaves"] == rec["joins"], rec
    assert rec["stale_at_end"] == 0 and not rec["joined_at_end"], rec
    assert f"joined late for {rec['late_joins']:,} instruments" in format_summary(s)
    mbo, mbp = _books_of(ticks)
    mbo.check()
    assert np.array_equal(_bbo(mbo), _bbo(ref_mbo))
    assert mbo.live_orders == ref_mbo.live_orders
    assert _mbp_state(mbp) == _mbp_state(ref_mbp)
