"""Hot standby: follow a primary exchange's journal live and take over as the primary, fenced.

    feedhandler exchange --config exch.toml                                # the primary
    feedhandler exchange --config exch.toml --standby-of exchange-data     # its hot standby (same config)

The standby applies every journaled input through the same replay code as recovery
(:meth:`engine.manager.ShardEngine.replay_payloads`), so its state equals what a restart of the primary
would recover, and it trails the primary by the journal write latency only.

Fencing: every journal has one writer, the holder of its :class:`engine.journal.JournalLock` (``flock`` on
``journal.bin.lock``). The kernel drops the lock when the primary process dies, so

* the standby's health check is the lock itself: when it can take every shard's lock, the primary is
  gone (exited, killed, crashed) and it takes over at once, holding the locks, so a restarted primary
  cannot write too (it fails with "being written by another process");
* ``take_over()`` while the primary is alive is refused (:class:`engine.journal.JournalLocked`) and the
  standby keeps following;
* with ``heartbeat_ms``, a primary on this host whose heartbeat file (``<data dir>/heartbeat``, a counter
  its main loop rewrites every 200 ms) has not changed for that long is considered hung: the standby kills it (SIGKILL,
  the fencing of last resort) and takes over when the kernel has released its lock;
* SIGUSR1 asks the standby to take over (refused while the primary holds the journal).

Each takeover increments the journal lock's epoch (recorded with the holder's host and pid).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from engine.errors import DataDirError
from engine.journal import JournalFollower, JournalLock, JournalLocked, JournalWriter

HEARTBEAT = "heartbeat"


def _is_journal_dir(d: Path) -> bool:
    return (d / "journal.bin").exists()


def resolve_journal_dirs(path: str, n_shards: int | None = None) -> tuple[Path, list[Path]]:
    """``(data dir, journal dirs in shard order)`` for what a standby is pointed at: an exchange's data dir
    (``exchange.json``, ``journal/``), its ``journal/`` directory, or one journal directory. Raises
    DataDirError when it holds no journal to follow (never an empty book taken over silently)."""
    p = Path(path)
    if not p.is_dir():
        raise DataDirError(f"standby: {path} is not a directory (give the primary's data dir)")
    if (p / "journal").is_dir() or (p / "exchange.json").exists():
        data_dir, jroot = p, p / "journal"
    elif _is_journal_dir(p) or any(p.glob("shard-*/journal.bin")):
        data_dir, jroot = p.parent, p
    else:
        raise DataDirError(f"standby: {path} holds no journal (neither a data dir with journal/ nor a journal "
                           "directory); is the primary running with that data dir?")
    shard_dirs = sorted((d for d in jroot.glob("shard-*") if d.is_dir()), key=lambda d: int(d.name[6:]))
    if shard_dirs:
        dirs = shard_dirs
    elif _is_journal_dir(jroot):
        dirs = [jroot]
    else:
        raise DataDirError(f"standby: {jroot} holds no journal yet; start the primary first")
    if n_shards is not None and len(dirs) != n_shards:
        raise DataDirError(f"standby: {jroot} holds {len(dirs)} shard journal(s), the configuration says "
                           f"{n_shards}")
    return data_dir, dirs


class StandbyEngine:
    """Follows one shard's journal live (applying it through recovery's replay) and can take over.

    ``journal_dir`` is the journal directory; an exchange's data dir is accepted too when its journal has
    one shard (use :class:`StandbyShards` for more). ``symbol_ids`` are the global symbol indices of this
    shard (default ``range(len(symbols))``).

    The events the replay regenerates are kept, as a recovery keeps them, and handed to the EngineManager
    that :meth:`take_over` returns (``take_replayed``; its trade log and portfolio get them): whatever
    rebuilds its state from a recovery's events (the gateway's risk, retry memory and client order id
    map) rebuilds it from the standby's the same way. ``on_events(events)`` takes them as they come instead
    (then they are not kept).
    """

    def __init__(self, symbols: list[str], journal_dir: str, *, stp: str = "cancel_newest",
                 post_only_mode: str = "reject", tick_size: int = 1, symbol_ids: list[int] | None = None,
                 on_events: Callable[[list[dict]], None] | None = None):
        from engine.manager import ShardEngine

        jd = Path(journal_dir)
        if not _is_journal_dir(jd) and ((jd / "journal").is_dir() or (jd / "exchange.json").exists()):
            _, dirs = resolve_journal_dirs(journal_dir)
            if len(dirs) != 1:
                raise DataDirError(f"standby: {journal_dir} holds {len(dirs)} shard journals; follow them all with "
                                   "engine.standby.StandbyShards (or feedhandler exchange --standby-of)")
            jd = dirs[0]
        self.journal_dir = str(jd)
        self.path = os.path.join(self.journal_dir, "journal.bin")
        self.shard = ShardEngine(symbols, symbol_ids, journal_dir=None, stp=stp, post_only_mode=post_only_mode,
                                 tick_size=tick_size)
        self.follower = JournalFollower(self.path)
        self.lock = JournalLock(self.path)
        self.on_events = on_events
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()

    def poll(self) -> int:
        """Apply what the primary journaled since the last poll; returns the number of inputs applied."""
        with self._lock:
            n = self.shard.replay_payloads(self.follower.poll(), source=self.follower.path)
            if self.on_events is not None:
                evs = self.shard.take_replayed()
                if evs:
                    self.on_events(evs)
            return n

    def start(self, interval_s: float = 0.001) -> None:
        """Follow in a background thread, polling every interval_s seconds. A journal the standby cannot
        apply (another configuration, a sequence gap) stops the thread and is kept in :attr:`error`."""
        def loop():
            while not self._stop.wait(interval_s):
                try:
                    self.poll()
                except Exception as e:  # noqa: BLE001 - kept for take_over()/the caller, never silent
                    self.error = e
                    return
        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="standby", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    @property
    def seq(self) -> int:
        return self.shard.seq

    def state_hash(self) -> str:
        with self._lock:
            return self.shard.state_hash()

    def primary_alive(self) -> bool:
        """Whether a writer holds the journal (the primary, or anybody else)."""
        return not self.lock.is_free()

    # ---- takeover ------------------------------------------------------------------------------------
    def fence(self) -> None:
        """Take the journal's lock: from now on no other process can write it. Raises JournalLocked (and
        changes nothing) while the primary holds it, DataDirError when there is no journal to take over."""
        if self.error is not None:
            raise DataDirError(f"standby of {self.path} cannot take over: {self.error}") from self.error
        if not os.path.exists(self.path):
            raise DataDirError(f"standby: no journal at {self.path}; nothing to take over")
        if not self.lock.try_acquire():
            h = self.lock.holder()
            raise JournalLocked(f"take_over refused: {self.path} is still written by its primary"
                                + (f" (pid {h['pid']} on {h['host']})" if h else "")
                                + "; stop or kill it first")

    def finish(self, fsync: str = "batch", fsync_interval_ms: int = 10):
        """After :meth:`fence`: apply the rest of the journal, truncate a torn tail, open it for appending."""
        self.stop()
        self.poll()
        self.follower.close()
        if self.error is not None:
            raise DataDirError(f"standby of {self.path} cannot take over: {self.error}")
        sh = self.shard
        sh.journal_dir = self.journal_dir
        sh.journal = JournalWriter(self.path, fsync, fsync_interval_ms, lock=self.lock)
        if sh.journal.records == 0:
            sh.journal.append(b"C" + json.dumps(sh._config()).encode())
            sh.journal.sync()
        return sh

    def take_over(self, *, fsync: str = "batch", fsync_interval_ms: int = 10, trade_log=None,
                  portfolio=None):
        """Become the primary: refused (JournalLocked, still following) while the primary holds the journal."""
        from engine.manager import EngineManager

        self.fence()
        try:
            shard = self.finish(fsync, fsync_interval_ms)
        except BaseException:
            self.lock.release()
            raise
        return EngineManager(shard.symbols, trade_log=trade_log, portfolio=portfolio, _shard=shard)


class StandbyShards:
    """A hot standby of a whole exchange: one :class:`StandbyEngine` per shard journal of its data dir.

    Symbols are split over the shards as :class:`engine.manager.EngineManager` splits them (symbol i goes
    to shard ``i % shards``); :meth:`take_over` fences every shard (all or nothing) and returns an
    EngineManager over the taken-over shards (in this process).
    """

    def __init__(self, symbols: list[str], path: str, *, shards: int | None = None, stp: str = "cancel_newest",
                 post_only_mode: str = "reject", tick_size: int = 1,
                 on_events: Callable[[list[dict]], None] | None = None):
        self.symbols = list(symbols)
        self.data_dir, dirs = resolve_journal_dirs(path, shards)
        n = len(dirs)
        self.engines = []
        for k, d in enumerate(dirs):
            ids = [i for i in range(len(self.symbols)) if i % n == k]
            self.engines.append(StandbyEngine([self.symbols[i] for i in ids], str(d), stp=stp,
                                              post_only_mode=post_only_mode, tick_size=tick_size, symbol_ids=ids,
                                              on_events=on_events))
        self.epoch = 0

    def poll(self) -> int:
        return sum(e.poll() for e in self.engines)

    def start(self, interval_s: float = 0.001) -> None:
        for e in self.engines:
            e.start(interval_s)

    def stop(self) -> None:
        for e in self.engines:
            e.stop()

    @property
    def seq(self) -> int:
        return sum(e.seq for e in self.engines)

    @property
    def error(self) -> BaseException | None:
        return next((e.error for e in self.engines if e.error is not None), None)

    def primary_alive(self) -> bool:
        return any(e.primary_alive() for e in self.engines)

    def take_over(self, *, fsync: str = "batch", fsync_interval_ms: int = 10, trade_log=None, portfolio=None):
        from engine.manager import EngineManager

        fenced = []
        try:
            for e in self.engines:
                e.fence()
                fenced.append(e)
            shards = [e.finish(fsync, fsync_interval_ms) for e in self.engines]
        except BaseException:
            for e in fenced:
                e.lock.release()
            raise
        self.epoch = max(e.lock.epoch for e in self.engines)
        if len(shards) == 1:
            return EngineManager(self.symbols, trade_log=trade_log, portfolio=portfolio, _shard=shards[0])
        return EngineManager(self.symbols, trade_log=trade_log, portfolio=portfolio, _shard=shards)


# ---- the `feedhandler exchange --standby-of` command -------------------------------------------------------
class _Heartbeat:
    """Watches the primary's heartbeat file (a counter its main loop rewrites every 200 ms) on this process's
    monotonic clock: wall-clock steps (NTP, PTP) neither fake nor hide a missing heartbeat."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / HEARTBEAT
        self.last = None
        self.changed = time.monotonic()

    def age_ms(self) -> float:
        try:
            now = self.path.read_bytes()
        except OSError:
            now = None
        if now != self.last:
            self.last = now
            self.changed = time.monotonic()
        if self.last is None:
            return 0.0      # no heartbeat seen yet (a primary still recovering, or an older one): never fence
        return (time.monotonic() - self.changed) * 1000


