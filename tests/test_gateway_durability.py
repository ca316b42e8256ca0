"""Durability of the JSON gateway path (issue 10): SIGKILL the exchange process at random points under
concurrent gateway clients (engine.client), restart it, and check against what the clients were told.

- no acknowledged order, fill or cancel is lost (each is in the journal's replay);
- no order is entered twice by a retry (one ``accepted`` per account and client order id, ever);
- risk limits and the price band held across restarts (checked over the whole replayed history);
- the state hash of the last live process equals an offline replay of the same journal.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("zmq")

from _durability_support import PX, Trader, check_acknowledged, free_port  # noqa: E402
from engine.gateway import OrderPipeline
from engine.manager import EngineManager
from engine.risk import RiskLimits, RiskManager

SERVER = os.path.join(os.path.dirname(__file__), "gateway_edge_server.py")
MAX_POS = 12
BAND_BPS = 1_000
RISK = {"max_position": MAX_POS, "price_band_bps": BAND_BPS, "reference_prices": {"AAPL": 100 * PX},
        "rate_per_s": 0, "bytes_per_s": 0}
ACCOUNTS = ["A0", "A1", "A2", "A3"]


class Server:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.p = None

    def start(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen([sys.executable, SERVER, json.dumps(self.cfg)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError("server did not start: " + self.p.stderr.read())
        return json.loads(line)

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)
        self.p.stdout.close()
        self.p.stderr.close()

    def terminate(self) -> dict:
        self.p.send_signal(signal.SIGTERM)
        out, err = self.p.communicate(timeout=30)
        assert self.p.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


def _replay(journal_dir: str):
    eng = EngineManager(["AAPL"], journal_dir=journal_dir)
    evs = eng.take_replayed()
    return eng, evs


def test_sigkill_under_load_keeps_every_acknowledgement(tmp_path):
    jd = str(tmp_path / "journal")
    port = free_port()
    cfg = {"symbols": ["AAPL"], "journal_dir": jd, "endpoint": f"tcp://127.0.0.1:{port}", "risk": RISK,
           "keys": [[f"key{k}", f"secret{k}", a] for k, a in enumerate(ACCOUNTS)]}
    srv = Server(cfg)
    stop = threading.Event()
    try:
        ep = srv.start()["endpoint"]
        traders = [Trader(ep, k, stop, ACCOUNTS[k]) for k in range(len(ACCOUNTS))]
        for t in traders:
            t.start()
        rng = random.Random(10)
        kills = 4
        for _ in range(kills):
            time.sleep(rng.uniform(0.4, 1.2))
            srv.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            info = srv.start()
            assert info["rebuilt"] > 0
        time.sleep(1.0)
        stop.set()
        for t in traders:
            t.join(30)
            assert not t.is_alive() and t.error is None, t.error
        live_hash = srv.terminate()["state_hash"]
    finally:
        stop.set()
        if srv.p is not None and srv.p.poll() is None:
            srv.p.kill()
            srv.p.wait()

    eng, evs = _replay(jd)
    try:
        _, n_acked = check_acknowledged(evs, traders, max_pos=MAX_POS, band_bps=BAND_BPS,
                                        ref_prices={"AAPL": 100 * PX})
        assert n_acked > 20 and sum(t.timeouts + t.retries for t in traders) > 0     # it really crashed under load
    finally:
        eng.close()
    offline = OrderPipeline(EngineManager(["AAPL"], journal_dir=jd), RiskManager(RiskLimits(**RISK)))
    try:
        assert offline.state_hash() == live_hash
    finally:
        offline.engine.close()
