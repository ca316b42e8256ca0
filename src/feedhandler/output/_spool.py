"""Base of the file writers whose header depends on the whole stream (DBN, .npy).

Records are appended to a spool file next to the target as batches arrive; ``close()`` writes the
header (now that the record count, time range and symbols are known) followed by the spooled body,
and removes the spool. ``abort()`` removes both (used when the replay fails).
"""
from __future__ import annotations

import os
import shutil
from typing import BinaryIO


class SpoolWriter:
    """Append bodies now, write ``header() + body`` at close."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._spool_path = self.path + ".part"
        self._spool: BinaryIO | None = open(self._spool_path, "w+b")
        self.records = 0
        self.closed = False

    def _append(self, data) -> None:
        assert self._spool is not None, "writer is closed"
        self._spool.write(memoryview(data))

    def header(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        spool = self._spool
        self._spool = None
        assert spool is not None
        try:
            spool.flush()
            spool.seek(0)
            with open(self.path, "wb") as out:
                out.write(self.header())
                shutil.copyfileobj(spool, out, 4 << 20)
        except BaseException:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            raise
        finally:
            spool.close()
            os.unlink(self._spool_path)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        for p in (self._spool_path,):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
