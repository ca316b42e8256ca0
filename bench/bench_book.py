"""The L3 books alone: BookSet.apply over pre-decoded ITCH records, next to itch-book's parse + book.

What is timed (each contender in its own fresh subprocess, runs interleaved, best and median of N):

  fh.book.apply      BookSet.apply over the day's records, already decoded into TICK_DTYPE batches
                     (decode time excluded; the records are copied back before every run because
                     apply enriches them in place). records/s = MBO/trade/gap records per second.
  fh.decode          Feed.read of the same BinaryFILE into batches, no books (framing + ITCH decode)
  itchbook.binaryfile  itch-book's C++ Session with no table (books only) fed the BinaryFILE in 4 MiB chunks:
                     parse AND book, for context (it cannot apply pre-decoded records)

The day is the one bench_itch.py uses (`feedhandler synth`, cached under bench/out/).

    .venv/bin/python bench/bench_book.py                          # 2 M messages, 2000 symbols
    .venv/bin/python bench/bench_book.py --messages 10000000 --symbols 8000 --json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_itch import day_files  # noqa: E402  (same cached day files)

CONTENDERS = ["itchbook.binaryfile", "fh.decode", "fh.book.apply"]

# numpy's OpenBLAS starts a thread per core that busy-waits for a while after import: on a 2-core
# machine it steals the core a contender runs on. Nothing here uses BLAS.
CHILD_ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")



def _cpu(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _run_apply(path: str, batch: int) -> dict:
    import numpy as np

    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed

    ticks = Feed(path).read_all()
    work = np.empty_like(ticks)
    work[:] = ticks                      # first touch outside the timed region
    books = BookSet()
    n = len(work)
    t = time.perf_counter()
    c = time.thread_time()
    for i in range(0, n, batch):
        books.apply(work[i:i + batch])
    cpu = time.thread_time() - c
    elapsed = time.perf_counter() - t
    return {"elapsed_s": elapsed, "cpu_s": cpu, "records": n, "live_orders": books.live_orders,
            "book_memory_mb": books.memory_bytes / 2**20}


def _run_decode(path: str, batch: int) -> dict:
    from feedhandler import records
    from feedhandler.pipeline import Feed

    buf = records.empty(batch)
    t = time.perf_counter()
    c = time.thread_time()
    feed = Feed(path)
    n = 0
    while k := feed.read(buf):
        n += k
    cpu = time.thread_time() - c
    elapsed = time.perf_counter() - t
    return {"elapsed_s": elapsed, "cpu_s": cpu, "records": n,
            "messages": sum(feed.stats()["decoder"]["messages"].values()), "live_orders": 0}


def _run_itchbook(path: str) -> dict:
    from itch_book import Session

    s = Session([], 0, [])   # no table: parse + books only
    t = time.perf_counter()
    c = time.thread_time()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            s.feed(chunk)
    cpu = time.thread_time() - c
    elapsed = time.perf_counter() - t
    st = s.stats()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "records": st["messages"], "messages": st["messages"],
            "live_orders": st["live_orders"]}


def child(name: str, path: str, batch: int, cpu: int | None) -> None:
    _cpu(cpu)
    if name == "fh.book.apply":
        r = _run_apply(path, batch)
    elif name == "fh.decode":
        r = _run_decode(path, batch)
    else:
        r = _run_itchbook(path)
    with open("/proc/self/status") as f:
        r["maxrss_mb"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    print(json.dumps(r))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2_000_000)
    ap.add_argument("--symbols", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4096, help="records per BookSet.apply call")
    ap.add_argument("--cpu", type=int, default=None, help="pin every contender to this CPU")
    ap.add_argument("--only", default="", help="comma-separated contender names")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child[0], a.child[1], a.batch, a.cpu)
        return 0
    path = day_files(a.messages, a.symbols, a.seed, pcap=False)["binaryfile"]
    names = [n for n in CONTENDERS if not a.only or n in a.only.split(",")]
    try:
        import itch_book  # noqa: F401
    except ImportError:
        print("# itch-book not installed (pip install itch-book): skipping the peer", file=sys.stderr)
        names = [n for n in names if not n.startswith("itchbook")]
    runs: dict[str, list] = {n: [] for n in names}
    load = os.getloadavg()
    for _ in range(a.repeat):
        for n in names:
            cmd = [sys.executable, __file__, "--child", n, path, "--batch", str(a.batch)]
            if a.cpu is not None:
                cmd += ["--cpu", str(a.cpu)]
            out = subprocess.run(cmd, env=CHILD_ENV, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                raise SystemExit(f"{n} failed")
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_before": load, "load_average_after": os.getloadavg()},
              "messages": a.messages, "symbols": a.symbols, "batch": a.batch, "contenders": {}}
    for n, rs in runs.items():
        rates = sorted(r["records"] / r["elapsed_s"] for r in rs)
        best = max(rs, key=lambda r: r["records"] / r["elapsed_s"])
        result["contenders"][n] = {
            "unit": "messages/s" if n.startswith("itchbook") else "records/s",
            "best_per_s": rates[-1], "median_per_s": rates[len(rates) // 2],
            "best_per_cpu_s": max(r["records"] / r["cpu_s"] for r in rs if r["cpu_s"] > 0),
            "records": best["records"], "live_orders": best["live_orders"],
            "maxrss_mb": max(r["maxrss_mb"] for r in rs),
        }
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"# {a.messages} messages, {a.symbols} symbols, best of {a.repeat}, batch {a.batch}; "
              f"load before {load[0]:.2f}")
        print(f"{'contender':22s} {'unit':11s} {'M/s':>8s} {'median':>8s} {'M/cpu-s':>8s} {'peak RSS MB':>12s} "
              f"{'live orders':>12s}")
        for n, v in result["contenders"].items():
            print(f"{n:22s} {v['unit']:11s} {v['best_per_s'] / 1e6:8.2f} {v['median_per_s'] / 1e6:8.2f} "
                  f"{v['best_per_cpu_s'] / 1e6:8.2f} {v['maxrss_mb']:12.0f} {v['live_orders']:12d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
