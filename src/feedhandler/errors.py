"""Typed exceptions of the feedhandler package (the data path counts damage; these are for the edges)."""
from __future__ import annotations

__all__ = ["FeedhandlerError", "CaptureError", "CaptureFormatError", "FeedError"]


class FeedhandlerError(Exception):
    """Base class of every feedhandler exception."""


class CaptureError(FeedhandlerError, OSError):
    """A capture source cannot be opened or read (missing file, permission, I/O error)."""


class CaptureFormatError(CaptureError, ValueError):
    """The bytes are no capture format we read (pcap, pcapng, NASDAQ BinaryFILE, optionally gzipped),
    or the file is empty."""


class FeedError(FeedhandlerError, RuntimeError):
    """The feed pipeline failed (for example its producer thread stopped on an internal error)."""
