"""What `--serve` costs the feed: an ITCH capture replayed as fast as possible without and with the market-data
page's sampler (feedhandler.serve.BookSampler, the object --serve installs), interleaved, medians and ratios.

    python bench/bench_serve.py [--messages 2000000] [--rounds 9] [--json]

Two paths: ``replay`` (single mode: one clock read per 65,536-record batch between samples) and ``run --file``
(the live pipeline: with a sampler the book thread enters Python once per 4,096-record batch instead of staying
in its nogil loop). The capture is generated once with `feedhandler synth` under bench/out/."""
from __future__ import annotations

import argparse
import json
import statistics as st
import subprocess
import sys
from pathlib import Path

from feedhandler.cliopts import positive_int

OUT = Path(__file__).resolve().parent / "out"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=2_000_000, help="messages of the synthetic day (default 2 M)")
    p.add_argument("--rounds", type=positive_int, default=9, help="interleaved rounds (default 9)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = p.parse_args(argv)
    from feedhandler.live import LiveOptions, run
    from feedhandler.replay import ReplayOptions, replay
    from feedhandler.serve import BookSampler

    OUT.mkdir(exist_ok=True)
    cap = OUT / f"serve_{a.messages}.pcap"
    if not cap.exists():
        subprocess.run([sys.executable, "-m", "feedhandler", "synth", str(cap), "--messages", str(a.messages), "-q"],
                       check=True)
    paths = {
        "replay": lambda w: replay(str(cap), ReplayOptions(watch=w))["elapsed_s"],
        "run --file": lambda w: run(LiveOptions(iface=None, file=str(cap), status_interval=0, install_signals=False,
                                                watch=w, top=0))["elapsed_s"],
    }
    res = {}
    for name, fn in paths.items():
        without, with_ = [], []
        for _ in range(a.rounds):
            without.append(fn(None))
            with_.append(fn(BookSampler(counters=dict)))
        res[name] = {"without_s": st.median(without), "with_serve_s": st.median(with_),
                     "ratio": st.median(with_) / st.median(without), "rounds": a.rounds}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for name, r in res.items():
            print(f"{name:11s} without {r['without_s']:.3f} s, with the --serve sampler {r['with_serve_s']:.3f} s: "
                  f"x{r['ratio']:.2f} (medians of {r['rounds']} interleaved rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
