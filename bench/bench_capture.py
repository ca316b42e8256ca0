"""Live capture throughput and latency: AF_XDP, DPDK (net_af_packet vdev) and AF_PACKET on the same veth
traffic in the same run, with parsing (MoldUDP64 + ITCH 5.0) and books included.

    .venv/bin/python bench/bench_capture.py [--messages 5000000] [--pps 0] [--sender pcap|kernel]
        [--napi-rt PRIO] [--no-threaded-napi] [--tx-cpu 0] [--napi-cpu 1] [--rx-cpu -1] [--books both] [--json]
    .venv/bin/python bench/bench_capture.py --bare [--seconds 3] [--napi-rt PRIO]     # step 1: no parsing
    .venv/bin/python bench/bench_capture.py --consumer [--chunk 64] [--rate 0]   # the book consumer alone

(root: veth pairs, namespaces, XDP). Setup per backend (each in its own `feedhandler run` process, so
DPDK's EAL and every backend get the same conditions): a fresh veth pair with one end in a namespace;
the receive end gets GRO + threaded NAPI with its kthread pinned to --napi-cpu (see "the receive veth's
NAPI" below); the receiver runs on the host end with `--idle-stop 2`; the sender runs in the namespace
pinned to --tx-cpu: `--sender pcap` (default) replays a synthetic ITCH day with bench/capture_sender.c
(AF_PACKET sendmmsg: skbs), `--sender kernel` sends --messages/9 MoldUDP64 packets (4 adds, 4 deletes,
1 trade) from bench/xdp_gen.bpf.c run with BPF_PROG_RUN live frames (xdp_frames, as a NIC driver hands
them to XDP; no skb, no syscall per packet), paced at --pps. Reported per backend: packets and messages
received, receive rate while traffic flowed (rx_pps: packets / time from first to last packet, 20 ms
monitor granularity), drops at every layer (veth ring, XDP/XSK rings, kernel ring, ours), gaps, wire
(ts_recv) -> ring and wire -> book latency percentiles, and the CPU time of the receiver process, the
NAPI kthread and the sender while the traffic ran (packets per CPU-second = the rate each would reach on
a core of its own; the receiver process includes its consumer thread, which spins while it waits).

Caveats: 2 vCPUs shared with other work (the load average is printed); the sender and the receiver
share the machine, so the wall rate is min(sender, receiver, scheduler share); AF_XDP and DPDK stamp
ts_recv in user space per batch, AF_PACKET in the kernel, so their latency figures start at different
points; tail latencies include hypervisor pauses (report medians and p99).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

import feedhandler.capture.live as _live_pkg  # noqa: E402
from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason  # noqa: E402

PORT = 26477


def build_sender(tmp: Path) -> Path:
    exe = tmp / "capture_sender"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "capture_sender.c")], check=True)
    return exe


def build_bare(tmp: Path) -> tuple[Path, Path]:
    """bench/capture_bare.c (bare receivers, sendmmsg and in-kernel senders) and bench/xdp_gen.bpf.c."""
    exe = tmp / "capture_bare"
    subprocess.run(["gcc", "-O2", "-std=gnu11", f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}", "-o",
                    str(exe), str(HERE / "capture_bare.c"), str(ROOT / "csrc" / "afxdp" / "capture_afxdp.c"),
                    str(ROOT / "csrc" / "capture_afpacket.c"), "-lxdp", "-lbpf"], check=True)
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    obj = tmp / "xdp_gen.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{multiarch}", "-c",
                    str(HERE / "xdp_gen.bpf.c"), "-o", str(obj)], check=True)
    return exe, obj


# --- the receive veth's NAPI, and CPU accounting ------------------------------------------------------
# On a veth pair the receive-side kernel work (veth NAPI poll: XDP program + copy into the UMEM, or skb
# + TPACKET copy + IP stack) runs in the softirq of the CPU that *sends*, so a receiver on the other core
# cannot be faster than the sender's core allows. AF_XDP busy polling would move it into the receive
# thread, but since Linux 6.13 (commit 86e25f40aa1e "net: napi: Add napi_config" and its fix "xsk: Bring
# back busy polling support") an XSK socket gets its NAPI id only at bind time and only in zero-copy
# mode; veth has no zero-copy, so SO_BUSY_POLL on a copy-mode socket polls nothing here (its
# SO_INCOMING_NAPI_ID stays 0). What works: threaded NAPI on the receive veth (GRO on so that veth uses
# NAPI for skbs too, then /sys/class/net/<veth>/threaded = 1) with the NAPI kthread pinned to the
# receiver's core. These are attributes of the veth this benchmark creates and deletes; no sysctl is
# touched.

def mold_template(tmp: Path, src_ip: str, dst_ip: str) -> tuple[Path, str, int]:
    """One MoldUDP64 packet for the in-kernel sender (bench/xdp_gen.bpf.c): 4 ITCH Add Orders, the 4
    Order Deletes of those orders, 1 Trade (9 messages, 344-byte frame, like the synthetic day's ~330
    bytes / 8.8 messages). The generator writes each packet's sequence number and fresh order references
    (ref = seq + i), so every packet adds and removes 4 orders of one book and the stream is gap-free.
    Returns (frame file, MOLD_SPEC for capture_bare gen, messages per packet)."""
    import socket
    import struct
    msgs, ref_offs = [], []
    ts = (9 * 3600 + 30 * 60) * 10**9
    stock = b"GENX    "
    for i in range(4):      # Add Order: type locate tracking ts48 ref side shares stock price
        msgs.append(struct.pack(">cHH6sQcI8sI", b"A", 1, 0, ts.to_bytes(6, "big"), 0, b"B" if i % 2 else b"S",
                                100, stock, 1_000_000 + (i // 2) * 100 * (1 if i % 2 else -1)))
    for i in range(4):      # Order Delete: type locate tracking ts48 ref
        msgs.append(struct.pack(">cHH6sQ", b"D", 1, 0, ts.to_bytes(6, "big"), 0))
    msgs.append(struct.pack(">cHH6sQcI8sIQ", b"P", 1, 0, ts.to_bytes(6, "big"), 0, b"B", 100, stock, 1_000_000, 1))
    payload = bytearray(b"GEN0000001" + struct.pack(">QH", 1, len(msgs)))
    for i, m in enumerate(msgs):
        payload += struct.pack(">H", len(m))
        if i < 8:
            ref_offs.append((42 + len(payload) + 11, i % 4))     # the 8-byte order reference
        payload += m
    udp = struct.pack(">HHHH", 40001, PORT, 8 + len(payload), 0) + payload
    iph = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                                socket.inet_aton(src_ip), socket.inet_aton(dst_ip)))
    c = sum(int.from_bytes(iph[i:i + 2], "big") for i in range(0, 20, 2))
    while c >> 16:
        c = (c & 0xFFFF) + (c >> 16)
    iph[10:12] = (~c & 0xFFFF).to_bytes(2, "big")
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00" + bytes(iph) + udp
    path = tmp / "mold_template.bin"
    path.write_bytes(frame)
    spec = ",".join(["1", str(len(msgs))] + [f"{o}:{d}" for o, d in ref_offs])
    return path, spec, len(msgs)


def napi_threads(iface: str) -> list[int]:
    """pids of the threaded-NAPI kthreads "napi/<iface>-<id>"."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            comm = Path(f"/proc/{d}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith(f"napi/{iface}-"):
            out.append(int(d))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int, threads: bool = True) -> int:
    """ns of CPU a process has used so far, all its threads including exited ones (utime + stime of
    /proc/PID/stat, clock-tick resolution), or a kthread's run time (threads=False: schedstat, ns);
    0 when gone. Without IRQ time accounting (this kernel), softirq work is charged to the task it
    interrupted."""
    try:
        if threads:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) * 10**9 // CLK_TCK
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def veth_set(iface: str, attr: str, value) -> None:
    Path(f"/sys/class/net/{iface}/{attr}").write_text(f"{value}\n")


