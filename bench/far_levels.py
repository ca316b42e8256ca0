"""Records for the worst case of a flat sorted level array: one instrument with L price levels a side
(one order each), then E rounds of "delete a random resting order, add one at a random depth" (uniform
over the L levels), so that every event creates or removes a level anywhere in the book. Written as
a file of 64-byte records for bench/book_apply.c.

    .venv/bin/python bench/far_levels.py 20000 300000 /tmp/far20k.rec
    /tmp/book_flat /tmp/far20k.rec 5; /tmp/book_new /tmp/far20k.rec 5      # see bench/book_apply.c
"""
from __future__ import annotations

import sys

import numpy as np

from feedhandler import records as R


def far_levels(levels: int, rounds: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = 2 * levels + 2 * rounds
    t = R.empty(n)
    m = R.view(t, "mbo")
    m["length"] = R.DBN_LENGTH["mbo"] // 4
    m["rtype"] = R.RTYPE["mbo"]
    m["instrument_id"] = 1
    ids = np.arange(1, 2 * levels + 1, dtype=np.uint64)
    side = np.where(np.arange(2 * levels) < levels, b"B", b"A").astype("S1")
    depth = np.concatenate([np.arange(levels), np.arange(levels)])
    m["action"][: 2 * levels] = b"A"
    m["side"][: 2 * levels] = side
    m["order_id"][: 2 * levels] = ids
    m["price"][: 2 * levels] = np.where(side == b"B", 100000 - 1 - depth, 100000 + depth) * 100
    m["size"][: 2 * levels] = 100
    live_id, nxt, pos = ids.copy(), 2 * levels + 1, 2 * levels
    pick = rng.integers(0, 2 * levels, size=rounds)
    where = rng.integers(0, levels, size=rounds)
    for j, d in zip(pick.tolist(), where.tolist()):
        m["action"][pos] = b"C"
        m["side"][pos] = b"N"
        m["order_id"][pos] = live_id[j]
        m["flags"][pos] = 0x02                       # whole order
        m["price"][pos] = R.UNDEF_PRICE
        s = side[j]
        m["action"][pos + 1] = b"A"
        m["side"][pos + 1] = s
        m["order_id"][pos + 1] = nxt
        m["price"][pos + 1] = (100000 - 1 - d if s == b"B" else 100000 + d) * 100
        m["size"][pos + 1] = 100
        live_id[j] = nxt
        nxt += 1
        pos += 2
    return t


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    far_levels(int(sys.argv[1]), int(sys.argv[2])).tofile(sys.argv[3])
