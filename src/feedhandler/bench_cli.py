"""``feedhandler bench [NAME] [ARGS...]``: run the benchmark suite of ``bench/`` next to its peers.

Each benchmark is a script ``bench/bench_NAME.py`` that measures feedhandler and a peer library in the
same run and prints the ratio tables; this command finds the scripts, runs one (``feedhandler bench
itch --messages 1000000``: every argument after NAME goes to the script unchanged; ``feedhandler bench
itch --help`` shows the script's options) or, without NAME, every one whose requirements are met, with
the script's own defaults (that takes a long time: the defaults are the published figures' sizes).
``feedhandler bench --list`` lists them with their peers and whether those are installed.

The scripts run from a source checkout only: several build C helpers from ``csrc/`` and ``bench/``
(the ring and capture benchmarks) and cache their inputs under ``bench/out/``, so they are not shipped
inside the installed package. The checkout is found from ``--bench-dir DIR``, ``$FEEDHANDLER_BENCH_DIR``,
an editable install's source tree, or the current directory and its parents. Peers:
``pip install 'feedhandler[bench]'`` (a missing optional peer is skipped by the script with a note;
a missing required one stops that benchmark here with the install command).
"""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ENV_DIR = "FEEDHANDLER_BENCH_DIR"
from feedhandler.exitcodes import EXIT_FAILURE as EXIT_FAIL, EXIT_OK, EXIT_USAGE  # noqa: E402

# NAME -> (peer shown in the tables, module that provides it, required to run at all, other needs)
PEERS: dict[str, tuple[str, str | None, bool, str]] = {
    "itch": ("itch-book (C++)", "itch_book", False, ""),
    "book": ("itch-book (C++)", "itch_book", False, ""),
    "mdp3": ("sbedecoder", "sbedecoder", False, ""),
    "fix": ("simplefix", "simplefix", True, ""),
    "matching": ("liquibook (C++)", "liquibook", False, ""),
    "gateway": ("bare pyzmq echo", "zmq", True, ""),
    "acceptors": ("bare asyncio FIX/OUCH acceptor (simplefix)", "simplefix", True, ""),
    "strategy": ("bare pyzmq PUB/SUB, PUSH/PULL", "msgpack", True, ""),
    "ring": ("plain C SPSC ring", None, False, "a C compiler ($CC or gcc)"),
    "capture": ("AF_PACKET (TPACKET_V3)", None, False, "root (veth pairs, namespaces, XDP)"),
}


def _looks_like_bench(d: Path) -> bool:
    return d.is_dir() and any(d.glob("bench_*.py"))


def find_bench_dir(explicit: str | None = None) -> Path | None:
    """The ``bench/`` folder of a source checkout, or None."""
    cands = []
    if explicit:
        cands.append(Path(explicit))
    if os.environ.get(ENV_DIR):
        cands.append(Path(os.environ[ENV_DIR]))
    here = Path(__file__).resolve()
    cands.append(here.parents[2] / "bench")  # editable install: src/feedhandler/ -> checkout/bench
    cwd = Path.cwd().resolve()
    cands += [p / "bench" for p in (cwd, *cwd.parents)]
    if explicit:  # an explicit folder that is wrong is an error, not a reason to look elsewhere
        return cands[0] if _looks_like_bench(cands[0]) else None
    return next((c for c in cands if _looks_like_bench(c)), None)


def benchmarks(bench_dir: Path) -> dict[str, Path]:
    return {p.stem[len("bench_"):]: p for p in sorted(bench_dir.glob("bench_*.py"))}


def _summary(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, ValueError) as e:
        return f"(cannot read: {e})"
    first = " ".join(doc.strip().split("\n\n", 1)[0].split())  # the first paragraph, on one line
    cut = first.find(". ")
    first = first[:cut + 1] if cut > 0 else first
    return first if len(first) <= 110 else first[:107] + "..."