def rx_veth_before(v: VethPair, threaded: bool) -> None:
    """GRO on before the receiver attaches: veth then runs NAPI for skbs too (TPACKET path), and the
    XDP attach finds NAPI instances that threaded mode can move into a kthread. TSO off on the sending
    end: veth hands an skb to the peer's NAPI only when it is eligible for GRO, which an AF_PACKET-sent
    skb from a TSO-capable device is not (it would be processed by netif_rx on the sending CPU)."""
    if threaded:
        subprocess.run(["ethtool", "-K", v.host_if, "gro", "on"], check=True, capture_output=True)
        subprocess.run(v.ns_cmd(["ethtool", "-K", v.ns_if, "tso", "off"]), check=True, capture_output=True)


NAPI_RT_PRIO = 0                 # > 0 (--napi-rt): SCHED_FIFO priority of the veth's NAPI kthread


def rx_veth_after(iface: str, threaded: bool, napi_cpu: int) -> list[int]:
    """Once the receiver is attached: threaded NAPI, kthreads pinned to napi_cpu (and SCHED_FIFO with
    --napi-rt, as a NIC's interrupt would preempt other work). Returns their pids."""
    if not threaded:
        return []
    veth_set(iface, "threaded", 1)
    time.sleep(0.1)
    pids = napi_threads(iface)
    for pid in pids:
        if napi_cpu >= 0:
            os.sched_setaffinity(pid, {napi_cpu})
        if NAPI_RT_PRIO > 0:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(NAPI_RT_PRIO))
    return pids


