"""OUCH 4.2 order entry under SIGKILL (issue 10, durability suite, OUCH side): an exchange process (journaled
engine + pipeline + OUCH acceptor with its stream store) is killed with SIGKILL at random points while two
users trade, and restarted from the same directories. At the end each user logs in from sequence 1:

- every sequenced message a user received before a kill comes back under the same sequence number;
- a token is accepted at most once (tokens re-entered after a restart are not entered again);
- every order and fill of the user's account in the journal is reported exactly once.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

from feedhandler.protocols import ouch42, soupbintcp as soup

SERVER = textwrap.dedent("""
    import sys, threading
    from engine.gateway import OrderPipeline
    from engine.manager import EngineManager
    from engine.ouch.acceptor import OuchAcceptor
    from engine.risk import RiskLimits, RiskManager
    data = sys.argv[1]
    eng = EngineManager(["AAPL"], journal_dir=data + "/journal", fsync="none")
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(price_band_bps=0)))
    acc = OuchAcceptor(pipe, {"alice": ("pw", "ACC-A"), "bob": ("pw", "ACC-B")}, session="SESSION01",
                       store_dir=data + "/soup", heartbeat_s=5).start()
    print(acc.port, acc.stats["caught_up"], flush=True)
    threading.Event().wait()
""")


class User:
    def __init__(self, port, name, seq=0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = soup.Framer()
        self.msgs: dict[int, bytes] = {}
        self.s.sendall(soup.login_request(name, "pw", "", seq))
        self.next = None
        self.read(until_login=True)

    def read(self, until_login=False, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.s.settimeout(max(end - time.monotonic(), 0.01))
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                return
            except OSError:
                return
            if not data:
                return
            for t, p in self.f.feed(data):
                if t == soup.LOGIN_ACCEPTED:
                    self.next = soup.parse_login_accepted(p)[1]
                    if until_login:
                        until_login = False
                        end = time.monotonic() + 0.5      # what follows the login: the replay
                elif t == soup.SEQUENCED_DATA:
                    self.msgs[self.next] = p
                    self.next += 1

    def enter(self, tok, side, shares, tif):
        try:
            self.s.sendall(soup.unsequenced(ouch42.encode(
                "enter_order", order_token=tok, side=side, shares=shares, stock="AAPL", price=1_000_000,
                time_in_force=tif, firm="FRM", display=b"Y", capacity=b"A", intermarket_sweep=b"N",
                minimum_quantity=0, cross_type=b"N", customer_type=b"R")))
        except OSError:
            pass

    def close(self):
        self.s.close()


def start(data):
    p = subprocess.Popen([sys.executable, "-c", SERVER, str(data)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    line = p.stdout.readline().split()
    assert line, "server did not start"
    return p, int(line[0])


def test_sigkill_under_ouch_load_loses_no_message(tmp_path):
    rnd = random.Random(int(os.environ.get("FH_SEED", "8")))
    live = {"alice": {}, "bob": {}}
    n = 0
    for cycle in range(4):
        p, port = start(tmp_path)
        try:
            a, b = User(port, "alice"), User(port, "bob")
            readers = [threading.Thread(target=u.read, kwargs={"timeout": 5.0}) for u in (a, b)]
            for r in readers:
                r.start()
            for _ in range(40):
                n += 1
                a.enter(f"A{n}", b"S", rnd.choice([10, 20, 30]), 99999)
                b.enter(f"B{n}", b"B", rnd.choice([5, 15, 25]), 0)
            if cycle == 2:
                a.enter("A1", b"S", 7, 99999)        # a token from before a restart: never entered again
            time.sleep(rnd.uniform(0.0, 0.25))
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
            for r in readers:
                r.join(10)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        for u, name in ((a, "alice"), (b, "bob")):
            live[name].update(u.msgs)
            u.close()

    p, port = start(tmp_path)
    full = {}
    try:
        for name in ("alice", "bob"):
            u = User(port, name, seq=1)
            u.read(timeout=1.0)
            full[name] = u.msgs
            u.close()
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    for name in ("alice", "bob"):
        for seq, msg in live[name].items():
            assert full[name].get(seq) == msg, f"{name}: message {seq} told live differs or is gone"
    from engine.journal import read_journal
    from engine.manager import ShardEngine
    payloads, _ = read_journal(str(tmp_path / "journal" / "journal.bin"))
    eng = ShardEngine(["AAPL"])
    eng.replay_payloads(payloads)
    events = eng.take_replayed()
    for name, acct in (("alice", "ACC-A"), ("bob", "ACC-B")):
        want, got = [], []
        for ev in events:
            if ev["account"] == acct and ev["type"] == "accepted":
                want.append(("accepted", ev["client_order_id"].encode(), ev["order_id"]))
            elif ev["account"] == acct and ev["type"] == "fill":
                want.append(("executed", ev["trade_id"]))
        tokens = []
        for seq in sorted(full[name]):
            kind, f = ouch42.decode(full[name][seq], "out")
            if kind == "accepted":
                got.append(("accepted", f["order_token"], f["order_reference_number"]))
                tokens.append(f["order_token"])
            elif kind == "executed":
                got.append(("executed", f["match_number"]))
        assert sorted(got) == sorted(want), f"{name}: journal and stream differ"
        assert len(tokens) == len(set(tokens)), f"{name}: a token accepted twice"
    assert n == 160
