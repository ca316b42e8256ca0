"""Replay entry points of FIX and OUCH (what `feedhandler replay --protocol fix|ouch42|ouch50` calls) and
the sample captures in pcaps/ (made by the project's own synth functions, checked for staleness)."""
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.protocols import fix_stream, ouch_events

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


@pytest.mark.parametrize("name,make", [
    ("fix44_sample.pcap", lambda p: fix_stream.synth(p, 300, 44)),
    ("ouch42_sample.pcap", lambda p: ouch_events.synth(p, 300, 42, "4.2")),
])
def test_samples_are_reproducible(tmp_path, name, make):
    p = tmp_path / name
    make(p)
    assert (PCAPS / name).read_bytes() == p.read_bytes(), f"pcaps/{name} is stale: regenerate it"


def test_fix_sample_replay():
    recs, st = fix_stream.replay_stream(PCAPS / "fix44_sample.pcap", "fix")
    assert recs.dtype.itemsize == records.TICK_SIZE and len(recs) == st["records"] > 0
    f = st["fix"]
    assert f["messages"] == 300 and f["bad_checksum"] == 0 and f["seq_gaps"] == 0
    rt = set(np.unique(recs["rtype"]))
    assert {records.RTYPE["order_event"], records.RTYPE["mbo"], records.RTYPE["mbp_update"]} <= rt
    ts = fix_stream._ts_recv(recs)
    assert (np.diff(ts.astype(np.int64)) >= 0).all()
    assert st["tcp"]["holes"] == 0 and st["symbols"]


@pytest.mark.parametrize("protocol", ["ouch42", "ouch"])
def test_ouch_sample_replay(protocol):
    recs, st = ouch_events.replay_stream(PCAPS / "ouch42_sample.pcap", protocol)
    assert st["protocol"] == "ouch42"
    r = records.view(recs, "order_event")
    assert len(r) == st["records"] > 0
    assert (r["rtype"] == records.RTYPE["order_event"]).all() and (r["protocol"] == 1).all()
    assert st["soupbintcp"]["login_accepted"] == 1 and st["ouch"]["unknown_order"] == 0
    assert (np.diff(r["ts_recv"].astype(np.int64)) >= 0).all()


def test_ouch50_synth_replay(tmp_path):
    p = tmp_path / "o50.pcap"
    ouch_events.synth(p, 200, 7, "5.0")
    recs, st = ouch_events.replay_stream(p, "ouch50", symbols={"AAPL": 10, "MSFT": 11, "IBM": 12, "QQQ": 13, "SPY": 14})
    r = records.view(recs, "order_event")
    assert st["protocol"] == "ouch50" and (r["protocol"] == 2).all()
    assert set(r["instrument_id"]) <= {10, 11, 12, 13, 14}
    assert st["ouch"]["unknown_symbol"] == 0


def test_order_events_write_as_npy_compatible_records(tmp_path):
    recs, _ = ouch_events.replay_stream(PCAPS / "ouch42_sample.pcap", "ouch42")
    out = tmp_path / "x.npy"
    np.save(out, np.ascontiguousarray(recs).view(np.uint8))
    back = np.load(out).view(records.TICK_DTYPE)
    assert bytes(back.view(np.uint8)) == bytes(np.ascontiguousarray(recs).view(np.uint8))


def test_stats_are_json_serializable():
    import json
    for recs, st in (fix_stream.replay_stream(PCAPS / "fix44_sample.pcap"),
                     ouch_events.replay_stream(PCAPS / "ouch42_sample.pcap", "ouch")):
        assert json.loads(json.dumps(st))["records"] == len(recs)
        assert st["tcp"]["connections"] == 1
