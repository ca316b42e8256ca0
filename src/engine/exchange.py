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
    remote = []                                # shard servers (feedhandler shard-server): one shard each
    remote_timeout_s = 1.0                     # a shard slower than this: the order's outcome is "unknown"
                                               # (settled when it answers), its later orders rejected at
                                               # once until it answers again; only that shard's orders
                                               # wait for it (per-shard lanes)

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
    # optional: logon_timeout_s, max_prelogon_bytes, max_message_bytes, max_clordid_bytes, reset_on_logon,
    # fsync (default: fsync the session stores unless engine.fsync = "none")

    [ouch]                                     # OUCH 4.2 over SoupBinTCP (off unless port is set)
    port = 15000
    users = {ouch1 = {password = "pw", account = "O1"}}
    # optional: login_timeout_s, max_packet_bytes, heartbeat_s, timeout_s

    [history]                                  # engine.history: what the journal sequenced, in a database
    enabled = true                             # a writer process follows the journal (false / --no-history: off)
    db = ""                                    # "" = <data_dir>/history.sqlite; postgresql://... (--db)
    redis = ""                                 # redis://host:port/0 or unix:///path: live book there (--redis)
    batch_inputs = 10000                       # journaled inputs per database transaction (catching up)
    poll_ms = 5                                # how often the writer reads the journal
    redis_levels = 10                          # book levels per side kept in Redis
    redis_trades = 1000                        # recent trades kept per symbol in Redis (about)
    [http]                                     # HTTP/WebSocket gateway (off unless port is set; engine.http)
    port = 8080                                # same as --http-port (0 = any free port)
    host = "127.0.0.1"
    insecure_dev_auth = false                  # accept X-User-ID (same as --insecure-dev-auth): never in production
    jwt_secret = ""                            # key signing the login JWTs (same as --jwt-secret); "" = random
    jwt_ttl_s = 300
    max_body = 16384                           # bytes; larger: 413 PAYLOAD_TOO_LARGE
    ws_queue = 1024                            # frames per WebSocket before a slow consumer is disconnected
    query_rate_per_s = 1000                    # non-order requests per account (orders: [risk] rate_per_s)
    [accounts]                                 # balances (engine.accounts); off by default
    enabled = true
    quote = "USD"                              # the quote asset; amounts in price units (1e-9) x qty
    base = {AAPL = "AAPL"}                     # symbol -> base asset (default: the symbol's name)
    maker_fee_bps = 1                          # fees in basis points, floor per fill, to fee_account
    taker_fee_bps = 2
    fee_account = "fees"
    admins = ["OPS"]                           # accounts (of [[keys]]) allowed admin requests

    [standby]                                  # run as hot standby (same as --standby-of; engine.standby)
    of = "/var/lib/exch/primary-data"          # the primary's data dir (or journal dir)
    heartbeat_ms = 2000                        # optional: take over from a primary whose heartbeat stopped
    poll_ms = 1                                # how often the journal is read

An unknown key is an error naming the nearest valid one; a value of the wrong type is an error; a FIX or
OUCH port without sessions/users is an error. The data dir records the configuration that decides what its
journal replays to (``exchange.json``: symbols, shards, tick size, stp) and refuses another one.

Exit codes (engine.errors): 0 ok or stopped by SIGTERM; 1 runtime failure (a port in use, a data dir another
process writes, an engine thread that died); 2 usage or unreadable input; 130 interrupted (SIGINT).

Shutdown: SIGINT/SIGTERM stop the acceptors and the gateway, then close the engine (journal flushed and
fsynced), the trade log and the latency report.

Diagnostics: SIGUSR2 prints the stack of every thread to stderr (Python's faulthandler) and the exchange
goes on: for an exchange that seems stuck, before killing it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from engine.history.service import DEFAULTS as HISTORY_DEFAULTS
from engine.journal import JournalError, JournalLocked
from feedhandler.cliopts import port_number, positive_int, seconds
from engine.errors import (EXIT_INTERRUPTED, EXIT_OK, ConfigError, DataDirError, StartupError, nearest,
                           one_line, run_command)

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
               "stp": "cancel_newest", "journal": True, "remote": [], "remote_timeout_s": 1.0},
    "risk": {},
    "keys": DEMO_KEYS,
    "fix": {},
    "ouch": {},
    "latency": {"interval_s": 5.0},
    "standby": {},
    "history": dict(HISTORY_DEFAULTS),
    "http": {},
    "accounts": {"enabled": False, "quote": "USD", "base": {}, "maker_fee_bps": 0, "taker_fee_bps": 0,
                 "fee_account": "fees", "admins": []},
}
#: Where ``feedhandler bot`` looks for a running exchange when it is given no --endpoint.
DEFAULT_GATEWAY = DEFAULTS["gateway"]["endpoint"]
DEFAULT_MARKETDATA = DEFAULTS["marketdata"]["endpoint"]

