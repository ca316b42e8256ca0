"""FIX order entry under SIGKILL (issue 10, durability suite, FIX side): an exchange process (journaled
engine + pipeline + FIX acceptor with its session stores) is killed with SIGKILL at random points while
two FIX sessions trade against each other, and restarted from the same directories. At the end each
session asks for everything (ResendRequest 1..0) and the full stream is checked against what the clients
were told live and against an offline replay of the journal:

- every message a client received before a kill comes back under the same MsgSeqNum, unchanged;
- ExecIDs are unique across all restarts;
- every order of the session's account in the journal has exactly one New report, and every fill of it
  in the journal one fill report (CumQty after it, LastQty), in journal order: nothing missed, nothing twice.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

simplefix = pytest.importorskip("simplefix")

from _durability_fix import FixClient as Client, fix_logon as logon, fix_order as order  # noqa: E402,F401
from _durability_fix import check_reports_against_journal  # noqa: E402
from _durability_support import SPEC  # noqa: E402

pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")

SERVER = textwrap.dedent("""
    import sys, threading
    from engine.fix.acceptor import FixAcceptor, OrderApplication, SessionConfig
    from engine.gateway import OrderPipeline
    from engine.manager import EngineManager
    from engine.risk import RiskLimits, RiskManager
    data, spec = sys.argv[1], sys.argv[2]
    eng = EngineManager(["AAPL"], journal_dir=data + "/journal", fsync="none")
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0)))
    app = OrderApplication(pipe, {"S1": "ACC-1", "S2": "ACC-2"})
    acc = FixAcceptor([SessionConfig("FIX.4.4", "EXCH", "S1"), SessionConfig("FIX.4.2", "EXCH", "S2")],
                      app, spec, store_dir=data + "/store").start()
    print(acc.port, app.stats["caught_up"], flush=True)
    threading.Event().wait()
""")


def start(data):
    p = subprocess.Popen([sys.executable, "-c", SERVER, str(data), str(SPEC)], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    line = p.stdout.readline().split()
    assert line, "server did not start"
    return p, int(line[0]), int(line[1])


def test_sigkill_under_fix_load_loses_no_report(tmp_path):
    rnd = random.Random(int(os.environ.get("FH_SEED", "10")))
    seqs = {"S1": 1, "S2": 1}
    live: dict[str, dict[int, bytes]] = {"S1": {}, "S2": {}}
    n = 0
    caught_up = 0
    for cycle in range(4):
        p, port, cu = start(tmp_path)
        caught_up += cu
        try:
            c1 = Client(port, "S1", "FIX.4.4", seqs["S1"])
            c2 = Client(port, "S2", "FIX.4.2", seqs["S2"])
            logon(c1)
            logon(c2)
            readers = [threading.Thread(target=c.pump, args=(5.0,)) for c in (c1, c2)]
            for r in readers:
                r.start()
            for _ in range(40):
                n += 1
                try:
                    order(c1, f"A{n}", "2", rnd.choice([10, 20, 30]), "0")
                    order(c2, f"B{n}", "1", rnd.choice([5, 15, 25]), "3")
                except OSError:
                    pass
            time.sleep(rnd.uniform(0.0, 0.25))
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
            for r in readers:
                r.join(10)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        for c, who in ((c1, "S1"), (c2, "S2")):
            for m in c.got:
                live[who][int(m.get(34))] = m.encode(raw=True)
            seqs[who] = c.seq
            c.close()

    # final start: each session asks for everything
    p, port, cu = start(tmp_path)
    caught_up += cu
    streams = {}
    try:
        for who, begin in (("S1", "FIX.4.4"), ("S2", "FIX.4.2")):
            c = Client(port, who, begin, seqs[who])
            logon(c)
            c.got.clear()
            c.send(b"2", [(7, 1), (16, 0)])
            c.pump(timeout=1.0)
            streams[who] = {int(m.get(34)): m for m in c.got if m.get(35) in (b"8", b"9")}
            c.close()
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    # 1. what a client was told live comes back unchanged under the same MsgSeqNum
    for who in ("S1", "S2"):
        for seq, raw in live[who].items():
            m = simplefix.FixParser()
            m.append_buffer(raw)
            m = m.get_message()
            if m.get(35) not in (b"8", b"9"):
                continue
            again = streams[who].get(seq)
            assert again is not None, f"{who}: report {seq} told live is gone"
            assert [again.get(t) for t in (11, 17, 37, 39, 150, 14, 151)] == \
                   [m.get(t) for t in (11, 17, 37, 39, 150, 14, 151)]
    # 2. ExecIDs unique across restarts
    ids = [m.get(17) for s in streams.values() for m in s.values() if m.get(35) == b"8"]
    assert len(ids) == len(set(ids)) and ids
    # 3. the journal's events of each account, each reported exactly once, in order
    from engine.journal import read_journal
    from engine.manager import ShardEngine
    payloads, _ = read_journal(str(tmp_path / "journal" / "journal.bin"))
    eng = ShardEngine(["AAPL"])
    eng.replay_payloads(payloads)
    events = eng.take_replayed()
    for who, acct in (("S1", "ACC-1"), ("S2", "ACC-2")):
        check_reports_against_journal([streams[who][seq] for seq in sorted(streams[who])], events, acct, who)
    assert n == 160
    print("caught up after kills:", caught_up)
