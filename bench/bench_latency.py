"""Wire -> book latency of `feedhandler run`, batched (default) and --latency (run to completion), per
capture backend and packet rate, next to a bare C receiver stamping the same packets (the floor).

    sudo .venv/bin/python bench/bench_latency.py [--rates 20000,50000,100000] [--seconds 2] [--msgs 4]
                                                  [--backends afxdp,afpacket,dpdk] [--reps 1] [--json OUT]

Setup, per measurement (one run = every rate x backend x {floor, batched, latency}, interleaved):
- A fresh veth pair (VethPair: created and deleted here); the sender runs in its namespace, pinned to
  --tx-cpu; the receiver on the host end, pinned to --rx-cpu (the whole receiver process: in the batched
  mode its receive and book threads share that core).
- Sender: bench/latency_tools.c `send`: MoldUDP64 packets of --msgs ITCH 5.0 messages (adds and deletes
  on 8 books of about 32 orders: every message changes a book), one send() per packet on an AF_PACKET raw
  socket, paced by absolute sleeps at the rate.
- WIRE TIME: the sender reads CLOCK_REALTIME right before each send() and writes it (minus the trading
  day's midnight) into the 6-byte timestamp of every message of the packet; the decoder turns it into
  ts_event. "wire -> book" is CLOCK_REALTIME on the receiver after the book applied the message minus
  that stamp: it includes the sender's send() syscall, the veth hand-over and the receive side's kernel
  work (the XDP program and copy into the UMEM, or the skb and the TPACKET copy), then ours. Both ends
  read the same system clock (one host). Not the kernel's RX stamp: AF_XDP frames have none here (this
  kernel refuses the XDP RX-metadata timestamp program on veth, and veth has no NIC stamp anyway), so the
  sender's stamp is the one definition every backend and the floor share.
- Floor: bench/latency_tools.c `rx-afxdp` / `rx-afpacket`: the same capture sources (csrc/afxdp,
  csrc/capture_afpacket.c TPACKET_V2) busy-polled by a bare loop that reads each packet's first message
  stamp; no framing, decoding or books. DPDK has no bare floor here (its EAL needs its own program; the
  AF_PACKET floor is the kernel path its net_af_packet vdev uses).
- Per message: every book message's sample. Per packet: when the packet's last message is in the book
  (latency mode: one sample per distinct sender stamp; the batched mode's consumer keeps per-message
  samples only). Percentiles are bucket lower bounds of fh/latency.h's histogram (12.5 % resolution).
Caveats: a 2-vCPU VM shared with other work: the hypervisor steals up to milliseconds at a time, so p99
is the host's as much as ours; compare within a run (the ratio to the floor) and say so.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PORT = 26477
# floor / latency: busy-poll always; floor-w / latency-w: busy-poll for --spin-us after the last packet,
# then wait in the source (woken by the next packet); batched: the default mode
MODES = ("floor", "floor-w", "batched", "latency", "latency-w")


def build_tools(tmp: Path) -> Path:
    exe = tmp / "latency_tools"
    subprocess.run(["gcc", "-O2", "-std=gnu11", f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}", "-o", str(exe),
                    str(HERE / "latency_tools.c"), str(ROOT / "csrc" / "afxdp" / "capture_afxdp.c"),
                    str(ROOT / "csrc" / "capture_afpacket.c"), "-lxdp", "-lbpf"], check=True)
    return exe


def trading_day() -> tuple[str, int]:
    from zoneinfo import ZoneInfo

    from feedhandler.pipeline import midnight_ns_for_date
    day = datetime.datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    return day, int(midnight_ns_for_date(day))


# ---- the receiver process (feedhandler run, in-process API so that wire = the sender's stamp) ---------
def child_main(cfg: dict) -> int:
    from feedhandler.live import LiveOptions, latency_percentiles, run

    opts = LiveOptions(iface=cfg["iface"], capture=cfg["backend"], date=cfg["day"], udp_port=PORT,
                       latency=cfg["mode"].startswith("latency"), latency_wire="ts_event", count=cfg["messages"],
                       latency_spin_us=cfg["spin_us"] if cfg["mode"] == "latency-w" else 0.0,
                       idle_stop=2.0, duration=cfg["timeout"], status_interval=0,
                       on_ready=lambda: print("ready", flush=True), source_kw=cfg.get("source_kw") or {})
    s = run(opts)
    lm = s.get("latency_mode") or {}
    out = {
        "backend": s["backend"], "packets": s["packets"], "messages": s["messages"],
        "drops": s["drops"], "gaps": s["gaps"], "lost_messages": s["lost_messages"],
        "per_message": lm.get("wire_to_book_per_message") or s["latency_ns"]["wire_to_book"],
        "per_packet": lm.get("wire_to_book_per_packet"),
        "messages_per_packet": lm.get("messages_per_packet") or (round(s["messages"] / s["packets"], 2) if s["packets"] else None),
        "capture": {k: v for k, v in s["capture"].items() if isinstance(v, (int, float, bool, str))},
        "idle_waits": lm.get("idle_waits"),
    }
    del latency_percentiles
    print(json.dumps(out), flush=True)
    return 0


# ---- one measurement ---------------------------------------------------------------------------------
def _wait_ready(p: subprocess.Popen, timeout: float = 30.0) -> str | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = p.stdout.readline()
        if not line:
            return "exited before it was ready: " + (p.stderr.read() or "")[-500:]
        if line.strip() == "ready":
            return None
    return "not ready in time"


def measure(tools: Path, backend: str, mode: str, rate: float, packets: int, msgs: int, day: str, midnight: int,
            tx_cpu: int, rx_cpu: int, spin_us: float, rx_nice: int = 0) -> dict:
    from feedhandler.capture.live.vethpair import VethPair

    row = {"backend": backend, "mode": mode, "rate": rate}
    with VethPair(tag="fbl") as v:
        timeout = packets / rate + 20
        if mode.startswith("floor"):
            spin = str(spin_us if mode == "floor-w" else 0)
            if backend == "afxdp":
                from feedhandler.capture.live._afxdp_source import bpf_object_path
                cmd = [str(tools), "rx-afxdp", v.host_if, str(packets), str(timeout), str(rx_cpu), bpf_object_path(),
                       str(PORT), str(midnight), spin]
            else:
                cmd = [str(tools), "rx-afpacket", v.host_if, str(packets), str(timeout), str(rx_cpu), str(midnight), spin,
                       "3" if backend == "afpacket-v3" else "2"]
            env = dict(os.environ, LIBXDP_SKIP_DISPATCHER="1")
        else:
            cfg = {"iface": v.host_if, "backend": "afpacket" if backend == "afpacket-v3" else backend, "mode": mode,
                   "day": day, "messages": packets * msgs, "timeout": timeout, "spin_us": spin_us,
                   # afpacket-v3: the latency mode on TPACKET_V3 blocks (1 ms retire timer) instead of V2 slots
                   "source_kw": {"tpacket_version": 3} if backend == "afpacket-v3" else {}}
            cmd = ["taskset", "-c", str(rx_cpu), sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)]
            env = dict(os.environ, LIBXDP_SKIP_DISPATCHER="1")
        if rx_nice:
            cmd = ["nice", "-n", str(rx_nice), *cmd]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            why = _wait_ready(p)
            if why:
                return dict(row, error=why.strip()[-500:])
            time.sleep(0.2)
            send = [str(tools), "send", v.ns_if, str(rate), str(packets), str(msgs), str(midnight), str(PORT), str(tx_cpu)]
            if rx_nice:
                send = ["nice", "-n", str(rx_nice), *send]
            r = v.ns_run(send, timeout=timeout + 30, check=False)
            if r.returncode != 0:
                return dict(row, error="sender: " + r.stderr[-300:])
            row["sent"] = json.loads(r.stdout)
            out, err = p.communicate(timeout=timeout + 30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    if p.returncode != 0:
        return dict(row, error=err.strip()[-500:])
    res = json.loads(out.strip().splitlines()[-1])
    res["capture_backend"] = res.pop("backend", backend)     # the row keeps the bench's name (afpacket-v3)
    if mode.startswith("floor"):
        pct = {k: res[k] for k in ("count", "p50", "p90", "p99", "p99.9") if k in res}
        res = {"packets": res["packets"], "per_message": pct, "per_packet": pct, "messages_per_packet": msgs}
    return dict(row, **res)


def _med(rows: list[dict], key: str, q: str):
    vals = [r[key][q] for r in rows if r.get(key) and q in r[key]]
    return statistics.median(vals) if vals else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="20000,50000,100000", help="packets a second, comma separated (default 20k,50k,100k)")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds of traffic per measurement (default 2)")
    ap.add_argument("--msgs", type=int, default=4, help="ITCH messages a packet (default 4)")
    ap.add_argument("--backends", default="afxdp,afpacket,dpdk",
                    help="capture backends (default afxdp,afpacket,dpdk; afpacket-v3: AF_PACKET on TPACKET_V3 blocks "
                         "with a 1 ms retire timer in every mode, the floor too)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of the whole interleaved run (medians; default 1)")
    ap.add_argument("--spin-us", type=float, default=50.0,
                    help="floor-w / latency-w: busy-poll this long after the last packet, then wait (default 50)")
    ap.add_argument("--nice", dest="rx_nice", type=int, default=0,
                    help="nice value of the receiver (floor and feed alike) and of the sender (which sleeps between "
                         "packets); e.g. -20 on a shared machine, so that neither is time-sliced with other work "
                         "(default 0)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"modes to run (default {','.join(MODES)})")
    ap.add_argument("--tx-cpu", type=int, default=0, help="sender's CPU (default 0)")
    ap.add_argument("--rx-cpu", type=int, default=1, help="receiver's CPU (default 1)")
    ap.add_argument("--json", default=None, help="write every measurement here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child_main(json.loads(a.child))
    from feedhandler.capture.live import probe
    from feedhandler.capture.live.vethpair import veth_unavailable_reason
    why = veth_unavailable_reason()
    if why:
        print(f"bench_latency: {why}", file=sys.stderr)
        return 1
    rates = [float(x) for x in a.rates.split(",") if x]
    modes = [m for m in a.modes.split(",") if m]
    bad = set(modes) - set(MODES)
    if bad:
        ap.error(f"unknown modes {sorted(bad)}: {', '.join(MODES)}")
    backends, skipped = [], {}
    for b in [x for x in a.backends.split(",") if x]:
        r = probe("afpacket" if b == "afpacket-v3" else b, "lo")
        if b == "dpdk" and r is None:
            from feedhandler.capture.live import dpdk
            r = None if hasattr(dpdk, "open_source") else "no DPDK source"
        if r:
            skipped[b] = r
        else:
            backends.append(b)
    day, midnight = trading_day()
    results = []
    gaps = []
    with tempfile.TemporaryDirectory(prefix="fh-benchlat-") as td:
        tools = build_tools(Path(td))

        def spinner_gaps():
            # how much of the receiver's core a spinning thread gets right now (at the receiver's nice)
            cmd = [str(tools), "gaps", "1", str(a.rx_cpu)]
            if a.rx_nice:
                cmd = ["nice", "-n", str(a.rx_nice), *cmd]
            gaps.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))

        spinner_gaps()
        for rep in range(a.reps):
            for rate in rates:
                packets = max(1000, int(rate * a.seconds))
                for b in backends:
                    for mode in modes:
                        if mode.startswith("floor") and b == "dpdk":
                            continue
                        r = measure(tools, b, mode, rate, packets, a.msgs, day, midnight, a.tx_cpu, a.rx_cpu, a.spin_us, a.rx_nice)
                        r["rep"] = rep
                        results.append(r)
                        print(json.dumps({k: r.get(k) for k in ("backend", "mode", "rate", "sent", "packets", "per_packet",
                                                                "error")}),
                              file=sys.stderr, flush=True)
        spinner_gaps()
    load = os.getloadavg()
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "skipped": skipped, "loadavg": load, "spinner_gaps": gaps,
                                            "msgs_per_packet": a.msgs, "seconds": a.seconds}, indent=1))
    print(f"wire -> book latency (us; wire = the sender's CLOCK_REALTIME before send(), in the packet), "
          f"{a.msgs} messages a packet, {a.seconds:g} s a measurement, {a.reps} rep(s), medians; sender and receiver nice "
          f"{a.rx_nice}; "
          f"load average {load[0]:.1f} (shared 2-vCPU VM)")
    hdr = (f"{'backend':9s} {'mode':8s} {'rate':>7s} {'recv pkts':>9s} {'msg/pkt':>7s} {'msg p50':>8s} {'msg p99':>8s} "
           f"{'pkt p50':>8s} {'pkt p99':>8s} {'x floor p50':>11s} {'x floor p99':>11s}")
    for g in gaps:
        print(f"(a thread spinning 1 s on CPU {a.rx_cpu} {'before' if g is gaps[0] else 'after'} the run: "
              f"{g['lost_ms']:.0f} ms not running in gaps > 100 us, {g['gaps_over_1ms']} gaps > 1 ms, longest "
              f"{g['max_gap_us'] / 1e3:.1f} ms)")
    print(hdr)
    for rate in rates:
        for b in backends:
            floor_b = "afpacket" if b == "dpdk" else b
            for mode in modes:
                # the floor of a mode: the bare receiver that polls the same way (latency-w: floor-w)
                fmode = "floor-w" if mode == "latency-w" else "floor"
                fl = [r for r in results if r["backend"] == floor_b and r["mode"] == fmode and r["rate"] == rate
                      and "error" not in r]
                f50, f99 = _med(fl, "per_packet", "p50"), _med(fl, "per_packet", "p99")
                rows = [r for r in results if r["backend"] == b and r["mode"] == mode and r["rate"] == rate]
                ok = [r for r in rows if "error" not in r]
                if not rows:
                    continue
                if not ok:
                    print(f"{b:9s} {mode:8s} {rate:>7.0f} error: {rows[0]['error'][:120]}")
                    continue

                def us(x):
                    return f"{x / 1e3:8.1f}" if x is not None else f"{'-':>8s}"

                m50, m99 = _med(ok, "per_message", "p50"), _med(ok, "per_message", "p99")
                p50, p99 = _med(ok, "per_packet", "p50"), _med(ok, "per_packet", "p99")
                x50 = (p50 if p50 is not None else m50)
                x99 = (p99 if p99 is not None else m99)
                r50 = f"{x50 / f50:11.2f}" if f50 and x50 is not None and not mode.startswith("floor") else f"{'-':>11s}"
                r99 = f"{x99 / f99:11.2f}" if f99 and x99 is not None and not mode.startswith("floor") else f"{'-':>11s}"
                pk = statistics.median(r.get("packets", 0) for r in ok)
                mpp = statistics.median(r.get("messages_per_packet") or 0 for r in ok)
                print(f"{b:9s} {mode:8s} {rate:>7.0f} {pk:>9,.0f} {mpp:>7.2f} {us(m50)} {us(m99)} {us(p50)} {us(p99)} {r50} {r99}")
    for b, why in skipped.items():
        print(f"({b} not measured: {why})")
    print(f"(floor: bare C receiver busy-polling the same capture source; -w: busy-poll {a.spin_us:g} us after the "
          "last packet, then wait in the source; latency-w's ratio is to floor-w, the others' to floor; DPDK's is to "
          "the AF_PACKET floor, the kernel path of its net_af_packet vdev; batched per packet: not recorded, its "
          "ratio uses per message)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
