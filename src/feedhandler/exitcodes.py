"""The exit codes of every ``feedhandler`` subcommand, and the one error boundary they share.

This module is the single definition: ``feedhandler.cli``, the feed commands (``replay``, ``run``,
``synth``, ``doctor``, ``ptp-slave``, ``bench``, ``shell``) and the exchange's (``exchange``, ``bot``,
``shard-server``, ``history``, through ``engine.errors``) all take their codes from here.

====  ===========================================================================================
code  meaning
====  ===========================================================================================
0     ok (a service such as ``exchange`` or ``shard-server`` stopped by SIGTERM, what a supervisor
      sends to stop it, also exits 0)
1     runtime failure: a port in use, no exchange answering, a capture backend that cannot run here,
      a benchmark that failed, an internal error (one line; ``--debug`` prints the traceback)
2     usage or unreadable input: bad arguments, a missing or unreadable file, an input in no format
      we read, a missing interface, an output that cannot be written, a bad ``--config``
3     data-quality failure under ``--strict``: the stream had gaps, duplicates or damaged input
130   interrupted (SIGINT, Ctrl-C); a partial summary is printed and outputs stay complete
143   terminated (SIGTERM) before a command with an end of its own (``replay``, ``run``) was done
====  ===========================================================================================

Every error is ONE line on stderr (``feedhandler CMD: error: ...``); ``--debug`` adds the traceback.
"""
from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_DATA_QUALITY", "EXIT_INTERRUPTED", "EXIT_TERMINATED",
           "EXIT_CODES", "UsageError", "RuntimeFailure", "DataQualityFailure", "one_line", "boundary",
           "exit_code_table"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA_QUALITY = 3
EXIT_INTERRUPTED = 130   # 128 + SIGINT
EXIT_TERMINATED = 143    # 128 + SIGTERM

# code -> (name, meaning): the table the README, ``feedhandler --help`` and the tests read
EXIT_CODES: dict[int, tuple[str, str]] = {
    EXIT_OK: ("ok", "success (a service stopped by SIGTERM too)"),
    EXIT_FAILURE: ("runtime failure", "the command could not do its job: port in use, no exchange answering, "
                                      "capture backend unusable, internal error"),
    EXIT_USAGE: ("usage or unreadable input", "bad arguments; missing, unreadable or unknown input file, "
                                              "interface or config; unwritable output"),
    EXIT_DATA_QUALITY: ("data-quality failure", "--strict: the stream had gaps, duplicates or damaged input"),
    EXIT_INTERRUPTED: ("interrupted", "SIGINT (Ctrl-C): partial summary, complete outputs"),
    EXIT_TERMINATED: ("terminated", "SIGTERM stopped a command with an end of its own (replay, run) early"),
}


def exit_code_table() -> str:
    """The table as plain text (the epilog of ``feedhandler --help``)."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {name}: {meaning}" for code, (name, meaning) in EXIT_CODES.items())


class CommandFailure(Exception):
    """An error the user can act on, with the exit code it ends the command with (one line, no traceback)."""

    code = EXIT_FAILURE

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CommandFailure):
    """Bad arguments, or an input (file, interface, config) that is missing or unreadable: exit 2."""

    code = EXIT_USAGE


class RuntimeFailure(CommandFailure):
    """The command could not do its job: exit 1."""

    code = EXIT_FAILURE


class DataQualityFailure(CommandFailure):
    """``--strict`` and the stream had gaps or damage: exit 3."""

    code = EXIT_DATA_QUALITY


def one_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    msg = str(e).strip()
    return msg.splitlines()[0] if msg else type(e).__name__


def boundary(prog: str, body: Callable[[], int], argv: Sequence[str] = (), *,
             usage_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``body()`` and turn what escapes it into one line on stderr and an exit code.

    ``SystemExit`` keeps its code (argparse: ``--help`` 0, bad arguments 2); ``KeyboardInterrupt`` is 130;
    a ``CommandFailure`` (or anything with an int ``code`` attribute among the typed errors) its own code;
    ``usage_errors`` (e.g. a missing or unreadable input) 2; anything else 1 with its type name. With
    ``--debug`` anywhere in ``argv`` the traceback is printed too.
    """
    debug = "--debug" in argv
    try:
        return int(body() or 0)
    except SystemExit as e:
        if e.code is None:
            return EXIT_OK
        if isinstance(e.code, int):
            return e.code
        print(f"{prog}: error: {e.code}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:   # `feedhandler ... | head`: the reader left, not an error
        try:
            sys.stdout = open("/dev/null", "w")   # no second BrokenPipe when the interpreter flushes
        except OSError:
            pass
        return EXIT_OK
    except CommandFailure as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return e.code
    except usage_errors as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - the boundary: anything else is a runtime failure, in one line
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {type(e).__name__}: {one_line(e)}"
              + ("" if debug else " (--debug shows the traceback)"), file=sys.stderr)
        return EXIT_FAILURE
