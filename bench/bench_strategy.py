"""Strategy and executor benchmark (issue 12), each next to a bare pyzmq equivalent in the same run.

    python bench/bench_strategy.py [--latency-n 1500] [--rounds 3] [--fanout 1,2,4,8] [--rate 5000]
                                   [--seconds 4] [--json]

1. **tick -> strategy -> signal -> order acknowledged** (``latency``). One market-data publisher (this
   process), one strategy process, one executor process, one exchange process (``feedhandler exchange``,
   journal on, history off, a market maker's ask resting so that every order fills). This process publishes
   one BBO record at a time (``ts_recv`` = now, a new high every time) and waits for the executor's
   acknowledgement of the signal it causes (the ack carries the signal's ``md_ts``): one tick in flight,
   p50/p99 of now - ts_recv over ``--latency-n`` ticks per round.

   - ``ours``: ``feedhandler.publish.TickPublisher`` -> ``feedhandler strategy breakout`` (window 2,
     confirm 1: every tick breaks out) -> ``feedhandler executor`` (SQLite ledger, two commits per
     signal, backoff, acks) -> exchange;
   - ``bare``: a PUB sending the same 64-byte record -> a bare SUB loop (numpy view, new high -> msgpack
     signal on PUSH) -> a bare PULL loop calling ``engine.client.Client.submit`` and PUBlishing the ack ->
     the same exchange. What ZeroMQ, msgpack and the exchange cost without our framework.

2. **strategies one publisher sustains** (``fanout``). One publisher sends ``--rate`` BBO records a second
   (one record a message, the paced-feed shape: the costliest per record) for ``--seconds`` to N
   subscribers. ``ours``: N ``feedhandler strategy breakout`` processes (their full on_tick path; no
   signal fires: confirm_ticks is huge); ``bare``: N bare SUB loops (recv + numpy view). Each reports
   what it received and the p99 of publish -> receive. N is sustained when every subscriber received at
   least 99.9 % of the records and its p99 stayed under 100 ms.

3. **what --publish costs a replay** (``publish``): ``feedhandler.replay.replay`` of a synthetic ITCH day
   (``--publish-messages``, 100 symbols, BinaryFILE) with no publisher, with ``--publish-what ticks``, with
   ``bbo``, and with the bare floor (the whole batch as ONE message on a plain PUB, no grouping by symbol);
   one subscriber process drains everything. Interleaved rounds, medians, ratios to no publishing.

Machine: a 2-vCPU VM shared with other engineers' builds: absolute figures are noisy, rounds are
interleaved, read the ratios. Every process here competes for the same 2 cores, so the fan-out
figure is how many Python strategy processes 2 busy cores keep up with, not the publisher's limit.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

from feedhandler.cliopts import positive_int

ROOT = Path(__file__).resolve().parents[1]
PX = 1_000_000_000
ENV = dict(os.environ)   # the installed package (editable or not), never src/ on the path


# ---- the bare equivalents (run as: python bench_strategy.py --role ...) --------------------------------
def bare_strategy(md: str, signals: str) -> None:
    from feedhandler import records
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.connect(md)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    push = ctx.socket(zmq.PUSH)
    push.connect(signals)
    bbo = records.DTYPES["bbo"]
    rt_bbo = records.RTYPE["bbo"]
    window: list[int] = []                  # the last 2 mids, as the breakout's window=2
    n = 0
    while True:
        topic, payload = sub.recv_multipart()
        r = np.frombuffer(payload, dtype=bbo)[-1]
        if r["rtype"] != rt_bbo:
            continue
        mid = (int(r["bid_px"]) + int(r["ask_px"])) // 2
        if len(window) == 2 and mid > max(window):
            n += 1
            push.send(msgpack.packb({"id": f"bare.{n}", "symbol": topic.decode(), "side": "B", "qty": 1,
                                     "price": mid * 3 // 2, "md_ts": int(r["ts_recv"])}))
        window = window[-1:] + [mid]


def bare_executor(signals: str, acks: str, endpoint: str) -> None:
    from engine.client import Client
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.bind(signals)
    pub = ctx.socket(zmq.PUB)
    pub.bind(acks)
    c = Client(endpoint, "demo-taker", "demo-taker-secret", timeout=5, ctx=ctx)
    while True:
        s = msgpack.unpackb(pull.recv())
        r = c.submit(s["symbol"], s["side"], s["price"], s["qty"], tif="ioc", client_order_id=s["id"])
        pub.send_multipart([b"bare", msgpack.packb({"id": s["id"], "status": r.get("status"), "md_ts": s["md_ts"]})])


def bare_subscriber(md: str, seconds: float, out: str) -> None:
    from feedhandler import records
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.connect(md)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    bbo = records.DTYPES["bbo"]
    got, lat = 0, []
    end = None
    while True:
        if not sub.poll(2000 if end is None else max(1, int((end - time.monotonic()) * 1000))):
            if end is not None:
                break
            continue
        if end is None:
            end = time.monotonic() + seconds + 1.0
        topic, payload = sub.recv_multipart()
        r = np.frombuffer(payload, dtype=bbo)
        got += r.shape[0]
        if r["rtype"][-1] != records.RTYPE["bbo"]:
            continue
        if got % 16 == 0:
            lat.append(time.time_ns() - int(r["ts_recv"][-1]))
        if time.monotonic() > end:
            break
    Path(out).write_text(json.dumps({"md_records": got, "p99_us": float(np.percentile(lat, 99)) / 1e3 if lat else None}))


# ---- helpers ----------------------------------------------------------------------------------------
def _ports(n):
    ctx = zmq.Context.instance()
    socks = [ctx.socket(zmq.PUB) for _ in range(n)]
    ports = [s.bind_to_random_port("tcp://127.0.0.1") for s in socks]
    for s in socks:
        s.close(0)
    return ports


def _spawn(args, env=None, **kw):
    return subprocess.Popen(args, env={**ENV, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _fh(*args, env=None):
    return _spawn([sys.executable, "-m", "feedhandler", *args], env=env)


def _me(*args):
    return _spawn([sys.executable, str(Path(__file__).resolve()), *args])


def _wait_line(p, text, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if text in line:
            return line
        if not line and p.poll() is not None:
            raise RuntimeError(f"process exited {p.returncode}: {p.stderr.read()[-2000:]}")
    raise RuntimeError(f"no {text!r} within {timeout} s")


def _stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _bbo_tick(iid, mid):
    from feedhandler import records
    r = records.empty(1)
    v = r.view(records.DTYPES["bbo"])
    v["rtype"] = records.RTYPE["bbo"]
    v["instrument_id"] = iid
    v["bid_px"] = mid - PX // 100
    v["ask_px"] = mid + PX // 100
    v["bid_sz"] = v["ask_sz"] = 100
    v["ts_recv"] = time.time_ns()
    return r


def _directory(iid, sym):
    from feedhandler import records
    d = records.empty(1)
    v = d.view(records.DTYPES["stock_directory"])
    v["rtype"] = records.RTYPE["stock_directory"]
    v["instrument_id"] = iid
    v["symbol"] = sym.ljust(8).encode()
    return d


def _pct(xs, q):
    return float(np.percentile(np.array(xs, dtype=np.int64), q)) / 1e3 if xs else None


# ---- 1: latency --------------------------------------------------------------------------------------
def latency_round(kind: str, n: int, tmp: Path) -> dict:
    from engine.client import Client
    from feedhandler.publish import TickPublisher

    gw, mdx, sig, ack = _ports(4)
    cfg = tmp / "ex.toml"
    cfg.write_text('symbols = ["BNCH"]\n[risk]\nprice_band_bps = 0\nmax_order_qty = 100000000\n'
                   'rate_per_s = 0\n')
    data = tempfile.mkdtemp(dir=tmp)
    procs = []
    pub = None
    ctx = zmq.Context.instance()
    acks = ctx.socket(zmq.SUB)
    try:
        ex = _fh("exchange", "--config", str(cfg), "--data-dir", data, "--port", str(gw), "--md-port", str(mdx),
                 "--no-history")
        procs.append(ex)
        _wait_line(ex, "exchange up")
        with Client(f"tcp://127.0.0.1:{gw}", "demo-mm", "demo-mm-secret", timeout=10) as mm:
            assert mm.submit("BNCH", "S", 1 * PX, 50_000_000, tif="day")["status"] == "ack"
        pub = TickPublisher("tcp://127.0.0.1:0", "ticks").start()
        md = pub.endpoint.rsplit(":", 1)[1]
        acks.connect(f"tcp://127.0.0.1:{ack}")
        acks.setsockopt(zmq.SUBSCRIBE, b"")
        if kind == "ours":
            exe = _fh("executor", "--signals", f"tcp://127.0.0.1:{sig}", "--acks", f"tcp://127.0.0.1:{ack}",
                      "--endpoint", f"tcp://127.0.0.1:{gw}", "--api-key", "demo-taker", "--state",
                      str(Path(data) / "ledger.sqlite"), env={"FEEDHANDLER_API_SECRET": "demo-taker-secret"})
            procs.append(exe)
            _wait_line(exe, "executor up")
            st = _fh("strategy", "breakout", "--md", f"tcp://127.0.0.1:{md}", "--signals", f"tcp://127.0.0.1:{sig}",
                     "--acks", f"tcp://127.0.0.1:{ack}", "--symbols", "BNCH", "--param", "window=2", "--param",
                     "confirm_ticks=1", "--param", "cooldown=0", "--param", "max_position=1000000000",
                     "--param", "qty=1", "--param", "slippage_bps=5000", "--drain", "0")
        else:
            exe = _me("--role", "bare-executor", f"tcp://127.0.0.1:{sig}", f"tcp://127.0.0.1:{ack}",
                      f"tcp://127.0.0.1:{gw}")
            procs.append(exe)
            st = _me("--role", "bare-strategy", f"tcp://127.0.0.1:{md}", f"tcp://127.0.0.1:{sig}")
        procs.append(st)
        pub.wait_subscribers(1, 60)
        pub.publish(_directory(1, "BNCH"))
        time.sleep(0.5)                          # the ack SUB and the PUSH connect
        lat = []
        mid = 100 * PX
        lost = 0
        for i in range(n + 100):
            mid += PX // 100
            pub.publish(_bbo_tick(1, mid))
            if i < 2:
                continue                          # the first two ticks fill the window (2)
            if not acks.poll(3000):
                lost += 1
                continue
            a = msgpack.unpackb(acks.recv_multipart()[-1])
            if i > 100:
                lat.append(time.time_ns() - a["md_ts"])
        return {"kind": kind, "n": len(lat), "lost": lost, "p50_us": _pct(lat, 50), "p99_us": _pct(lat, 99)}
    finally:
        acks.close(0)
        if pub is not None:
            pub.close()
        _stop(*reversed(procs))


# ---- 2: fan-out --------------------------------------------------------------------------------------
def fanout_round(kind: str, n_subs: int, rate: int, seconds: float, tmp: Path) -> dict:
    from feedhandler.publish import TickPublisher

    pub = TickPublisher("tcp://127.0.0.1:0", "ticks").start()
    md = pub.endpoint.rsplit(":", 1)[1]
    procs, outs = [], []
    try:
        for k in range(n_subs):
            if kind == "ours":
                procs.append(_fh("strategy", "breakout", "--md", f"tcp://127.0.0.1:{md}", "--signals",
                                 "tcp://127.0.0.1:1", "--param", "confirm_ticks=1000000000", "--param", "window=50",
                                 "--duration", str(seconds + 20), "--drain", "0", "--json"))
            else:
                out = tmp / f"bare{k}.json"
                outs.append(out)
                procs.append(_me("--role", "bare-subscriber", f"tcp://127.0.0.1:{md}", str(seconds), str(out)))
        assert pub.wait_subscribers(n_subs, 120) == n_subs
        pub.publish(_directory(1, "BNCH"))
        time.sleep(0.3)
        sent = 0
        t0 = time.monotonic()
        mid = 100 * PX
        while True:
            now = time.monotonic()
            if now - t0 >= seconds:
                break
            due = int((now - t0) * rate)
            while sent < due:
                mid += 1
                pub.publish(_bbo_tick(1, mid))
                sent += 1
            time.sleep(0.0005)
        took = time.monotonic() - t0
        time.sleep(1.5)
        got = []
        if kind == "ours":
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                out, _ = p.communicate(timeout=60)
                s = json.loads(out)
                got.append((s["md_records"] - 1, (s.get("md_lag_us") or {}).get("p99")))   # - the directory
        else:
            for p in procs:
                p.wait(60)
            for o in outs:
                s = json.loads(o.read_text())
                got.append((s["md_records"] - 1, s["p99_us"]))
        worst = min(g for g, _ in got)
        p99s = [p for _, p in got if p is not None]
        return {"kind": kind, "subscribers": n_subs, "sent": sent, "rate": round(sent / took), "min_received": worst,
                "delivered": round(worst / sent, 5) if sent else None,
                "p99_us": round(max(p99s), 1) if p99s else None,
                "sustained": bool(sent and worst >= 0.999 * sent and (not p99s or max(p99s) < 100_000))}
    finally:
        pub.close()
        _stop(*procs)


# ---- 3: what --publish costs a replay ------------------------------------------------------------------
def _day(messages: int, symbols: int) -> Path:
    out = ROOT / "bench" / "out" / f"itch_{messages}_{symbols}_11.bin"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "feedhandler", "synth", str(out), "--format", "binaryfile", "--messages",
                        str(messages), "--symbols", str(symbols), "--seed", "11", "-q"], env=ENV, check=True)
    return out


class _BarePublisher:
    """The floor of publishing a batch at all: the whole batch as one message on a plain PUB."""
    what = "ticks"

    def __init__(self):
        self.sock = zmq.Context.instance().socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.records = self.messages = 0

    def publish(self, ticks, bbo_events=None):
        self.sock.send_multipart([b"ALL", ticks.view(np.uint8)])     # copied: the feed reuses the buffer
        self.records += ticks.shape[0]
        self.messages += 1

    def close(self):
        self.sock.close(0)


def publish_round(kind: str, path: Path) -> dict:
    from feedhandler.publish import TickPublisher
    from feedhandler.replay import ReplayOptions, replay

    pub = None
    if kind in ("ticks", "bbo"):
        pub = TickPublisher("tcp://127.0.0.1:0", kind).start()
    elif kind == "bare":
        pub = _BarePublisher()
    sub = None
    if pub is not None:                        # one subscriber drains everything in its own process
        sub = _me("--role", "bare-drain", pub.endpoint)
        if hasattr(pub, "wait_subscribers"):
            pub.wait_subscribers(1, 60)
        else:
            time.sleep(1.0)
    try:
        t0 = time.perf_counter()
        s = replay(str(path), ReplayOptions(publisher=pub))
        took = time.perf_counter() - t0
    finally:
        if pub is not None:
            pub.close()
        if sub is not None:
            _stop(sub)
    return {"kind": kind, "seconds": round(took, 4), "records": s["records"],
            "published": getattr(pub, "records", None) if pub is not None else 0,
            "messages": getattr(pub, "messages", None) if pub is not None else 0}


def bare_drain(md: str) -> None:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(md)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    while True:
        sub.recv_multipart(copy=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--latency-n", type=int, default=1500, help="ticks per latency round (default 1500)")
    ap.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--fanout", default="1,2,4,8", help="subscriber counts (default 1,2,4,8)")
    ap.add_argument("--rate", type=int, default=5000, help="fan-out: records a second (default 5000)")
    ap.add_argument("--seconds", type=float, default=4.0, help="fan-out: seconds per point (default 4)")
    ap.add_argument("--publish-messages", type=int, default=2_000_000,
                    help="publish cost: messages of the synthetic ITCH day replayed (default 2,000,000)")
    ap.add_argument("--skip", choices=("latency", "fanout", "publish"), action="append", default=[])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.role:
        role, *rest = a.role
        {"bare-strategy": bare_strategy, "bare-executor": bare_executor}.get(role, lambda *x: None)(*rest)
        if role == "bare-subscriber":
            bare_subscriber(rest[0], float(rest[1]), rest[2])
        if role == "bare-drain":
            bare_drain(rest[0])
        return 0
    out = {"machine": {"python": sys.version.split()[0], "zmq": zmq.zmq_version(), "pyzmq": zmq.__version__,
                       "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}, "latency": [], "fanout": [],
           "publish": []}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if "latency" not in a.skip:
            for r in range(a.rounds):
                for kind in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
                    res = latency_round(kind, a.latency_n, tmp)
                    res["round"] = r
                    out["latency"].append(res)
                    if not a.json:
                        print(f"latency round {r} {kind:5s}: p50 {res['p50_us']:.0f} us  p99 {res['p99_us']:.0f} us  "
                              f"({res['n']} ticks, {res['lost']} without an ack)", flush=True)
        if "fanout" not in a.skip:
            for n in [int(x) for x in a.fanout.split(",")]:
                for kind in ("ours", "bare"):
                    res = fanout_round(kind, n, a.rate, a.seconds, tmp)
                    out["fanout"].append(res)
                    if not a.json:
                        print(f"fanout {n:2d} {kind:5s}: sent {res['sent']:,} at {res['rate']:,}/s, worst subscriber "
                              f"got {res['delivered']:.2%}" + (f", p99 {res['p99_us']:.0f} us" if res['p99_us'] else "")
                              + ("  SUSTAINED" if res["sustained"] else "  NOT sustained"), flush=True)
    if "publish" not in a.skip:
        day = _day(a.publish_messages, 100)
        kinds = ["none", "ticks", "bbo", "bare"]
        for r in range(a.rounds):
            for kind in kinds[r % 4:] + kinds[:r % 4]:
                res = publish_round(kind, day)
                res["round"] = r
                out["publish"].append(res)
                if not a.json:
                    print(f"replay {day.name} publish={kind:5s}: {res['seconds']:.3f} s, {res['records']:,} records, "
                          f"published {res['published'] or 0:,} in {res['messages'] or 0:,} messages", flush=True)
        med = {k: statistics.median(x["seconds"] for x in out["publish"] if x["kind"] == k) for k in kinds}
        out["publish_summary"] = {k: {"median_s": v, "x_none": round(v / med["none"], 3)} for k, v in med.items()}
    summ = {}
    for kind in ("ours", "bare"):
        rows = [x for x in out["latency"] if x["kind"] == kind and x["p50_us"] is not None]
        if rows:
            summ[kind] = {"p50_us": statistics.median(x["p50_us"] for x in rows),
                          "p99_us": statistics.median(x["p99_us"] for x in rows)}
        fo = [x["subscribers"] for x in out["fanout"] if x["kind"] == kind and x["sustained"]]
        summ.setdefault(kind, {})["max_sustained_subscribers"] = max(fo) if fo else 0
    out["summary"] = summ
    out["machine"]["loadavg_end"] = os.getloadavg()
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for kind, s in summ.items():
            if "p50_us" in s:
                print(f"{kind:5s}: tick -> ack p50 {s['p50_us']:.0f} us, p99 {s['p99_us']:.0f} us (median of rounds); "
                      f"sustained subscribers at {a.rate:,}/s: {s['max_sustained_subscribers']}")
            else:
                print(f"{kind:5s}: sustained subscribers at {a.rate:,}/s: {s['max_sustained_subscribers']}")
        if "p50_us" in summ.get("ours", {}) and "p50_us" in summ.get("bare", {}):
            print(f"ours/bare: p50 x{summ['ours']['p50_us'] / summ['bare']['p50_us']:.2f}, "
                  f"p99 x{summ['ours']['p99_us'] / summ['bare']['p99_us']:.2f}")
        for k, v in out.get("publish_summary", {}).items():
            print(f"replay with publish={k:5s}: median {v['median_s']:.3f} s, x{v['x_none']:.2f} of no publishing")
        print(f"load average {out['machine']['loadavg_start']} -> {out['machine']['loadavg_end']} (shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
