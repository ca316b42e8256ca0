"""The ``feedhandler`` command.

    feedhandler replay FILE [--protocol auto|itch50|mdp3|fix|ouch42|ouch50] [--symbols AAPL,MSFT]
                            [--out t.dbn|t.dbn.zst|t.parquet|t.npy] [--json] [--top N] [--mode single|pipelined]
                            [--date YYYY-MM-DD] [--strict] [--channel PORT=N ...]
    feedhandler synth OUT [--protocol itch50|mdp3|fix|ouch42|ouch50] --messages N --seed S
                          [--symbol-count K --format pcap|pcapng|binaryfile --gzip]   (ITCH)
                          [--concentration S --depth-profile shallow|normal|deep]   (ITCH day shape)
                          [--ab] (MDP3: B feed too)  [--fix-version 42|44] (FIX)

``--protocol auto`` (the default) tells the protocol from the file's bytes (feedhandler.detect):
BinaryFILE or MoldUDP64 -> itch50, CME MDP 3.0 packets -> mdp3, TCP "8=FIX" -> fix, SoupBinTCP ->
OUCH (4.2 or 5.0 from the messages). MDP3 A/B feeds: ports that differ by 1000 (CME's A/B convention,
14310/15310) share a sequencing channel; ``--channel PORT=N`` sets it explicitly.

Exit codes (one table for every subcommand, defined in ``feedhandler.exitcodes``): 0 ok; 1 runtime
failure; 2 bad arguments, or an input that is missing, unreadable or in no format we read, or an
output that cannot be written; 3 with ``--strict`` when the replay saw sequence gaps, duplicates or
damaged input (message damage, or a damaged capture file: what was skipped and where is in the
summary); 130 on Ctrl-C (SIGINT); 143 on SIGTERM. Every error is one line on stderr; ``--debug``
prints the traceback too.

Interrupting a replay (SIGINT or SIGTERM): the replay stops at the end of the batch in hand, prints
the partial summary (marked INTERRUPTED) and keeps its output: every output file is written under a
temporary name and renamed only once complete, so ``--out`` then holds a complete, readable file with
the records up to the interruption (a second signal while it is being closed is ignored). Output
files never appear half-written under their final names.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

# No command does linear algebra, but numpy's OpenBLAS starts a thread per core at import and those
# threads spin: on a 2-core machine they took ~3 % of the samples of a replay and slowed a pipelined replay
# (whose two threads want both cores) by 0.1-0.2 s. Before numpy is imported; a value the user set stays.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from feedhandler import __version__  # noqa: E402
from feedhandler.cliopts import (DATE_HELP, add_date, add_debug, add_symbols, add_udp_port, count_int, deprecated_alias,
                                 parse_number, positive_int)
from feedhandler.errors import FeedError, FeedhandlerError
from feedhandler.exitcodes import (EXIT_DATA_QUALITY, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK,  # noqa: F401
                                   EXIT_TERMINATED, EXIT_USAGE, RuntimeFailure, UsageError, boundary,
                                   exit_code_table, one_line)

EXIT_STRICT = EXIT_DATA_QUALITY   # the old name


class _Fail(UsageError):
    """A one-line error for the user (exit 2 unless another code is given)."""


# ---- formatting: feedhandler.summary (one summary for every protocol; names kept for feedhandler.cli's callers)
from feedhandler.summary import (  # noqa: E402,F401
    BOOK_ERRORS, FILE_DAMAGE_TEXT, _bytes, _n, book_errors_text, file_damage_lines, format_bbo_table, format_summary,
    interrupted_lines, mdp3_schema_lines, printable,
)


def _eta(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class _ProgressLine:
    """A ``\\r`` status line on stderr (only when stderr is a terminal and the run lasts > 1 s)."""

    def __init__(self, stream=None, what: str = "replay"):
        self.stream = stream or sys.stderr
        self.what = what
        self.shown = False
        self.width = 0

    def __call__(self, p: dict) -> None:
        if p["elapsed_s"] < 1.0:
            return
        done, total = p["bytes_read"], p["total_bytes"]
        pct = f"{100.0 * done / total:5.1f}%" if total else "  ?  "
        rate = p["records"] / p["elapsed_s"] / 1e6
        # ETA where the input's size is known (a file; gzip: compressed bytes read of the compressed size)
        eta = (f"  ETA {_eta(p['elapsed_s'] * (total - done) / done)}" if total and 0 < done < total else "")
        line = f"{self.what} {pct}  {_bytes(done)}  {_n(p['records'])} records  {rate:.2f} M rec/s{eta} "
        self.width = max(self.width, len(line))
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


# ---- commands ------------------------------------------------------------------------------------
def _cmd_replay(args) -> int:
    from feedhandler.replay import ReplayOptions, replay

    from feedhandler.detect import capture_file_problem

    why = capture_file_problem(args.file)
    if why is not None:
        raise _Fail(why)
    if args.date:
        from feedhandler.trading_day import check_date

        try:
            check_date(args.date)
        except ValueError as e:
            raise _Fail(str(e)) from None
    symbols = args.symbols   # already a list of tickers (cliopts.symbols_list) or None
    bar = _ProgressLine() if (args.progress or (args.progress is None and sys.stderr.isatty())) else None
    channels = {}
    for spec in args.channel or ():
        port, sep, ch = spec.partition("=")
        try:
            if not sep:
                raise ValueError
            channels[int(port)] = int(ch)
        except ValueError:
            raise _Fail(f"--channel {spec!r} is not PORT=N") from None
    opts = ReplayOptions(symbols=symbols, out=args.out, out_format=args.out_format, mode=args.mode,
                         date=args.date, top=args.top, progress=bar, reorder_window=args.reorder_window,
                         udp_port=args.udp_port, protocol=args.protocol, channels=channels or None,
                         sequencing=not args.no_sequencing)
    told: set = set()

    def _warn_now(w: str) -> None:
        told.add(w)
        print(f"feedhandler: warning: {w}", file=sys.stderr)
    opts.on_warning = _warn_now
    if args.out:
        from feedhandler.output import format_for

        try:
            format_for(args.out, args.out_format)
        except ValueError as e:
            raise _Fail(str(e)) from None
    try:
        opts.pace = {"max": 0.0, "recorded": 1.0}[args.pace] if args.pace in ("max", "recorded") else float(args.pace)
        if not 0 < opts.pace < 1e9 and args.pace != "max":
            raise ValueError
    except ValueError:
        raise _Fail(f"--pace must be max, recorded or a positive speed factor, not {args.pace!r}") from None
    page = None
    if args.serve:      # the market-data page (feedhandler.serve)
        from feedhandler.serve import open_page
        try:
            opts.watch, page = open_page(args.serve, symbols, source=f"replay {os.path.basename(args.file)}")
        except ValueError as e:
            raise _Fail(str(e)) from None
        except OSError as e:
            raise _Fail(f"--serve {args.serve}: {e.strerror or e}", 1) from None    # runtime failure
    from feedhandler.publish import from_args as _publisher

    try:
        opts.publisher = _publisher(args, symbols)
    except ValueError as e:
        raise _Fail(str(e)) from None
    restore = _stop_on_signals()
    try:  # the handlers stay until the summary is out: a second signal is not obeyed before
        try:
            s = replay(args.file, opts)
        except FeedhandlerError:
            raise
        except ValueError as e:   # bad options for this protocol (e.g. --mode pipelined with mdp3)
            raise _Fail(str(e)) from None
        finally:
            if page is not None:
                page.stop()
            if bar is not None:
                bar.done()
            if opts.publisher is not None:
                opts.publisher.close()
        if opts.publisher is not None:
            s["publish"] = opts.publisher.stats()
            print(f"feedhandler: {opts.publisher.summary_line()}", file=sys.stderr)
        for w in s.get("warnings") or ():
            if w not in told:
                print(f"feedhandler: warning: {w}", file=sys.stderr)
        if not s.get("messages"):
            print(f"feedhandler: warning: no {s.get('protocol', '?')} messages in {args.file}"
                  + (" (is --protocol right?)" if args.protocol != "auto" else ""), file=sys.stderr)
        if args.json:
            json.dump(s, sys.stdout, indent=2, sort_keys=False)
            sys.stdout.write("\n")
        else:
            print(format_summary(s))
        if s.get("interrupted"):
            print(f"feedhandler: interrupted by {s['interrupted']}: the summary above is partial", file=sys.stderr)
            return EXIT_TERMINATED if s["interrupted"] == "SIGTERM" else EXIT_INTERRUPTED
        if args.strict and _damaged(s):
            print("feedhandler: --strict: the stream had gaps, duplicates or damaged input", file=sys.stderr)
            return EXIT_DATA_QUALITY
        return EXIT_OK
    finally:
        restore()


def _stop_on_signals():
    """SIGINT and SIGTERM stop the replay (as KeyboardInterrupt / replay.Interrupted) once; a second
    signal while the outputs are being closed is ignored. Returns the function that restores the
    previous handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    from feedhandler.replay import Interrupted

    from feedhandler.interrupts import BOUNDARY

    fired: list[int] = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        # at once, or at the end of the batch in hand (feedhandler.interrupts)
        BOUNDARY.deliver(KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum))

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for sig, h in old.items():
            signal.signal(sig, h)
    return restore


