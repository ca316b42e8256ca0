#!/usr/bin/env python3
"""Benchmark the SPSC tick ring against a plain C ring in the same run (bench/ring_bench.c).

Compiles bench/ring_bench.c with csrc/ring.c (gcc -O2) into bench/out/, runs it with two pinned
threads, and prints batched throughput, per-record publish throughput and one-way handoff latency
percentiles (ping-pong round trip / 2) for both rings and their ratio. ``--json`` prints one JSON
object with the figures plus the machine, compiler and kernel they were measured on.

Caveat: on a virtual machine the hypervisor steals short slices of each core, so p99 latencies are
the host's as much as the ring's; medians over several runs are the figures to compare.

    python bench/bench_ring.py                 # defaults: 100 M records, 1 M round trips, 5 runs
    python bench/bench_ring.py --records 20000000 --repeat 3 --json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "bench" / "ring_bench.c"
OUT = ROOT / "bench" / "out"


def build(cc: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    exe = OUT / "ring_bench"
    deps = [SRC, ROOT / "csrc" / "ring.c", ROOT / "csrc" / "record.c", *(ROOT / "csrc" / "include" / "fh").glob("*.h")]
    if exe.exists() and all(exe.stat().st_mtime >= d.stat().st_mtime for d in deps):
        return exe
    cmd = [cc, "-O2", "-std=gnu11", "-Wall", "-Wextra", "-pthread", f"-I{ROOT / 'csrc' / 'include'}",
           "-o", str(exe), str(SRC), str(ROOT / "csrc" / "ring.c"), str(ROOT / "csrc" / "record.c"), "-lrt"]
    subprocess.run(cmd, check=True)
    return exe


def machine(cc: str) -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "kernel": platform.release(),
        "compiler": ver[0] if ver else cc,
        "load_average_before": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000_000, help="records per batched run (per-record runs use 1/4)")
    ap.add_argument("--batch", type=int, default=256, help="records per claim/peek in the batched case")
    ap.add_argument("--capacity", type=int, default=4096, help="ring slots (a power of two)")
    ap.add_argument("--rtt-samples", type=int, default=1_000_000, help="ping-pong round trips per run")
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (median and best are reported)")
    ap.add_argument("--cores", default="0,1", help="producer,consumer cores")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    a = ap.parse_args(argv)
    if shutil.which(a.cc) is None:
        print(f"bench_ring: no C compiler {a.cc!r} on PATH", file=sys.stderr)
        return 2
    exe = build(a.cc)
    args = [str(exe), "--records", str(a.records), "--batch", str(a.batch), "--capacity", str(a.capacity),
            "--rtt-samples", str(a.rtt_samples), "--repeat", str(a.repeat), "--cores", a.cores]
    info = machine(a.cc)
    if not a.json:
        print(f"# {info['cpu']}, {info['cores_online']} cores, Linux {info['kernel']}, {info['compiler']}, "
              f"load {info['load_average_before'][0]:.2f}")
        return subprocess.run(args).returncode
    p = subprocess.run(args + ["--json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        return p.returncode
    result = json.loads(p.stdout)
    result["machine"] = info
    result["targets"] = {"batched_rps_min": 150e6, "handoff_p50_ns_max": 200}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
