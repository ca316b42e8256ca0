"""ShardCore (engine/shard_core.pyx), the native dict edge of a shard: the journal holds exactly the
64-byte fh_order_req records numpy packs from the same field values (padding zeroed, so a journal is a
function of its input), and replaying them gives back the live path's events and state."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_matcher import dict_flow  # noqa: E402

from engine import orders as O  # noqa: E402
from engine.journal import read_journal  # noqa: E402
from engine.manager import ShardEngine  # noqa: E402

SYMS = ["AAPL", "MSFT"]


@pytest.mark.parametrize("seed", [1, 2])
def test_journal_records_are_numpy_packing_and_replay_equals_live(tmp_path, seed):
    flow = dict_flow(seed, 2000, SYMS)
    rng = random.Random(seed)
    live = ShardEngine(SYMS, journal_dir=str(tmp_path))
    events, i = [], 0
    while i < len(flow):                       # batches of 1..64 as the gateway sends them
        k = rng.choice((1, 1, 2, 7, 64))
        for evs in live.submit_many(flow[i : i + k]):
            events.extend(evs)
        i += k
    assert len(events) > len(flow)             # fills, rejects and expiries, not only acks
    live_hash = live.state_hash()
    live.close()

    payloads, _ = read_journal(os.path.join(str(tmp_path), "journal.bin"))
    recs = [p[1 : 1 + O.REQ_DTYPE.itemsize] for p in payloads if p[:1] in (b"R", b"Q")]
    assert len(recs) == len(flow)
    for raw in recs:
        rec = np.frombuffer(raw, dtype=O.REQ_DTYPE)
        again = np.zeros(1, dtype=O.REQ_DTYPE)
        again[0] = rec[0].item()               # field values only: numpy zeroes the padding
        assert again.tobytes() == raw
    assert [int(np.frombuffer(r, dtype=O.REQ_DTYPE)["seq"][0]) for r in recs] == list(range(1, len(flow) + 1))

    replayed = ShardEngine(SYMS, journal_dir=str(tmp_path))
    assert replayed.state_hash() == live_hash
    assert [e for e in replayed.take_replayed() if e["type"] != "request"] == events
    replayed.close()


def test_apply_records_checks_its_input():
    s = ShardEngine(SYMS)
    with pytest.raises(ValueError):
        s.apply_records(b"\0" * 63, [("a", "")])
    with pytest.raises(ValueError):
        s.apply_records(np.zeros(2, dtype=O.REQ_DTYPE), [("a", "")])
    assert s.apply_records(b"", []) == []
