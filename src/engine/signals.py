"""Stopping a command from a signal handler without a lock.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread holds a
lock. ``threading.Event.set()`` takes the event's lock, so a handler that calls it while the main thread
is inside ``Event.wait()`` (which re-acquires that lock as it wakes up) deadlocks: seen in CI, an exchange
that never stopped after SIGINT, its main thread blocked in ``Event.set`` called by the handler from inside
``Event.wait`` (py-spy stack in the commit message of this module).

:class:`SignalSafeEvent` is the flag the commands' main loops wait on: ``set()`` is a plain assignment
and one byte written to a pipe (no lock, safe in a handler), ``wait()`` sleeps in ``select`` on that pipe:
it wakes when the byte arrives (from a handler: the signal interrupts the select, the handler writes, the
select is retried and returns at once) or at its timeout, never in between (it polled every 10 ms before,
taking the GIL from the working threads 100 times a second). :func:`set_from_signal` sets an ordinary
``threading.Event`` owned by other code from a handler: a short-lived thread does the ``set()``, so the
handler never takes the event's lock itself.
"""
from __future__ import annotations

import os
import select
import threading
import time

__all__ = ["SignalSafeEvent", "set_from_signal"]


class SignalSafeEvent:
    """A ``threading.Event`` look-alike whose :meth:`set` may be called from a signal handler."""

    def __init__(self) -> None:
        self._flag = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def set(self) -> None:
        self._flag = True            # one store and one write(2): no lock, nothing a handler could wait for
        try:
            os.write(self._w, b"x")
        except (BlockingIOError, OSError):   # pipe full (a wake-up is pending anyway) or closed
            pass

    def clear(self) -> None:
        self._flag = False
        self._drain()

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                ready, _, _ = select.select([self._r], [], [], left)
            except ValueError:       # closed under us
                return self._flag
            if ready:
                self._drain()
        return True

    def _drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._r = self._w = -1

    def __del__(self) -> None:
        if getattr(self, "_r", -1) >= 0:
            self.close()


def set_from_signal(event: threading.Event) -> None:
    """From a signal handler: set ``event`` on another thread (never its lock in the handler)."""
    threading.Thread(target=event.set, name="signal-set", daemon=True).start()
