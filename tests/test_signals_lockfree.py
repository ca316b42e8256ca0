"""engine.signals: a command's stop flag can be set from a signal handler while the main thread waits on it
(threading.Event.set() in a handler deadlocked an exchange in CI: its main thread was inside Event.wait,
holding the event's lock, when the SIGINT handler called Event.set)."""
from __future__ import annotations

import os
import signal
import threading
import time

from engine.signals import SignalSafeEvent, set_from_signal


def test_signal_safe_event_semantics():
    ev = SignalSafeEvent()
    assert not ev.is_set() and ev.wait(0.02) is False
    threading.Timer(0.05, ev.set).start()
    t = time.monotonic()
    assert ev.wait(5) is True and time.monotonic() - t < 1
    ev.clear()
    assert not ev.is_set()


def test_set_from_a_handler_while_the_main_thread_waits():
    ev, plain = SignalSafeEvent(), threading.Event()
    old = signal.signal(signal.SIGUSR1, lambda s, f: (ev.set(), set_from_signal(plain)))
    try:
        for _ in range(50):
            ev.clear()
            plain.clear()
            threading.Timer(0.002, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            assert ev.wait(5)
            assert plain.wait(5)
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_the_commands_stop_on_signals_without_the_event_lock():
    """The handlers of exchange / history / standby use SignalSafeEvent; strategy / executor hand the set()
    to a thread: no handler calls threading.Event.set() itself (source check)."""
    from pathlib import Path
    src = Path(__file__).resolve().parents[1] / "src" / "engine"
    for f, needle in (("exchange.py", "stop = SignalSafeEvent()"), ("history/service.py", "stop = SignalSafeEvent()"),
                      ("standby.py", "asked = SignalSafeEvent()"),
                      ("strategy/runner.py", "set_from_signal(runner.stop_event)"),
                      ("strategy/executor.py", "set_from_signal(ex.stop_event)")):
        assert needle in (src / f).read_text(), f


def test_wait_sleeps_in_select_without_polling(monkeypatch):
    """wait() blocks on its pipe: no periodic wake-ups (it polled every 10 ms, taking the GIL from the
    working threads), woken at once by set() from another thread, and times out on time."""
    import threading
    import time as _time

    from engine import signals

    ev = signals.SignalSafeEvent()
    monkeypatch.setattr(signals.time, "sleep", lambda s: (_ for _ in ()).throw(AssertionError("polled")))
    t0 = _time.monotonic()
    assert ev.wait(0.05) is False and _time.monotonic() - t0 >= 0.05
    threading.Timer(0.05, ev.set).start()
    t0 = _time.monotonic()
    assert ev.wait(5) is True and _time.monotonic() - t0 < 1.0
    ev.clear()
    assert not ev.is_set() and ev.wait(0.01) is False    # the pipe was drained: no stale wake-up
    ev.close()
