"""One command line: every subcommand of ``feedhandler`` (discovered from the parser, so commands added
later are checked too) has help text on every option, shows its defaults, accepts ``--debug``, and
ends with the exit codes of the one table in ``feedhandler.exitcodes`` (README, "One command line")."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from feedhandler import cli, exitcodes
from feedhandler.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "itch50_sample.pcap"


def _names() -> list[str]:
    top = cli.build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


NAMES = _names()
KNOWN = {"replay", "run", "synth", "doctor", "exchange", "bot", "shard-server", "ptp-slave", "bench", "history",
         "shell"}


def _script() -> str:
    exe = Path(sys.executable).parent / "feedhandler"
    return str(exe) if exe.exists() else shutil.which("feedhandler") or "feedhandler"


def _shows_default(action: argparse.Action) -> bool:
    """Does this option have a default worth showing (not None/False/empty, not a flag)?"""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                           argparse._VersionAction, argparse._CountAction, argparse._StoreConstAction)):
        return False
    d = action.default
    return d is not None and d is not argparse.SUPPRESS and d is not False and d != "" and d != []


def test_every_subcommand_is_discovered():
    parsers = cli.subcommand_parsers()       # LookupError for a delegated command without a parser
    assert KNOWN <= set(parsers), KNOWN - set(parsers)
    assert set(parsers) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_help_text_and_defaults(name, capsys):
    p = cli.subcommand_parsers()[name]
    assert p.prog == f"feedhandler {name}", "the usage line names the command as the user types it"
    missing, no_default = [], []
    for a in p._actions:
        if isinstance(a, argparse._HelpAction) or a.help is argparse.SUPPRESS:
            continue
        what = "/".join(a.option_strings) or a.dest
        if not (a.help or "").strip():
            missing.append(what)
        elif _shows_default(a) and "default" not in a.help.lower():
            no_default.append(f"{what} (default {a.default!r})")
    assert not missing, f"feedhandler {name}: options without help text: {missing}"
    assert not no_default, f"feedhandler {name}: help does not show the default: {no_default}"
    opts = {o for a in p._actions for o in a.option_strings}
    assert "--debug" in opts, f"feedhandler {name} has no --debug"
    # a name means one thing everywhere
    for a in p._actions:
        if "--symbols" in a.option_strings and a.help is not argparse.SUPPRESS:
            assert "ticker" in a.help.lower() or "symbols" in a.help.lower(), a.help
            assert a.type is not int and getattr(a.type, "__name__", "") not in ("_positive", "int"), \
                f"feedhandler {name}: --symbols must be a list of tickers, not a count"
        if "--port" in a.option_strings and a.help is not argparse.SUPPRESS:
            assert "udp" not in a.help.lower(), f"feedhandler {name}: the UDP filter is --udp-port"
        if "--date" in a.option_strings and a.help is not argparse.SUPPRESS and name not in ("synth",):
            assert "from the capture" in a.help, f"feedhandler {name}: --date defaults to the capture's day"
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"feedhandler {name}" in out and "python -m" not in out.split("\n")[0]
    assert "``" not in out and ":class:" not in out, f"feedhandler {name} --help shows raw reStructuredText"


@pytest.mark.parametrize("name", NAMES)
def test_bad_usage_exits_2(name, capsys):
    assert main([name, "--no-such-option-x9"]) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"feedhandler {name}: error:" in err


def _required_args(p: argparse.ArgumentParser) -> list[str]:
    out = []
    for a in p._actions:
        if not a.option_strings and a.nargs is None:
            out.append("x")
        elif a.option_strings and a.required:
            out += [a.option_strings[0], "x"]
    return out


def _inject(monkeypatch, name: str, exc: BaseException) -> list[str]:
    """Make subcommand ``name`` raise ``exc`` once it runs; returns the argv that reaches it."""
    def boom(*_a, **_k):
        raise exc

    if name in cli.DELEGATED:
        mod = types.ModuleType("fh_cli14_boom")
        mod.boom = boom
        monkeypatch.setitem(sys.modules, "fh_cli14_boom", mod)
        monkeypatch.setitem(cli.DELEGATED, name, ("fh_cli14_boom:boom", cli.DELEGATED[name][1]))
        return [name]
    sp = cli.subcommand_parsers()[name]
    func = sp._defaults["func"]
    owner = sys.modules[func.__module__]
    monkeypatch.setattr(owner, func.__name__, boom)
    return [name, *_required_args(sp)]


@pytest.mark.parametrize("name", NAMES)
def test_runtime_failure_is_one_line_exit_1_and_debug_shows_traceback(name, monkeypatch, capsys):
    argv = _inject(monkeypatch, name, RuntimeError("injected failure x7"))
    assert main(argv) == exitcodes.EXIT_FAILURE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "injected failure x7" in err and "Traceback" not in err
    assert err.startswith(f"feedhandler {name}: error: RuntimeError")
    assert main(argv + ["--debug"]) == exitcodes.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" in err and "injected failure x7" in err


@pytest.mark.parametrize("name", NAMES)
def test_interrupt_exits_130(name, monkeypatch, capsys):
    argv = _inject(monkeypatch, name, KeyboardInterrupt())
    assert main(argv) == exitcodes.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_exit_code_table_is_the_readme_table():
    readme = (REPO / "README.md").read_text()
    sect = readme[readme.index("### One command line"):]
    for code, (name, _) in exitcodes.EXIT_CODES.items():
        assert re.search(rf"^\| `{code}` \| {re.escape(name)} \|", sect, re.M), f"README lacks exit code {code}"
    assert "--symbols" in sect and "--udp-port" in sect and "--symbol-count" in sect
    # engine's commands use the same codes (one module)
    from engine import errors
    assert (errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_INTERRUPTED) == (
        exitcodes.EXIT_OK, exitcodes.EXIT_FAILURE, exitcodes.EXIT_USAGE, exitcodes.EXIT_INTERRUPTED)
    assert issubclass(errors.CommandError, exitcodes.CommandFailure)


# ---- real exit codes, command by command ------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["replay", "{tmp}/nope.pcap"],
    ["run", "--file", "{tmp}/nope.pcap"],
    ["shell", "{tmp}/nope.pcap", "-c", "pass"],
    ["exchange", "--config", "{tmp}/nope.toml", "--port", "0", "--md-port", "0", "--data-dir", "{tmp}/d"],
    ["doctor", "--iface", "fhnosuch0"],
    ["ptp-slave", "--iface", "fhnosuch0"],
    ["run", "--iface", "fhnosuch0", "--duration", "0.1"],
    ["bench", "--bench-dir", "{tmp}/nobench", "--list"],
    ["synth", "{tmp}/no/such/dir/x.pcap", "--messages", "1000"],
], ids=lambda a: " ".join(a[:2]))
def test_missing_input_exits_2(argv, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err


def test_deprecated_spellings_still_work(tmp_path, capsys):
    out = tmp_path / "d.pcap"
    assert main(["synth", str(out), "--messages", "2000", "--symbols", "5", "-q"]) == 0
    assert "--symbols is deprecated, use --symbol-count" in capsys.readouterr().err
    assert main(["run", "--file", str(out), "--port", "26477", "--json", "--status-interval", "0", "--top", "0"]) == 0
    cap = capsys.readouterr()
    assert "--port is deprecated, use --udp-port" in cap.err
    from engine.bot import build_parser as bot_parser
    assert bot_parser().parse_args(["--symbol", "msft"]).symbols == ["MSFT"]
    assert bot_parser().parse_args(["--symbols", "aapl,msft"]).symbols == ["AAPL", "MSFT"]
    capsys.readouterr()
    assert main(["bot", "--symbols", "100"]) == exitcodes.EXIT_USAGE   # a count is not a ticker list
    assert "not a count" in capsys.readouterr().err


@pytest.fixture(scope="module")
def damaged_capture(tmp_path_factory):
    from feedhandler.synth import generate_day

    d = tmp_path_factory.mktemp("cli14dmg")
    clean = d / "clean.pcap"
    generate_day(5000, 8, seed=3).write_pcap(clean)
    data = bytearray(clean.read_bytes())
    # an impossible pcap record length in the middle: the reader skips to the next plausible record
    off = 24
    for _ in range(40):
        caplen = int.from_bytes(data[off + 8:off + 12], "little")
        off += 16 + caplen
    data[off + 8:off + 12] = (0x7FFFFFF0).to_bytes(4, "little")
    bad = d / "damaged.pcap"
    bad.write_bytes(bytes(data))
    return clean, bad


@pytest.mark.parametrize("cmd", ["replay", "run"])
def test_strict_on_damaged_capture_exits_3(cmd, damaged_capture, capsys):
    clean, bad = damaged_capture
    argv = {"replay": ["replay", "{f}", "--no-progress", "--json"],
            "run": ["run", "--file", "{f}", "--json", "--status-interval", "0", "--top", "0"]}[cmd]
    fill = lambda f: [a.replace("{f}", str(f)) for a in argv]  # noqa: E731
    assert main(fill(clean) + ["--strict"]) == exitcodes.EXIT_OK
    capsys.readouterr()
    assert main(fill(bad)) == exitcodes.EXIT_OK, "without --strict damage is reported, not fatal"
    capsys.readouterr()
    assert main(fill(bad) + ["--strict"]) == exitcodes.EXIT_DATA_QUALITY
    assert "--strict" in capsys.readouterr().err


def _free_port() -> int:
    from _durability_support import free_port   # below the ephemeral range (see there)
    return free_port()


def _sigint_after_line(argv: list[str], ready: str, cwd: Path, timeout: float = 60.0, sig=signal.SIGINT):
    """Start the installed script, wait for ``ready`` on its stdout or stderr, SIGINT it; returns
    (rc, stderr)."""
    import selectors

    p = subprocess.Popen([_script(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    try:
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        sel.register(p.stderr, selectors.EVENT_READ)
        t_end = time.monotonic() + timeout
        seen = b""
        while ready.encode() not in seen:
            assert time.monotonic() < t_end, f"{argv}: no {ready!r} in {seen[-2000:]!r}"
            for key, _ in sel.select(0.2):
                chunk = os.read(key.fileobj.fileno(), 65536)
                seen += chunk
            if p.poll() is not None and ready.encode() not in seen:
                raise AssertionError(f"{argv} exited {p.returncode} before {ready!r}: {seen[-2000:]!r}")
        sel.close()
        time.sleep(0.3)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        return p.returncode, err.decode(errors="replace")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("cmd", ["exchange", "shard-server", "run", "history"])
def test_sigint_exits_130(cmd, tmp_path):
    if cmd == "exchange":
        argv, ready = ["exchange", "--port", "0", "--md-port", "0", "--data-dir", str(tmp_path / "x"),
                       "--no-history"], "exchange up"
    elif cmd == "shard-server":
        argv, ready = ["shard-server", "--bind", "tcp://127.0.0.1:0", "--journal-root", str(tmp_path)], "listening"
    elif cmd == "run":   # 17 hours of capture time at the recorded pace: only SIGINT ends it
        argv, ready = ["run", "--file", str(SAMPLE), "--pace", "recorded", "--status-interval", "0.2"], "msgs"
    else:   # an exchange's data dir first (a second of it), then its history writer following it
        r = subprocess.run([_script(), "exchange", "--port", "0", "--md-port", "0", "--data-dir", str(tmp_path / "x"),
                            "--no-history", "--duration", "0.5"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        argv, ready = ["history", "--data-dir", str(tmp_path / "x"), "--follow"], "resuming after seq"
    rc, err = _sigint_after_line(argv, ready, tmp_path)
    assert rc == exitcodes.EXIT_INTERRUPTED, err
    assert "Traceback" not in err


@pytest.mark.parametrize("cmd,code", [("run", exitcodes.EXIT_TERMINATED), ("exchange", exitcodes.EXIT_OK)])
def test_sigterm(cmd, code, tmp_path):
    """SIGTERM: a command with an end of its own (run) was cut short: 143; a service (exchange) is being
    stopped by its supervisor, as it should be: 0."""
    if cmd == "run":
        argv, ready = ["run", "--file", str(SAMPLE), "--pace", "recorded", "--status-interval", "0.2"], "msgs"
    else:
        argv, ready = ["exchange", "--port", "0", "--md-port", "0", "--data-dir", str(tmp_path / "x"),
                       "--no-history"], "exchange up"
    rc, err = _sigint_after_line(argv, ready, tmp_path, sig=signal.SIGTERM)
    assert rc == code, err


def test_runtime_failures_exit_1(tmp_path, capsys):
    port = _free_port()
    # nothing listens there: the bot and the shell say so in one line
    assert main(["bot", "--endpoint", f"tcp://127.0.0.1:{port}", "--timeout", "0.3", "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert "no exchange answers" in err and len(err.strip().splitlines()) == 1
    assert main(["shell", "--exchange", f"tcp://127.0.0.1:{port}", "--timeout", "0.3", "-c", "pass"]) == 1
    assert "no exchange answers" in capsys.readouterr().err
    # a port in use
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run([_script(), "exchange", "--port", str(busy), "--md-port", "0", "--data-dir",
                            str(tmp_path / "x"), "--no-history", "--duration", "1"], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_top_level_help_lists_the_table(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in exitcodes.EXIT_CODES:
        assert re.search(rf"^\s+{code}\s", out, re.M), out


def test_python_dash_m_uses_the_same_boundary(tmp_path):
    r = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(tmp_path / "nope.pcap")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope.pcap" in r.stderr
