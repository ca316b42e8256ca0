"""SIGINT / SIGTERM at a batch boundary: a replay stops at the end of the batch in hand.

The CLI turns both signals into exceptions (``KeyboardInterrupt``; ``replay.Interrupted`` for SIGTERM)
so that the replay can stop, print its partial summary and close its outputs. Raised wherever the
main thread happens to be, such an exception could cut a batch in half: the records of a batch written
to the output file but not yet counted, or its books applied but the batch not handed to the output,
and the summary would no longer describe the file (CI saw a DBN file with more records than its
summary said). :data:`BOUNDARY` defers it: while a batch is in hand (``with BOUNDARY.batch():``) the
handler only records the signal, and the exception is raised when the batch is done.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ["BatchBoundary", "BOUNDARY"]


class BatchBoundary:
    """Where a signal's exception may be raised: outside :meth:`batch` at once, inside at its end."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: BaseException | None = None

    def deliver(self, exc: BaseException) -> None:
        """From a signal handler: raise ``exc`` now, or at the end of the batch in hand (the first one
        delivered wins)."""
        if self.depth:
            if self.pending is None:
                self.pending = exc
            return
        raise exc

    @contextmanager
    def batch(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        # reached only when the batch completed (an exception of its own propagates as it is)
        if not self.depth and self.pending is not None:
            exc, self.pending = self.pending, None
            raise exc

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Like :meth:`batch`, but the signal that arrives inside is kept for :meth:`take` instead of
        raised: writing the outputs out after the replay, which a signal must not cut (the replay is
        complete; the signal is reported)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def take(self) -> BaseException | None:
        """The signal's exception kept by :meth:`hold` (once), or None."""
        exc, self.pending = self.pending, None
        return exc


#: the boundary of the replay's batches (one main thread: the one signal handlers run on)
BOUNDARY = BatchBoundary()
