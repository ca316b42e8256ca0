"""Atomic output files, and the base of the writers whose header depends on the whole stream (DBN, .npy).

Every output file is written under a temporary name in the same directory (``.NAME.part-PID``) and
renamed to its final name only when it is complete (:func:`temp_path`, :func:`publish`), so a reader
never sees a half-written file under the final name: an interrupted or failed replay leaves either
the previous file (or none) or a complete one.

:class:`SpoolWriter` appends record bodies to an anonymous spool file (``O_TMPFILE`` where the file
system has it: nothing is left behind even by ``kill -9``) as batches arrive; ``close()`` writes the
header (now that the record count, time range and symbols are known) and the spooled body to the
temporary name and renames it. ``abort()`` removes what was written (used when the replay fails).
A path ending in ``.zst`` is written zstd-compressed (header and body in one frame, compressed while
copied: memory stays bounded); that needs the ``zstandard`` package, checked when the writer opens.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from typing import BinaryIO

from feedhandler.errors import OutputError

__all__ = ["SpoolWriter", "check_output_dir", "temp_path", "publish", "discard", "zstd_compressor",
           "names_the_output"]


def names_the_output(method):
    """A writer's ``write`` / ``close``: an OSError (ENOSPC, EFBIG, EIO) becomes an :class:`OutputError`
    that names the output file (``self.path``), so every command says which file and exits 2."""
    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OutputError:
            raise
        except OSError as e:
            raise OutputError(getattr(self, "path", "the output"), e) from e
    return checked

ZSTD_LEVEL = 3   # zstd's default: fast, and within a few per cent of level 9 on tick records


def zstd_compressor():
    """A ``zstandard.ZstdCompressor`` (a clear MissingDependency error when zstandard is missing)."""
    try:
        import zstandard
    except ImportError as e:
        from feedhandler.output.parquet import MissingDependency

        raise MissingDependency("zstd-compressed output (.zst) needs zstandard (a core dependency of "
                                "feedhandler): pip install zstandard") from e
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)


def check_output_dir(path: str) -> None:
    """OSError with a sentence when ``path``'s directory does not exist or is not a directory."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise FileNotFoundError(2, f"cannot write {path}: the directory {d} does not exist", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"cannot write {path}: it is a directory", path)


def temp_path(path: str) -> str:
    """The temporary name ``path`` is written under until it is complete."""
    d, name = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{name}.part-{os.getpid()}")


def publish(tmp: str, path: str) -> None:
    """Give the complete file at ``tmp`` its final name (atomic on one file system)."""
    os.replace(tmp, path)


def discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


class SpoolWriter:
    """Append bodies now, write ``header() + body`` at close (atomically)."""

    @names_the_output
    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        check_output_dir(self.path)
        self._zstd = zstd_compressor() if self.path.lower().endswith(".zst") else None
        # anonymous: O_TMPFILE on Linux where the file system supports it, else created and unlinked at once
        self._spool: BinaryIO | None = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(self.path)))
        self.records = 0
        self.closed = False

    def _append(self, data) -> None:
        assert self._spool is not None, "writer is closed"
        self._spool.write(memoryview(data))

    def header(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    @names_the_output
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        spool = self._spool
        self._spool = None
        assert spool is not None
        tmp = temp_path(self.path)
        try:
            spool.flush()
            size = spool.seek(0, os.SEEK_END)
            spool.seek(0)
            header = self.header()
            with open(tmp, "wb") as raw:
                if self._zstd is None:
                    raw.write(header)
                    shutil.copyfileobj(spool, raw, 4 << 20)
                else:
                    with self._zstd.stream_writer(raw, size=len(header) + size, closefd=False) as out:
                        out.write(header)
                        shutil.copyfileobj(spool, out, 4 << 20)
            publish(tmp, self.path)
        except BaseException:
            discard(tmp)
            raise
        finally:
            spool.close()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
