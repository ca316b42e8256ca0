"""core13: the MDP3 market-recovery monitor (protocols/mdp3/recovery.py) without a network: joins when
an instrument goes stale, shuts the framer's gate and leaves once none is, counts what it did; and the
channel plan that tells the decoder its snapshot channels. (The veth test with real packets is
tests/test_feedcore_live_mdp3.py::test_mdp3_live_snapshot_recovery.)"""
from __future__ import annotations

import pytest

from feedhandler.protocols.mdp3.recovery import SnapshotRecovery, channel_plan


class _Dec:
    def __init__(self):
        self.stale = 0

    def stale_count(self):
        return self.stale

    def counters(self):
        return {"recoveries": 2, "mbo_recoveries": 3, "snapshot_resyncs": 1}


class _Framer:
    def __init__(self):
        self.open = False

    def open_snapshots(self, on):
        self.open = bool(on)

    def stats(self):
        return {"snapshot_kept": 5, "snapshot_skipped": 7}


def test_join_on_stale_leave_when_recovered():
    dec, fr, log, now = _Dec(), _Framer(), [], [0.0]
    rec = SnapshotRecovery(["224.0.31.43:14320"], dec, fr, join=lambda g: log.append(("join", list(g))) or "h",
                           leave=lambda h: log.append(("leave", h)), clock=lambda: now[0])
    rec.poll()
    assert not rec.joined and not fr.open and log == []          # nothing stale: stay out
    dec.stale, now[0] = 4, 1.0
    assert rec.poll() == 4 and rec.joined and fr.open
    rec.poll()                                                    # still stale: no second join
    dec.stale, now[0] = 0, 1.5
    rec.poll()
    assert not rec.joined and not fr.open
    assert log == [("join", ["224.0.31.43:14320"]), ("leave", "h")]
    s = rec.summary(joined_at_end=False)
    assert (s["joins"], s["leaves"], s["joined_s"], s["stale_at_end"]) == (1, 1, 0.5, 0)
    assert (s["snapshot_packets"], s["snapshot_skipped"], s["recoveries"], s["mbo_recoveries"]) == (5, 7, 2, 3)
    assert [e[1] for e in s["events"]] == ["join", "leave"]


def test_close_leaves_a_group_still_joined():
    dec, fr, log = _Dec(), _Framer(), []
    rec = SnapshotRecovery(["g"], dec, fr, join=lambda g: "h", leave=lambda h: log.append(h))
    dec.stale = 1
    rec.poll()
    rec.close()
    assert log == ["h"] and not fr.open and rec.leaves == 0 and not rec.joined


def test_a_failed_join_shuts_the_gate_again():
    def boom(g):
        raise OSError("no such device")

    dec, fr = _Dec(), _Framer()
    dec.stale = 1
    rec = SnapshotRecovery(["g"], dec, fr, join=boom, leave=lambda h: None)
    with pytest.raises(OSError):
        rec.poll()
    assert not fr.open and not rec.joined


def test_channel_plan():
    assert channel_plan([14310, 15310], [14320]) == {14310: 0, 15310: 0, 14320: 1}
    assert channel_plan([14310, 15310, 14311], [14320, 15320]) == {14310: 0, 15310: 0, 14311: 1, 14320: 2,
                                                                   15320: 2}
    assert channel_plan([15310], [14310 + 10]) == {15310: 0, 14320: 1}
    with pytest.raises(ValueError, match="incremental and as a snapshot"):
        channel_plan([14310], [14310])


def test_decoder_resynchronises_on_snapshot_channels(tmp_path):
    """A snapshot loop left and joined again, restarted, and losing a packet (MsgSeqNum jumps on its
    channel): told it is a snapshot channel the decoder counts resyncs, declares no gap and stales no
    book; not told, the jump is a gap that stales every MBO book."""
    from pathlib import Path

    from feedhandler import records
    from feedhandler.protocols.mdp3 import Mdp3Decoder
    from feedhandler.protocols.mdp3.synth import INCREMENTAL_A, SNAPSHOT, generate, read_pcap

    schema = Path(__file__).resolve().parents[2] / "shared" / "data" / "mdp3" / "schema"
    if not schema.exists():
        pytest.skip(f"{schema} (shared reference data) is absent")
    p = tmp_path / "s.pcap"
    generate(p, messages=400, seed=3)
    pk = read_pcap(p)
    incr = [pl for _, port, pl in pk if port == INCREMENTAL_A[1]]
    snaps = [pl for _, port, pl in pk if port == SNAPSHOT[1]]
    assert len(snaps) >= 6
    # two packets, then left and joined again three packets on; a full round (starts over at 1); a round
    # that loses its third packet
    loop = snaps[:2] + snaps[5:] + snaps + snaps[:2] + snaps[3:]
    payloads, chans = incr + loop, [0] * len(incr) + [1] * len(loop)
    def one_by_one(dec):        # a packet per call, as a live feed delivers them (no in-batch look-ahead)
        return records.concat([dec.decode_packets([p], channel=ch) for p, ch in zip(payloads, chans)])

    told = Mdp3Decoder(snapshot_channels=[1])
    recs = one_by_one(told)
    c = told.counters()
    assert c["snapshot_resyncs"] == 4 and c["packet_gaps"] == 0 and told.stale_count() == 0
    assert not (recs["rtype"] == records.RTYPE["gap"]).any()
    plain = Mdp3Decoder()
    one_by_one(plain)
    assert plain.counters()["packet_gaps"] >= 1 and plain.counters()["snapshot_resyncs"] == 0
    assert plain.stale_count() > 0                  # a snapshot-channel gap staled the MBO books