def veth_drops(v: VethPair) -> dict:
    """Frames the veth pair itself dropped (ethtool -S on both ends, non-zero drop/error counters)."""
    out = {}
    for where, cmd in (("ns", v.ns_cmd(["ethtool", "-S", v.ns_if])), ("host", ["ethtool", "-S", v.host_if])):
        r = subprocess.run(cmd, capture_output=True, text=True)
        for line in r.stdout.splitlines():
            k, _, val = line.strip().partition(":")
            if ("drop" in k or "err" in k) and val.strip().isdigit() and int(val):
                out[f"{where}:{k.strip()}"] = int(val)
    return out


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def make_traffic(tmp: Path, messages: int) -> tuple[Path, int]:
    out = tmp / "traffic.pcap"
    subprocess.run([sys.executable, "-m", "feedhandler.cli", "synth", str(out), "--messages", str(messages),
                    "--symbol-count", "50", "--seed", "7", "--format", "pcap", "--date", "2024-03-15"],
                   check=True, capture_output=True)
    from feedhandler.pipeline import Feed
    f = Feed(out, None)
    buf = __import__("numpy").empty(1 << 16, dtype=__import__("feedhandler.records", fromlist=["x"]).TICK_DTYPE)
    while f.read(buf):
        pass
    return out, int(f.stats()["packets"])