_FSYNC = ("every", "batch", "interval", "none")
_STP = ("cancel_newest", "cancel_oldest", "cancel_both")
_KEY_FIELDS = ("api_key", "secret", "account")
#: Keys of [fix] / [ouch] besides the acceptors' own keyword arguments (read from their signatures).
_FIX_KEYS = ("port", "host", "spec_dir", "sessions")
_OUCH_KEYS = ("port", "host", "users")
_STANDBY_KEYS = ("of", "heartbeat_ms", "poll_ms")
MANIFEST = "exchange.json"


def _section_defaults(section: str) -> dict:
    """The valid keys of one config table with their defaults (None: any type), from the defaults and the
    fields of what the table configures."""
    if section == "risk":
        import dataclasses

        from engine.risk import RiskLimits
        return {f.name: f.default for f in dataclasses.fields(RiskLimits)}
    if section in ("fix", "ouch"):
        import inspect
        try:
            if section == "fix":
                from engine.fix.acceptor import FixAcceptor as cls
            else:
                from engine.ouch.acceptor import OuchAcceptor as cls
            extra = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
                     if p.default is not inspect.Parameter.empty and n not in ("store_dir", "host", "port")}
        except ImportError:
            extra = {}
        return {**extra, **{k: None for k in (_FIX_KEYS if section == "fix" else _OUCH_KEYS)}}
    if section == "standby":
        return {"of": "", "heartbeat_ms": 0, "poll_ms": 1}
    if section == "http":
        from engine.http.config import config_defaults
        return config_defaults()
    return dict(DEFAULTS[section])


def _section_keys(section: str) -> set[str]:
    return set(_section_defaults(section))


def _check_type(where: str, value, default) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        want = "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        want = "a string"
    elif isinstance(default, list):
        ok = isinstance(value, list)
        want = "an array"
    else:
        return
    if not ok:
        raise ConfigError(f"config key {where} must be {want}, not {value!r}")


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Refuse unknown keys (naming the nearest valid one) and values of the wrong type; returns cfg."""
    for k, v in cfg.items():
        if k not in DEFAULTS:
            raise ConfigError(f"{source}: unknown key {k!r}{nearest(k, DEFAULTS)}")
        if isinstance(DEFAULTS[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"{source}: [{k}] must be a table, not {v!r}")
            valid = _section_defaults(k)
            for kk, vv in v.items():
                if kk not in valid:
                    raise ConfigError(f"{source}: unknown key {k}.{kk}{nearest(kk, valid)}")
                _check_type(f"{k}.{kk}", vv, valid[kk])
        else:
            _check_type(k, v, DEFAULTS[k])
    syms = cfg["symbols"]
    if not syms or not all(isinstance(s, str) and s for s in syms) or len(set(syms)) != len(syms):
        raise ConfigError(f"{source}: symbols must be a non-empty list of distinct names, not {syms!r}")
    e = cfg["engine"]
    if e["fsync"] not in _FSYNC:
        raise ConfigError(f"{source}: engine.fsync must be one of {', '.join(_FSYNC)}, not {e['fsync']!r}")
    if e["stp"] not in _STP:
        raise ConfigError(f"{source}: engine.stp must be one of {', '.join(_STP)}, not {e['stp']!r}")
    for name in ("shards", "tick_size", "fsync_interval_ms"):
        if e[name] < 1:
            raise ConfigError(f"{source}: engine.{name} must be >= 1, not {e[name]}")
    for name in ("workers", "hwm", "max_pending", "recv_window_ms"):
        if name in cfg["gateway"] and cfg["gateway"][name] < 1:
            raise ConfigError(f"{source}: gateway.{name} must be >= 1, not {cfg['gateway'][name]}")
    for sect in ("gateway", "marketdata"):
        # a tcp:// endpoint's port: ZeroMQ would bind a port above 65535 modulo 65536
        ep = cfg[sect]["endpoint"]
        port = ep.rpartition(":")[2] if ep.startswith("tcp://") else "*"
        if port != "*" and not (port.isdigit() and int(port) <= 65535):
            raise ConfigError(f"{source}: {sect}.endpoint {ep!r}: the port must be 0..65535 or *")
    if not isinstance(cfg["keys"], list) or not cfg["keys"]:
        raise ConfigError(f"{source}: keys must be a non-empty array of [[keys]] tables")
    for i, k in enumerate(cfg["keys"]):
        if not isinstance(k, dict):
            raise ConfigError(f"{source}: keys[{i}] must be a table with {', '.join(_KEY_FIELDS)}")
        for kk in k:
            if kk not in _KEY_FIELDS:
                raise ConfigError(f"{source}: unknown key keys[{i}].{kk}{nearest(kk, _KEY_FIELDS)}")
        missing = [f for f in _KEY_FIELDS if not isinstance(k.get(f), str) or not k.get(f)]
        if missing:
            raise ConfigError(f"{source}: keys[{i}] needs {', '.join(missing)} (non-empty strings)")
    _validate_fix(cfg.get("fix") or {}, source)
    _validate_ouch(cfg.get("ouch") or {}, source)
    h = cfg.get("http") or {}
    if h:
        _check_listener("http", h, source)
        for name in ("max_body", "ws_queue", "jwt_ttl_s"):
            if name in h and h[name] < 1:
                raise ConfigError(f"{source}: http.{name} must be >= 1, not {h[name]}")
        if h.get("jwt_secret") and len(h["jwt_secret"].encode()) < 32:
            raise ConfigError(f"{source}: http.jwt_secret must be at least 32 bytes (an HS256 key), or empty "
                              "for a random one")
    _validate_accounts(cfg, source)
    return cfg


def _validate_accounts(cfg: dict, source: str) -> None:
    a = cfg.get("accounts") or {}
    if not a.get("enabled", False):
        return
    from engine.accounts import AccountsConfigError
    if (cfg.get("engine") or {}).get("remote"):
        # an admin record's outcome must be known when it is answered; a remote shard past its timeout
        # leaves it unknown (settled later), and shard servers do not take admin records
        raise ConfigError(f"{source}: [accounts] is not supported with engine.remote shard servers (in-process "
                          "and engine.processes shards are)")
    if not all(isinstance(x, str) and x for x in a.get("admins", [])):
        raise ConfigError(f"{source}: accounts.admins must be an array of account names")
    if not all(isinstance(v, str) and v for v in (a.get("base") or {}).values()):
        raise ConfigError(f"{source}: accounts.base maps symbols to asset names (strings)")
    try:
        make_accounts(cfg)
    except AccountsConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def make_accounts(cfg: dict):
    """The engine.accounts.Accounts of cfg's [accounts] table, or None when balances are off."""
    a = {**DEFAULTS["accounts"], **(cfg.get("accounts") or {})}
    if not a["enabled"]:
        return None
    from engine.accounts import Accounts
    return Accounts(list(cfg["symbols"]), quote=a["quote"], base=a["base"], maker_fee_bps=a["maker_fee_bps"],
                    taker_fee_bps=a["taker_fee_bps"], fee_account=a["fee_account"])


