"""Operations of `feedhandler exchange|bot|shard-server`: every error is one line on stderr with the documented
exit code (0 ok, 1 runtime failure, 2 usage or unreadable input, 130 interrupted); --debug adds the traceback;
the README's exchange commands work as written (on free loopback ports)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

zmq = pytest.importorskip("zmq")

from _durability_support import free_port  # noqa: E402
from feedhandler.cli import main as fh_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PX = 1_000_000_000


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = fh_main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str, prog: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"feedhandler {prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def base_args(tmp_path, *extra):
    return ["--port", "0", "--md-port", "0", "--data-dir", str(tmp_path / "data"), "--duration", "0.1", *extra]


# ---- configuration --------------------------------------------------------------------------------------
def test_missing_config_is_one_line_exit_2(capsys, tmp_path):
    rc, _, err = run(capsys, "exchange", "--config", str(tmp_path / "nope.toml"), *base_args(tmp_path))
    assert rc == 2
    assert "does not exist" in one_line_error(err, "exchange")


def test_bad_toml_is_one_line_exit_2(capsys, tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("symbols = [\"AAPL\"\n[gateway\n")
    rc, _, err = run(capsys, "exchange", "--config", str(p), *base_args(tmp_path))
    assert rc == 2
    assert "not valid TOML" in one_line_error(err, "exchange")
    p.write_bytes(b"\xff\xfe\x00")
    rc, _, err = run(capsys, "exchange", "--config", str(p), *base_args(tmp_path))
    assert rc == 2 and "not valid TOML" in one_line_error(err, "exchange")


@pytest.mark.parametrize("toml, key, hint", [
    ('[gateway]\nworkres = 3\n', "gateway.workres", "workers"),
    ('symbol = ["AAPL"]\n', "'symbol'", "symbols"),
    ('[risk]\nmax_order_qtty = 5\n', "risk.max_order_qtty", "max_order_qty"),
    ('[engine]\nfsynk = "none"\n', "engine.fsynk", "fsync"),
    ('[[keys]]\napi_key = "k"\nsecret = "s"\naccout = "A"\n', "keys[0].accout", "account"),
])
def test_misspelled_key_names_it_and_the_nearest(capsys, tmp_path, toml, key, hint):
    p = tmp_path / "x.toml"
    p.write_text(toml)
    rc, _, err = run(capsys, "exchange", "--config", str(p), *base_args(tmp_path))
    assert rc == 2
    line = one_line_error(err, "exchange")
    assert key in line and f"did you mean '{hint}'" in line, line
    assert not (tmp_path / "data").exists(), "nothing is created for a configuration that is refused"


def test_wrong_value_type_is_refused(capsys, tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('[gateway]\nworkers = "two"\n')
    rc, _, err = run(capsys, "exchange", "--config", str(p), *base_args(tmp_path))
    assert rc == 2 and "gateway.workers must be an integer" in one_line_error(err, "exchange")


def test_fix_port_without_sessions_is_an_error_not_silence(capsys, tmp_path):
    rc, _, err = run(capsys, "exchange", *base_args(tmp_path, "--fix-port", "0"))
    assert rc == 2
    assert "FIX acceptor" in one_line_error(err, "exchange") and "sessions" in err
    rc, _, err = run(capsys, "exchange", *base_args(tmp_path, "--ouch-port", "0"))
    assert rc == 2 and "OUCH acceptor" in one_line_error(err, "exchange") and "users" in err


def test_debug_shows_the_traceback(capsys, tmp_path):
    rc, _, err = run(capsys, "exchange", "--config", str(tmp_path / "nope.toml"), "--debug", *base_args(tmp_path))
    assert rc == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("feedhandler exchange: error:")


# ---- the environment --------------------------------------------------------------------------------------
def test_port_in_use_is_one_line_exit_1(capsys, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        rc, _, err = run(capsys, "exchange", "--port", str(port), "--md-port", "0", "--data-dir",
                         str(tmp_path / "d"), "--duration", "0.1")
        assert rc == 1
        line = one_line_error(err, "exchange")
        assert f"tcp://127.0.0.1:{port}" in line and "in use" in line, line
        rc, _, err = run(capsys, "exchange", "--port", "0", "--md-port", str(port), "--data-dir",
                         str(tmp_path / "d"), "--duration", "0.1")
        assert rc == 1 and "market data endpoint" in one_line_error(err, "exchange")
        rc, _, err = run(capsys, "shard-server", "--bind", f"tcp://127.0.0.1:{port}")
        assert rc == 1 and "in use" in one_line_error(err, "shard-server")
        cfg = tmp_path / "ouch.toml"
        cfg.write_text('[ouch]\nusers = {u1 = {password = "pw", account = "A"}}\n')
        rc, _, err = run(capsys, "exchange", "--config", str(cfg), "--ouch-port", str(port), "--port", "0",
                         "--md-port", "0", "--data-dir", str(tmp_path / "d"), "--duration", "0.1")
        assert rc == 1
        line = one_line_error(err, "exchange")
        assert f"OUCH acceptor 127.0.0.1:{port}" in line and "in use" in line, line
    finally:
        s.close()
    # nothing was left half-open: the same data dir starts cleanly afterwards
    rc, out, err = run(capsys, "exchange", "--port", "0", "--md-port", "0", "--data-dir", str(tmp_path / "d"),
                       "--duration", "0.1")
    assert rc == 0, err


def test_data_dir_of_another_configuration(capsys, tmp_path):
    d = str(tmp_path / "data")
    rc, _, err = run(capsys, "exchange", "--symbols", "AAPL,MSFT", *base_args(tmp_path))
    assert rc == 0, err
    rc, _, err = run(capsys, "exchange", "--symbols", "AAPL,NVDA", *base_args(tmp_path))
    assert rc == 2
    line = one_line_error(err, "exchange")
    assert d in line and "another configuration" in line and "symbols" in line
    p = tmp_path / "x.toml"
    p.write_text('symbols = ["AAPL", "MSFT"]\n[engine]\nshards = 2\n')
    rc, _, err = run(capsys, "exchange", "--config", str(p), *base_args(tmp_path))
    assert rc == 2 and "shards 1 (now 2)" in one_line_error(err, "exchange")


def test_data_dir_from_before_the_manifest_is_checked_by_its_layout(capsys, tmp_path):
    from engine.manager import EngineManager
    with EngineManager(["AAPL", "MSFT"], journal_dir=str(tmp_path / "data" / "journal"), shards=2) as m:
        m.submit({"type": "new", "account": "a", "symbol": "AAPL", "side": "B", "price": 5, "qty": 1})
    rc, _, err = run(capsys, "exchange", "--symbols", "AAPL,MSFT", *base_args(tmp_path))
    assert rc == 2 and "shards 2 (now 1)" in one_line_error(err, "exchange")


def test_second_exchange_on_one_data_dir_is_fenced(tmp_path):
    """Two exchanges on one data dir would both sequence one journal: the second one is refused."""
    p, gw = start_exchange(tmp_path / "data")
    try:
        r = subprocess.run([fh_script(), "exchange", "--symbols", "AAPL,MSFT", *base_args(tmp_path)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        line = one_line_error(r.stderr, "exchange")
        assert "being written by another process" in line and f"pid {p.pid}" in line, line
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    assert p.returncode == 0


# ---- the bot ---------------------------------------------------------------------------------------------------
def test_bot_without_an_exchange_says_so_and_creates_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    port = free_port()
    rc, out, err = run(capsys, "bot", "--port", str(port), "--md-port", str(free_port()), "--duration", "1",
                       "--timeout", "0.3")
    assert rc == 1
    line = one_line_error(err, "bot")
    assert f"no exchange answers at tcp://127.0.0.1:{port}" in line and "--start-exchange" in line
    assert list(tmp_path.iterdir()) == []
    rc, out, err = run(capsys, "bot", "--endpoint", f"tcp://127.0.0.1:{port}", "--duration", "1", "--timeout", "0.3")
    assert rc == 1 and "no exchange answers" in one_line_error(err, "bot")


def test_bot_start_exchange_removes_its_temporary_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    rc, out, err = run(capsys, "bot", "--start-exchange", "--duration", "1", "--quiet")
    assert rc == 0, err
    assert "started an in-process exchange" in out and "removed at the end" in out
    assert list(tmp_path.iterdir()) == []


def test_bot_refused_credentials_exit_2(capsys, tmp_path):
    from engine.exchange import Exchange, load_config
    cfg = load_config(None, {"data_dir": str(tmp_path), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*"})
    with Exchange(cfg) as ex:
        rc, _, err = run(capsys, "bot", "--endpoint", ex.gateway.endpoint, "--mm-key", "nobody", "--duration", "1")
    assert rc == 2 and "refused API key 'nobody'" in one_line_error(err, "bot")


# ---- PnL ---------------------------------------------------------------------------------------------------
def test_to_decimal():
    from engine.client import money_report, to_decimal
    assert to_decimal(1_500_000_000) == "1.500000000"
    assert to_decimal("-5") == "-0.000000005"
    assert to_decimal("1000000001/3") == "0.333333334"
    assert to_decimal("2/3") == "0.000000001"
    big = 123456789012345678901234567
    assert to_decimal(str(big)) == "123456789012345678.901234567"
    assert to_decimal(None) is None
    rep = money_report({"account": "A", "cash": 7, "realized": "3/2", "unrealized": "0",
                        "positions": {"X": {"qty": 3, "avg_price": "301000000001/3", "realized": "0",
                                            "unrealized": "0", "mark": None, "bought": 3, "sold": 0}}})
    assert rep["realized"] == "0.000000002" and rep["cash"] == 7
    assert rep["positions"]["X"]["avg_price"] == "100.333333334" and rep["positions"]["X"]["qty"] == 3


def test_client_position_pnl_is_decimal(tmp_path):
    from engine.client import Client
    from engine.exchange import Exchange, load_config
    cfg = load_config(None, {"data_dir": str(tmp_path), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*"})
    with Exchange(cfg) as ex, Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=5) as mm, \
            Client(ex.gateway.endpoint, "demo-taker", "demo-taker-secret", timeout=5) as tk:
        # three fills at different prices: the average price is not an integer of 1e-9
        for px in (100 * PX, 100 * PX + 1, 100 * PX + 1):
            assert mm.submit("AAPL", "S", px, 1)["status"] == "ack"
        assert tk.submit("AAPL", "B", 100 * PX + 1, 3, tif="ioc")["status"] == "ack"
        assert mm.submit("AAPL", "B", 99 * PX, 1)["status"] == "ack"
        assert tk.submit("AAPL", "S", 99 * PX, 1, tif="ioc")["status"] == "ack"
        p = tk.position("AAPL")["portfolio"]
        exact = tk.position("AAPL", exact=True)["portfolio"]
    money = re.compile(r"^-?\d+\.\d{9}$")
    for v in (p["realized"], p["unrealized"], p["positions"]["AAPL"]["avg_price"]):
        assert money.match(v), p
    assert "/" in exact["positions"]["AAPL"]["avg_price"]      # the exact form is still there when asked
    assert p["positions"]["AAPL"]["avg_price"] == "100.000000001"
    assert p["positions"]["AAPL"]["qty"] == 2


# ---- the README's commands ---------------------------------------------------------------------------------------
def fh_script() -> str:
    exe = Path(sys.executable).parent / "feedhandler"
    if not exe.exists():
        pytest.skip("the feedhandler console script is not installed next to this Python")
    return str(exe)


def start_exchange(data_dir, *extra, cmd=None):
    cmd = cmd or [fh_script(), "exchange", "--symbols", "AAPL,MSFT"]
    p = subprocess.Popen([*cmd, "--port", "0", "--md-port", "0", "--data-dir", str(data_dir), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = p.stdout.readline()
    m = re.search(r"gateway=(\S+)", line)
    if not m:
        p.kill()
        raise AssertionError((line, p.communicate(timeout=10)))
    return p, m.group(1)


def readme_exchange_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    sec = text[text.index("### The exchange side"):]
    block = re.search(r"```(?:sh|bash)?\n(.*?)```", sec, flags=re.S).group(1)
    cmds = []
    for ln in block.splitlines():
        ln = ln.split("#", 1)[0].split(">", 1)[0].strip().rstrip("&").strip()   # no shell redirection / &
        if ln.startswith("feedhandler "):
            cmds.append(ln.split())
    return cmds


def test_readme_exchange_and_bot_commands_run_as_written(tmp_path):
    """The README's `feedhandler exchange ...` then `feedhandler bot ...`, on free loopback ports (the only
    arguments added) and a temporary data dir; the bot finds the exchange without --endpoint."""
    cmds = readme_exchange_commands()
    ex_cmd = next(c for c in cmds if c[1] == "exchange")
    bot_cmd = next(c for c in cmds if c[1] == "bot")
    exe = fh_script()
    gw_port, md_port = free_port(), free_port()
    p = subprocess.Popen([exe, *ex_cmd[1:], "--port", str(gw_port), "--md-port", str(md_port),
                          "--data-dir", str(tmp_path / "data")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = p.stdout.readline()
        assert f"gateway=tcp://127.0.0.1:{gw_port}" in line, (line, p.stderr.read() if p.poll() is not None else "")
        bot_args = [a for a in bot_cmd[1:]]
        i = bot_args.index("--duration") if "--duration" in bot_args else None
        if i is not None:
            bot_args[i + 1] = "2"           # briefly
        r = subprocess.run([exe, *bot_args, "--port", str(gw_port), "--md-port", str(md_port), "--quiet"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"using the exchange at tcp://127.0.0.1:{gw_port}, market data tcp://127.0.0.1:{md_port}" in r.stdout
        m = re.search(r"orders sent: (\d+)\s+rejected: (\d+)", r.stdout)
        assert m and int(m.group(1)) > 10 and int(m.group(2)) == 0, r.stdout
        pnl = re.findall(r"PnL (\w+)\s+position\s+(.*?)\s+realized\s+(\S+)", r.stdout)   # one qty per symbol
        qty = [[int(x) for x in re.findall(r"-?\d+", q)] for _, q, _ in pnl]
        assert len(pnl) == 2 and qty[0] and qty[0] == [-x for x in qty[1]], r.stdout
        assert all(re.fullmatch(r"-?[\d,]+\.\d\d", x[2]) for x in pnl), pnl     # money, not fractions
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "journal flushed" in out
    assert (tmp_path / "data" / "trades.csv").read_text().count("\n") > 1


def test_shard_server_help_and_sigint(tmp_path):
    r = subprocess.run([fh_script(), "shard-server", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: feedhandler shard-server")
    p = subprocess.Popen([fh_script(), "shard-server", "--bind", "tcp://127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert p.stdout.readline().startswith("shard server listening on tcp://127.0.0.1:")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err


def test_exchange_sigint_is_130_and_sigterm_is_0(tmp_path):
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 0)):
        p, _ = start_exchange(tmp_path / "data")
        time.sleep(0.2)
        p.send_signal(sig)
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGUSR2)             # every thread's stack to stderr (faulthandler), then stop it
            time.sleep(1)
            p.kill()
            out, err = p.communicate(timeout=10)
            pytest.fail(f"{signal.Signals(sig).name}: the exchange did not stop within 30 s\n--- stdout\n{out}"
                        f"\n--- stderr\n{err}")
        assert p.returncode == code, err
        assert "journal flushed" in out


def test_risk_and_acceptor_values_are_type_checked(capsys, tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('[risk]\nmax_order_qty = "lots"\n')
    rc, _, err = run(capsys, "exchange", "--config", str(p), *base_args(tmp_path))
    assert rc == 2 and "risk.max_order_qty must be an integer" in one_line_error(err, "exchange")
    p.write_text('[ouch]\nport = "x"\nusers = {u = {password = "p", account = "A"}}\n')
    rc, _, err = run(capsys, "exchange", "--config", str(p), *base_args(tmp_path))
    assert rc == 2 and "ouch.port must be a port number" in one_line_error(err, "exchange")


def test_a_dead_engine_thread_ends_the_process_with_exit_1(tmp_path):
    import threading

    from engine.exchange import Exchange, load_config, serve
    cfg = load_config(None, {"data_dir": str(tmp_path), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*"})
    with Exchange(cfg) as ex:
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        ex.gateway._threads.append(dead)      # as if a worker (the engine thread) had died
        with pytest.raises(RuntimeError, match="thread died"):
            serve(ex, 5.0, threading.Event())
        ex.gateway._threads.remove(dead)


def test_pyzmq_and_orjson_are_core_dependencies():
    """After `pip install .` (no extras) the exchange, bot and shard-server import."""
    try:
        import tomllib
    except ImportError:
        pytest.skip("tomllib needs Python >= 3.11")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in deps}
    assert {"pyzmq", "orjson"} <= names, deps


def test_unreachable_shard_server_is_one_line_exit_1(capsys, tmp_path):
    p = tmp_path / "x.toml"
    p.write_text(f'[engine]\nremote = ["tcp://127.0.0.1:{free_port()}"]\nremote_timeout_s = 0.3\n')
    rc, _, err = run(capsys, "exchange", "--config", str(p), *base_args(tmp_path))
    assert rc == 1
    line = one_line_error(err, "exchange")
    assert "engine: engine shard tcp://127.0.0.1:" in line and "no answer to init" in line, line


def test_sigusr2_prints_every_thread_and_the_exchange_goes_on(tmp_path):
    p, _ = start_exchange(tmp_path / "data")
    try:
        p.send_signal(signal.SIGUSR2)
        time.sleep(0.5)
        assert p.poll() is None                      # still running
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert "Current thread" in err or "Thread 0x" in err, err
    assert "journal flushed" in out
