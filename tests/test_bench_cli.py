"""`feedhandler bench`: lists the scripts of bench/, runs one with a tiny size, passes its options
through, and says what to do when the checkout or a required peer is missing."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from feedhandler import bench_cli
from feedhandler.cli import DELEGATED

ROOT = Path(__file__).resolve().parents[1]


def _fh(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "feedhandler.cli", "bench", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def test_bench_is_a_subcommand():
    assert DELEGATED["bench"][0] == "feedhandler.bench_cli:main"
    out = subprocess.run([sys.executable, "-m", "feedhandler.cli", "--help"], capture_output=True, text=True)
    assert "bench" in out.stdout


def test_list_names_every_script_with_its_peer():
    r = _fh("--list", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    names = sorted(p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py"))
    listed = sorted(line.split()[0] for line in r.stdout.splitlines() if line and not line.startswith(" "))
    assert listed == names and {"itch", "mdp3", "fix", "matching"} <= set(names)
    assert "peer: simplefix [" in r.stdout and "peer: itch-book (C++) [" in r.stdout
    assert "feedhandler bench itch" in r.stdout


def test_runs_one_small_benchmark_and_prints_its_ratio_table(tmp_path):
    if importlib.util.find_spec("simplefix") is None:
        pytest.skip("simplefix (the FIX benchmark's peer) is not installed: pip install 'feedhandler[bench]'")
    # from outside the checkout, pointed at it (a non-editable install cannot find it by itself)
    r = _fh("--bench-dir", str(ROOT / "bench"), "fix", "--messages", "2000", "--baseline-messages", "500",
            "--repeat", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "FIX 4.4, 2000 messages" in r.stdout
    assert "simplefix" in r.stdout and "ratio streams" in r.stdout
    assert "bench/bench_fix.py --messages 2000" in r.stderr  # the command it ran


def test_script_options_pass_through():
    r = _fh("mdp3", "--help", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "--baseline-messages" in r.stdout


def test_unknown_benchmark_and_option():
    r = _fh("nope", cwd=ROOT)
    assert r.returncode == 2 and "no benchmark 'nope'" in r.stderr and "itch" in r.stderr
    r = _fh("--fast", cwd=ROOT)
    assert r.returncode == 2 and "unrecognized arguments: --fast" in r.stderr


def test_without_a_checkout_it_says_where_to_run(tmp_path):
    r = _fh("--bench-dir", str(tmp_path), "--list")
    assert r.returncode == 2
    assert "source checkout" in r.stderr and "--bench-dir" in r.stderr


def test_bench_dir_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench_tiny.py").write_text('"""A tiny benchmark."""\nprint("tiny ran")\n')
    monkeypatch.setenv(bench_cli.ENV_DIR, str(tmp_path / "bench"))
    assert bench_cli.find_bench_dir() == tmp_path / "bench"
    r = subprocess.run([sys.executable, "-m", "feedhandler.cli", "bench", "tiny"], capture_output=True, text=True,
                       env={**__import__("os").environ, bench_cli.ENV_DIR: str(tmp_path / "bench")})
    assert r.returncode == 0 and r.stdout.strip() == "tiny ran", r.stderr


def test_missing_required_peer_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(bench_cli.PEERS, "fix", ("simplefix", "no_such_module_for_the_test", True, ""))
    assert bench_cli.main(["--bench-dir", str(ROOT / "bench"), "fix"]) == 1
    assert "pip install 'feedhandler[bench]'" in capsys.readouterr().err


def test_list_into_a_closed_pipe_is_quiet():
    r = subprocess.run(f"{sys.executable} -m feedhandler.cli bench --list | head -1", shell=True, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