def _damaged(s: dict) -> bool:
    """--strict: did the stream have gaps, duplicates or damage (of the messages or of the capture file
    itself, any protocol)? (MDP3's A/B duplicates are normal.)"""
    keys = ["gaps", "malformed", "truncated", "unknown", "bad_length", "file_damage"]
    if s.get("protocol") == "mdp3":
        keys += ["late", "rptseq_gaps"]
    else:
        keys.append("duplicates")
    if s.get("protocol") in ("fix", "ouch42", "ouch50"):
        keys.append("tcp_holes")
    return any(s.get(k) for k in keys)


def _cmd_synth(args) -> int:
    if args.protocol != "itch50":
        if args.concentration is not None or args.depth_profile is not None:
            raise _Fail("--concentration/--depth-profile apply to itch50 only")
        return _synth_other(args)
    from feedhandler.synth import DEFAULT_CONCENTRATION, DEFAULT_DEPTH_PROFILE, generate_day

    if args.concentration is None:
        args.concentration = DEFAULT_CONCENTRATION
    if args.depth_profile is None:
        args.depth_profile = DEFAULT_DEPTH_PROFILE

    if args.messages is None:
        args.messages = 1_000_000
    if args.gzip and args.format != "binaryfile":
        raise _Fail("--gzip applies to --format binaryfile only")
    import datetime as _dt

    try:
        _dt.date.fromisoformat(args.date)
    except ValueError:
        raise _Fail(f"--date {args.date!r} is not YYYY-MM-DD") from None
    t0 = time.perf_counter()
    try:
        day = generate_day(args.messages, args.symbol_count, args.seed, date=args.date, concentration=args.concentration,
                           depth_profile=args.depth_profile)
    except ValueError as e:
        raise _Fail(str(e)) from None
    t1 = time.perf_counter()
    day.write(args.out, args.format, gzip=args.gzip)
    t2 = time.perf_counter()
    if not args.quiet:
        print(f"{args.out}: {_n(day.n_messages)} ITCH 5.0 messages, {len(day.symbols)} symbols "
              f"(concentration {args.concentration:g}, {args.depth_profile} depth), seed {args.seed}, "
              f"{args.format}{' (gzip)' if args.gzip else ''}, {_bytes(os.path.getsize(args.out))} "
              f"(generated in {t1 - t0:.2f} s, written in {t2 - t1:.2f} s)")
    return EXIT_OK