def _unmet(name: str) -> str | None:
    """Why NAME cannot run here (a required peer or need missing), or None."""
    peer, module, required, needs = PEERS.get(name, ("", None, False, ""))
    if module and required and importlib.util.find_spec(module) is None:
        return f"needs {module} (pip install 'feedhandler[bench]')"
    if needs.startswith("root") and os.geteuid() != 0:
        return f"needs {needs}"
    return None


def _peer_state(name: str) -> str:
    peer, module, required, needs = PEERS.get(name, ("-", None, False, ""))
    if module:
        ok = importlib.util.find_spec(module) is not None
        state = "installed" if ok else ("MISSING, required" if required else "not installed: skipped")
    else:
        state = needs or "-"
    return f"{peer} [{state}]"


def _list(bench: dict[str, Path]) -> int:
    w = max(len(n) for n in bench)
    for name, path in bench.items():
        print(f"{name:<{w}}  {_summary(path)}")
        print(f"{'':<{w}}  peer: {_peer_state(name)}; run: feedhandler bench {name} [--help]")
    return EXIT_OK


def _run(name: str, path: Path, args: Sequence[str]) -> int:
    checkout = path.parent.parent
    print(f"# feedhandler bench {name}: {sys.executable} {path.relative_to(checkout)} {' '.join(args)}".rstrip(),
          file=sys.stderr, flush=True)
    # the scripts import feedhandler / engine from this interpreter's installation (built extensions)
    return subprocess.run([sys.executable, str(path), *args], cwd=str(checkout)).returncode


def build_parser():
    import argparse

    from feedhandler.cliopts import add_debug, plain

    p = argparse.ArgumentParser(prog="feedhandler bench",
                                description=plain(__doc__.split("\n\n", 1)[0]).split(": ", 1)[1].strip(),
                                epilog=plain(__doc__.split("\n\n", 1)[1].strip()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the benchmarks, their peers and whether those are "
                                                       "installed, and exit")
    p.add_argument("--bench-dir", metavar="DIR", default=None,
                   help=f"the checkout's bench/ folder (default: ${ENV_DIR}, an editable install's source "
                        "tree, or the current directory and its parents)")
    add_debug(p)
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="the benchmark to run (bench/bench_NAME.py; default: every one, at its published size)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="SCRIPT ARGS",
                   help="arguments for the benchmark script, passed unchanged (NAME --help: its options)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    bench_dir_arg, do_list = a.bench_dir, a.list
    d = find_bench_dir(bench_dir_arg)
    if d is None:
        where = f"{bench_dir_arg} has no bench_*.py" if bench_dir_arg else "no bench/ folder found"
        print(f"feedhandler bench: error: {where}. The benchmarks run from a source checkout of feedhandler "
              f"(they build C helpers from csrc/ and bench/): run this inside the checkout, or pass "
              f"--bench-dir CHECKOUT/bench (or set {ENV_DIR}).", file=sys.stderr)
        return EXIT_USAGE
    bench = benchmarks(d)
    if do_list:
        try:
            return _list(bench)
        except BrokenPipeError:  # `feedhandler bench --list | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
    if a.name is not None:
        name, args = a.name, a.args
        if name not in bench:
            print(f"feedhandler bench: error: no benchmark {name!r} in {d} (have: {', '.join(bench)})",
                  file=sys.stderr)
            return EXIT_USAGE
        why = _unmet(name)
        if why and not any(a in ("-h", "--help") for a in args):
            print(f"feedhandler bench: error: {name} {why}", file=sys.stderr)
            return EXIT_FAIL
        return _run(name, bench[name], args)
    rc = EXIT_OK
    for name, path in bench.items():
        why = _unmet(name)
        if why:
            print(f"# feedhandler bench: skipping {name}: {why}", file=sys.stderr)
            continue
        code = _run(name, path, [])
        if code != 0:
            print(f"# feedhandler bench: {name} exited {code}", file=sys.stderr)
            rc = EXIT_FAIL
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
