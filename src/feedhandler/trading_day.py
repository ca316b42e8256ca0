"""The trading day of a capture: the base of ITCH ``ts_event`` (nanoseconds since midnight, New York)
and of DBN symbol mappings, for ``feedhandler replay`` and ``feedhandler run --file``.

In order: ``--date``; the capture's own time stamps (pcap / pcapng: the first stamped frame); the
NASDAQ file name (``MMDDYYYY.NASDAQ_ITCH50``, optionally ``.gz``/``.bin``, any directory); else
unknown. Outputs are refused with an unknown day (they would say 1970): :class:`UnknownTradingDay`
names the way out (``--date``).
"""
from __future__ import annotations

import datetime as _dt
import os
import re

from feedhandler.errors import FeedhandlerError

__all__ = ["UnknownTradingDay", "check_date", "date_from_filename", "require_day"]

FIRST_DAY = _dt.date(1970, 1, 2)        # ts_event is uint64 ns since 1970 (New York midnight of 1970-01-01 is < 0)
LAST_DAY = _dt.date(2262, 4, 10)        # 2**63 ns after the epoch, with a day to spare
_NASDAQ_NAME = re.compile(r"(?<!\d)(\d{2})(\d{2})(\d{4})\.NASDAQ_ITCH50", re.IGNORECASE)


class UnknownTradingDay(FeedhandlerError, ValueError):
    """Outputs were asked for, but the capture's trading day cannot be told (no time stamps, no NASDAQ
    file name) and no ``--date`` was given."""


def check_date(text: str) -> _dt.date:
    """``--date`` as a date, or ValueError with a sentence (not YYYY-MM-DD, or outside 1970-01-02..2262)."""
    try:
        d = _dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"--date {text!r} is not YYYY-MM-DD") from None
    if not FIRST_DAY <= d <= LAST_DAY:
        raise ValueError(f"--date {text} is outside {FIRST_DAY}..{LAST_DAY} (time stamps are nanoseconds since "
                         "1970 in 64 bits)")
    return d


def date_from_filename(path: str | os.PathLike) -> _dt.date | None:
    """The trading day of a NASDAQ file name ``MMDDYYYY.NASDAQ_ITCH50[...]`` (e.g. 08302019.NASDAQ_ITCH50.gz)."""
    m = _NASDAQ_NAME.search(os.path.basename(os.fspath(path)))
    if not m:
        return None
    try:
        d = _dt.date(int(m.group(3)), int(m.group(1)), int(m.group(2)))
    except ValueError:
        return None
    return d if FIRST_DAY <= d <= LAST_DAY else None


def require_day(path: str | os.PathLike, known: bool, outputs: bool) -> None:
    """Raise :class:`UnknownTradingDay` when outputs are asked for a capture of unknown trading day."""
    if outputs and not known:
        raise UnknownTradingDay(
            f"{os.fspath(path)}: the trading day is unknown (no capture time stamps, no MMDDYYYY.NASDAQ_ITCH50 "
            "file name), so the output's time stamps would be 1970: pass --date YYYY-MM-DD")
