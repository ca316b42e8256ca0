"""The durability suite of issue 10 ("the exchange keeps its word"): a real ``feedhandler exchange`` process,
with its FIX acceptor, under a concurrent load of gateway clients (engine.client over ZeroMQ, retrying with
the same rid and client order id) and FIX sessions, is

1. killed with SIGKILL at random points (seeded: the seed is printed, ``FH_SEED=N`` repeats a run) and
   restarted on the same data dir, several rounds;
2. failed over: the primary is killed with SIGKILL and its ``--standby-of`` standby takes over (same ports);
3. run on two shard servers, one of which is stopped (SIGSTOP) past the router's timeout, then continued.

Checked against what the clients were told, over the journal's replay (tests/_durability_support.py):
no acknowledged order, fill or cancel lost; no order entered twice by a retry (gateway rid/client order id,
FIX ClOrdID re-sent after re-logon); no order reported "rejected" ever accepted (alive in a book); risk
limits (max position) and the price band held across every restart; every FIX session got every report it
missed, in order, by resend after its re-logon (nothing missing, nothing twice, MsgSeqNums never reused); the
exchange's full state hash printed at its last stop equals the one of an exchange rebuilt offline from the
same data dir; every order answered "unknown" (a stalled shard) is settled.

Slow (about a minute): runs with FH_RUN_SLOW=1 (CI sets it).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import threading
import time

import pytest

zmq = pytest.importorskip("zmq")
simplefix = pytest.importorskip("simplefix")

from _durability_fix import FixClient, check_reports_against_journal  # noqa: E402
from _durability_support import (PX, SPEC, Trader, check_acknowledged, free_port, popen, read_until,  # noqa: E402
                                 stop as stop_process, wait_for)
from engine.fix.message import utc_timestamp  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("FH_RUN_SLOW") or os.environ.get("FH_RUN_SLOW") == "0",
                       reason="the durability suite runs for about a minute: FH_RUN_SLOW=1 runs it"),
    pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present"),
]

SEED = int(os.environ.get("FH_SEED") or random.SystemRandom().randrange(1_000_000))
MAX_POS = 12
BAND_BPS = 1_000
SYMS = ["AAPL", "MSFT"]
ACCOUNTS = ["A0", "A1", "A2", "A3"]
FIX_SESSIONS = [("S1", "FIX.4.4", "F1"), ("S2", "FIX.4.2", "F2")]
REPORT_FIELDS = (11, 17, 37, 39, 150, 14, 151)


def write_config(path, fix_port: int | None, extra: str = "") -> str:
    lines = ["symbols = [\"AAPL\", \"MSFT\"]", "", "[risk]", f"max_position = {MAX_POS}",
             f"price_band_bps = {BAND_BPS}", "rate_per_s = 0", "bytes_per_s = 0",
             f"reference_prices = {{AAPL = {100 * PX}, MSFT = {100 * PX}}}", "", "[history]", "enabled = false", ""]
    for k, a in enumerate(ACCOUNTS):
        lines += ["[[keys]]", f'api_key = "key{k}"', f'secret = "secret{k}"', f'account = "{a}"', ""]
    if fix_port is not None:
        sessions = ", ".join(f'{{begin_string = "{b}", our_comp_id = "EXCH", their_comp_id = "{s}", account = "{a}"}}'
                             for s, b, a in FIX_SESSIONS)
        lines += ["[fix]", f"port = {fix_port}", f'spec_dir = "{SPEC}"', f"sessions = [{sessions}]", ""]
    path.write_text("\n".join(lines) + extra)
    return str(path)


# ---- a FIX session that lives through kills ----------------------------------------------------------------
class FixSession(threading.Thread):
    """One FIX session trading while the exchange is killed and restarted. On every (re)connection it logs on
    with its next MsgSeqNum, asks by ResendRequest for everything from the first number it lacks, re-sends
    (same ClOrdID, once) each order it has no report for, then sends new orders (day and IOC, price 100). It
    answers the acceptor's ResendRequests with a GapFill (an order is re-sent as a new message, if at all).
    ``reconnect_delay`` (lo, hi): seconds it stays away after losing its connection, while the gateway traders
    go on trading against its resting orders: fills for a logged-out session, which it gets at re-logon by
    resend (without it the session is back before the gateway, and a resend needs a kill that lands with a
    report in flight)."""

    def __init__(self, port: int, sender: str, begin: str, account: str, stop: threading.Event, seed: int,
                 reconnect_delay: tuple[float, float] = (0.0, 0.0)):
        super().__init__(daemon=True, name=f"fix-{sender}")
        self.reconnect_delay = reconnect_delay
        self.port, self.sender, self.begin, self.account, self.stop_ev = port, sender, begin, account, stop
        self.rng = random.Random(seed)
        self.seq = 1                                  # our next outbound MsgSeqNum
        self.msgs: dict[int, object] = {}             # MsgSeqNum -> first message received with it
        self.again: list = []                         # (MsgSeqNum, message) received again (PossDupFlag)
        self.reused: list = []                        # a number received twice without PossDupFlag
        self.covered: set[int] = set()
        self.orders: dict[str, list] = {}             # ClOrdID -> the order's fields, in sending order
        self.reported: set[str] = set()
        self.retried: set[str] = set()
        self.logons = 0
        self.resend_requests = 0
        self.n = 0
        self.error: BaseException | None = None

    def first_missing(self) -> int:
        k = 1
        while k in self.covered:
            k += 1
        return k

    def _take(self, c, m) -> None:
        seq = int(m.get(34))
        t = m.get(35)
        if t == b"2":                     # the acceptor lacks some of ours: GapFill (orders are not replayed)
            c.send(b"4", [(123, "Y"), (36, c.seq)], seq=int(m.get(7)))
        if t == b"4" and m.get(123) == b"Y":
            self.covered.update(range(seq, int(m.get(36))))
            return
        if seq in self.msgs:
            (self.again if m.get(43) == b"Y" else self.reused).append((seq, m))
            return
        self.msgs[seq] = m
        self.covered.add(seq)
        if t == b"8" and m.get(11) is not None:
            self.reported.add(m.get(11).decode())

    def _read(self, c, timeout: float) -> bool:
        """Take what arrives within ``timeout``; False when the connection is gone."""
        end = time.monotonic() + timeout
        while True:
            try:
                m = c.recv(timeout=max(0.0, end - time.monotonic()))
            except OSError:
                return False
            if m == "EOF":
                return False
            if m is None:
                return True
            self._take(c, m)

    def _order(self, c, clid: str, fields: list) -> None:
        c.send(b"D", [(11, clid)] + fields + [(60, utc_timestamp().decode())])

    def _session(self, c) -> None:
        c.send(b"A", [(98, 0), (108, 30)])
        end = time.monotonic() + 10
        logon = None
        while logon is None and time.monotonic() < end:
            try:
                m = c.recv(timeout=0.5)
            except OSError:
                return
            if m == "EOF":
                return
            if m is not None:
                self._take(c, m)
                if m.get(35) == b"A":
                    logon = m
        if logon is None:
            return
        self.logons += 1
        first = self.first_missing()
        if int(logon.get(34)) > first:                 # we missed reports while the exchange was down
            c.send(b"2", [(7, first), (16, 0)])
            self.resend_requests += 1
            end = time.monotonic() + 5
            while self.first_missing() <= int(logon.get(34)) and time.monotonic() < end:
                if not self._read(c, 0.1):
                    return
        for clid, fields in list(self.orders.items()):   # no report at all: the same order again, once
            if clid not in self.reported and clid not in self.retried:
                self.retried.add(clid)
                self._order(c, clid, fields)
        while not self.stop_ev.is_set():
            self.n += 1
            clid = f"{self.sender}-{self.n}"
            fields = [(21, "1"), (55, "AAPL"), (54, self.rng.choice("12")), (38, self.rng.randint(1, 3)),
                      (40, "2"), (44, "100"), (59, self.rng.choice("03"))]
            self.orders[clid] = fields
            self._order(c, clid, fields)
            if not self._read(c, self.rng.uniform(0.01, 0.05)):
                return
        self._read(c, 1.0)                               # what is still on its way

    def run(self) -> None:
        try:
            while not self.stop_ev.is_set():
                try:
                    c = FixClient(self.port, self.sender, self.begin, self.seq)
                except OSError:                        # the exchange is down
                    time.sleep(0.05)
                    continue
                try:
                    self._session(c)
                except OSError:
                    pass
                finally:
                    self.seq = c.seq
                    c.close()
                if not self.stop_ev.is_set() and self.reconnect_delay[1] > 0:
                    self.stop_ev.wait(self.rng.uniform(*self.reconnect_delay))
        except Exception as e:   # reported by the test
            self.error = e

    # ---- the checks -----------------------------------------------------------------------------------
    def check(self, events: list[dict]) -> None:
        """Every report the session missed came by resend after a re-logon: compared with the journal's
        events of its account, each New and fill reported once, per order in journal order."""
        assert self.error is None, self.error
        top = max(self.msgs)
        assert self.first_missing() > top, f"{self.sender}: MsgSeqNum {self.first_missing()} never received"
        assert not self.reused, f"{self.sender}: MsgSeqNums reused: {[s for s, _ in self.reused]}"
        for seq, m in self.again:                        # a resent report is the report first sent
            if m.get(35) == b"8":
                assert [m.get(t) for t in REPORT_FIELDS] == [self.msgs[seq].get(t) for t in REPORT_FIELDS], seq
        reports = [self.msgs[s] for s in sorted(self.msgs) if self.msgs[s].get(35) == b"8"]
        ids = [m.get(17) for m in reports]
        assert len(ids) == len(set(ids)), f"{self.sender}: ExecIDs repeated"
        check_reports_against_journal(reports, events, self.account, self.sender)


# ---- the exchange ---------------------------------------------------------------------------------------------
def start_exchange(cfg: str, data: str, port: int, *extra: str):
    p = popen("exchange", "--config", cfg, "--port", str(port), "--md-port", "0", "--fsync", "none", *extra,
              *(("--data-dir", data) if "--standby-of" not in extra else ()))
    return p


def wait_up(p, timeout: float = 60.0) -> None:
    read_until(p, r"exchange up: gateway=", timeout)


def stop_and_hash(p) -> str:
    """SIGTERM; the state hash the exchange printed as it stopped (all input stopped, journal flushed)."""
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    m = re.search(r"exchange stopped: .* state_hash=([0-9a-f]{64})", out)
    assert m, (out, err)
    return m.group(1)


def offline_replay(data: str, tmp_path) -> tuple[str, list[dict]]:
    """An exchange rebuilt from a copy of the data dir (journal + FIX session stores, nothing else): its
    state hash and the events of its journal replay."""
    from engine.exchange import Exchange, load_config
    from engine.manager import EngineManager

    copy = tmp_path / "offline"
    shutil.copytree(data, copy)
    cfg = load_config(str(tmp_path / "exchange.toml"), {
        "data_dir": str(copy), "gateway.endpoint": "tcp://127.0.0.1:*", "marketdata.endpoint": "tcp://127.0.0.1:*",
        "fix.port": 0, "engine.fsync": "none"})
    with Exchange(cfg) as ex:
        h = ex.state_hash()
    with EngineManager(SYMS, journal_dir=str(copy / "journal")) as eng:
        evs = eng.take_replayed()
    return h, evs


def run_load(port: int, fix_port: int | None, symbols=("AAPL",), seed: int = SEED):
    stop = threading.Event()
    ep = f"tcp://127.0.0.1:{port}"
    traders = [Trader(ep, k, stop, a, symbols=symbols, seed=seed) for k, a in enumerate(ACCOUNTS)]
    # the second session stays away a while after each lost connection (see FixSession)
    sessions = [] if fix_port is None else [FixSession(fix_port, s, b, a, stop, seed + i,
                                                       reconnect_delay=(0.3, 1.0) if i else (0.0, 0.0))
                                            for i, (s, b, a) in enumerate(FIX_SESSIONS)]
    for t in traders + sessions:
        t.start()
    return stop, traders, sessions


def end_load(stop, traders, sessions) -> None:
    stop.set()
    for t in traders + sessions:
        t.join(60)
        assert not t.is_alive(), f"{t.name} did not end"
        assert t.error is None, t.error


def finish_and_check(p, load, data: str, tmp_path, logons: int) -> int:
    """Let the load run on the last exchange a little, stop it, stop the exchange (its state hash) and check
    everything against the journal; the number of acknowledged gateway orders."""
    stop, traders, sessions = load
    time.sleep(1.5)
    end_load(stop, traders, sessions)
    live_hash = stop_and_hash(p)
    offline_hash, evs = offline_replay(data, tmp_path)
    _, n_acked = check_acknowledged(evs, traders, max_pos=MAX_POS, band_bps=BAND_BPS,
                                    ref_prices={s: 100 * PX for s in SYMS})
    for s in sessions:
        s.check(evs)
        assert s.logons == logons, (s.sender, s.logons)
    assert live_hash == offline_hash
    return n_acked


@pytest.fixture
def seed():
    print(f"durability suite seed {SEED} (FH_SEED={SEED} repeats it)")
    return SEED


@pytest.fixture
def procs():
    started: list = []
    yield started
    for p in started:
        if p.poll() is None:
            stop_process(p, signal.SIGKILL)


def start_primary(tmp_path, procs):
    """An exchange with FIX on free ports: (config path, data dir, gateway port, FIX port, process)."""
    port, fix_port = free_port(), free_port()
    cfg = write_config(tmp_path / "exchange.toml", fix_port)
    data = str(tmp_path / "data")
    p = start_exchange(cfg, data, port)
    procs.append(p)
    wait_up(p)
    return cfg, data, port, fix_port, p


def test_sigkill_at_random_points_under_gateway_and_fix_load(tmp_path, seed, procs):
    rng = random.Random(seed)
    cfg, data, port, fix_port, p = start_primary(tmp_path, procs)
    stop, traders, sessions = run_load(port, fix_port)
    # at least 3 kills; more (up to 10) until a kill has cost a FIX session reports that it then gets by
    # resend (a kill can land where no report is in flight: seed 651519 saw none in 3)
    kills = 0
    while kills < 3 or (sum(s.resend_requests for s in sessions) == 0 and kills < 10):
        n = kills
        assert wait_for(lambda: all(s.logons > n for s in sessions), 30), "a FIX session did not log on"
        time.sleep(rng.uniform(0.5, 1.5))
        p.kill()                                     # SIGKILL at a random point of the load
        p.communicate(timeout=10)
        time.sleep(rng.uniform(0.0, 0.3))
        p = start_exchange(cfg, data, port)
        procs.append(p)
        wait_up(p)
        kills += 1
        assert wait_for(lambda: all(s.logons > kills for s in sessions), 30), "a FIX session did not log on"
    n_acked = finish_and_check(p, (stop, traders, sessions), data, tmp_path, logons=kills + 1)
    assert n_acked > 20
    assert sum(t.timeouts + t.retries for t in traders) > 0                 # it really crashed under load
    assert sum(s.resend_requests for s in sessions) > 0                     # reports were missed, then resent
    print(f"acked {n_acked} gateway orders, FIX reports {[len(s.msgs) for s in sessions]}, "
          f"re-sent ClOrdIDs {[len(s.retried) for s in sessions]}, gateway retries "
          f"{sum(t.timeouts + t.retries for t in traders)}")


def test_failover_kill_9_the_primary_under_load(tmp_path, seed, procs):
    rng = random.Random(seed + 1)
    cfg, data, port, fix_port, primary = start_primary(tmp_path, procs)
    standby = start_exchange(cfg, data, port, "--standby-of", data)         # same ports, bound at takeover
    procs.append(standby)
    read_until(standby, r"standby of .*following 1 shard journal")
    stop, traders, sessions = run_load(port, fix_port)
    assert wait_for(lambda: all(s.logons for s in sessions), 30), "a FIX session did not log on"
    time.sleep(rng.uniform(1.0, 2.0))
    primary.kill()
    primary.communicate(timeout=10)
    read_until(standby, r"taking over: .*; epoch (\d+), seq (\d+)", timeout=30)
    wait_up(standby)
    assert wait_for(lambda: all(s.logons == 2 for s in sessions), 30), "a FIX session did not log on again"
    n_acked = finish_and_check(standby, (stop, traders, sessions), data, tmp_path, logons=2)
    assert n_acked > 10


def test_shard_stalled_past_the_router_timeout(tmp_path, seed, procs):
    from engine.manager import EngineManager
    from test_ops_shards import Server

    rng = random.Random(seed + 2)
    servers = [Server(), Server()]
    try:
        port = free_port()
        timeout_s = 0.5
        remote = ", ".join(f'"{s.endpoint}"' for s in servers)
        cfg = write_config(tmp_path / "exchange.toml", None,
                           f"\n[engine]\nremote = [{remote}]\nremote_timeout_s = {timeout_s}\n")
        data = str(tmp_path / "data")
        p = start_exchange(cfg, data, port)
        procs.append(p)
        wait_up(p)
        stop, traders, _ = run_load(port, None, symbols=SYMS)
        # A stall answers "unknown" to the orders of the first call that reaches the stalled shard; the shard
        # is then down and later orders are rejected at once. That first call can be a cancel or a query
        # (about one stall in three here), so stall at least 3 times, and again until an order met one.
        stalls = 0
        while stalls < 3 or (not any(t.unknown for t in traders) and stalls < 15):
            stalls += 1
            time.sleep(rng.uniform(0.4, 1.0))
            s = rng.choice(servers)
            s.stall()                                   # SIGSTOP past the router's timeout
            time.sleep(rng.uniform(2 * timeout_s, 4 * timeout_s))
            s.resume()
        time.sleep(1.0)
        end_load(stop, traders, [])
        stop_and_hash(p)
    finally:
        for s in servers:
            s.close()                                   # SIGTERM: the shard journals flushed
    with EngineManager(SYMS, journal_dir=str(tmp_path / "data" / "journal"), shards=2) as eng:
        evs = eng.take_replayed()
    accepted, n_acked = check_acknowledged(evs, traders, max_pos=MAX_POS, band_bps=BAND_BPS,
                                           ref_prices={s: 100 * PX for s in SYMS},
                                           shard_of=lambda ev: SYMS.index(ev["symbol"]) % 2)
    assert n_acked > 20
    unknown = [(t.acct, clid) for t in traders for clid in t.unknown]
    assert unknown, f"no order met a stalled shard in {stalls} stalls"
    for t in traders:                                   # every unknown outcome settled, as the journal says
        for clid in t.unknown:
            ev = t.settled.get(clid)
            assert ev is not None, f"{t.acct} {clid}: answered unknown, never settled"
            assert accepted[(t.acct, clid)] == (ev["exec_type"] != "rejected"), (clid, ev)
    from collections import Counter
    print(f"acked {n_acked}, unknown then settled {len(unknown)}, rejected "
          f"{Counter(r for t in traders for r in t.rejected.values())}")

