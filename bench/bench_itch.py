"""ITCH 5.0 day -> full L3 books for every symbol: feedhandler next to itch-book, same file, same run,
on days of several shapes.

Shapes (`feedhandler synth` days, cached under bench/out/; --shapes picks some):

  deep       300 symbols, concentration 0.9, depth profile normal: a few hundred busy books with
             50-300 price levels a side (the issue's "deep" day)
  wide       8000 symbols, concentration 0.9, normal: thousands of mostly shallow books
  verydeep   30 symbols, concentration 0.9, depth profile deep: a few books with up to ~1000+
             levels a side

Contenders (each run in its own fresh subprocess; runs interleaved: every round runs every contender
of every shape once, in order, so the load of the moment is shared):

  itchbook            itch-book's C++ Session with NO table (`Session([], 0, [])`): it parses and
                      maintains its books, nothing else (no BBO rows: our replay emits none either);
                      fed the BinaryFILE in 4 MiB chunks
  fh.single           Feed.read -> BookSet.apply on ONE thread, 64k-record batches
  fh.pipelined        native producer thread (read + frame + decode) -> Ring(65536) -> BookSet.consume
  fh.replay.single    the `feedhandler replay FILE --mode single` command (whole process only)
  fh.replay.pipelined `feedhandler replay FILE --mode pipelined`
  (--pcap adds fh.single.pcap / fh.pipelined.pcap: the same day as a MoldUDP64 pcap)

Two times per run, both reported:
  in-process     from opening the file to the last book update, inside the child (the interpreter
                 start and the imports are outside it); not available for the replay command
  whole process  the child's wall time as the parent sees it: start, imports, work, exit (what the
                 issue's "0.89 s against 0.63 s" measured)
Every contender gets the same bytes (the BinaryFILE; the page cache is warm after the first round)
and does the same work: parse + book for every symbol, no output. Ratios are itch-book's median
time divided by ours (> 1: we are faster), from the medians of all rounds; the spread is min..max.
Beside the ratio of medians, each round's own ratio (itch-book's time in that round / ours in that
round: the two ran seconds apart, under about the same load) gives the RATIO SPREAD (min..max over
rounds), the honest error bar on a shared machine. `cpu x` is the same ratio on CPU time of the
whole process in-process (steadier than wall time when other processes take the cores; for the
pipelined contender it adds both threads' CPU, so only wall time says how much the second core
helps).

--real: the real NASDAQ captures under ../shared/data/itch50 (MoldUDP64 pcaps, about 50 messages in
all), their messages written as one BinaryFILE: a cross-check that every contender sees the same
messages and ends with the same live orders. At that size the times are process start-up only.

    .venv/bin/python bench/bench_itch.py                              # 3 shapes, 5 rounds
    .venv/bin/python bench/bench_itch.py --shapes deep --rounds 3 --json
    .venv/bin/python bench/bench_itch.py --messages 2000000 --symbols 2000 --rounds 3   # another shape
    .venv/bin/python bench/bench_itch.py --seed 11 --symbols 1500 --depth-profile deep --rounds 3
    .venv/bin/python bench/bench_itch.py --real --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

from feedhandler.cliopts import positive_int

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
SHAPES = {
    "deep": {"symbols": 300, "concentration": 0.9, "depth_profile": "normal"},
    "wide": {"symbols": 8000, "concentration": 0.9, "depth_profile": "normal"},
    "verydeep": {"symbols": 30, "concentration": 0.9, "depth_profile": "deep"},
}
CONTENDERS = ["itchbook", "fh.single", "fh.pipelined", "fh.replay.single", "fh.replay.pipelined"]
PCAP_CONTENDERS = ["fh.single.pcap", "fh.pipelined.pcap"]

# numpy's OpenBLAS starts a thread per core that busy-waits for a while after import: on a 2-core
# machine it steals the core a contender runs on. Nothing here uses BLAS.
CHILD_ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")


def day_files(messages: int, symbols: int, seed: int, concentration: float = 0.9,
              depth_profile: str = "normal", pcap: bool = True) -> dict:
    """The day's BinaryFILE (and pcap) under bench/out/, generated once (same arguments, same bytes)."""
    os.makedirs(OUT, exist_ok=True)
    shape = "" if (concentration, depth_profile) == (0.9, "normal") else f"_c{concentration:g}_{depth_profile}"
    stem = os.path.join(OUT, f"itch_{messages}_{symbols}_{seed}{shape}")
    files = {"binaryfile": stem + ".bin", "pcap": stem + ".pcap"}
    if not all(os.path.exists(p) for k, p in files.items() if pcap or k == "binaryfile"):
        from feedhandler.synth import generate_day

        t = time.perf_counter()
        day = generate_day(messages=messages, symbols=symbols, seed=seed, concentration=concentration,
                           depth_profile=depth_profile)
        day.write_binaryfile(files["binaryfile"] + ".tmp")
        os.replace(files["binaryfile"] + ".tmp", files["binaryfile"])
        if pcap:
            day.write_pcap(files["pcap"] + ".tmp")
            os.replace(files["pcap"] + ".tmp", files["pcap"])
        print(f"# generated {messages} messages, {symbols} symbols (concentration {concentration:g}, "
              f"{depth_profile} depth) in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return files


REAL_DIR = os.path.join(HERE, "..", "..", "shared", "data", "itch50")


def _moldudp64_messages(pcap: bytes) -> list:
    """The ITCH messages of a classic pcap of Ethernet (VLAN tags allowed) / IPv4 / UDP / MoldUDP64
    packets, in order. Raises ValueError naming the first packet that is not one."""
    import struct

    if len(pcap) < 24:
        raise ValueError("not a pcap: shorter than its global header")
    magic = pcap[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise ValueError(f"not a classic pcap (magic {magic.hex()})")
    if struct.unpack(end + "I", pcap[20:24])[0] != 1:
        raise ValueError("not an Ethernet pcap")
    out, off, k = [], 24, 0
    while off + 16 <= len(pcap):
        caplen = struct.unpack(end + "I", pcap[off + 8:off + 12])[0]
        pkt = pcap[off + 16:off + 16 + caplen]
        off += 16 + caplen
        k += 1
        if len(pkt) < caplen:
            raise ValueError(f"packet {k}: truncated")
        p = 12
        while pkt[p:p + 2] in (b"\x81\x00", b"\x88\xa8"):
            p += 4
        if pkt[p:p + 2] != b"\x08\x00":
            raise ValueError(f"packet {k}: not IPv4")
        p += 2
        ihl = (pkt[p] & 15) * 4
        if pkt[p + 9] != 17:
            raise ValueError(f"packet {k}: not UDP")
        p += ihl + 8 + 20                      # UDP header, MoldUDP64 header (session, sequence, count)
        count = struct.unpack(">H", pkt[p - 2:p])[0]
        for _ in range(count if count != 0xFFFF else 0):
            n = struct.unpack(">H", pkt[p:p + 2])[0]
            if p + 2 + n > len(pkt):
                raise ValueError(f"packet {k}: message runs past the packet")
            out.append(pkt[p + 2:p + 2 + n])
            p += 2 + n
    return out


def real_day_file() -> dict:
    """The real captures' messages as one BinaryFILE under bench/out/ (2-byte big-endian length +
    message), or SystemExit when the shared data is missing."""
    import glob
    import struct

    pcaps = sorted(glob.glob(os.path.join(REAL_DIR, "*.pcap")))
    if not pcaps:
        raise SystemExit(f"--real: no captures under {os.path.normpath(REAL_DIR)}")
    msgs = []
    for p in pcaps:
        with open(p, "rb") as f:
            msgs += _moldudp64_messages(f.read())
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "itch_real_shared.bin")
    with open(path + ".tmp", "wb") as f:
        for m in msgs:
            f.write(struct.pack(">H", len(m)) + m)
    os.replace(path + ".tmp", path)
    print(f"# real captures: {len(pcaps)} pcaps, {len(msgs)} messages -> {path}", file=sys.stderr)
    return {"binaryfile": path, "pcap": None}


def _cpu_s() -> float:
    """CPU time of the whole process (every thread), s: unlike wall time it does not grow when other
    processes take the cores, so it is the steadier figure on a shared machine."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _run_itchbook(path: str) -> dict:
    from itch_book import Session

    s = Session([], 0, [])          # no table: parse + books only
    t, c = time.perf_counter(), _cpu_s()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            s.feed(chunk)
    elapsed, cpu = time.perf_counter() - t, _cpu_s() - c
    st = s.stats()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "messages": st["messages"], "live_orders": st["live_orders"]}


def _run_fh(path: str, mode: str) -> dict:
    from feedhandler.books import BookSet
    from feedhandler import records
    from feedhandler.pipeline import Feed

    books = BookSet()
    t, c = time.perf_counter(), _cpu_s()
    feed = Feed(path)
    if mode == "single":
        buf = records.empty(65536)
        while n := feed.read(buf):
            books.apply(buf[:n])
    else:
        from feedhandler.ring import Ring

        ring = Ring(1 << 16, overflow="block")
        feed.start(ring)
        books.consume(ring, max_batch=4096)
        feed.join()
    elapsed, cpu = time.perf_counter() - t, _cpu_s() - c
    st = feed.stats()
    msgs = sum(st["decoder"]["messages"].values()) if "decoder" in st else st.get("messages", 0)
    return {"elapsed_s": elapsed, "cpu_s": cpu, "messages": msgs, "live_orders": books.live_orders}


def child(name: str, path: str) -> None:
    r = _run_itchbook(path) if name == "itchbook" else _run_fh(path, name.split(".")[1])
    print(json.dumps(r))


def _feedhandler_cmd() -> list[str]:
    exe = shutil.which("feedhandler", path=os.path.dirname(sys.executable))
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from feedhandler.cli import main; sys.exit(main(sys.argv[1:]))"]


def run_one(name: str, files: dict) -> dict:
    """One run of one contender in a fresh process: its in-process figures and its whole wall time."""
    path = files["pcap" if name.endswith(".pcap") else "binaryfile"]
    if name.startswith("fh.replay."):
        cmd = _feedhandler_cmd() + ["replay", path, "--mode", name.rsplit(".", 1)[1], "--no-progress", "--json"]
    else:
        cmd = [sys.executable, __file__, "--child", name, path]
    t = time.perf_counter()
    out = subprocess.run(cmd, env=CHILD_ENV, capture_output=True, text=True)
    whole = time.perf_counter() - t
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        raise SystemExit(f"{name} failed ({out.returncode})")
    if name.startswith("fh.replay."):
        s = json.loads(out.stdout)
        return {"whole_s": whole, "elapsed_s": None, "cpu_s": None, "messages": s["messages"],
                "live_orders": s["live_orders"], "replay_elapsed_s": s["elapsed_s"]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["whole_s"] = whole
    return r


def _stats(xs: list) -> dict | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shapes", default=None, help="comma-separated: " + ", ".join(SHAPES) + " (default: all)")
    ap.add_argument("--symbols", type=int, default=None,
                    help="a day of another shape ('custom'): this many symbols, with --concentration and "
                         "--depth-profile (instead of --shapes unless both are given)")
    ap.add_argument("--concentration", type=float, default=0.9, help="custom shape: Zipf exponent (default 0.9)")
    ap.add_argument("--depth-profile", default="normal", help="custom shape: shallow, normal, deep (default normal)")
    ap.add_argument("--rounds", "--repeat", type=positive_int, default=5,
                    help="interleaved rounds (every contender once per round; default 5)")
    ap.add_argument("--only", default="", help="comma-separated contender names")
    ap.add_argument("--pcap", action="store_true", help="also the MoldUDP64 pcap contenders")
    ap.add_argument("--real", action="store_true",
                    help="the real captures in ../shared/data/itch50 as one BinaryFILE (a cross-check: "
                         "about 50 messages) instead of synthetic days")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(*a.child)
        return 0
    if a.real:
        SHAPES["real"] = {"symbols": None, "concentration": None, "depth_profile": "real captures"}
        a.shapes, a.pcap = "real", False
    if a.symbols:
        SHAPES["custom"] = {"symbols": a.symbols, "concentration": a.concentration, "depth_profile": a.depth_profile}
    shapes = [s for s in (a.shapes or ("custom" if a.symbols else ",".join(SHAPES))).split(",") if s]
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r} (one of {', '.join(SHAPES)})")
    names = CONTENDERS + (PCAP_CONTENDERS if a.pcap else [])
    names = [n for n in names if not a.only or n in a.only.split(",")]
    try:
        import itch_book
        itchbook_version = getattr(itch_book, "__version__", "?")
    except ImportError:
        print("# itch-book not installed (pip install itch-book): skipping the peer", file=sys.stderr)
        names = [n for n in names if n != "itchbook"]
        itchbook_version = None
    # Like for like at start-up: itch-book's Python files were byte-compiled when pip installed it; ours may
    # run from a checkout (editable install) where PYTHONDONTWRITEBYTECODE leaves them uncompiled, which costs
    # every `feedhandler replay` ~20 ms of compile(). Byte-compile the package once (what pip does).
    import compileall
    import feedhandler
    compileall.compile_dir(os.path.dirname(feedhandler.__file__), quiet=1)
    files = {s: real_day_file() if s == "real" else
             day_files(a.messages, SHAPES[s]["symbols"], a.seed, SHAPES[s]["concentration"],
                       SHAPES[s]["depth_profile"], pcap=a.pcap) for s in shapes}
    runs: dict = {s: {n: [] for n in names} for s in shapes}
    loads = [os.getloadavg()]
    for _ in range(a.rounds):
        for s in shapes:
            for n in names:
                runs[s][n].append(run_one(n, files[s]))
        loads.append(os.getloadavg())
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uptime = ""
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "itch_book": itchbook_version, "load_average_per_round": loads, "uptime_after": uptime},
              "messages": a.messages, "rounds": a.rounds, "shapes": {}}
    for s in shapes:
        res = {"day": dict(SHAPES[s], file=os.path.basename(files[s]["binaryfile"])), "contenders": {}}
        for n, rs in runs[s].items():
            res["contenders"][n] = {
                "in_process_s": _stats([r["elapsed_s"] for r in rs]),
                "cpu_s": _stats([r["cpu_s"] for r in rs]),
                "whole_process_s": _stats([r["whole_s"] for r in rs]),
                "messages": rs[0]["messages"], "live_orders": rs[0]["live_orders"],
            }
        c = res["contenders"]
        ref = c.get("itchbook")
        if ref:
            for n, v in c.items():
                for k in ("in_process_s", "whole_process_s", "cpu_s"):
                    if v[k] and ref[k]:
                        v["x_" + k] = ref[k]["median"] / v[k]["median"]
                # each round's own ratio (itch-book and this contender ran in the same round)
                for k, rk in (("in_process_s", "elapsed_s"), ("whole_process_s", "whole_s"), ("cpu_s", "cpu_s")):
                    xs = [ri[rk] / rn[rk] for ri, rn in zip(runs[s]["itchbook"], runs[s][n])
                          if ri.get(rk) and rn.get(rk)]
                    if xs:
                        v["x_" + k + "_rounds"] = {"min": min(xs), "max": max(xs), "median": statistics.median(xs),
                                                   "all": xs}
            mismatch = [n for n, v in c.items() if (v["messages"], v["live_orders"]) != (ref["messages"], ref["live_orders"])]
            if mismatch:
                res["mismatch"] = mismatch
        result["shapes"][s] = res
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"# {'real captures' if a.real else f'{a.messages:,} messages per day'}, {a.rounds} interleaved rounds; medians (min..max), seconds; "
          f"x = itch-book median / ours (> 1: faster), [min..max of the per-round ratios]")
    print(f"# load average per round (1 min): {', '.join(f'{x[0]:.1f}' for x in loads)}; {uptime}")
    for s in shapes:
        res = result["shapes"][s]
        if s == "real":
            print(f"\n## real: the captures in ../shared/data/itch50 as one BinaryFILE ({res['day']['file']}); "
                  f"times are process start-up")
        else:
            print(f"\n## {s}: {res['day']['symbols']} symbols, concentration {res['day']['concentration']}, "
                  f"{res['day']['depth_profile']} depth, seed {a.seed} ({res['day']['file']})")
        print(f"{'contender':20s} {'in-process s':>22s} {'x':>5s} {'[spread]':>12s} {'cpu x':>6s} "
              f"{'whole process s':>22s} {'x':>5s} {'[spread]':>12s} {'live orders':>11s}")
        for n, v in res["contenders"].items():
            def f(st):
                return f"{st['median']:.3f} ({st['min']:.3f}..{st['max']:.3f})" if st else "-"

            def x(k):
                return f"{v['x_' + k]:.2f}" if "x_" + k in v else "-"

            def sp(k):
                r = v.get("x_" + k + "_rounds")
                return f"[{r['min']:.2f}..{r['max']:.2f}]" if r and n != "itchbook" else ""
            print(f"{n:20s} {f(v['in_process_s']):>22s} {x('in_process_s'):>5s} {sp('in_process_s'):>12s} "
                  f"{x('cpu_s'):>6s} {f(v['whole_process_s']):>22s} {x('whole_process_s'):>5s} "
                  f"{sp('whole_process_s'):>12s} {v['live_orders'] if v['live_orders'] is not None else '-':>11}")
        if res.get("mismatch"):
            print(f"# MISMATCH: {', '.join(res['mismatch'])} ended with other message or live order counts than itch-book")
    return 0


if __name__ == "__main__":
    sys.exit(main())
