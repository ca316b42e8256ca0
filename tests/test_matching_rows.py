"""Engine.process_rows / pack_rows (the gateway's per-call path, no numpy) against Engine.process on the
same random order stream: byte-identical requests, identical events, identical final books."""
import random

import numpy as np
import pytest

from engine import orders as O
from engine.matching import Engine, EngineError

PX = 1_000_000_000


def _stream(seed: int, n: int) -> list[tuple]:
    rng = random.Random(seed)
    rows, live, nxt = [], [], 0
    for seq in range(1, n + 1):
        r = rng.random()
        inst = rng.randrange(2)
        if r < 0.55 or not live:
            nxt += 1
            oid = ((inst + 1) << 40) | nxt
            side = rng.choice((b"B", b"S"))
            otype = O.ORDER_TYPE["market"] if rng.random() < 0.05 else O.ORDER_TYPE["limit"]
            price = 0 if otype == O.ORDER_TYPE["market"] else (100 * PX + rng.randrange(-20, 21) * 10_000_000)
            tif = rng.choice(list(O.TIF.values()))
            flags = O.FLAG_POST_ONLY if rng.random() < 0.1 else 0
            rows.append((seq, 1_000 + seq, oid, price, rng.randrange(1, 500), rng.randrange(1, 5), inst,
                         O.KIND["new"], side, otype, tif, flags, rng.randrange(4), rng.randrange(1 << 63)))
            live.append((oid, inst))
        elif r < 0.85:
            oid, inst = live.pop(rng.randrange(len(live)))
            rows.append((seq, 1_000 + seq, oid, 0, 0, rng.randrange(1, 5), inst, O.KIND["cancel"], b"B", 0, 0,
                         0, 0, 0))
        elif r < 0.98:
            oid, inst = rng.choice(live)
            new_px = O.UNDEF_PRICE if rng.random() < 0.5 else 100 * PX + rng.randrange(-20, 21) * 10_000_000
            rows.append((seq, 1_000 + seq, oid, new_px, rng.randrange(0, 300), rng.randrange(1, 5), inst,
                         O.KIND["amend"], b"B", 0, 0, 0, 0, 0))
        else:
            rows.append((seq, 1_000 + seq, 0, 0, 0, 0, inst, O.KIND["eod"], b"B", 0, 0, 0, 0, 0))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_process_rows_matches_process(seed):
    rows = _stream(seed, 3000)
    a, b = Engine(2), Engine(2)
    rng = random.Random(seed)
    i = 0
    n_events = 0
    while i < len(rows):
        k = rng.choice((1, 1, 1, 2, 7, 64))
        chunk = rows[i : i + k]
        i += k
        recs = np.zeros(len(chunk), dtype=O.REQ_DTYPE)
        recs[:] = chunk
        assert b.pack_rows(chunk) == recs.tobytes()
        want = a.process(recs).tolist()
        got = b.process_rows(chunk)
        assert got == want
        n_events += len(got)
    assert n_events > len(rows)        # fills, rejects and expiries happened, not only acks
    assert a.state_hash() == b.state_hash()


def test_process_rows_empty_and_bad_rows():
    e = Engine(1)
    assert e.process_rows([]) == []
    assert e.pack_rows([]) == b""
    with pytest.raises(EngineError):
        e.process_rows([(1, 2, 3)])
    with pytest.raises(EngineError):
        e.process_rows([(1, 1, 1 << 40 | 1, PX, 1, 1, 0, O.KIND["new"], b"BS", 1, 1, 0, 0, 0)])
    with pytest.raises(OverflowError):
        e.process_rows([(1, 1, 1 << 40 | 1, PX, -1, 1, 0, O.KIND["new"], b"B", 1, 1, 0, 0, 0)])
    # a bad instrument id is a counted reject, not an exception
    ev = e.process_rows([(1, 1, 1 << 40 | 1, PX, 1, 1, 9, O.KIND["new"], b"B", 1, 1, 0, 0, 0)])
    assert len(ev) == 1 and ev[0][12] == O.EXEC_TYPE["rejected"]
    assert e.n_orders() == 0
