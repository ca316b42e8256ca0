"""What balances cost per order: bench_gateway's in-process measurement (``Gateway._handle`` on signed
new/cancel requests, no ZeroMQ; see bench/bench_gateway.py) with ``[accounts]`` off (the default) and on
(the order's account funded by a journaled admin deposit; maker/taker fees on), interleaved in rounds,
each measurement in a fresh spawned process.

    python bench/bench_accounts.py [--n 4000] [--rounds 5] [--json]

Reports the median server-side cost per request in microseconds of each configuration and the difference.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys

from feedhandler.cliopts import positive_int

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

def _measure(accounts: bool, n: int) -> float:
    import bench_gateway as B
    import engine.exchange as X

    plain, plain_config = B.bench_exchange, X.load_config

    def config_with_accounts(*args, **kw):
        cfg = plain_config(*args, **kw)
        cfg["accounts"] = {"enabled": True, "quote": "USD", "maker_fee_bps": 1, "taker_fee_bps": 2,
                           "admins": ["OPS"]}
        return cfg

    def with_accounts(workers, null_engine=False):
        X.load_config = config_with_accounts
        try:
            ex = plain(workers, null_engine)
        finally:
            X.load_config = plain_config
        for req in ({"op": "create_account", "account": "MM"},
                    {"op": "deposit", "account": "MM", "asset": "USD", "amount": 2 ** 61}):
            r = ex.pipeline.handle("OPS", None, dict(req, type="admin"))
            assert r["status"] == "ack", r
        return ex

    if not accounts:
        return B.inprocess(False, n, 0.0)

    class RepliesOnly(B._CapturedSocket):
        """Keeps the last reply: with balances on, the requester's balance events follow its reply on the
        same socket (their cost counts: they are sent, then dropped here)."""

        def send(self, data, flags=0, copy=True, track=False):
            if b'"exec_type"' not in data:
                self.last = data
    B._CapturedSocket = RepliesOnly
    B.bench_exchange = with_accounts
    try:
        return B.inprocess(False, n, 0.0)
    finally:
        B.bench_exchange = plain


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="requests per measurement")
    ap.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds (off, on)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    off, on = [], []
    for _ in range(a.rounds):
        for acc, out in ((False, off), (True, on)):
            with ctx.Pool(1) as pool:
                out.append(pool.apply(_measure, (acc, a.n)))
    res = {"off_us": statistics.median(off), "on_us": statistics.median(on), "off_rounds": off, "on_rounds": on}
    res["cost_us"] = round(res["on_us"] - res["off_us"], 1)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"server-side cost per request in process (median of {a.rounds} rounds): balances off "
              f"{res['off_us']} us, on {res['on_us']} us, difference {res['cost_us']} us "
              f"(rounds off {off}, on {on})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