def run_backend(backend: str, traffic: Path, n_packets: int, sender: Path, pps: float, extra: list[str],
                threaded: bool = True, tx_cpu: int = 0, napi_cpu: int = 1, rx_cpu: int = -1,
                kernel_gen: tuple[Path, Path] | None = None) -> dict:
    """One backend on a fresh veth pair. Sender: bench/capture_sender.c replaying `traffic` (sendmmsg),
    or with kernel_gen=(capture_bare, xdp_gen.bpf.o) the in-kernel generator sending n_packets copies of
    the MoldUDP64 template (mold_template) with fresh sequence numbers, paced at pps (0: flat out)."""
    with VethPair(tag="fhb") as v:
        rx_veth_before(v, threaded)
        cmd = [sys.executable, "-m", "feedhandler.live", "--iface", v.host_if, "--capture", backend,
               "--date", "2024-03-15", "--udp-port", str(PORT), "--idle-stop", "2",
               "--duration", "120", "--status-interval", "0.2", "--json", *extra]
        if rx_cpu >= 0:
            cmd = ["taskset", "-c", str(rx_cpu), *cmd]
        env = dict(os.environ, LIBXDP_SKIP_DISPATCHER="1")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            first = p.stderr.readline()
            if backend not in first:
                p.wait(timeout=30)
                return {"backend": backend, "error": (first + p.stderr.read()).strip()[-500:]}
            napi = rx_veth_after(v.host_if, threaded, napi_cpu)
            rx0, napi0, tx0 = cpu_ns(p.pid), sum(cpu_ns(q, False) for q in napi), children_cpu_s()
            if kernel_gen:
                tpl, spec, _ = mold_template(traffic.parent, v.ns_addr, v.host_addr)
                send = [str(kernel_gen[0]), "gen", v.ns_if, "300", str(tx_cpu), str(kernel_gen[1]), str(tpl), spec,
                        str(n_packets), str(pps)]
            else:
                send = [str(sender), v.ns_if, str(traffic), str(pps)]
            if tx_cpu >= 0 and not kernel_gen:
                send = ["taskset", "-c", str(tx_cpu), *send]
            r = v.ns_run(send, timeout=300)
            tx_cpu_s = children_cpu_s() - tx0
            time.sleep(0.3)     # the receiver finishes what is queued
            rx_cpu_s = (cpu_ns(p.pid) - rx0) * 1e-9
            napi_cpu_s = (sum(cpu_ns(q, False) for q in napi) - napi0) * 1e-9
            veth = veth_drops(v)
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
    if kernel_gen:
        g = json.loads(r.stdout.strip().splitlines()[-1])
        sent, sent_pps = g["packets"], round(g["pps"])
    # frames the sending veth could not hand over (its peer's ring was full): dropped before any receiver
    veth_lost = sum(v for k, v in veth.items() if k.startswith("ns:") and "xdp_xmit_err" in k)
    cap = s["capture"]
    pk = s["packets"]
    return {
        "backend": backend,
        "sent": sent,
        "sender_pps": sent_pps,
        "received_packets": pk,
        "messages": s["messages"],
        "rx_pps": s["rx_pps"],
        "rx_msgs_per_s": s["rx_msgs_per_s"],
        # drops by layer: nic = the veth could not hand the frame over (its 256-frame ring to the receiving
        # side was full: what a NIC's rx ring overflow is); capture = the XDP/XSK rings, the TPACKET ring or
        # the NIC queue of our socket; ours = lost after the capture layer (our ring, or a packet that
        # reached us and was not framed): must be 0
        "drops": dict(s["drops"], nic_lost=veth_lost,
                      capture=s["drops"]["kernel"] + s["drops"]["xdp"] + s["drops"]["nic"],
                      ours=max(0, sent - veth_lost - pk - s["drops"]["kernel"] - s["drops"]["xdp"]
                               - s["drops"]["nic"]) + s["drops"]["ring"], veth=veth),
        "framing_errors": {"duplicate_packets": (s.get("framing") or {}).get("duplicate_packets", 0), "hold_failed": (s.get("framing") or {}).get("hold_failed", 0)},
        "gaps": s["gaps"],
        "lost_messages": s["lost_messages"],
        "framing": s.get("framing"),
        "latency_ns": s["latency_ns"],
        "xdp_mode": cap.get("xdp_mode"),
        "zerocopy": cap.get("zerocopy"),
        "ts_recv_clock": s["ts_recv_clock"],
        "threaded_napi": bool(napi),
        "capture_counters": {k: cap[k] for k in ("batches", "blocks", "polls", "idle", "rx_ring_full", "rx_fill_ring_empty", "rx_dropped", "fill_short",
                                                  "kernel_drops", "kernel_freezes", "xdp_no_socket", "rx_timestamp", "ts_hw", "meta_no_stamp", "meta_last_errno") if k in cap},
        # CPU time while the sender ran (+0.3 s): receiver process (all threads), the veth's NAPI
        # kthread(s), the sender; packets per CPU-second is the rate each would reach on a core of its own
        "cpu_s": {"receiver": round(rx_cpu_s, 4), "napi": round(napi_cpu_s, 4), "sender": round(tx_cpu_s, 4)},
        "rx_pkts_per_cpu_s": round(pk / (rx_cpu_s + napi_cpu_s)) if rx_cpu_s + napi_cpu_s > 0 else None,
        "tx_pkts_per_cpu_s": round(sent / tx_cpu_s) if tx_cpu_s > 0 else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5_000_000, help="ITCH messages in the traffic")
    ap.add_argument("--pps", type=float, default=0, help="sender rate (0: as fast as it can)")
    ap.add_argument("--backends", default="afxdp,dpdk,afpacket")
    ap.add_argument("--xdp-mode", default=None, choices=("native", "skb"), help="AF_XDP attach mode")
    ap.add_argument("--rx-thread-cpu", type=int, default=None, help="feedhandler run --rx-cpu (receive thread)")
    ap.add_argument("--book-thread-cpu", type=int, default=None, help="feedhandler run --book-cpu (book thread)")
    ap.add_argument("--xdp-rx-timestamp", default=None, choices=("auto", "on", "off"),
                    help="AF_XDP: the XDP RX metadata timestamp program (feedhandler run default: auto)")
    ap.add_argument("--busy-poll-us", type=int, default=0,
                    help="AF_XDP busy polling (us); a no-op for copy-mode sockets on Linux >= 6.13 (see above)")
    ap.add_argument("--no-threaded-napi", dest="threaded", action="store_false",
                    help="leave the receive veth's NAPI in softirq (on the sending CPU), as before")
    ap.add_argument("--tx-cpu", type=int, default=0, help="core of the sender (-1: any)")
    ap.add_argument("--napi-cpu", type=int, default=1, help="core of the receive veth's NAPI kthread (-1: any)")
    ap.add_argument("--rx-cpu", type=int, default=-1, help="core of the receiver process (-1: any)")
    ap.add_argument("--napi-rt", type=int, default=0, metavar="PRIO",
                    help="SCHED_FIFO priority for the receive veth's NAPI kthread (0: normal): on a shared "
                         "machine it otherwise waits behind other work while the veth's 256-frame ring overflows")
    ap.add_argument("--bare", action="store_true",
                    help="step 1 only: bare C receivers (bench/capture_bare.c) against the sendmmsg and the "
                         "in-kernel (BPF_PROG_RUN) senders, 60-byte UDP frames, no parsing")
    ap.add_argument("--sender", choices=("pcap", "kernel"), default="pcap",
                    help="pcap: replay the synthetic day with sendmmsg (bench/capture_sender.c); kernel: the "
                         "in-kernel generator (bench/xdp_gen.bpf.c) sends --messages/9 MoldUDP64 packets of "
                         "4 adds + 4 deletes + 1 trade as xdp_frames, like a NIC driver would hand them over")
    ap.add_argument("--seconds", type=float, default=3.0, help="--bare: seconds counted per receiver")
    ap.add_argument("--books", choices=("both", "yes", "no"), default="both",
                    help="rows with books, without (--no-books: capture + parse only), or both")
    ap.add_argument("--consumer", action="store_true",
                    help="no network, no root: the live book consumer alone (feedhandler.live's consume "
                         "configuration, before and after livefast) against BookSet.apply on the same records")
    ap.add_argument("--chunk", type=int, default=64,
                    help="--consumer: records per ring publish (the live receive thread publishes what one "
                         "source call returned: ~9 records a packet, <= 64 packets a NAPI poll)")
    ap.add_argument("--rate", type=float, default=0,
                    help="--consumer: records/s the producer publishes at (0: as fast as it can); a paced "
                         "producer gives the consumer the small batches of a live feed")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.consumer:
        return consumer_main(a)
    why = veth_unavailable_reason()
    if why:
        print(f"bench_capture: {why}", file=sys.stderr)
        return 2
    global NAPI_RT_PRIO
    NAPI_RT_PRIO = a.napi_rt
    if a.bare:
        return bare_main(a)
    with tempfile.TemporaryDirectory(prefix="fh-bench-capture-") as td:
        tmp = Path(td)
        sender = build_sender(tmp)
        kernel_gen = None
        if a.sender == "kernel":
            kernel_gen = build_bare(tmp)
            traffic, n_packets = tmp / "unused.pcap", a.messages // 9
        else:
            traffic, n_packets = make_traffic(tmp, a.messages)
        results = []
        for books in {"both": (False, True), "yes": (True,), "no": (False,)}[a.books]:
            for b in a.backends.split(","):
                extra = [] if books else ["--no-books"]
                if b == "afxdp" and a.xdp_mode:
                    extra += ["--xdp-mode", a.xdp_mode]
                if b == "afxdp" and a.busy_poll_us:
                    extra += ["--busy-poll-us", str(a.busy_poll_us)]
                if a.rx_thread_cpu is not None:
                    extra += ["--rx-cpu", str(a.rx_thread_cpu)]
                if a.book_thread_cpu is not None:
                    extra += ["--book-cpu", str(a.book_thread_cpu)]
                if b == "afxdp" and a.xdp_rx_timestamp:
                    extra += ["--xdp-rx-timestamp", a.xdp_rx_timestamp]
                r = run_backend(b, traffic, n_packets, sender, a.pps, extra, a.threaded, a.tx_cpu, a.napi_cpu,
                                a.rx_cpu, kernel_gen)
                r["books"] = books
                results.append(r)
    ratio = {}
    for books in (False, True):
        by = {r["backend"]: r for r in results if r.get("books") == books}
        if by.get("afxdp", {}).get("rx_pps") and by.get("afpacket", {}).get("rx_pps"):
            ratio["with_books" if books else "capture_and_parse"] = round(by["afxdp"]["rx_pps"] / by["afpacket"]["rx_pps"], 2)
    ratio_cpu = {}
    for books in (False, True):
        by = {r["backend"]: r for r in results if r.get("books") == books}
        if by.get("afxdp", {}).get("rx_pkts_per_cpu_s") and by.get("afpacket", {}).get("rx_pkts_per_cpu_s"):
            ratio_cpu["with_books" if books else "capture_and_parse"] = round(
                by["afxdp"]["rx_pkts_per_cpu_s"] / by["afpacket"]["rx_pkts_per_cpu_s"], 2)
    report = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
        "traffic": {"messages": a.messages, "packets": n_packets, "sender_pps_target": a.pps or "max",
                    "sender": a.sender},
        "setup": {"threaded_napi": a.threaded, "napi_rt": a.napi_rt, "tx_cpu": a.tx_cpu, "napi_cpu": a.napi_cpu, "rx_cpu": a.rx_cpu,
                  "loadavg": os.getloadavg()},
        "results": results,
        "afxdp_over_afpacket": ratio,
        "afxdp_over_afpacket_per_cpu": ratio_cpu,
    }
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"traffic: {a.messages:,} ITCH messages in {n_packets:,} MoldUDP64 packets; "
              f"{os.cpu_count()} CPUs, kernel {platform.release()}")
        print(f"{'backend':9s} {'books':5s} {'sent pps':>10s} {'rx pps':>10s} {'msgs/s':>11s} {'lost: nic':>10s} "
              f"{'capture':>8s} {'ours':>5s} "
              f"{'w->ring p50/p99 us':>19s} {'w->book p50/p99 us':>19s} {'rx+napi cpu s':>13s} {'rx pkt/cpu-s':>12s}")
        for r in results:
            if "error" in r:
                print(f"{r['backend']:9s} {'yes' if r['books'] else 'no':5s} error: {r['error']}")
                continue
            lr, lb = r["latency_ns"]["wire_to_ring"], r["latency_ns"]["wire_to_book"]

            def pp(d):
                return f"{d.get('p50', 0) / 1e3:.1f}/{d.get('p99', 0) / 1e3:.1f}"
            print(f"{r['backend']:9s} {'yes' if r['books'] else 'no':5s} {r['sender_pps'] or 0:>10,} {r['rx_pps'] or 0:>10,.0f} "
                  f"{r['rx_msgs_per_s'] or 0:>11,.0f} {r['drops']['nic_lost']:>10,} {r['drops']['capture']:>8,} "
                  f"{r['drops']['ours']:>5,} {pp(lr):>19s} {pp(lb):>19s} "
                  f"{r['cpu_s']['receiver']:>6.2f}+{r['cpu_s']['napi']:<6.2f} {r['rx_pkts_per_cpu_s'] or 0:>12,}")
        for k, v in ratio.items():
            print(f"AF_XDP / AF_PACKET receive rate ({k.replace('_', ' ')}): {v}x")
        for k, v in report["afxdp_over_afpacket_per_cpu"].items():
            print(f"AF_XDP / AF_PACKET packets per receive-side CPU-second ({k.replace('_', ' ')}): {v}x")
        print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


