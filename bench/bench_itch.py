"""ITCH 5.0 day -> full L3 books for every symbol: feedhandler next to itch-book, same file, same run.

Contenders (each run in its own fresh subprocess so peak RSS is its own; runs interleaved):

  itchbook.binaryfile    itch-book's C++ Session (tables=["bbo"], the least it does while keeping books)
                         fed the BinaryFILE in 4 MiB chunks
  fh.single.binaryfile   Feed.read -> BookSet.apply on ONE thread (parse and apply), 64k-record batches
  fh.pipelined.binaryfile  native producer thread (read+frame+decode) -> ring -> BookSet.consume thread
  fh.single.pcap         the same day as a MoldUDP64 pcap (Ethernet/IPv4/UDP framing + sequencing)
  fh.pipelined.pcap

The day comes from `feedhandler synth` (cached under bench/out/). Messages/s = ITCH messages in the file
divided by wall time from opening the file to the last book update (file already in the page cache);
M msg/cpu-s divides by the CPU time of the whole process over the same span (all its threads: for
the pipelined contenders that is both threads, waits included).

    .venv/bin/python bench/bench_itch.py                       # 10 M messages, 3 runs each
    .venv/bin/python bench/bench_itch.py --messages 2000000 --repeat 1 --json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
CONTENDERS = ["itchbook.binaryfile", "fh.single.binaryfile", "fh.pipelined.binaryfile",
              "fh.single.pcap", "fh.pipelined.pcap"]

# numpy's OpenBLAS starts a thread per core that busy-waits for a while after import: on a 2-core
# machine it steals the core a contender runs on. Nothing here uses BLAS.
CHILD_ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")

def day_files(messages: int, symbols: int, seed: int) -> dict:
    os.makedirs(OUT, exist_ok=True)
    stem = os.path.join(OUT, f"itch_{messages}_{symbols}_{seed}")
    files = {"binaryfile": stem + ".bin", "pcap": stem + ".pcap"}
    if not all(os.path.exists(p) for p in files.values()):
        from feedhandler.synth import generate_day

        t = time.perf_counter()
        day = generate_day(messages=messages, symbols=symbols, seed=seed)
        day.write_binaryfile(files["binaryfile"] + ".tmp")
        day.write_pcap(files["pcap"] + ".tmp")
        os.replace(files["binaryfile"] + ".tmp", files["binaryfile"])
        os.replace(files["pcap"] + ".tmp", files["pcap"])
        print(f"# generated {messages} messages, {symbols} symbols in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return files


def _cpu_s() -> float:
    """CPU time of the whole process (every thread), s: unlike wall time it does not grow when other
    processes take the cores, so it is the steadier figure on a shared machine."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _pin(cpu: int) -> None:
    """--pin: bind the calling thread to one CPU (Linux: sched_setaffinity(0) is per thread)."""
    if os.environ.get("FH_BENCH_PIN") == "1" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def _run_itchbook(path: str) -> dict:
    from itch_book import Session

    _pin(0)
    s = Session(["bbo"], 0, [])
    t, c = time.perf_counter(), _cpu_s()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            s.feed(chunk)
    elapsed, cpu = time.perf_counter() - t, _cpu_s() - c
    st = s.stats()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "messages": st["messages"], "live_orders": st["live_orders"]}


def _run_fh(path: str, mode: str) -> dict:
    from engine.book import BookSet
    from feedhandler import records
    from feedhandler.pipeline import Feed

    books = BookSet()
    t, c = time.perf_counter(), _cpu_s()
    feed = Feed(path)
    if mode == "single":
        _pin(0)
        buf = records.empty(65536)
        while n := feed.read(buf):
            books.apply(buf[:n])
    else:
        from feedhandler.ring import Ring

        ring = Ring(1 << 16, overflow="block")
        _pin(0)                      # the producer thread inherits CPU 0
        feed.start(ring)
        _pin(1)                      # the book thread (this one) moves to CPU 1
        books.consume(ring, max_batch=4096)
        feed.join()
    elapsed, cpu = time.perf_counter() - t, _cpu_s() - c
    st = feed.stats()
    msgs = sum(st["decoder"]["messages"].values()) if "decoder" in st else st.get("messages", 0)
    return {"elapsed_s": elapsed, "cpu_s": cpu, "messages": msgs, "live_orders": books.live_orders}


def child(name: str, path: str) -> None:
    if name.startswith("itchbook"):
        r = _run_itchbook(path)
    else:
        r = _run_fh(path, name.split(".")[1])
    # VmHWM, not ru_maxrss: ru_maxrss survives execve, so a child would report its parent's peak.
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    r["maxrss_mb"] = hwm_kb / 1024
    print(json.dumps(r))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000_000)
    ap.add_argument("--symbols", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated contender names")
    ap.add_argument("--pin", action="store_true",
                    help="pin threads: single-threaded contenders to CPU 0; pipelined: producer CPU 0, book CPU 1")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(*a.child)
        return 0
    if a.pin:
        CHILD_ENV["FH_BENCH_PIN"] = "1"
    files = day_files(a.messages, a.symbols, a.seed)
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
            path = files[n.rsplit(".", 1)[1]]
            out = subprocess.run([sys.executable, __file__, "--child", n, path], env=CHILD_ENV, capture_output=True,
                                 text=True)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                raise SystemExit(f"{n} failed")
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_before": load, "load_average_after": os.getloadavg()},
              "messages": a.messages, "symbols": a.symbols, "pinned": a.pin, "contenders": {}}
    for n, rs in runs.items():
        best = min(rs, key=lambda r: r["elapsed_s"])
        result["contenders"][n] = {
            "best_msgs_per_s": best["messages"] / best["elapsed_s"],
            "median_msgs_per_s": sorted(r["messages"] / r["elapsed_s"] for r in rs)[len(rs) // 2],
            "best_msgs_per_cpu_s": max(r["messages"] / r["cpu_s"] for r in rs if r["cpu_s"] > 0),
            "messages": best["messages"], "live_orders": best["live_orders"],
            "maxrss_mb": max(r["maxrss_mb"] for r in rs),
        }
    c = result["contenders"]
    ref = c.get("itchbook.binaryfile")
    if ref:
        for n, v in c.items():
            v["ratio_vs_itchbook"] = v["best_msgs_per_s"] / ref["best_msgs_per_s"]
    if "fh.single.binaryfile" in c and "fh.single.pcap" in c:
        result["pcap_vs_binaryfile_single"] = c["fh.single.pcap"]["best_msgs_per_s"] / c["fh.single.binaryfile"]["best_msgs_per_s"]
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"# {a.messages} messages, {a.symbols} symbols, best of {a.repeat}; load average before {load[0]:.2f}, "
              f"after {os.getloadavg()[0]:.2f}")
        print(f"{'contender':26s} {'M msg/s':>9s} {'median':>9s} {'vs itch-book':>12s} {'M msg/cpu-s':>12s} "
              f"{'peak RSS MB':>12s} {'live orders':>12s}")
        for n, v in c.items():
            ratio = f"{v['ratio_vs_itchbook']:.2f}x" if "ratio_vs_itchbook" in v else "-"
            print(f"{n:26s} {v['best_msgs_per_s'] / 1e6:9.2f} {v['median_msgs_per_s'] / 1e6:9.2f} {ratio:>12s} "
                  f"{v['best_msgs_per_cpu_s'] / 1e6:12.2f} {v['maxrss_mb']:12.0f} {v['live_orders']:12d}")
        if "pcap_vs_binaryfile_single" in result:
            print(f"pcap / BinaryFILE (single thread): {result['pcap_vs_binaryfile_single']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
