"""A signal that arrives while a replay handles a batch stops the replay at the end of that batch
(feedhandler.interrupts): the batch is applied, written and counted whole, so the summary describes the
output file exactly (CI saw a DBN file holding more records than its summary said after SIGTERM)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from feedhandler.interrupts import BatchBoundary

PCAP = Path(__file__).resolve().parents[1] / "pcaps" / "itch50_sample.pcap"


def test_boundary_defers_to_the_end_of_the_batch():
    b = BatchBoundary()
    done = []
    with pytest.raises(KeyboardInterrupt):
        with b.batch():
            b.deliver(KeyboardInterrupt())          # as a handler would, mid-batch
            with b.batch():                          # nested: still deferred
                b.deliver(RuntimeError("second"))    # the first delivered wins
            done.append(1)                           # the batch goes on
    assert done == [1] and b.pending is None and b.depth == 0
    with pytest.raises(KeyboardInterrupt):
        b.deliver(KeyboardInterrupt())               # between batches: at once


def test_an_error_of_the_batch_itself_wins_and_clears_nothing():
    b = BatchBoundary()
    with pytest.raises(ValueError):
        with b.batch():
            b.deliver(KeyboardInterrupt())
            raise ValueError("the batch failed")
    assert b.pending is not None                     # still delivered at the next boundary
    with pytest.raises(KeyboardInterrupt):
        with b.batch():
            pass


@pytest.mark.parametrize("sig,name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")])
def test_signal_during_a_write_stops_after_that_batch(tmp_path, monkeypatch, sig, name):
    dbn = pytest.importorskip("databento_dbn")
    from feedhandler import cli
    from feedhandler.output.dbn import DbnWriter
    from feedhandler.replay import ReplayOptions, replay

    from feedhandler import records

    wrote: list[int] = []
    orig = DbnWriter.write
    mbo = records.RTYPE["mbo"]

    def write(self, ticks):
        if (ticks["rtype"] == mbo).any() and not wrote:
            os.kill(os.getpid(), sig)     # the handler runs right here, in the middle of the batch
        n = orig(self, ticks)
        if n or wrote:
            wrote.append(n)
        return n

    monkeypatch.setattr(DbnWriter, "write", write)
    out = tmp_path / "x.dbn"
    restore = cli._stop_on_signals()
    try:
        s = replay(PCAP, ReplayOptions(out=str(out), batch=64))
    finally:
        restore()
    assert s["interrupted"] == name
    assert len(wrote) == 1 and wrote[0] > 0                   # stopped after the batch in hand,
    assert s["output"]["records"] == wrote[0]                 # which was written and counted whole
    dec = dbn.DBNDecoder()
    dec.write(out.read_bytes())
    assert len(dec.decode()) - 1 == s["output"]["records"]