def run_bare(exe: Path, gen_obj: Path, sender: str, rx: str, seconds: float, threaded: bool, tx_cpu: int,
             napi_cpu: int, rx_cpu: int, busy_poll_us: int) -> dict:
    """One bare receiver (afxdp|afpacket) against one sender (sendmmsg|kernel) on a fresh veth pair."""
    with VethPair(tag="fhx") as v:
        rx_veth_before(v, threaded)
        env = dict(os.environ, LIBXDP_SKIP_DISPATCHER="1")
        if rx == "afxdp":
            obj = Path(_live_pkg.__file__).resolve().parent / "xdp_feed.bpf.o"   # the installed program
            cmd = [str(exe), "rx-afxdp", v.host_if, str(seconds), str(rx_cpu), str(obj), str(PORT),
                   str(busy_poll_us), "256", "native"]
        else:
            cmd = [str(exe), "rx-afpacket", v.host_if, str(seconds), str(rx_cpu)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = p.stderr.readline()
            if "ready" not in line:
                p.wait(timeout=30)
                return {"sender": sender, "receiver": rx, "error": (line + p.stderr.read()).strip()[-400:]}
            rx_veth_after(v.host_if, threaded, napi_cpu)
            if sender == "kernel":
                send = [str(exe), "gen", v.ns_if, str(seconds + 1), str(tx_cpu), str(gen_obj), "60"]
            else:
                send = [str(exe), "tx", v.ns_if, str(seconds + 1), str(tx_cpu), "60", str(PORT)]
            r = v.ns_run(send, timeout=120)
            out, err = p.communicate(timeout=60)
            veth = veth_drops(v)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    rxr = json.loads(out.strip().splitlines()[-1])
    txr = json.loads(r.stdout.strip().splitlines()[-1])
    rcpu = rxr["cpu_s"] + rxr["napi_cpu_s"]
    return {"sender": sender, "receiver": rx, "threaded_napi": threaded, "tx": txr, "rx": rxr, "veth_drops": veth,
            "rx_pps": rxr["pps"], "rx_pkts_per_cpu_s": round(rxr["packets"] / rcpu) if rcpu > 0 else None}


def consumer_main(a) -> int:
    """The live consumer thread alone: records of the synthetic day (decoded once) are published into
    a Ring by a producer thread in chunks of --chunk, paced at --rate, and consumed with
    BookSet.consume configured as feedhandler.live.run configures it: "before livefast" (a Python
    callback per batch filling the wire->book histogram with numpy), "after, --out" (native histogram,
    a no-op Python callback, gathered batches), "after_spin" (native histogram, no callback, the ring's
    spin/yield wait) and "after" (native histogram, no callback, sleeping idle wait: the default live
    path). "apply" is the file replay's BookSet.apply over the whole array (no ring)."""
    import threading

    import numpy as np

    from feedhandler.books import LATENCY_BUCKETS, BookSet
    from feedhandler import live, records
    from feedhandler.pipeline import Feed
    from feedhandler.ring import Ring

    with tempfile.TemporaryDirectory(prefix="fh-bench-consumer-") as td:
        out = Path(td) / "traffic.pcap"
        subprocess.run([sys.executable, "-m", "feedhandler.cli", "synth", str(out), "--messages", str(a.messages),
                        "--symbol-count", "50", "--seed", "7", "--format", "pcap", "--date", "2024-03-15"],
                       check=True, capture_output=True)
        ticks = Feed(out, date="2024-03-15").read_all()
    n = ticks.shape[0]
    # a recent ts_recv on every book record, as the capture stamps it
    now = time.time_ns()
    for name in ("mbo", "trade"):
        v = ticks.view(records.DTYPES[name])
        sel = ticks["rtype"] == records.RTYPE[name]
        v["ts_recv"][sel] = now
    chunk = max(1, a.chunk)

    def run(mode):
        ring = Ring(live.RING_CAPACITY, overflow="block")
        books = BookSet()

        def produce():
            i = 0
            t0 = time.perf_counter()
            while i < n:
                ring.push(ticks[i:i + chunk])
                i += chunk
                if a.rate > 0:
                    ahead = i / a.rate - (time.perf_counter() - t0)
                    if ahead > 0.0002:
                        time.sleep(ahead)       # releases the GIL, as the native receive thread never holds it
            ring.close()

        res = {}

        def consume():
            c0 = time.thread_time()
            t0 = time.perf_counter()
            if mode == "before":
                lat = live._BookLatency()
                batches = [0]

                def cb(b):
                    batches[0] += 1
                    lat.add(b)
                got = books.consume(ring, live.BATCH, cb)
                res["batches"] = batches[0]
            elif mode == "after_cb":
                hist = np.zeros(LATENCY_BUCKETS, np.uint64)
                batches = [0]

                def cb(b):
                    batches[0] += 1
                got = books.consume(ring, live.BATCH, cb, latency_hist=hist, gather_us=live.GATHER_US,
                                    idle_sleep_us=live.IDLE_SLEEP_US)
                res["batches"] = batches[0]
            else:
                hist = np.zeros(LATENCY_BUCKETS, np.uint64)
                got = books.consume(ring, live.BATCH, None, latency_hist=hist,
                                    idle_sleep_us=live.IDLE_SLEEP_US if mode == "after" else 0.0)
            res["wall_s"] = time.perf_counter() - t0
            res["consumer_cpu_s"] = time.thread_time() - c0
            res["records"] = got

        if mode == "apply":
            t = ticks.copy()
            c0, t0 = time.process_time(), time.perf_counter()
            BookSet().apply(t)
            return {"records": n, "wall_s": time.perf_counter() - t0, "consumer_cpu_s": time.process_time() - c0}
        th_c = threading.Thread(target=consume)
        th_p = threading.Thread(target=produce)
        th_c.start()
        th_p.start()
        th_p.join()
        th_c.join()
        return res

    rows = {}
    for mode in ("apply", "before", "after_cb", "after_spin", "after"):
        r = run(mode)
        r["records_per_s"] = round(r["records"] / r["wall_s"]) if r["wall_s"] > 0 else None
        r["records_per_cpu_s"] = round(r["records"] / r["consumer_cpu_s"]) if r["consumer_cpu_s"] > 0 else None
        rows[mode] = r
    report = {"records": n, "chunk": chunk, "rate": a.rate, "batch": live.BATCH, "rows": rows,
              "load_average": os.getloadavg()[0]}
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"consumer alone: {n:,} records of the synthetic day, published {chunk} at a time; "
          f"producer rate {f'{a.rate:,.0f} rec/s' if a.rate else 'max'}; load average {report['load_average']:.2f}")
    label = {"apply": "BookSet.apply (file replay)", "before": "consume + numpy callback (before)",
             "after_cb": "consume + native hist + callback (--out)",
             "after_spin": "consume + native hist, ring back-off wait", "after": "consume + native hist (after)"}
    for mode, r in rows.items():
        print(f"  {label[mode]:42s} {r['records_per_s']:>12,} rec/s  {r['records_per_cpu_s'] or 0:>12,} rec/CPU-s"
              + (f"  {r['batches']:,} batches" if "batches" in r else ""))
    return 0


