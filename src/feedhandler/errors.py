"""Typed exceptions of the feedhandler package (the data path counts damage; these are for the edges)."""
from __future__ import annotations

__all__ = ["FeedhandlerError", "CaptureError", "CaptureFormatError", "FeedError", "OutputError"]


class FeedhandlerError(Exception):
    """Base class of every feedhandler exception."""


class CaptureError(FeedhandlerError, OSError):
    """A capture source cannot be opened or read (missing file, permission, I/O error)."""


class CaptureFormatError(CaptureError, ValueError):
    """The bytes are no capture format we read (pcap, pcapng, NASDAQ BinaryFILE, optionally gzipped),
    or the file is empty."""


class FeedError(FeedhandlerError, RuntimeError):
    """The feed pipeline failed (for example its producer thread stopped on an internal error)."""


class OutputError(FeedhandlerError, OSError):
    """An output file (``--out``) cannot be written: disk full, file-size limit, I/O error. The message
    names the file; ``errno`` is the system's. Exit code 2 ("an output that cannot be written")."""

    def __init__(self, path: str, cause: OSError):
        why = str(cause.strerror or cause)
        super().__init__(why if why.startswith("cannot write") else f"cannot write {path}: {why}")
        self.errno = cause.errno
        self.strerror = cause.strerror
        self.filename = path

    def __str__(self) -> str:      # the sentence, not OSError's "[Errno N] strerror: 'path'"
        return str(self.args[0])
