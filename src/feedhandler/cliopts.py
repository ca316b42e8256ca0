"""The options every ``feedhandler`` subcommand spells the same way (README, "One command line").

A name means one thing in every subcommand; a subcommand that takes one of these adds it with the
function here, so the spelling, the parsing, the help text and the shown default cannot drift apart:

  --symbols A,B     a comma-separated list of tickers (never a count: ``synth --symbol-count N``)
  --udp-port N      keep only UDP datagrams to this destination port (``--port`` is a TCP listener's or
                    a gateway's port)
  --date YYYY-MM-DD the trading day; default from the capture (its time stamps, else a NASDAQ file name),
                    live: today in New York
  --debug           print the traceback of an error (errors are one line otherwise)
  --json            print the summary as JSON on stdout
  --duration S      stop after S seconds

Deprecated spellings stay accepted for a while, hidden from ``--help``, with a one-line warning
(``deprecated_alias``).
"""
from __future__ import annotations

import argparse
import re
import sys

__all__ = ["plain", "symbols_list", "port_number", "add_symbols", "add_udp_port", "add_date", "add_debug",
           "DATE_HELP", "deprecated_alias",
           "parse_number", "positive_int", "count_int", "seconds", "positive_seconds", "cpu_index", "zmq_endpoint"]

DATE_HELP = ("trading day YYYY-MM-DD (default: from the capture: its time stamps, else a NASDAQ file name "
             "MMDDYYYY.NASDAQ_ITCH50; live from an interface: today in New York)")


def plain(text: str) -> str:
    """A docstring made fit for ``--help``: reStructuredText literals (double backquotes) and roles
    (:class:`x`) as plain text."""
    text = re.sub(r":[a-z]+:`([^`]*)`", r"\1", text)
    return text.replace("``", "")


def symbols_list(text: str) -> list[str]:
    """``"aapl, MSFT"`` -> ``["AAPL", "MSFT"]`` (argparse type of ``--symbols``)."""
    out = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} names no ticker (comma-separated tickers, e.g. AAPL,MSFT)")
    if any(s.isdigit() for s in out):
        raise argparse.ArgumentTypeError(f"{text!r}: --symbols takes tickers (AAPL,MSFT), not a count")
    return out


def parse_number(text: str, kind: type, what: str, ok, out_of_range: str):
    """``kind(text)`` (int or float) if ``ok(value)``, else argparse's type error: "'TEXT' is not WHAT" when
    it is no number, ``out_of_range`` (formatted with ``value``) when it is out of range. The one body of
    this module's numeric argparse types (and of the commands' own, e.g. ``ptp-slave --domain``)."""
    try:
        x = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not ok(x):
        raise argparse.ArgumentTypeError(out_of_range.format(value=text if kind is float else x))
    return x


def port_number(text: str) -> int:
    """A TCP/UDP port 0..65535 (argparse type of every port option: a larger number would otherwise be
    taken modulo 65536 by some socket layers, e.g. ZeroMQ's bind, and listen somewhere unexpected)."""
    return parse_number(text, int, "a port number", lambda n: 0 <= n <= 65535,
                        "{value} is not a port number (0..65535)")


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type: counts and sizes)."""
    return parse_number(text, int, "a positive integer", lambda n: n >= 1, "{value} is not a positive integer")


def count_int(text: str) -> int:
    """An integer >= 0 (argparse type: table rows, where 0 means none)."""
    return parse_number(text, int, "a whole number", lambda n: n >= 0, "{value} is negative")


def seconds(text: str) -> float:
    """A finite number of seconds >= 0 (argparse type of durations and intervals: a negative, NaN or infinite
    one would stop at once, never or not at all without a word)."""
    return parse_number(text, float, "a number of seconds", lambda x: 0 <= x < float("inf"),
                        "{value} is not a number of seconds >= 0")


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (argparse type of timeouts: 0 would give up before asking)."""
    return parse_number(text, float, "a number of seconds", lambda x: 0 < x < float("inf"),
                        "{value} is not a number of seconds > 0")


def zmq_endpoint(text: str) -> str:
    """A ZeroMQ endpoint (argparse type): ``tcp://HOST:PORT`` with PORT 0..65535 (``*``: any free port, to
    bind), ``ipc://PATH`` or ``inproc://NAME``. ZeroMQ itself takes a port above 65535 modulo 65536 (a bind
    lands on another port, a connect waits on it) and answers a bare ``HOST:PORT`` with "Invalid argument"."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ZeroMQ endpoint: tcp://HOST:PORT, ipc://PATH or "
                                         "inproc://NAME")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not (port == "*" or (port.isdigit() and int(port) <= 65535)):
            raise argparse.ArgumentTypeError(f"{text!r}: tcp:// needs HOST:PORT with a port 0..65535 (or * to "
                                             "bind any free port)")
    return text


def cpu_index(text: str) -> int:
    """A CPU of this machine, 0..N-1 (argparse type of the pinning options)."""
    import os

    count = os.cpu_count() or 1
    return parse_number(text, int, "a CPU number", lambda n: 0 <= n < count,
                        f"CPU {{value}}: this machine has CPUs 0..{count - 1}")


def add_symbols(p: argparse.ArgumentParser, what: str, default: list[str] | None = None) -> None:
    """``--symbols A,B``: ``what`` says what the list does here; ``default`` (a list) is shown."""
    shown = f"default {','.join(default)}" if default else "default: every symbol"
    p.add_argument("--symbols", type=symbols_list, default=default, metavar="A,B,...",
                   help=f"comma-separated tickers: {what} ({shown})")


def add_udp_port(p: argparse.ArgumentParser) -> None:
    p.add_argument("--udp-port", type=port_number, default=None, metavar="PORT",
                   help="keep only UDP datagrams to this destination port (default: every port)")


def add_date(p: argparse.ArgumentParser, help: str = DATE_HELP) -> None:
    p.add_argument("--date", default=None, metavar="YYYY-MM-DD", help=help)


def add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of an error (errors are one line otherwise)")


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings, dest, new: str = "", **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, dest: str, **kw) -> None:
    """Accept ``old`` as a hidden spelling of ``new`` (same ``dest``), with a warning when used."""
    p.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS, **kw)
