"""``feedhandler shell``: the session's helpers (ladder, step, filter by symbol, rewind, tape) over a
capture, a shared-memory ring and the exchange, and the REPL itself (scripted stdin; ptpython under a
pseudo-terminal)."""
from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("feedhandler.pipeline", reason="feedhandler.pipeline not built")
pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo not built")

from feedhandler import records  # noqa: E402
from feedhandler.book_view import Books  # noqa: E402
from feedhandler.cli import main  # noqa: E402
from feedhandler.pipeline import Feed  # noqa: E402
from feedhandler.shell import (CaptureSource, RingSource, Session, _interact, format_ladder,  # noqa: E402
                               format_record)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "itch50_sample.pcap"
MDP3 = REPO / "pcaps" / "mdp3_sample.pcap"


def _script() -> str:
    return str(Path(sys.executable).parent / "feedhandler")


@pytest.fixture(scope="module")
def reference():
    """The capture's books built the plain way: Feed -> Books."""
    books = Books()
    ticks = Feed(str(SAMPLE), "itch50").read_all()
    books.apply(ticks.copy())
    return books, ticks


def test_format_ladder_layout():
    text = format_ladder("XYZ", bids=[(100_500_000_000, 300, 2), (100_000_000_000, 50, 1)],
                         asks=[(101_000_000_000, 200, 1), (102_000_000_000, 10, None)])
    lines = text.splitlines()
    assert lines[0] == "XYZ"
    body = [ln.split() for ln in lines[2:]]
    # asks from the highest down to the best, the spread, then the bids best first
    assert [r[0] for r in body] == ["ask", "ask", "----", "bid", "bid"]
    assert body[0][1] == "102.0000" and body[1][1] == "101.0000" and body[0][3] == "-"
    assert body[2][-1] == "0.5000" and body[3][1:] == ["100.5000", "300", "2"]
    assert "(empty book)" in format_ladder("E", [], [])


def test_session_loads_the_capture_like_the_books(reference):
    books, ticks = reference
    s = Session(CaptureSource(str(SAMPLE)), out=lambda _l: None)
    assert s.load() == ticks.shape[0] == s.position
    for sym in ("AAPL", "MSFT", "AMD"):
        assert s.bbo(sym) == books.bbo(sym)
    text = s.ladder("AAPL", 3)
    b, d = books.bbo("AAPL"), books.depth("AAPL", 3)
    assert f"{b.bid:,.4f}" in text and f"{b.ask:,.4f}" in text
    assert sum(1 for ln in text.splitlines() if ln.split()[:1] == ["bid"]) == len(d.bids)
    top = s.symbols(3)
    assert len(top) == 3 and all(t in s.books for t in top)


def test_step_one_record_at_a_time_equals_the_batch(reference):
    books, ticks = reference
    lines: list[str] = []
    s = Session(CaptureSource(str(SAMPLE)), out=lines.append)
    shown = s.step(5)
    assert len(shown) == 5 and lines == shown and s.position == 5
    assert shown[0].startswith("#1 ")
    # the rest, one record at a time: the same books as the batch replay
    s.out = lambda _l: None
    s.step(10 ** 7)
    assert s.position == ticks.shape[0]
    for iid in list(books.symbols)[:50]:
        assert s.books.bbo(iid) == books.bbo(iid)
        assert s.books.depth(iid, 5) == books.depth(iid, 5)


def test_only_filters_step_and_tape_and_rewind_starts_over(reference):
    books, _ = reference
    lines: list[str] = []
    s = Session(CaptureSource(str(SAMPLE)), out=lines.append)
    s.load()
    aapl = books.instrument_id("AAPL")
    s.rewind()
    assert s.position == 0 and "AAPL" not in s.books
    s.only("aapl")
    shown = s.step(4)
    assert len(shown) == 4 and all(" AAPL " in ln for ln in shown), shown
    assert s.position > 4, "records of other symbols in between are applied silently"
    lines.clear()
    tape = s.tape(3)
    assert tape == lines and len(tape) == 3 and all(" AAPL " in ln for ln in tape)
    text = s.ladder()                      # the only() symbol is the default
    assert text.startswith("AAPL") and f"instrument {aapl}" in text
    s.only()
    assert s.filter is None
    with pytest.raises(ValueError):
        s.ladder()


def test_format_record_names_kind_symbol_and_fields(reference):
    books, ticks = reference
    mbo = ticks[ticks["rtype"] == records.RTYPE["mbo"]][0]
    line = format_record(mbo, books.symbols)
    assert " mbo " in f" {line} " and books.symbols[int(mbo["instrument_id"])] in line
    assert "price " in line and "size " in line and "order " in line


def test_mdp3_capture_session():
    s = Session(CaptureSource(str(MDP3)), out=lambda _l: None)
    assert s.load() > 0
    syms = s.symbols(2)
    assert syms and s.ladder(syms[0], 2).startswith(syms[0])


def test_shell_refuses_a_tcp_protocol_capture(capsys):
    assert main(["shell", str(REPO / "pcaps" / "fix44_sample.pcap"), "-c", "pass"]) == 2
    assert "itch50 and mdp3" in capsys.readouterr().err