def _synth_other(args) -> int:
    """synth for mdp3 / fix / ouch42 / ouch50 (their generators write a nanosecond pcap)."""
    if args.format != "pcap" or args.gzip:
        raise _Fail(f"--format/--gzip apply to itch50 only ({args.protocol} writes a pcap)")
    n = args.messages if args.messages is not None else 1000
    t0 = time.perf_counter()
    if args.protocol == "mdp3":
        from feedhandler.protocols.mdp3.synth import generate

        info = generate(args.out, messages=n, seed=args.seed, ab=args.ab)
        what = f"MDP 3.0, {_n(info.get('packets', 0))} packets" + (", A and B feeds" if args.ab else "")
    elif args.protocol == "fix":
        from feedhandler.protocols.fix_stream import synth

        begin = b"FIX.4.4" if args.fix_version == "44" else b"FIX.4.2"
        synth(args.out, n, args.seed, begin=begin, reference_data=args.reference_data)
        what = f"{begin.decode()} messages over TCP" + (" with reference data" if args.reference_data else "")
    else:
        from feedhandler.protocols.ouch_events import synth

        version = "4.2" if args.protocol == "ouch42" else "5.0"
        synth(args.out, n, args.seed, version)
        what = f"OUCH {version} over SoupBinTCP"
    t1 = time.perf_counter()
    if not args.quiet:
        print(f"{args.out}: {_n(n)} messages, {what}, seed {args.seed}, pcap, {_bytes(os.path.getsize(args.out))} "
              f"(in {t1 - t0:.2f} s)")
    return EXIT_OK


