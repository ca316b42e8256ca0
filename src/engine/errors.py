"""Typed errors of the exchange-side commands (``exchange``, ``bot``, ``shard-server``, ``history``).

Their exit codes and the error boundary are the CLI's one table, defined in ``feedhandler.exitcodes``
(README, "Exit codes"): 0 ok (also a graceful stop by SIGTERM, what a supervisor sends), 1 runtime
failure (a port in use, no exchange answering, an engine that failed while running), 2 usage or
unreadable input (bad arguments, a missing or malformed --config, an unknown config key, a data directory
written with another configuration, refused credentials), 130 interrupted (SIGINT / Ctrl-C).

Every error is ONE line on stderr (``feedhandler exchange: error: ...``); ``--debug`` prints the
traceback as well.
"""
from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable

from feedhandler.exitcodes import (EXIT_DATA_QUALITY, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK,  # noqa: F401
                                   EXIT_USAGE, CommandFailure, boundary, one_line)


class CommandError(CommandFailure):
    """An error the user can act on, with the exit code it ends the command with."""

    code = EXIT_FAILURE


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


def run_command(prog: str, body: Callable[[list[str]], int], argv: list[str] | None) -> int:
    """Run ``body(argv)`` behind the CLI's one error boundary (``feedhandler.exitcodes.boundary``): a typed
    error or any other exception becomes one line on stderr and its exit code; ``--debug`` (anywhere in
    argv) also prints the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = [a for a in argv if a != "--debug"]
    return boundary(prog, lambda: body(rest), argv)
