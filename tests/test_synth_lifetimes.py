"""feedhandler.synth: the order lifetime model of the synthetic ITCH day (see synth/_itch_day.pyx).

Real NASDAQ order flow: most orders are cancelled soon after they are added (heavy-tailed lifetimes),
deletes and replaces hit recent orders far more often than old ones, and the live orders stay in a
bounded range instead of piling up. Checked on the decoded messages (itch50_codec, independent of the
generator's own bookkeeping).
"""
from __future__ import annotations

import numpy as np
import pytest

synth = pytest.importorskip("feedhandler.synth", reason="feedhandler.synth is not available")
from feedhandler.protocols import itch50_codec  # noqa: E402

NS = 1_000_000_000


@pytest.fixture(scope="module")
def flow():
    d = synth.generate_day(messages=200_000, symbols=50, seed=3)
    added = {}           # order ref -> (timestamp, add index)
    life, rank = [], []
    n_adds = 0
    for m in d.messages():
        t = chr(m[0])
        if t not in "AFDU":
            continue
        r = itch50_codec.decode(m)
        ts = r["timestamp"]
        if t in "AF":
            added[r["order_reference_number"]] = (ts, n_adds)
            n_adds += 1
        else:
            ref = r["order_reference_number"] if t == "D" else r["original_order_reference_number"]
            t0, k = added.pop(ref)
            life.append(ts - t0)
            rank.append(n_adds - k)      # adds since this order's add (feed-wide)
            if t == "U":
                added[r["new_order_reference_number"]] = (ts, n_adds)
                n_adds += 1
    return d, np.array(life), np.array(rank), n_adds


def test_most_orders_die_young(flow):
    _, life, _, _ = flow
    assert len(life) > 50_000
    assert (life < NS).mean() > 0.25, "a large share of deleted/replaced orders lived < 1 s"
    assert (life < 1_000_000).mean() > 0.15, "quote flicker: many live under a millisecond"
    assert np.median(life) < 120 * NS


def test_lifetimes_are_heavy_tailed(flow):
    _, life, _, _ = flow
    assert (life > 600 * NS).mean() > 0.05, "a tail of orders rests for 10 minutes and more"
    assert np.quantile(life, 0.99) > 100 * np.median(life)


def test_deletes_hit_recent_orders(flow):
    _, _, rank, _ = flow
    # uniform picks among ~thousands of live orders would put the median far back
    assert np.median(rank) < 50
    assert (rank <= 10).mean() > 0.3


def test_live_orders_stay_bounded(flow):
    d, _, _, n_adds = flow
    assert 0 < d.live_orders < 0.1 * n_adds