def _check_listener(section: str, t: dict, source: str) -> None:
    port = t.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535):
        raise ConfigError(f"{source}: {section}.port must be a port number 0..65535, not {port!r}")
    if "host" in t and not isinstance(t["host"], str):
        raise ConfigError(f"{source}: {section}.host must be a string, not {t['host']!r}")


def _validate_fix(f: dict, source: str) -> None:
    if not f:
        return
    _check_listener("fix", f, source)
    sessions = f.get("sessions")
    if f.get("port") is None:
        if sessions:
            raise ConfigError(f"{source}: [fix] has sessions but no port (set fix.port or pass --fix-port)")
        return
    if not sessions:
        raise ConfigError(f"{source}: the FIX acceptor (port {f['port']}) needs sessions: add to the config "
                          '[fix] sessions = [{begin_string = "FIX.4.4", our_comp_id = "EXCH", '
                          'their_comp_id = "CLIENT1", account = "C1"}]')
    import dataclasses

    from engine.fix.acceptor import SessionConfig
    fields = {x.name for x in dataclasses.fields(SessionConfig)}
    required = {x.name for x in dataclasses.fields(SessionConfig)
                if x.default is dataclasses.MISSING and x.default_factory is dataclasses.MISSING}
    for i, s in enumerate(sessions):
        if not isinstance(s, dict):
            raise ConfigError(f"{source}: fix.sessions[{i}] must be a table")
        for kk in s:
            if kk not in fields:
                raise ConfigError(f"{source}: unknown key fix.sessions[{i}].{kk}{nearest(kk, fields)}")
        missing = sorted(required - set(s))
        if missing:
            raise ConfigError(f"{source}: fix.sessions[{i}] needs {', '.join(missing)}")
    spec = Path(f.get("spec_dir", FIX_SPEC_DIR))
    if not spec.is_dir():
        raise ConfigError(f"{source}: fix.spec_dir {str(spec)!r} is not a directory (it must hold QuickFIX's "
                          "FIX42.xml/FIX44.xml)")


def _validate_ouch(o: dict, source: str) -> None:
    if not o:
        return
    _check_listener("ouch", o, source)
    users = o.get("users")
    if o.get("port") is None:
        if users:
            raise ConfigError(f"{source}: [ouch] has users but no port (set ouch.port or pass --ouch-port)")
        return
    if not users or not isinstance(users, dict):
        raise ConfigError(f"{source}: the OUCH acceptor (port {o['port']}) needs users: add to the config "
                          '[ouch] users = {ouch1 = {password = "pw", account = "O1"}}')
    for u, v in users.items():
        if not isinstance(v, dict) or set(v) != {"password", "account"}:
            raise ConfigError(f"{source}: ouch.users.{u} must be a table with password and account")


FIX_SPEC_DIR = "../shared/data/fix/spec"