def test_ring_source_reads_a_shared_memory_ring(reference):
    from feedhandler.ring import Ring

    books, ticks = reference
    name = f"fh-cli14-{uuid.uuid4().hex[:8]}"
    ring = Ring(1 << 17, overflow="drop", shm_name=name)
    try:
        s = Session(RingSource(name), out=lambda _l: None)
        assert s.load() == 0
        ring.push(ticks[: ticks.shape[0] // 2])
        assert s.refresh() == ticks.shape[0] // 2
        ring.push(ticks[ticks.shape[0] // 2:])
        s.ladder("AAPL")                        # refreshes first
        assert s.position == ticks.shape[0] and s.bbo("AAPL") == books.bbo("AAPL")
    finally:
        ring.close()
    with pytest.raises(Exception, match="cannot attach"):
        RingSource(f"fh-cli14-none-{uuid.uuid4().hex[:8]}")


def test_shell_attaches_to_a_running_run(tmp_path):
    """`feedhandler run --file ... --ring NAME` publishes its batches; `feedhandler shell --attach-ring NAME`
    reads them while it runs."""
    name = f"fh-cli14-{uuid.uuid4().hex[:8]}"
    run = subprocess.Popen([_script(), "run", "--file", str(SAMPLE), "--pace", "recorded", "--ring", name,
                            "--status-interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 60
        while not os.path.exists(f"/dev/shm/{name}") and not any(name in f for f in os.listdir("/dev/shm")):
            assert run.poll() is None, run.stderr.read()
            assert time.monotonic() < t_end, "the run never created its ring"
            time.sleep(0.1)
        code = ("import time\n"
                "for _ in range(200):\n"
                "    if refresh() or session.position: break\n"
                "    time.sleep(0.1)\n"
                "print('position', session.position, 'symbols', len(books.symbols))\n")
        r = subprocess.run([_script(), "shell", "--attach-ring", name, "-c", code], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        pos = int(r.stdout.split("position")[1].split()[0])
        assert pos > 0, r.stdout
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()
    assert run.returncode == 130


def test_shell_over_the_exchange(tmp_path, capsys):
    from engine.client import Client
    from engine.exchange import Exchange, load_config

    cfg = load_config(None, {"data_dir": str(tmp_path / "x"), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*", "engine.fsync": "none",
                             "symbols": ["AAPL", "MSFT"], "history.enabled": False})
    ex = Exchange(cfg).start()
    try:
        c = Client(ex.gateway.endpoint, "demo-mm", "demo-mm-secret", timeout=5)
        try:
            assert c.submit("AAPL", "B", 101_250_000_000, 10, tif="day")["status"] == "ack"
            assert c.submit("AAPL", "S", 101_500_000_000, 7, tif="day")["status"] == "ack"
        finally:
            c.close()
        rc = main(["shell", "--exchange", ex.gateway.endpoint, "-c", 'ladder("AAPL", 3)'])
        out = capsys.readouterr().out
    finally:
        ex.stop()
    assert rc == 0
    lines = [ln.split() for ln in out.splitlines()]
    assert ["ask", "101.5000", "7"] in [ln[:3] for ln in lines]
    assert ["bid", "101.2500", "10"] in [ln[:3] for ln in lines]


def test_scripted_stdin_prints_a_ladder():
    """No terminal: Python's own REPL (with the one-line note), reading the commands from stdin."""
    r = subprocess.run([_script(), "shell", str(SAMPLE)], input='ladder("AAPL", 3)\nstep(2)\n', capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(plain Python REPL: stdin is not a terminal)" in r.stderr
    assert "AAPL  (instrument" in r.stdout and "bid " in r.stdout and "ask " in r.stdout
    assert "(end of capture" in r.stdout     # loaded to its end: nothing left to step


def test_fallback_note_when_ptpython_is_missing(monkeypatch, capsys):
    class TtyInput(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "ptpython", None)
    monkeypatch.setitem(sys.modules, "ptpython.repl", None)
    monkeypatch.setattr(sys, "stdin", TtyInput("x = 6 * 7\nprint('got', x)\n"))
    ns: dict = {}
    _interact(ns, "banner", plain=False)
    cap = capsys.readouterr()
    assert "ptpython is not installed (pip install 'feedhandler[shell]')" in cap.err
    assert ns["x"] == 42


def test_ptpython_under_a_pty_prints_a_ladder():
    pytest.importorskip("ptpython", reason="ptpython not installed (the [shell] / [test] extra)")
    import pty

    pid, fd = pty.fork()
    if pid == 0:   # child: the shell on the pseudo-terminal
        os.environ["TERM"] = "xterm"
        os.execv(_script(), [_script(), "shell", str(SAMPLE)])
    out = b""

    def read_until(token: bytes, timeout: float) -> bool:
        nonlocal out
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return False
                if not chunk:
                    return False
                out += chunk
                if token in out:
                    return True
        return False

    try:
        assert read_until(b"feedhandler shell", 90), out[-2000:]
        time.sleep(1.0)
        os.write(fd, b'ladder("AAPL", 3)\r')
        assert read_until(b"(instrument", 60), out[-3000:]
        assert b"bid" in out and b"ask" in out
        os.write(fd, b"\x04")      # Ctrl-D: leave
        read_until(b"\x00never", 5)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
