"""Live capture throughput and latency: AF_XDP, DPDK (net_af_packet vdev) and AF_PACKET on the same veth
traffic in the same run, with parsing (MoldUDP64 + ITCH 5.0) and books included.

    sudo .venv/bin/python bench/bench_capture.py [--messages 5000000] [--pps 0] [--json]

Setup per backend (each in its own `feedhandler run` process, so DPDK's EAL and every backend get the
same conditions): a fresh veth pair with one end in a namespace; the receiver runs on the host end with
`--until-eos`; the sender (bench/capture_sender.c, AF_PACKET sendmmsg, compiled here) replays a
synthetic ITCH day from the namespace end as fast as it can (or at --pps). Reported per backend: packets
and messages received, receive rate while traffic flowed (rx_pps: packets / time from first to last
packet, 20 ms monitor granularity), drops at every layer (NIC/vdev, kernel ring, XDP rings, ours:
sent - received), gaps, and wire (ts_recv) -> ring and wire -> book latency percentiles.

Caveats: 2 vCPUs shared with other work; the sender runs on the same machine (one core), so the
measured rate is min(sender, receiver) - the sender's own rate is reported next to it; AF_XDP and DPDK
stamp ts_recv in user space per batch, AF_PACKET in the kernel, so their latency figures start at
different points; tail latencies include hypervisor pauses (report medians and p99).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason  # noqa: E402

PORT = 26477


def build_sender(tmp: Path) -> Path:
    exe = tmp / "capture_sender"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "capture_sender.c")], check=True)
    return exe


def make_traffic(tmp: Path, messages: int) -> tuple[Path, int]:
    out = tmp / "traffic.pcap"
    subprocess.run([sys.executable, "-m", "feedhandler.cli", "synth", str(out), "--messages", str(messages),
                    "--symbols", "50", "--seed", "7", "--format", "pcap", "--date", "2024-03-15"],
                   check=True, capture_output=True)
    from feedhandler.pipeline import Feed
    f = Feed(out, None)
    buf = __import__("numpy").empty(1 << 16, dtype=__import__("feedhandler.records", fromlist=["x"]).TICK_DTYPE)
    while f.read(buf):
        pass
    return out, int(f.stats()["packets"])


def run_backend(backend: str, traffic: Path, n_packets: int, sender: Path, pps: float, extra: list[str]) -> dict:
    with VethPair(tag="fhb") as v:
        cmd = [sys.executable, "-m", "feedhandler.live", "--iface", v.host_if, "--capture", backend,
               "--date", "2024-03-15", "--port", str(PORT), "--until-eos", "--idle-stop", "2",
               "--duration", "120", "--status-interval", "0.2", "--json", *extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            first = p.stderr.readline()
            if backend not in first:
                p.wait(timeout=30)
                return {"backend": backend, "error": (first + p.stderr.read()).strip()[-500:]}
            r = v.ns_run([str(sender), v.ns_if, str(traffic), str(pps)], timeout=300)
            out, err = p.communicate(timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        if p.returncode != 0:
            return {"backend": backend, "error": err.strip()[-500:]}
    s = json.loads(out)
    m = re.search(r"sent (\d+) packets in ([\d.]+) s \((\d+) pps", r.stdout)
    sent, sent_pps = (int(m.group(1)), int(m.group(3))) if m else (n_packets, None)
    cap = s["capture"]
    return {
        "backend": backend,
        "sent": sent,
        "sender_pps": sent_pps,
        "received_packets": s["packets"],
        "messages": s["messages"],
        "rx_pps": s["rx_pps"],
        "rx_msgs_per_s": s["rx_msgs_per_s"],
        "drops": dict(s["drops"], ours=max(0, sent - s["packets"])),
        "gaps": s["gaps"],
        "lost_messages": s["lost_messages"],
        "latency_ns": s["latency_ns"],
        "xdp_mode": cap.get("xdp_mode"),
        "zerocopy": cap.get("zerocopy"),
        "ts_recv_clock": s["ts_recv_clock"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5_000_000, help="ITCH messages in the traffic")
    ap.add_argument("--pps", type=float, default=0, help="sender rate (0: as fast as it can)")
    ap.add_argument("--backends", default="afxdp,dpdk,afpacket")
    ap.add_argument("--xdp-mode", default=None, choices=("native", "skb"), help="AF_XDP attach mode")
    ap.add_argument("--busy-poll-us", type=int, default=0, help="AF_XDP busy polling (us)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    why = veth_unavailable_reason()
    if why:
        print(f"bench_capture: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fh-bench-capture-") as td:
        tmp = Path(td)
        sender = build_sender(tmp)
        traffic, n_packets = make_traffic(tmp, a.messages)
        results = []
        for books in (False, True):
            for b in a.backends.split(","):
                extra = [] if books else ["--no-books"]
                if b == "afxdp" and a.xdp_mode:
                    extra += ["--xdp-mode", a.xdp_mode]
                if b == "afxdp" and a.busy_poll_us:
                    extra += ["--busy-poll-us", str(a.busy_poll_us)]
                r = run_backend(b, traffic, n_packets, sender, a.pps, extra)
                r["books"] = books
                results.append(r)
    ratio = {}
    for books in (False, True):
        by = {r["backend"]: r for r in results if r.get("books") == books}
        if by.get("afxdp", {}).get("rx_pps") and by.get("afpacket", {}).get("rx_pps"):
            ratio["with_books" if books else "capture_and_parse"] = round(by["afxdp"]["rx_pps"] / by["afpacket"]["rx_pps"], 2)
    report = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
        "traffic": {"messages": a.messages, "packets": n_packets, "sender_pps_target": a.pps or "max"},
        "results": results,
        "afxdp_over_afpacket": ratio,
    }
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"traffic: {a.messages:,} ITCH messages in {n_packets:,} MoldUDP64 packets; "
              f"{os.cpu_count()} CPUs, kernel {platform.release()}")
        print(f"{'backend':9s} {'books':5s} {'sent pps':>10s} {'rx pps':>10s} {'msgs/s':>11s} {'drops(ours)':>11s} "
              f"{'w->ring p50/p99 us':>19s} {'w->book p50/p99 us':>19s}")
        for r in results:
            if "error" in r:
                print(f"{r['backend']:9s} {'yes' if r['books'] else 'no':5s} error: {r['error']}")
                continue
            lr, lb = r["latency_ns"]["wire_to_ring"], r["latency_ns"]["wire_to_book"]

            def pp(d):
                return f"{d.get('p50', 0) / 1e3:.1f}/{d.get('p99', 0) / 1e3:.1f}"
            print(f"{r['backend']:9s} {'yes' if r['books'] else 'no':5s} {r['sender_pps'] or 0:>10,} {r['rx_pps'] or 0:>10,.0f} "
                  f"{r['rx_msgs_per_s'] or 0:>11,.0f} {r['drops']['ours']:>11,} {pp(lr):>19s} {pp(lb):>19s}")
        for k, v in ratio.items():
            print(f"AF_XDP / AF_PACKET receive rate ({k.replace('_', ' ')}): {v}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