def _concentration(v: str) -> float:
    return parse_number(v, float, "a number", lambda x: 0.0 <= x < 100.0, "{value} is not in [0, 100)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="feedhandler", description="Exchange feed handler: captures to ticks to books, and a small exchange.",
        epilog=exit_code_table() + "\n\nEvery error is one line on stderr; --debug (any subcommand) adds the "
                                   "traceback. `feedhandler COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"feedhandler {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("replay", help="decode a capture (pcap, pcapng, BinaryFILE, gzip) into books",
                       description="Replay a capture file (format and protocol detected from its bytes) through "
                                   "its decoder and the order books; print a summary and a BBO table.",
                       epilog=exit_code_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("file", help="pcap / pcapng / NASDAQ BinaryFILE, optionally gzip-compressed")
    r.add_argument("--protocol", choices=("auto", "itch50", "mdp3", "fix", "ouch42", "ouch50"), default="auto",
                   help="feed protocol (default auto: from the file's bytes)")
    r.add_argument("--channel", action="append", metavar="PORT=N",
                   help="mdp3: UDP port PORT belongs to sequencing channel N (repeat; default: ports that "
                        "differ by 1000, CME's A/B feeds, share a channel)")
    add_symbols(r, "keep only these in the outputs and the BBO table")
    r.add_argument("--out", help="write the enriched records: .dbn or .dbn.zst (DBN MBO, zstd-compressed for "
                                 ".zst; price levels also to OUT.mbp-1.dbn[.zst]), .parquet (every record kind, "
                                 "typed columns), .npy (default: no output)")
    r.add_argument("--out-format", choices=("dbn", "parquet", "npy"), help="output format (default: from --out)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    r.add_argument("--top", type=count_int, default=10,
                   help="rows of the BBO table (busiest symbols; 0: none; default 10)")
    r.add_argument("--mode", choices=("single", "pipelined"), default="single",
                   help="single: one thread (default); pipelined: native producer thread + ring + book consumer")
    add_date(r, DATE_HELP.replace("; live from an interface: today in New York", "; none for BinaryFILE"))
    r.add_argument("--strict", action="store_true",
                   help="exit 3 when the stream had gaps, duplicates or damage (default: report them, exit 0)")
    r.add_argument("--reorder-window", type=int, default=64, metavar="PACKETS",
                   help="MoldUDP64 / MDP3 packets held while a sequence hole waits for its packet (default 64)")
    add_udp_port(r)
    r.add_argument("--no-sequencing", action="store_true",
                   help="itch50: no MoldUDP64 sequencing: decode every message in arrival order (for streams "
                        "whose sequence numbers are all 0; gaps and duplicates cannot be seen then)")
    r.add_argument("--pace", default="max", metavar="max|recorded|FACTOR",
                   help="itch50: as fast as possible (max, default), at the recorded pace of the capture's time "
                        "stamps (recorded), or FACTOR times faster (e.g. 10)")
    r.add_argument("--serve", metavar="[HOST:]PORT",
                   help="itch50: serve a live market-data page at http://[HOST:]PORT/ (BBO, depth and the feed's "
                        "counters; default host 127.0.0.1; default: off)")
    from feedhandler.publish import add_arguments as _publish_options

    _publish_options(r)
    g = r.add_mutually_exclusive_group()
    g.add_argument("--progress", action="store_true", default=None,
                   help="always show the progress line (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show the progress line")
    add_debug(r)
    r.set_defaults(func=_cmd_replay)

    s = sub.add_parser("synth", help="generate a synthetic capture of any protocol",
                       description="Generate a synthetic capture (deterministic per seed): a NASDAQ TotalView-ITCH "
                                   "5.0 day, CME MDP 3.0, FIX 4.2/4.4 or OUCH 4.2/5.0 sessions.",
                       epilog=exit_code_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("out", help="output file")
    s.add_argument("--protocol", choices=("itch50", "mdp3", "fix", "ouch42", "ouch50"), default="itch50",
                   help="protocol (default itch50)")
    s.add_argument("--messages", type=positive_int, default=None,
                   help="total messages (default 1,000,000 for itch50, 1,000 otherwise)")
    s.add_argument("--ab", action="store_true", help="mdp3: send every incremental packet on the B feed too")
    s.add_argument("--fix-version", choices=("42", "44"), default="44", help="fix: FIX 4.2 or 4.4 (default 44)")
    s.add_argument("--reference-data", action="store_true",
                   help="fix: a SecurityList and a SecurityDefinition after the logon")
    s.add_argument("--symbol-count", type=positive_int, default=100, metavar="N",
                   help="itch50: number of symbols (default 100)")
    deprecated_alias(s, "--symbols", "--symbol-count", "symbol_count", type=positive_int)
    s.add_argument("--concentration", type=_concentration, default=None, metavar="S",
                   help="itch50: how the order flow concentrates on the busiest symbols: symbol k (0 = busiest) "
                        "gets a share proportional to 1/(k+1)**S; 0 = all equally busy, higher = a few symbols "
                        "take most of the flow and their books get deep (default 0.9, close to a real day)")
    s.add_argument("--depth-profile", choices=("shallow", "normal", "deep"), default=None,
                   help="itch50: how far from the top of the book new orders go: shallow (95%% within a few "
                        "ticks, at most 100), normal (75%% near the top, 25%% 49 ticks away on average, at most "
                        "2000), deep (half of them 300 ticks away on average, at most 5000); default normal. "
                        "Deep books: few symbols (--symbol-count 300) and/or --depth-profile deep; shallow: "
                        "thousands of symbols")
    s.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    s.add_argument("--format", choices=("pcap", "pcapng", "binaryfile"), default="pcap",
                   help="itch50: MoldUDP64 in a nanosecond pcap (default), pcapng, or a NASDAQ BinaryFILE")
    s.add_argument("--gzip", action="store_true", help="gzip the BinaryFILE")
    s.add_argument("--date", default="2024-03-15", metavar="YYYY-MM-DD",
                   help="itch50: the trading day to generate (default 2024-03-15)")
    s.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    add_debug(s)
    s.set_defaults(func=_cmd_synth)

    # Commands implemented elsewhere; main() hands their arguments over untouched (imported lazily so
    # that replay does not pay for ZeroMQ or the capture backends). Their real parsers: PARSERS.
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


# command -> ("module:function taking argv", help)
DELEGATED = {
    "run": ("feedhandler.live:run_main", "live capture from a network interface into books (--iface)"),
    "doctor": ("feedhandler.doctor:doctor_main", "which capture backends work here, and why not"),
    "exchange": ("engine.exchange:main", "run the exchange: gateway, engines, FIX/OUCH acceptors"),
    "bot": ("engine.bot:main", "a demo trading bot against the exchange"),
    "history": ("engine.history.service:main", "store an exchange's journal in SQLite/PostgreSQL, its live book in Redis"),
    "shard-server": ("engine.shard_server:main", "an engine shard reachable over ZeroMQ (for EngineManager(remote=...))"),
    "ptp-slave": ("feedhandler.time.slave:slave_main",
                  "measure clock offset and path delay to a PTP master (never steers the clock)"),
    "bench": ("feedhandler.bench_cli:main", "run the benchmarks of bench/ next to their peers (from a source checkout)"),
    "strategy": ("engine.strategy.runner:main",
                 "run a trading strategy process: market data (SUB) in, signals (PUSH) to an executor"),
    "executor": ("engine.strategy.executor:main",
                 "send strategy signals (PULL) to the exchange as orders, each exactly once"),
    "shell": ("feedhandler.shell:main", "an interactive session (ptpython) with a capture's books, a running "
                                        "`run`'s ring or the exchange loaded"),
}

# command -> "module:function returning its argparse parser": what `--help` prints and what the
# CLI-convention test walks (every DELEGATED command needs one).
PARSERS = {
    "run": "feedhandler.live:build_parser",
    "doctor": "feedhandler.doctor:build_parser",
    "exchange": "engine.exchange:build_parser",
    "bot": "engine.bot:build_parser",
    "history": "engine.history.service:build_parser",
    "shard-server": "engine.shard_server:build_parser",
    "ptp-slave": "feedhandler.time.slave:build_parser",
    "bench": "feedhandler.bench_cli:build_parser",
    "shell": "feedhandler.shell:build_parser",
    "strategy": "engine.strategy.runner:build_parser",
    "executor": "engine.strategy.executor:build_parser",
}


def _load(target: str):
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's real parser, discovered from the top-level parser (delegated commands through
    PARSERS). A delegated command without a parser factory raises LookupError naming it."""
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, sp in sub.choices.items():
        if name in DELEGATED:
            if name not in PARSERS:
                raise LookupError(f"subcommand {name!r} has no parser factory in feedhandler.cli.PARSERS")
            out[name] = _load(PARSERS[name])()
        else:
            out[name] = sp
    return out


def _local_commands() -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def _delegate(name: str, argv: Sequence[str]) -> int:
    target, _ = DELEGATED[name]
    try:
        fn = _load(target)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"'{name}' is not available in this build: {one_line(e)}") from None
    return int(fn(list(argv)) or 0)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FeedError as e:   # the pipeline failed while running: a runtime failure, not the input
        raise RuntimeFailure(str(e)) from e


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``feedhandler`` script; returns the exit code (also when called in-process).

    The one error boundary of every subcommand (``feedhandler.exitcodes.boundary``): whatever escapes a
    command becomes one line on stderr and the exit code of the table; ``--debug`` adds the traceback.
    Typed errors of the input/output edges (missing, unreadable or unknown input, unwritable output,
    missing optional dependency) are usage errors (2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv[0] if argv and not argv[0].startswith("-") else None
    prog = f"feedhandler {name}" if name is not None and (name in DELEGATED or name in _local_commands()) \
        else "feedhandler"
    return boundary(prog, lambda: _dispatch(argv), argv, usage_errors=(FeedhandlerError, OSError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
