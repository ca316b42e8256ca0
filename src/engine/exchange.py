"""The ``exchange`` command: gateway + engines (+ optional FIX and OUCH acceptors) from one TOML file.

    feedhandler exchange                       # localhost defaults, demo API keys, ./exchange-data
    feedhandler exchange --config exch.toml --symbols AAPL,MSFT --port 5555 --workers 2

Configuration (every key optional; shown with its default)::

    symbols = ["AAPL", "MSFT", "SPY"]
    data_dir = "exchange-data"                 # journal, trade log, latency CSV, FIX/OUCH stores

    [gateway]
    endpoint = "tcp://127.0.0.1:5555"          # ROUTER
    workers = 2
    hwm = 10000                                # messages per socket queue
    recv_window_ms = 5000                      # accepted request timestamp skew
    max_pending = 1024                         # requests waiting for the engine before "busy"

    [marketdata]
    endpoint = "tcp://127.0.0.1:5556"          # PUB of tick records

    [engine]
    fsync = "batch"                            # every | batch | interval | none (see engine.journal)
    fsync_interval_ms = 10
    shards = 1
    processes = false
    tick_size = 1                              # 1e-9 units
    stp = "cancel_newest"
    journal = true

    [risk]                                     # engine.risk.RiskLimits fields
    max_order_qty = 1000000
    price_band_bps = 1000

    [[keys]]                                   # API keys (the secrets stay in this process)
    api_key = "demo-mm"
    secret = "demo-mm-secret"
    account = "MM"

    [fix]                                      # FIX 4.2/4.4 acceptor (off unless port is set)
    port = 9878
    spec_dir = "../shared/data/fix/spec"       # QuickFIX FIX42.xml / FIX44.xml
    sessions = [{begin_string = "FIX.4.4", our_comp_id = "EXCH", their_comp_id = "CLIENT1", account = "C1"}]

    [ouch]                                     # OUCH 4.2 over SoupBinTCP (off unless port is set)
    port = 15000
    users = {ouch1 = {password = "pw", account = "O1"}}

Shutdown: SIGINT/SIGTERM stop the acceptors and the gateway, then close the engine (journal flushed and
fsynced), the trade log and the latency report.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

DEMO_KEYS = [
    {"api_key": "demo-mm", "secret": "demo-mm-secret", "account": "MM"},
    {"api_key": "demo-taker", "secret": "demo-taker-secret", "account": "TAKER"},
]
DEFAULTS = {
    "symbols": ["AAPL", "MSFT", "SPY"],
    "data_dir": "exchange-data",
    "gateway": {"endpoint": "tcp://127.0.0.1:5555", "workers": 2, "hwm": 10_000, "recv_window_ms": 5_000,
                "max_pending": 1024},
    "marketdata": {"endpoint": "tcp://127.0.0.1:5556"},
    "engine": {"fsync": "batch", "fsync_interval_ms": 10, "shards": 1, "processes": False, "tick_size": 1,
               "stp": "cancel_newest", "journal": True},
    "risk": {},
    "keys": DEMO_KEYS,
    "fix": {},
    "ouch": {},
    "latency": {"interval_s": 5.0},
}


def load_config(path: str | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the TOML file, then ``overrides`` (dotted keys allowed: ``gateway.workers``)."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    if path:
        if tomllib is None:
            raise RuntimeError("reading TOML needs Python >= 3.11 (tomllib)")
        with open(path, "rb") as f:
            user = tomllib.load(f)
        for k, v in user.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if "." in k:
            a, b = k.split(".", 1)
            cfg.setdefault(a, {})[b] = v
        else:
            cfg[k] = v
    return cfg


class Exchange:
    """Everything the ``exchange`` command runs, startable in-process (tests, the demo bot)."""

    def __init__(self, cfg: dict):
        from engine.auth import Authenticator, KeyStore
        from engine.gateway import Gateway, OrderPipeline
        from engine.latency import LatencyMonitor
        from engine.manager import EngineManager
        from engine.marketdata import MarketDataPublisher
        from engine.portfolio import PortfolioManager
        from engine.risk import RiskLimits, RiskManager
        from engine.tradelog import TradeLogger

        self.cfg = cfg
        self.data_dir = Path(cfg["data_dir"])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        e = cfg["engine"]
        self.trade_log = TradeLogger(str(self.data_dir / "trades.csv"))
        self.portfolio = PortfolioManager()
        self.latency = LatencyMonitor()
        self.engine = EngineManager(
            list(cfg["symbols"]), journal_dir=str(self.data_dir / "journal") if e.get("journal", True) else None,
            fsync=e["fsync"], fsync_interval_ms=int(e["fsync_interval_ms"]), shards=int(e["shards"]),
            processes=bool(e["processes"]), stp=e["stp"], tick_size=int(e["tick_size"]),
            trade_log=self.trade_log, portfolio=self.portfolio)
        self.marketdata = MarketDataPublisher(list(cfg["symbols"]), cfg["marketdata"]["endpoint"])
        self.risk = RiskManager(RiskLimits(**cfg.get("risk", {})))
        self.pipeline = OrderPipeline(self.engine, self.risk, marketdata=self.marketdata,
                                      max_pending=int(cfg["gateway"]["max_pending"]), portfolio=self.portfolio,
                                      latency=self.latency)
        keys = KeyStore()
        for k in cfg["keys"]:
            keys.add(k["api_key"], k["secret"], k["account"])
        g = cfg["gateway"]
        self.gateway = Gateway(self.pipeline, Authenticator(keys, int(g["recv_window_ms"]) * 1_000_000),
                               g["endpoint"], workers=int(g["workers"]), hwm=int(g["hwm"]))
        self.fix = None
        self.ouch = None
        self._stopped = threading.Event()

    def start(self) -> "Exchange":
        self.marketdata.start()
        self.gateway.start()
        self.latency.start(str(self.data_dir / "latency.csv"), float(self.cfg["latency"]["interval_s"]))
        f = self.cfg.get("fix") or {}
        if f.get("port") is not None and f.get("sessions"):
            from engine.fix.acceptor import FixAcceptor, OrderApplication, SessionConfig
            sessions = [SessionConfig(**s) for s in f["sessions"]]
            app = OrderApplication(self.pipeline, {s.their_comp_id: s.account or s.their_comp_id for s in sessions})
            self.fix = FixAcceptor(sessions, app, f.get("spec_dir", "../shared/data/fix/spec"),
                                   store_dir=str(self.data_dir / "fix"), host=f.get("host", "127.0.0.1"),
                                   port=int(f["port"])).start()
        o = self.cfg.get("ouch") or {}
        if o.get("port") is not None and o.get("users"):
            from engine.ouch.acceptor import OuchAcceptor
            users = {u: (v["password"], v["account"]) for u, v in o["users"].items()}
            self.ouch = OuchAcceptor(self.pipeline, users, host=o.get("host", "127.0.0.1"), port=int(o["port"]),
                                     store_dir=str(self.data_dir / "ouch")).start()
        return self

    @property
    def endpoints(self) -> dict:
        out = {"gateway": self.gateway.endpoint, "marketdata": self.marketdata.endpoint}
        if self.fix is not None:
            out["fix"] = f"tcp://127.0.0.1:{self.fix.port}"
        if self.ouch is not None:
            out["ouch"] = f"tcp://127.0.0.1:{self.ouch.port}"
        return out

    def stop(self) -> None:
        """Stop order entry first, then flush the engine's journal and the outputs. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for part in (self.fix, self.ouch):
            if part is not None:
                part.stop()
        self.gateway.stop()
        self.pipeline.flush_latency()
        self.marketdata.stop()
        self.engine.close()          # journal flushed and fsynced
        self.trade_log.close()
        self.latency.stop()
        self.latency.write_csv(str(self.data_dir / "latency.csv"))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="feedhandler exchange", description="Run the exchange: gateway + engines.")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--symbols", help="comma-separated symbols (overrides the config)")
    p.add_argument("--host", default=None, help="bind address of every listener (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gateway ROUTER port (default 5555; 0 = any free port)")
    p.add_argument("--md-port", type=int, help="market-data PUB port (default 5556; 0 = any)")
    p.add_argument("--fix-port", type=int, help="FIX acceptor port (needs [fix] sessions in the config)")
    p.add_argument("--ouch-port", type=int, help="OUCH/SoupBinTCP port (needs [ouch] users in the config)")
    p.add_argument("--workers", type=int, help="gateway worker threads (default 2)")
    p.add_argument("--data-dir", help="journal, trade log, latency CSV (default ./exchange-data)")
    p.add_argument("--fsync", choices=["every", "batch", "interval", "none"], help="journal fsync policy")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until SIGINT/SIGTERM)")
    return p