def bare_main(a) -> int:
    with tempfile.TemporaryDirectory(prefix="fh-bench-bare-") as td:
        exe, gen_obj = build_bare(Path(td))
        results = []
        for sender in ("sendmmsg", "kernel"):
            for rx in [b for b in a.backends.split(",") if b in ("afxdp", "afpacket")]:
                results.append(run_bare(exe, gen_obj, sender, rx, a.seconds, a.threaded, a.tx_cpu, a.napi_cpu,
                                        a.napi_cpu if a.rx_cpu < 0 else a.rx_cpu, a.busy_poll_us))
    report = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "loadavg": os.getloadavg()},
              "frame_bytes": 60, "results": results}
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"bare receive, 60-byte UDP frames, {a.seconds:g} s per row; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs")
    print(f"{'sender':9s} {'receiver':9s} {'tx pps':>10s} {'tx pkt/cpu-s':>12s} {'rx pps':>10s} {'rx cpu s':>8s} "
          f"{'napi cpu s':>10s} {'rx pkt/cpu-s':>12s}  veth drops")
    for r in results:
        if "error" in r:
            print(f"{r['sender']:9s} {r['receiver']:9s} error: {r['error']}")
            continue
        t, x = r["tx"], r["rx"]
        print(f"{r['sender']:9s} {r['receiver']:9s} {t['pps']:>10,.0f} {t['pps_per_cpu_s']:>12,.0f} {x['pps']:>10,.0f} "
              f"{x['cpu_s']:>8.3f} {x['napi_cpu_s']:>10.3f} {r['rx_pkts_per_cpu_s'] or 0:>12,}  "
              f"{sum(r['veth_drops'].values()):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
