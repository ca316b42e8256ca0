"""FIX and OUCH acceptor benchmark: order -> first report round trip and burst orders/s over TCP loopback,
next to a bare asyncio acceptor (peer: simplefix [bench]) measured in the same run.

    python bench/bench_acceptors.py [--n 1000] [--rounds 3] [--json]

Servers, each in its own process, the client in this one, measured in interleaved rounds:

* ``exchange``: ``feedhandler exchange`` (a config file: one FIX 4.4 session, one OUCH 4.2 user, journal
  with fsync none, no history writer, no price band): the real path. A FIX NewOrderSingle is framed and
  checked by the session layer (BodyLength, CheckSum, MsgSeqNum, CompIDs, SendingTime), validated, handed
  to the engine thread, sequenced, journaled, matched; the ExecutionReport is stored in the session store,
  then sent. OUCH: SoupBinTCP framing, Enter Order decoded and validated, the same engine path, Accepted
  appended to the user's sequenced stream and sent.
* ``floor``: a bare asyncio server doing only what any acceptor must do on the wire: FIX framed by
  simplefix's parser, each NewOrderSingle answered by an ExecutionReport (150=0) built with simplefix; OUCH
  framed by SoupBinTCP, each Enter Order answered by an Accepted. No validation, no sequencing, no journal,
  no book: the floor of a Python acceptor speaking these protocols, not a like-for-like peer (there is no
  Python FIX/OUCH exchange to compare with).

Round trip: one order in flight, ``--n`` orders, the time from send to the first report of that order
(p50/p99 in microseconds). Burst: ``--n`` orders written at once, the time until the last Accepted /
ExecutionReport. Orders rest (prices away from each other, sells only), so every order gets exactly one
report. The FIX session needs QuickFIX's dictionaries (``$FH_FIX_SPEC_DIR`` or ``../shared/data/fix/spec``);
without them only OUCH runs (said in the output). Numbers are the host's (shared 2-vCPU VM): compare the
ratios of the same run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from feedhandler.cliopts import positive_int

ROOT = Path(__file__).resolve().parents[1]
OUCH_USER, OUCH_PASSWORD = "alice", "pw-a"
FIX_SENDER = "BENCH"
SYMBOL = "AAPL"


def spec_dir() -> Path | None:
    for c in (os.environ.get("FH_FIX_SPEC_DIR"), ROOT.parent / "shared" / "data" / "fix" / "spec"):
        if c and (Path(c) / "FIX44.xml").is_file():
            return Path(c)
    return None


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


# ---- the floor: a bare asyncio FIX + OUCH acceptor --------------------------------------------------------
def floor_server(fix_port: int, ouch_port: int, ready) -> None:
    import simplefix

    from feedhandler.protocols import ouch42, soupbintcp as soup

    async def fix_conn(reader, writer):
        parser = simplefix.FixParser()
        out_seq = 1
        oid = 0
        while True:
            data = await reader.read(65536)
            if not data:
                break
            parser.append_buffer(data)
            while (m := parser.get_message()) is not None:
                t = m.get(35)
                r = simplefix.FixMessage()
                r.append_pair(8, "FIX.4.4")
                if t == b"A":
                    r.append_pair(35, "A")
                elif t == b"D":
                    r.append_pair(35, "8")
                else:
                    continue
                r.append_pair(34, out_seq)
                r.append_pair(49, "EXCH")
                r.append_pair(52, utc_now())
                r.append_pair(56, m.get(49))
                out_seq += 1
                if t == b"A":
                    r.append_pair(98, 0)
                    r.append_pair(108, m.get(108))
                else:
                    oid += 1
                    for tag, v in ((37, oid), (11, m.get(11)), (17, f"E{oid}"), (150, "0"), (39, "0"),
                                   (55, m.get(55)), (54, m.get(54)), (38, m.get(38)), (44, m.get(44)),
                                   (151, m.get(38)), (14, 0), (6, 0)):
                        r.append_pair(tag, v)
                writer.write(r.encode())
        writer.close()

    async def ouch_conn(reader, writer):
        framer = soup.Framer()
        ref = 0
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for kind, payload in framer.feed(data):
                if kind == soup.LOGIN_REQUEST:
                    writer.write(soup.login_accepted("FLOOR", 1))
                elif kind == soup.UNSEQUENCED_DATA:
                    name, f = ouch42.decode(payload, "in")
                    if name != "enter_order":
                        continue
                    ref += 1
                    writer.write(soup.sequenced(ouch42.encode(
                        "accepted", timestamp=time.time_ns() % 86_400_000_000_000, order_token=f["order_token"],
                        side=f["side"], shares=f["shares"], stock=f["stock"], price=f["price"],
                        time_in_force=f["time_in_force"], firm=f["firm"], display=f["display"],
                        order_reference_number=ref, capacity=f["capacity"],
                        intermarket_sweep=f["intermarket_sweep"], minimum_quantity=f["minimum_quantity"],
                        cross_type=f["cross_type"], order_state=b"L", bbo_weight_indicator=b" ")))
        writer.close()

    async def main():
        a = await asyncio.start_server(fix_conn, "127.0.0.1", fix_port)
        b = await asyncio.start_server(ouch_conn, "127.0.0.1", ouch_port)
        ready.set()
        async with a, b:
            await asyncio.Event().wait()

    asyncio.run(main())


class Floor:
    name = "floor"

    def __init__(self):
        self.fix_port, self.ouch_port = free_port(), free_port()
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        self.proc = ctx.Process(target=floor_server, args=(self.fix_port, self.ouch_port, ready), daemon=True)
        self.proc.start()
        if not ready.wait(30):
            raise RuntimeError("the floor server did not start")

    def close(self):
        self.proc.terminate()
        self.proc.join(10)


# ---- ours: feedhandler exchange ---------------------------------------------------------------------------------
class Exchange:
    name = "exchange"

    def __init__(self, tmp: Path, spec: Path | None):
        self.fix_port = free_port() if spec else None
        self.ouch_port = free_port()
        lines = [f'symbols = ["{SYMBOL}"]', "", "[risk]", "price_band_bps = 0", "rate_per_s = 0", "bytes_per_s = 0",
                 "max_open_orders = 0", "", "[history]", "enabled = false", "",
                 "[ouch]", f"port = {self.ouch_port}", f'users = {{{OUCH_USER} = {{password = "{OUCH_PASSWORD}", '
                 f'account = "OA"}}}}', ""]
        if spec:
            lines += ["[fix]", f"port = {self.fix_port}", f'spec_dir = "{spec}"',
                      f'sessions = [{{begin_string = "FIX.4.4", our_comp_id = "EXCH", their_comp_id = "{FIX_SENDER}", '
                      f'account = "FA"}}]', ""]
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = tmp / "exchange.toml"
        cfg.write_text("\n".join(lines))
        self.proc = subprocess.Popen([sys.executable, "-m", "feedhandler", "exchange", "--config", str(cfg),
                                      "--port", "0", "--md-port", "0", "--fsync", "none", "--data-dir",
                                      str(tmp / "data")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        line = self.proc.stdout.readline()
        if not re.search(r"exchange up", line):
            self.proc.kill()
            raise RuntimeError(f"the exchange did not start: {line}{self.proc.communicate(timeout=10)[1]}")

    def close(self):
        self.proc.terminate()
        out, err = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the exchange exited {self.proc.returncode}: {err[-2000:]}")


# ---- clients ------------------------------------------------------------------------------------------------
class FixClient:
    def __init__(self, port: int):
        import simplefix
        self.simplefix = simplefix
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.p = simplefix.FixParser()
        self.seq = 1
        self.send("A", [(98, 0), (108, 30)])
        self.wait(lambda m: m.get(35) == b"A")

    def encode(self, msgtype: str, fields) -> bytes:
        m = self.simplefix.FixMessage()
        for t, v in ((8, "FIX.4.4"), (35, msgtype), (34, self.seq), (49, FIX_SENDER), (52, utc_now()), (56, "EXCH")):
            m.append_pair(t, v)
        for t, v in fields:
            m.append_pair(t, v)
        self.seq += 1
        return m.encode()

    def send(self, msgtype: str, fields) -> None:
        self.s.sendall(self.encode(msgtype, fields))

    def order(self, clid: str, price: int) -> bytes:
        return self.encode("D", [(11, clid), (21, "1"), (55, SYMBOL), (54, "2"), (38, 1), (40, "2"),
                                 (44, f"{price / 100:.2f}"), (59, "0"), (60, utc_now())])

    def wait(self, pred, count: int = 1) -> None:
        seen = 0
        while True:
            while (m := self.p.get_message()) is not None:
                if pred(m):
                    seen += 1
                    if seen == count:
                        return
            data = self.s.recv(65536)
            if not data:
                raise RuntimeError("FIX connection closed")
            self.p.append_buffer(data)

    def close(self) -> None:
        self.s.close()


class OuchClient:
    def __init__(self, port: int):
        from feedhandler.protocols import ouch42, soupbintcp as soup
        self.ouch42, self.soup = ouch42, soup
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = soup.Framer()
        self.s.sendall(soup.login_request(OUCH_USER, OUCH_PASSWORD, "", 0))
        self.wait(lambda kind, _p: kind == soup.LOGIN_ACCEPTED)

    def order(self, tok: str, price: int) -> bytes:
        return self.soup.unsequenced(self.ouch42.encode(
            "enter_order", order_token=tok, side=b"S", shares=1, stock=SYMBOL, price=price, time_in_force=99999,
            firm="FRM1", display=b"Y", capacity=b"A", intermarket_sweep=b"N", minimum_quantity=0, cross_type=b"N",
            customer_type=b"R"))

    def wait(self, pred, count: int = 1) -> None:
        seen = 0
        while True:
            data = self.s.recv(65536)
            if not data:
                raise RuntimeError("OUCH connection closed")
            for kind, payload in self.f.feed(data):
                if pred(kind, payload):
                    seen += 1
                    if seen == count:
                        return

    def close(self) -> None:
        self.s.close()


def is_fix_new(m) -> bool:
    return m.get(35) == b"8" and m.get(150) == b"0"


def is_ouch_accepted(kind: bytes, payload: bytes) -> bool:
    return kind == b"S" and payload[:1] == b"A"


def measure(client, n: int, tag: str, pred, base_price: int) -> dict:
    """Round trips (one in flight), then a burst of ``n``; prices spread so that nothing crosses."""
    lat = []
    for i in range(n):
        msg = client.order(f"{tag}r{i}", base_price + i % 500)
        t = time.perf_counter_ns()
        client.s.sendall(msg)
        client.wait(pred)
        lat.append((time.perf_counter_ns() - t) / 1000)
    burst = b"".join(client.order(f"{tag}b{i}", base_price + 1000 + i % 500) for i in range(n))
    t = time.perf_counter()
    client.s.sendall(burst)
    client.wait(pred, n)
    dt = time.perf_counter() - t
    lat.sort()
    return {"rt_us": lat, "orders_per_s": n / dt}


def run(args) -> dict:
    spec = spec_dir()
    rows: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="fh-bench-acceptors-") as tmp:
        for r in range(args.rounds):
            for server_cls in (Exchange, Floor):
                srv = server_cls(Path(tmp) / f"{server_cls.name}-{r}", spec) if server_cls is Exchange \
                    else server_cls()
                try:
                    protos = [("ouch", OuchClient, srv.ouch_port, is_ouch_accepted)]
                    if spec is not None:
                        protos.insert(0, ("fix", FixClient, srv.fix_port, is_fix_new))
                    for proto, cls, port, pred in protos:
                        c = cls(port)
                        try:
                            measure(c, min(200, args.n), f"w{r}", pred, 10_000)        # warm-up
                            res = measure(c, args.n, f"m{r}", pred, 20_000)
                        finally:
                            c.close()
                        row = rows.setdefault((proto, srv.name), {"rt_us": [], "orders_per_s": []})
                        row["rt_us"] += res["rt_us"]
                        row["orders_per_s"].append(res["orders_per_s"])
                finally:
                    srv.close()
    out = {"n": args.n, "rounds": args.rounds, "fix_measured": spec is not None,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    for (proto, name), row in rows.items():
        lat = sorted(row["rt_us"])
        out.setdefault(proto, {})[name] = {
            "p50_us": round(lat[len(lat) // 2], 1), "p99_us": round(lat[int(len(lat) * 0.99)], 1),
            "orders_per_s": round(statistics.median(row["orders_per_s"])),
            "orders_per_s_rounds": [round(x) for x in row["orders_per_s"]]}
    for proto in ("fix", "ouch"):
        if proto in out and isinstance(out[proto], dict):
            e, f = out[proto]["exchange"], out[proto]["floor"]
            out[proto]["ratio_p50"] = round(e["p50_us"] / f["p50_us"], 2)
            out[proto]["ratio_throughput"] = round(f["orders_per_s"] / e["orders_per_s"], 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="orders per phase and round (default 1000)")
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        import simplefix  # noqa: F401
    except ImportError:
        print("bench_acceptors: needs simplefix (the floor's FIX codec): pip install 'feedhandler[bench]'",
              file=sys.stderr)
        return 2
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    if not out["fix_measured"]:
        print("# FIX skipped: QuickFIX's dictionaries not found ($FH_FIX_SPEC_DIR or ../shared/data/fix/spec)")
    print(f"# {args.n} orders per phase, {args.rounds} interleaved rounds; x = exchange / floor "
          f"(p50: > 1 slower; orders/s: floor / exchange)")
    print(f"{'protocol':8} {'server':9} {'p50 us':>9} {'p99 us':>9} {'orders/s':>10}  rounds")
    for proto in ("fix", "ouch"):
        if proto not in out or not isinstance(out[proto], dict):
            continue
        for name in ("exchange", "floor"):
            r = out[proto][name]
            print(f"{proto:8} {name:9} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['orders_per_s']:10,}  "
                  f"{', '.join(f'{x:,}' for x in r['orders_per_s_rounds'])}")
        print(f"{proto:8} ratio     {out[proto]['ratio_p50']:8.2f}x {'':>9} {out[proto]['ratio_throughput']:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