def config_from_args(a) -> dict:
    host = a.host or "127.0.0.1"
    ov = {"data_dir": a.data_dir, "gateway.workers": a.workers, "engine.fsync": a.fsync}
    if a.symbols:
        ov["symbols"] = [s.strip() for s in a.symbols.split(",") if s.strip()]
    if a.port is not None:
        ov["gateway.endpoint"] = f"tcp://{host}:{a.port or '*'}"
    if a.md_port is not None:
        ov["marketdata.endpoint"] = f"tcp://{host}:{a.md_port or '*'}"
    cfg = load_config(a.config, ov)
    if a.fix_port is not None:
        cfg["fix"] = dict(cfg.get("fix") or {}, port=a.fix_port)
    if a.ouch_port is not None:
        cfg["ouch"] = dict(cfg.get("ouch") or {}, port=a.ouch_port)
    return cfg


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cfg = config_from_args(a)
    ex = Exchange(cfg)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ex.start()
        eps = ex.endpoints
        print("exchange up: " + "  ".join(f"{k}={v}" for k, v in eps.items()), flush=True)
        print(f"symbols: {', '.join(cfg['symbols'])}   data: {ex.data_dir}   "
              f"api keys: {', '.join(k['api_key'] for k in cfg['keys'])}", flush=True)
        t0 = time.monotonic()
        last = t0
        while not stop.wait(0.2):
            if a.duration is not None and time.monotonic() - t0 >= a.duration:
                break
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                s = ex.pipeline.stats.as_dict()
                print(f"requests={s['requests']} acks={s['acks']} rejects={s['rejects']} busy={s['busy']} "
                      f"auth_failures={s['auth_failures']} trades={ex.trade_log.rows}", flush=True)
    finally:
        ex.stop()
        for s, h in old.items():
            signal.signal(s, h)
    s = ex.pipeline.stats.as_dict()
    print(f"exchange stopped: requests={s['requests']} trades={ex.trade_log.rows} journal flushed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