def _kill_hung_primary(standby: StandbyShards, out) -> bool:
    """SIGKILL the journal's holder when it runs on this host (fencing a hung primary). True if killed."""
    h = standby.engines[0].lock.holder()
    if not h or h.get("host") != socket.gethostname() or h.get("pid") in (None, os.getpid()):
        print(f"standby: the primary's heartbeat is missing but it is not on this host ({h}); cannot fence it",
              file=out, flush=True)
        return False
    try:
        os.kill(h["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return True
    except PermissionError as e:
        print(f"standby: cannot kill the hung primary pid {h['pid']}: {e}", file=out, flush=True)
        return False
    print(f"standby: killed the hung primary pid {h['pid']} (fencing)", file=out, flush=True)
    return True


def run_standby(cfg: dict, stop: threading.Event, duration: float | None = None, out=sys.stdout):
    """Follow the primary named by ``cfg["standby"]["of"]`` until it is gone (or SIGUSR1), then take over
    and return the started :class:`engine.exchange.Exchange`; None when ``stop`` was set first."""
    from engine.exchange import Exchange, check_data_dir
    from engine.portfolio import PortfolioManager
    from engine.tradelog import TradeLogger

    sb = cfg["standby"]
    e = cfg["engine"]
    if e.get("remote"):
        raise DataDirError("standby: an exchange with remote shard servers cannot have a standby here "
                           "(each shard server journals on its own host)")
    data_dir, _ = resolve_journal_dirs(sb["of"])
    cfg = dict(cfg, data_dir=str(data_dir))
    check_data_dir(cfg)               # same symbols, shards, tick size, stp as the primary, or a clear error
    n = min(int(e["shards"]), len(cfg["symbols"]))
    standby = StandbyShards(cfg["symbols"], str(data_dir), shards=n, stp=e["stp"], tick_size=int(e["tick_size"]))
    poll_s = max(int(sb.get("poll_ms", 1)), 1) / 1000
    heartbeat_ms = sb.get("heartbeat_ms")
    from engine.signals import SignalSafeEvent
    asked = SignalSafeEvent()        # set by the SIGUSR1 handler: no lock (see engine.signals)
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGUSR1, lambda s, f: asked.set())
    print(f"standby of {data_dir}: following {len(standby.engines)} shard journal(s) "
          f"(take over when the primary is gone{f' or its heartbeat is {heartbeat_ms} ms old' if heartbeat_ms else ''}"
          ", or on SIGUSR1)", file=out, flush=True)
    t0 = time.monotonic()
    last = t0
    beat = _Heartbeat(data_dir)
    try:
        standby.start(poll_s)
        while not stop.wait(min(poll_s * 20, 0.05)):
            if standby.error is not None:
                raise DataDirError(f"standby of {data_dir}: {standby.error}")
            if duration is not None and time.monotonic() - t0 >= duration:
                standby.stop()
                return None
            why = None
            if not standby.primary_alive():
                why = "the primary is gone (journal lock released)"
            elif asked.is_set():
                asked.clear()
                why = "asked (SIGUSR1)"
            elif heartbeat_ms:
                if beat.age_ms() > heartbeat_ms and _kill_hung_primary(standby, out):
                    continue            # the next round takes over once the kernel released its lock
            if why is not None:
                # the trade log skips trades it holds: the dead primary's unflushed ones are added, none twice
                trade_log = TradeLogger(str(data_dir / "trades.csv"))
                portfolio = PortfolioManager()
                try:
                    mgr = standby.take_over(fsync=e["fsync"], fsync_interval_ms=int(e["fsync_interval_ms"]),
                                            trade_log=trade_log, portfolio=portfolio)
                except JournalLocked as err:
                    trade_log.close()
                    print(f"standby: {err}; still following", file=out, flush=True)
                    continue
                print(f"standby: taking over: {why}; epoch {standby.epoch}, seq {mgr.seq}", file=out, flush=True)
                # built like a restarted exchange around the taken-over engine: whatever a restart rebuilds
                # from the recovery's events (EngineManager.take_replayed) it rebuilds from the standby's
                ex = Exchange(cfg, engine=mgr, portfolio=portfolio, trade_log=trade_log)
                return ex.start()
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                print(f"standby: seq {standby.seq}", file=out, flush=True)
        standby.stop()
        return None
    finally:
        if old is not None:
            signal.signal(signal.SIGUSR1, old)
