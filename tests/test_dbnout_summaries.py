"""Summaries that read right (issue 14): FIX message types by name, OUCH without a dangling colon or a
books line, book errors for every protocol, an ETA on the progress line, `run`'s BBO table and the
reason it measured no latency, and a README `run` example that finishes in seconds."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("feedhandler.pipeline", reason="feedhandler.pipeline not built")
pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo not built")

from feedhandler import cli  # noqa: E402
from feedhandler.replay import ReplayOptions, replay  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
ITCH = PCAPS / "itch50_sample.pcap"
SPEC = ROOT.parent / "shared" / "data" / "fix" / "spec"


def _summary(name):
    s = replay(PCAPS / name, ReplayOptions())
    return s, cli.format_summary(s)


# ---- FIX ---------------------------------------------------------------------------------------------
def test_fix_message_types_by_name():
    s, text = _summary("fix44_sample.pcap")
    line = next(x for x in text.splitlines() if x.startswith("  by type: "))
    assert "D NewOrderSingle 53" in line and "8 ExecutionReport 125" in line
    assert "X MarketDataIncrementalRefresh 72" in line and "A Logon 2" in line
    assert s["message_type_names"]["G"] == "OrderCancelReplaceRequest"
    assert s["messages_by_type"]["D"] == 53          # JSON keeps the wire's codes


def test_fix_msgtypes_table_is_generated_from_the_dictionaries():
    from feedhandler.protocols.fix_msgtypes import MSG_TYPES, msg_type_name

    assert msg_type_name("D") == "NewOrderSingle" and msg_type_name("J", "FIX.4.2") == "Allocation"
    assert msg_type_name("J") == "AllocationInstruction" and msg_type_name("ZZ") is None
    assert len(MSG_TYPES["FIX.4.4"]) > 90
    if not (SPEC / "FIX44.xml").is_file():
        pytest.skip(f"no QuickFIX dictionaries at {SPEC} to check the generated table against")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_fix_msgtypes.py"), "--check", str(SPEC)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---- OUCH ----------------------------------------------------------------------------------------------
def test_ouch_summary_has_no_books_line_and_no_dangling_colon():
    s, text = _summary("ouch42_sample.pcap")
    assert "books:" not in text                       # OUCH carries orders, not market data
    assert "order events 276 (client 121, exchange 155): new 70" in text
    s["order_events"] = {"events": 0, "by_kind": {}, "from_client": 0, "from_exchange": 0, "latency_ns": None}
    text = cli.format_summary(s)
    assert "  order events: none" in text.splitlines()
    assert not any(x.rstrip().endswith(":") for x in text.splitlines())


# ---- book errors ----------------------------------------------------------------------------------------
def test_book_errors_on_every_protocol():
    _, fix = _summary("fix44_sample.pcap")
    # the FIX sample's MBO book sees fills larger than the resting order (counted by the book)
    assert re.search(r"books: MBO 5 instruments, \d+ live orders; MBP 5 instruments; book errors: size "
                     r"underflow \d+", fix)
    s, mdp3 = _summary("mdp3_sample.pcap")
    assert "book errors" not in mdp3                  # a clean sample: nothing to say
    s["book_counters"].update(unknown_order=3, crossed=1)
    line = next(x for x in cli.format_summary(s).splitlines() if x.startswith("  books: "))
    assert line.endswith("; book errors: unknown order 3, crossed 1")
    s, _ = _summary("itch50_sample.pcap")
    s["book_counters"]["duplicate_add"] = 2
    assert "book errors: duplicate add 2" in cli.format_summary(s)


# ---- progress line ---------------------------------------------------------------------------------------
def test_progress_line_eta():
    out = []
    bar = cli._ProgressLine(stream=type("S", (), {"write": lambda self, s: out.append(s),
                                                  "flush": lambda self: None})())
    bar({"elapsed_s": 2.0, "bytes_read": 25, "total_bytes": 100, "records": 10})
    assert "25.0%" in out[-1] and "ETA 0:06" in out[-1]             # 2 s for a quarter: 6 s to go
    bar({"elapsed_s": 4000.0, "bytes_read": 50, "total_bytes": 100, "records": 10})
    assert "ETA 1:06:40" in out[-1]
    bar({"elapsed_s": 3.0, "bytes_read": 50, "total_bytes": 0, "records": 10})   # size unknown: no ETA
    assert "ETA" not in out[-1] and len(out[-1]) >= len(out[-2])   # and it overwrites the longer line
    bar.done()
    assert out[-1].strip() == ""


# ---- run -------------------------------------------------------------------------------------------------
def _run(**kw):
    from feedhandler.live import LiveOptions, run

    return run(LiveOptions(iface=None, file=str(ITCH), status_interval=0, install_signals=False, **kw))


def test_run_prints_the_bbo_table_of_replay():
    from feedhandler.live import format_summary

    s = _run(top=5)
    rep = replay(ITCH, ReplayOptions(top=25))
    want = {r["instrument_id"]: r for r in rep["bbo"]}
    assert len(s["bbo"]) == 5
    for r in s["bbo"]:
        w = want[r["instrument_id"]]
        assert (r["symbol"], r["bid"], r["bid_sz"], r["ask"], r["ask_sz"]) == (
            w["symbol"], w["bid"], w["bid_sz"], w["ask"], w["ask_sz"])
        assert r["records"] is None and r["live_orders"] > 0
    lives = [r["live_orders"] for r in s["bbo"]]
    assert lives == sorted(lives, reverse=True)
    text = format_summary(s)
    lines = text.splitlines()
    head = next(i for i, x in enumerate(lines) if "bid size" in x)
    assert lines[head] == cli.format_bbo_table(rep["bbo"])[1]        # the same table as replay
    assert lines[head + 1].split()[0] == s["bbo"][0]["symbol"] and " - " in lines[head + 1]
    assert "bid size" not in format_summary(_run(top=0))


def test_paced_run_without_book_records_says_why():
    from feedhandler.live import format_summary

    s = _run(speed=1000.0, duration=1.0)
    lat = s["latency_ns"]["wire_to_ring"]
    assert lat["count"] == 0
    why = lat["not_measured"]
    assert "order-book record" in why and "--pace 1000" in why and "capture time" in why
    assert f"latency: not measured ({why})" in format_summary(s)


def test_readme_run_example_finishes_in_seconds():
    """The README's `run --file` example names a pace at which the sample takes seconds, not a minute."""
    from feedhandler.live import _ts_recv
    from feedhandler.pipeline import Feed

    readme = (ROOT / "README.md").read_text()
    cmds = re.findall(r"^feedhandler run --file pcaps/itch50_sample\.pcap ([^#\n]*)", readme, re.M)
    assert cmds
    t = _ts_recv(Feed(str(ITCH)).read_all())
    span = (int(t[t > 0].max()) - int(t[t > 0].min())) / 1e9
    for c in cmds:
        m = re.search(r"--pace (\S+)", c)
        pace = m.group(1) if m else "max"
        dur = re.search(r"--duration (\S+)", c)
        wall = 0.0 if pace == "max" else span / (1.0 if pace == "recorded" else float(pace))
        if dur:
            wall = min(wall, float(dur.group(1)))
        assert wall < 10, f"README: `run --file ... {c.strip()}` takes {wall:.0f} s"
