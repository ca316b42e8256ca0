"""Stopping a command from a signal handler without a lock.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread holds a
lock. ``threading.Event.set()`` takes the event's lock, so a handler that calls it while the main thread
is inside ``Event.wait()`` (which re-acquires that lock as it wakes up) deadlocks: seen in CI, an exchange
that never stopped after SIGINT, its main thread blocked in ``Event.set`` called by the handler from inside
``Event.wait`` (py-spy stack in the commit message of this module).

:class:`SignalSafeEvent` is the flag the commands' main loops wait on: ``set()`` is a plain assignment
(no lock, safe in a handler), ``wait()`` polls it every 10 ms. :func:`set_from_signal` sets an ordinary
``threading.Event`` owned by other code from a handler: a short-lived thread does the ``set()``, so the
handler never takes the event's lock itself.
"""
from __future__ import annotations

import threading
import time

__all__ = ["SignalSafeEvent", "set_from_signal", "POLL_S"]

#: how often SignalSafeEvent.wait() looks at the flag
POLL_S = 0.01


class SignalSafeEvent:
    """A ``threading.Event`` look-alike whose :meth:`set` may be called from a signal handler."""

    def __init__(self) -> None:
        self._flag = False

    def set(self) -> None:
        self._flag = True            # one store: no lock, nothing a handler could wait for

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            if end is None:
                time.sleep(POLL_S)
                continue
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL_S, left))
        return True


def set_from_signal(event: threading.Event) -> None:
    """From a signal handler: set ``event`` on another thread (never its lock in the handler)."""
    threading.Thread(target=event.set, name="signal-set", daemon=True).start()