def load_config(path: str | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the TOML file, then ``overrides`` (dotted keys allowed: ``gateway.workers``).

    Raises :class:`engine.errors.ConfigError` (one line, exit code 2) for a missing or unreadable file,
    malformed TOML, an unknown key (naming the nearest valid one) or a value of the wrong type.
    """
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    if path:
        if tomllib is None:
            raise ConfigError("reading TOML needs Python >= 3.11 (tomllib)")
        try:
            with open(path, "rb") as f:
                user = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as e:
            raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: not UTF-8 ({e.reason})") from None
        for k, v in user.items():
            if k not in DEFAULTS:
                raise ConfigError(f"{path}: unknown key {k!r}{nearest(k, DEFAULTS)}")
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
    return validate_config(cfg, path or "config")


def _journal_layout(journal: Path) -> int | None:
    """How many shards wrote the journal directory (None: nothing written yet)."""
    if not journal.is_dir():
        return None
    shards = [p for p in journal.iterdir() if p.name.startswith("shard-") and p.is_dir()]
    if shards:
        return len(shards)
    if (journal / "journal.bin").exists() or (journal / "snapshot.npz").exists():
        return 1
    return None


def _check_not_written_by_another(journal: Path, shards: int) -> None:
    """Fencing, checked before anything is opened: a journal another live process writes is refused (the
    journal writer enforces it again, atomically, with the same lock)."""
    from engine.journal import JournalLock
    paths = [journal / "journal.bin"] if shards == 1 else [journal / f"shard-{k}" / "journal.bin"
                                                             for k in range(shards)]
    for p in paths:
        lock = JournalLock(str(p))
        if not lock.is_free():
            h = lock.holder()
            who = f" (pid {h['pid']} on {h['host']})" if h else ""
            raise StartupError(f"data dir {journal.parent}: {p} is being written by another process{who}: one "
                               "exchange per data dir (run this one as its standby with --standby-of)")


def check_data_dir(cfg: dict) -> dict:
    """Refuse a data directory written by an exchange with another configuration (symbols, shards, tick size,
    self-trade prevention: what decides what the journal replays to). Returns the manifest to write."""
    data_dir = Path(cfg["data_dir"])
    e = cfg["engine"]
    n_shards = len(e["remote"]) if e.get("remote") else min(int(e["shards"]), len(cfg["symbols"]))
    want = {"symbols": list(cfg["symbols"]), "shards": n_shards, "tick_size": int(e["tick_size"]),
            "stp": e["stp"], "journal": bool(e.get("journal", True))}
    if (cfg.get("accounts") or {}).get("enabled", False):
        want["accounts"] = True      # balances are rebuilt from the whole journal: on from its start or never
    path = data_dir / MANIFEST
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataDirError(f"{path} cannot be read: {err}") from None
    else:
        layout = _journal_layout(data_dir / "journal")
        if layout is None:
            return want
        have = {"shards": layout}      # a data dir from before the manifest: its layout at least
    diff = [f"{k} {have[k]!r} (now {want[k]!r})" for k in want if k in have and have[k] != want[k]]
    if path.exists() and have.get("accounts", False) != want.get("accounts", False):
        diff.append(f"accounts {'on' if have.get('accounts') else 'off'} "
                    f"(now {'on' if want.get('accounts') else 'off'})")
    if diff:
        raise DataDirError(f"data dir {data_dir} was written with another configuration: {'; '.join(diff)}; "
                           "use that configuration or another --data-dir")
    return want


class Exchange:
    """Everything the ``exchange`` command runs, startable in-process (tests, the demo bot)."""

    def __init__(self, cfg: dict, engine=None, portfolio=None, risk=None, trade_log=None):
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
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataDirError(f"data dir {self.data_dir} cannot be created: {err.strerror or err}") from None
        manifest = check_data_dir(cfg)
        e = cfg["engine"]
        if e.get("journal", True) and not e.get("remote") and engine is None:
            _check_not_written_by_another(self.data_dir / "journal", manifest["shards"])
        self.trade_log = trade_log if trade_log is not None else TradeLogger(str(self.data_dir / "trades.csv"))
        self.portfolio = portfolio if portfolio is not None else PortfolioManager()
        self.latency = LatencyMonitor()
        try:
            self.engine = engine or EngineManager(
                list(cfg["symbols"]),
                journal_dir=str(self.data_dir / "journal") if e.get("journal", True) else None,
                fsync=e["fsync"], fsync_interval_ms=int(e["fsync_interval_ms"]), shards=int(e["shards"]),
                processes=bool(e["processes"]), stp=e["stp"], tick_size=int(e["tick_size"]),
                trade_log=self.trade_log, portfolio=self.portfolio, remote=list(e.get("remote") or []) or None,
                remote_timeout_s=float(e.get("remote_timeout_s", 1.0)))
        except JournalLocked as err:   # fencing: another exchange (or its standby) writes this data dir
            self.trade_log.close()
            raise StartupError(f"data dir {self.data_dir}: {one_line(err)}") from None
        except (ValueError, JournalError) as err:   # another configuration, a sequence gap, not a journal
            self.trade_log.close()
            raise DataDirError(f"data dir {self.data_dir}: {one_line(err)}") from err
        except RuntimeError as err:    # a shard server that does not answer or refuses, an engine process
            self.trade_log.close()
            raise StartupError(f"engine: {one_line(err)}") from err
        if engine is not None:      # a standby that took over: its engine already follows the journal
            engine.trade_log, engine.portfolio = self.trade_log, self.portfolio
        tmp = self.data_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, self.data_dir / MANIFEST)
        self.marketdata = MarketDataPublisher(list(cfg["symbols"]), cfg["marketdata"]["endpoint"])
        self.risk = risk if risk is not None else RiskManager(RiskLimits(**cfg.get("risk", {})))
        try:
            self.pipeline = OrderPipeline(self.engine, self.risk, marketdata=self.marketdata,
                                          max_pending=int(cfg["gateway"]["max_pending"]), portfolio=self.portfolio,
                                          latency=self.latency, accounts=make_accounts(cfg),
                                          admins=(cfg.get("accounts") or {}).get("admins", ()))
        except ValueError as err:      # a gateway snapshot or journal that this configuration cannot rebuild
            self.engine.close()
            self.trade_log.close()
            raise DataDirError(f"data dir {self.data_dir}: {one_line(err)}") from err
        keys = KeyStore()
        for k in cfg["keys"]:
            keys.add(k["api_key"], k["secret"], k["account"])
        g = cfg["gateway"]
        self.gateway = Gateway(self.pipeline, Authenticator(keys, int(g["recv_window_ms"]) * 1_000_000),
                               g["endpoint"], workers=int(g["workers"]), hwm=int(g["hwm"]))
        if hasattr(self.engine, "on_settled"):
            self.engine.on_settled = self._on_settled
        self.fix = None
        self.ouch = None
        self.history = None
        self.http = None
        h = cfg.get("http") or {}
        if h.get("port") is not None:
            self.http = self._make_http(h, keys)
        self._started: list[str] = []
        self._stopped = threading.Event()
        #: Exchange.state_hash() when stop() had stopped all input (printed by the command as it ends)
        self.final_state_hash: str | None = None

    def start(self) -> "Exchange":
        """Open every listener. A listener that cannot be opened (port in use, address not available) raises
        :class:`engine.errors.StartupError` naming it, after closing what was already opened."""
        import zmq

        try:
            try:
                self.marketdata.start()
            except zmq.ZMQError as err:
                raise StartupError(f"market data endpoint {self.marketdata.endpoint}: {err.strerror}") from None
            self._started.append("marketdata")
            if self.http is not None and self.http.engine_thread:
                self._start_http()      # before the ZeroMQ gateway: its event loop becomes the engine thread
            # the FIX and OUCH acceptors before the gateway: their accounts' events (a maker fill caused by the
            # first gateway order after a restart) have a sink from the first order on, never dropped
            f = self.cfg.get("fix") or {}
            if f.get("port") is not None:
                self.fix = self._start_fix(f)
            o = self.cfg.get("ouch") or {}
            if o.get("port") is not None:
                self.ouch = self._start_ouch(o)
            try:
                self.gateway.start()
            except zmq.ZMQError as err:
                raise StartupError(f"gateway endpoint {self.gateway.endpoint}: {err.strerror}") from None
            self._started.append("gateway")
            self.latency.start(str(self.data_dir / "latency.csv"), float(self.cfg["latency"]["interval_s"]))
            self._started.append("latency")
            self.history = self._start_history()
            if self.http is not None and "http" not in self._started:
                self._start_http()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_http(self) -> None:
        self._check_tcp_port("HTTP gateway", self.http.cfg.host, self.http.cfg.port)
        try:
            self.http.start()
        except OSError as err:
            raise StartupError(f"HTTP gateway {self.http.cfg.host}:{self.http.cfg.port}: "
                               f"{err.strerror or err}") from None
        self._started.append("http")

    @staticmethod
    def _check_tcp_port(what: str, host: str, port: int) -> None:
        """Bind the acceptor's address once before starting it: its event-loop thread would only log a bind
        failure (the acceptor then listens nowhere), this turns it into a one-line StartupError."""
        import socket

        if port == 0:
            return
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as asyncio's server does
            s.bind((host, port))
        except OSError as err:
            raise StartupError(f"{what} {host}:{port}: {err.strerror or err}") from None
        finally:
            s.close()

    def _start_history(self):
        """The history writer process (engine.history.service), when [history] asks for a database or Redis.
        It follows the journal files, so it needs local journals: with remote shards or without a journal it
        is off (said once)."""
        from engine.history.service import HistoryService

        h = self.cfg.get("history") or {}
        if not h.get("enabled", True) and not h.get("redis"):
            return None
        e = self.cfg["engine"]
        if e.get("remote") or not e.get("journal", True):
            print("history: off (" + ("the shards journal on their own hosts: run feedhandler history there"
                                      if e.get("remote") else "engine.journal = false: nothing to follow") + ")",
                  file=sys.stderr, flush=True)
            return None
        n = min(int(e["shards"]), len(self.cfg["symbols"]))
        acc = make_accounts(self.cfg)
        if acc is not None:          # the writer keeps its own balances for the balance_changes rows
            h = dict(h, accounts=acc.config())
        return HistoryService(str(self.data_dir), h, n).start()

    def history_stats(self) -> dict | None:
        """The history writer's stored and journal sequences and its lag (None when it is off)."""
        if self.history is None:
            return None
        return self.history.stats(self.engine.seq)
    def _make_http(self, h: dict, keys):
        """The HTTP/WebSocket gateway on the same pipeline; it sees every event through a tap in the market
        data slot, and the orders/trades the journal replay regenerated."""
        try:
            from engine.http import HttpConfig, HttpGateway
            from engine.http.views import EventTap
        except ImportError as err:
            raise StartupError(f"the HTTP gateway needs aiohttp and PyJWT ({one_line(err)}): pip install "
                               "aiohttp PyJWT (both are dependencies of feedhandler)") from None
        from engine.auth import Authenticator
        try:
            hc = HttpConfig(**h)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        auth = Authenticator(keys, int(self.cfg["gateway"]["recv_window_ms"]) * 1_000_000)
        e = self.cfg["engine"]
        gw = HttpGateway(self.pipeline, auth, list(self.cfg["symbols"]), hc,
                         journal_fsync=e["fsync"] if e.get("journal", True) else None)
        gw.exchange = self          # the dashboard's history database, writer lag and sessions
        gw.seed(list(getattr(self.engine, "recovered_events", []) or []))
        self.pipeline.marketdata = EventTap(self.pipeline.marketdata, [gw.on_events])
        self.pipeline.balance_listeners.append(gw.on_balance)
        return gw

    def _start_fix(self, f: dict):
        from engine.fix.acceptor import FixAcceptor, OrderApplication, SessionConfig
        sessions = [SessionConfig(**s) for s in f["sessions"]]
        app = OrderApplication(self.pipeline, {s.their_comp_id: s.account or s.their_comp_id for s in sessions},
                               asynchronous=self._lanes())
        extra = {k: v for k, v in f.items() if k not in _FIX_KEYS}
        # the session stores follow the journal's durability: a report the journal keeps must not lose its
        # MsgSeqNum in a power loss (a message sent, then missing from the store, would have its number
        # reused). Any policy but "none" fsyncs each stored message before it is sent; fix.fsync overrides.
        extra.setdefault("fsync", self.cfg["engine"]["fsync"] != "none")
        host, port = f.get("host", "127.0.0.1"), int(f["port"])
        self._check_tcp_port("FIX acceptor", host, port)
        try:
            return FixAcceptor(sessions, app, f.get("spec_dir", FIX_SPEC_DIR), store_dir=str(self.data_dir / "fix"),
                               host=host, port=port, **extra).start()
        except OSError as err:
            raise StartupError(f"FIX acceptor {host}:{port}: {err.strerror or err}") from None

    def _lanes(self) -> bool:
        """Whether the FIX/OUCH acceptors hand orders to the engine thread without waiting: with several shards
        or shards out of this process (one can stall while the others answer: per-shard lanes). With one
        in-process shard nothing stalls alone, and answering inline saves a loop hop per order (measured:
        ~11% of a FIX round trip, bench/bench_acceptors.py)."""
        e = self.cfg["engine"]
        n_shards = len(e["remote"]) if e.get("remote") else min(int(e["shards"]), len(self.cfg["symbols"]))
        return bool(e.get("remote")) or bool(e.get("processes")) or n_shards > 1

    def _start_ouch(self, o: dict):
        from engine.ouch.acceptor import OuchAcceptor
        users = {u: (v["password"], v["account"]) for u, v in o["users"].items()}
        extra = {k: v for k, v in o.items() if k not in _OUCH_KEYS}
        host, port = o.get("host", "127.0.0.1"), int(o["port"])
        self._check_tcp_port("OUCH acceptor", host, port)
        try:
            return OuchAcceptor(self.pipeline, users, host=host, port=port, store_dir=str(self.data_dir / "ouch"),
                                asynchronous=self._lanes(), **extra).start()
        except OSError as err:
            raise StartupError(f"OUCH acceptor {host}:{port}: {err.strerror or err}") from None

    def _on_settled(self, pairs: list) -> None:
        """Requests answered "unknown" (a shard that did not answer in time) got their outcome: on the engine
        thread (the gateway's state has one writer), risk follows the events, a retry of the request now
        gets the settled outcome, the owners get the real events as execution reports, market data too."""
        pl = self.pipeline

        def apply() -> None:
            state = getattr(pl, "state", None)          # the gateway's state machine, where it has one
            note = getattr(state, "note", None) or getattr(pl.risk, "on_events", None)
            remember = getattr(pl, "_remember", None)
            for req, evs in pairs:
                acct = req.get("account")
                own = [ev for ev in evs if ev.get("account") == acct]
                status = "rejected" if own and own[0]["type"] == "rejected" else "ack"
                core = {"status": status, "settled": True, "events": own}
                if status == "rejected":
                    core["reason"] = own[0].get("reason", "")
                if note is not None:
                    note(evs)
                if state is not None and hasattr(state, "remember") and req.get("dedup_key"):
                    state.remember(acct, req["dedup_key"], core)        # a retry now gets this outcome
                elif remember is not None and req.get("type") == "new" and req.get("client_order_id"):
                    remember((acct, req["client_order_id"]), dict(core, rid=None))
                for ev in evs:
                    pl.route(ev.get("account", ""), ev)
                acc = getattr(state, "accounts", None)
                if acc is not None:        # the settled events' balance changes (engine.gateway.balances)
                    for ev in acc.take_changes(evs[0].get("seq", 0) if evs else 0):
                        pl.route(ev["account"], ev)
                if pl.marketdata is not None:
                    pl.marketdata.publish(evs)

        pl.in_engine(apply)

    def state_hash(self) -> str:
        """sha256 over everything that decides the exchange's answers: the pipeline's hash (books, risk,
        retry memory, client order id map) and the state of the FIX and OUCH acceptors (orders, ClOrdIDs /
        tokens, ExecID counter, events reported, stream positions), each read on its acceptor's loop.
        A restart from the same data dir (journal + session stores) rebuilds the same hash."""
        import hashlib

        parts = ["pipeline:" + self.pipeline.state_hash()]
        if self.fix is not None:
            parts.append("fix:" + self._on_loop(self.fix, self.fix.app.state_hash))
        if self.ouch is not None:
            parts.append("ouch:" + self._on_loop(self.ouch, self.ouch.state_hash))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    @staticmethod
    def _on_loop(acceptor, fn):
        """``fn()`` on the acceptor's event loop (the only thread that changes its state) when it runs."""
        import asyncio

        loop = getattr(acceptor, "loop", None)
        if loop is None or not loop.is_running():
            return fn()

        async def call():
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)

    @property
    def endpoints(self) -> dict:
        out = {"gateway": self.gateway.endpoint, "marketdata": self.marketdata.endpoint}
        if self.fix is not None:
            out["fix"] = f"tcp://127.0.0.1:{self.fix.port}"
        if self.ouch is not None:
            out["ouch"] = f"tcp://127.0.0.1:{self.ouch.port}"
        if self.http is not None and self.http.port is not None:
            out["http"] = self.http.url
        return out

    def stop(self) -> None:
        """Stop order entry first, then flush the engine's journal and the outputs. Idempotent; after a failed
        :meth:`start` it closes what was opened."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for part in (self.fix, self.ouch, self.http):
            if part is not None:
                part.stop()
        if "gateway" in self._started:
            self.gateway.stop()
        try:        # no input any more: the state an offline replay of the journal must rebuild exactly
            self.final_state_hash = self.state_hash()
        except Exception as err:  # noqa: BLE001 - a shard server already gone: no hash, the stop goes on
            self.final_state_hash = f"unavailable ({one_line(err)})"
        self.pipeline.flush_latency()
        self.marketdata.stop()
        self.engine.close()          # journal flushed and fsynced
        if self.history is not None:
            self.history.stop()      # after storing what the journal holds
        self.trade_log.close()
        if "latency" in self._started:
            self.latency.stop()
            self.latency.write_csv(str(self.data_dir / "latency.csv"))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(
        prog="feedhandler exchange", description="Run the exchange: gateway + engines (+ FIX/OUCH acceptors).",
        epilog="Exit codes: 0 ok or stopped by SIGTERM; 1 runtime failure (port in use, engine failure); "
               "2 usage or unreadable input (bad --config, unknown key, data dir of another configuration); "
               "130 interrupted (SIGINT). --debug prints the traceback of an error.")
    p.add_argument("--config", help="TOML configuration file; its keys: python -m pydoc engine.exchange (default: "
                                           "built-in defaults)")
    p.add_argument("--symbols", help="comma-separated symbols, overrides the config (default AAPL,MSFT,SPY)")
    p.add_argument("--host", default=None, help="bind address of the --port/--md-port listeners (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, help="gateway ROUTER port (default 5555; 0 = any free port)")
    p.add_argument("--md-port", type=port_number, help="market-data PUB port (default 5556; 0 = any free port)")
    p.add_argument("--fix-port", type=port_number, help="FIX acceptor port (needs [fix] sessions in the config; 0 = any)")
    p.add_argument("--ouch-port", type=port_number, help="OUCH/SoupBinTCP port (needs [ouch] users in the config; 0 = any)")
    p.add_argument("--http-port", type=port_number, help="HTTP/WebSocket gateway port (0 = any free port; default: off)")
    p.add_argument("--insecure-dev-auth", action="store_true", default=None,
                   help="HTTP gateway: accept the X-User-ID header as authentication (development only)")
    p.add_argument("--jwt-secret", help="HTTP gateway: key signing login JWTs (default: random per process)")
    p.add_argument("--workers", type=positive_int, help="gateway worker threads (default 2)")
    p.add_argument("--data-dir", help="journal, trade log, latency CSV (default ./exchange-data)")
    p.add_argument("--fsync", choices=list(_FSYNC), help="journal fsync policy (default batch)")
    p.add_argument("--duration", type=seconds, help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--standby-of", metavar="DATA_DIR",
                   help="run as hot standby of the primary whose data dir (or journal dir) this is: follow its "
                        "journal, take over when its journal lock is released (primary gone) or on SIGUSR1")
    p.add_argument("--heartbeat-ms", type=positive_int, default=None,
                   help="standby: a primary on this host whose heartbeat has not changed for this many ms is "
                        "hung: kill it and take over (default: off; only on the primary's exit or SIGUSR1)")
    p.add_argument("--db", metavar="URL",
                   help="history database: postgresql://user@host:port/db (default: <data dir>/history.sqlite)")
    p.add_argument("--redis", metavar="URL", help="keep the live book (top levels, BBO, recent trades) in Redis: "
                                                  "redis://host:port/0 or unix:///path.sock")
    p.add_argument("--no-history", action="store_true", help="do not run the history writer")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
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
    if a.fix_port is not None:
        ov["fix.port"] = a.fix_port
    if a.ouch_port is not None:
        ov["ouch.port"] = a.ouch_port
    if getattr(a, "http_port", None) is not None:
        ov["http.port"] = a.http_port
        if a.host:
            ov["http.host"] = a.host
    if getattr(a, "insecure_dev_auth", None):
        ov["http.insecure_dev_auth"] = True
    if getattr(a, "jwt_secret", None):
        ov["http.jwt_secret"] = a.jwt_secret
    if getattr(a, "standby_of", None):
        ov["standby.of"] = a.standby_of
    if getattr(a, "heartbeat_ms", None) is not None:
        ov["standby.heartbeat_ms"] = a.heartbeat_ms
    if getattr(a, "db", None):
        ov["history.db"] = a.db
    if getattr(a, "redis", None):
        ov["history.redis"] = a.redis
    if getattr(a, "no_history", False):
        ov["history.enabled"] = False
    return load_config(a.config, ov)


def _engine_alive(ex: Exchange) -> bool:
    """False once a thread of the gateway (one of them owns the engine) has died: the process must end."""
    threads = getattr(ex.gateway, "_threads", None) or []
    return all(t.is_alive() for t in threads)


def serve(ex: Exchange, duration: float | None, stop: threading.Event, out=sys.stdout) -> None:
    """Run a started exchange until ``stop`` is set or ``duration`` passed; status line every 10 s. Raises
    RuntimeError when the engine/gateway threads died (the caller exits non-zero)."""
    t0 = time.monotonic()
    last = t0
    beat = ex.data_dir / "heartbeat"        # a standby with heartbeat_ms watches it change
    beats = 0

    def heartbeat() -> None:
        nonlocal beats
        beats += 1
        try:
            beat.write_text(f"{os.getpid()} {beats}\n")
        except OSError:
            pass            # a read-only data dir: the standby's heartbeat check then never fires

    heartbeat()             # at once: a primary that hangs in its first 0.2 s must still be seen to stop
    while not stop.wait(0.2):
        if duration is not None and time.monotonic() - t0 >= duration:
            break
        if not _engine_alive(ex):
            raise RuntimeError("a gateway/engine thread died; stopping (the journal holds every acknowledged "
                               "input: a restart recovers)")
        heartbeat()             # (the history writer is supervised by its own thread: HistoryService)
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            s = ex.pipeline.stats.as_dict()
            h = ex.history_stats()
            print(f"requests={s['requests']} acks={s['acks']} rejects={s['rejects']} busy={s['busy']} "
                  f"auth_failures={s['auth_failures']} trades={ex.trade_log.rows}"
                  + (f" history_lag={h['lag']}" if h is not None else ""), file=out, flush=True)


def _register_stack_dump() -> bool:
    """SIGUSR2 -> every thread's stack on stderr (see Diagnostics). Only where stderr is a file descriptor (not
    when the command runs inside a program that captured it); True when registered."""
    import faulthandler
    import io

    try:
        sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    return True


def _main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    cfg = config_from_args(a)
    from engine.signals import SignalSafeEvent
    stop = SignalSafeEvent()         # set by the signal handler: no lock (see engine.signals)
    why = {"signal": None}

    def on_signal(signum, frame):
        why["signal"] = signum
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    dump = _register_stack_dump()
    try:
        if (cfg.get("standby") or {}).get("of"):
            from engine.standby import run_standby
            ex = run_standby(cfg, stop, a.duration)
            if ex is None:                       # stopped before it had to take over
                return EXIT_INTERRUPTED if why["signal"] == signal.SIGINT else EXIT_OK
        else:
            ex = Exchange(cfg)
            ex.start()
        try:
            eps = ex.endpoints
            print("exchange up: " + "  ".join(f"{k}={v}" for k, v in eps.items()), flush=True)
            print(f"symbols: {', '.join(cfg['symbols'])}   data: {ex.data_dir}   "
                  f"api keys: {', '.join(k['api_key'] for k in cfg['keys'])}", flush=True)
            serve(ex, a.duration, stop)
        finally:
            ex.stop()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if dump:
            import faulthandler
            faulthandler.unregister(signal.SIGUSR2)
    s = ex.pipeline.stats.as_dict()
    print(f"exchange stopped: requests={s['requests']} trades={ex.trade_log.rows} journal flushed "
          f"state_hash={getattr(ex, 'final_state_hash', None)}", flush=True)
    return EXIT_INTERRUPTED if why["signal"] == signal.SIGINT else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``feedhandler exchange``: exit codes 0 / 1 / 2 / 130 (see engine.errors); errors are one line."""
    return run_command("feedhandler exchange", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
