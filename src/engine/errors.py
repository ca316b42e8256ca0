"""Typed errors of the exchange-side commands and the one error boundary they share.

``feedhandler exchange``, ``feedhandler bot`` and ``feedhandler shard-server`` follow the CLI's exit code
table (README, "Exit codes")::

    0    ok (also a graceful stop by SIGTERM, what a supervisor sends)
    1    runtime failure: a port in use, no exchange answering, an engine that failed while running
    2    usage or unreadable input: bad arguments, a missing or malformed --config, an unknown config key,
         a data directory written with another configuration, refused credentials
    130  interrupted (SIGINT / Ctrl-C)

Every error is ONE line on stderr (``feedhandler exchange: error: ...``); ``--debug`` prints the
traceback as well.
"""
from __future__ import annotations

import difflib
import sys
import traceback
from collections.abc import Callable, Iterable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An error the user can act on, with the exit code it ends the command with."""

    code = EXIT_FAILURE

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ConfigError(CommandError):
    """The configuration (file, keys, values, options) cannot be used."""

    code = EXIT_USAGE


class DataDirError(CommandError):
    """The data directory was written by an exchange with another configuration (or is unreadable)."""

    code = EXIT_USAGE


class StartupError(CommandError):
    """A listener could not be opened (port in use, address not available)."""

    code = EXIT_FAILURE


class NoExchange(CommandError):
    """No exchange answers at the address the bot was given (or found)."""

    code = EXIT_FAILURE


class Interrupted(CommandError):
    """SIGINT: the command stopped cleanly but was interrupted."""

    code = EXIT_INTERRUPTED


def nearest(name: str, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name, or ``""``."""
    m = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {m[0]!r}?)" if m else ""


def one_line(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    return first


def run_command(prog: str, body: Callable[[list[str]], int], argv: list[str] | None) -> int:
    """Run ``body(argv)`` behind the error boundary: a typed error or any other exception becomes one line
    on stderr and its exit code; ``--debug`` (anywhere in argv) also prints the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return int(body(argv) or 0)
    except SystemExit as e:          # argparse: --help exits 0, bad arguments 2 (its own one-line message)
        code = e.code
        if code is None:
            return EXIT_OK
        if isinstance(code, int):
            return code
        print(f"{prog}: error: {code}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CommandError as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return e.code
    except Exception as e:  # noqa: BLE001 - the boundary: anything else is a runtime failure, in one line
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {type(e).__name__}: {one_line(e)} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_FAILURE
