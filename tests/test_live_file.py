"""The pcap backend of ``feedhandler run``: a capture file replayed through the live pipeline (the same
native receive loop, framer, decoder, ring and book consumer as a NIC), as fast as possible or at the
recorded pace. No root, no network."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "itch50_sample.pcap"
SAMPLE_BF = ROOT / "pcaps" / "itch50_sample.bin.gz"
DATE = "2024-03-15"
N_MESSAGES = 20000


def _run(**kw):
    from feedhandler.live import LiveOptions, run

    from feedhandler.books import BookSet
    got, lines = [], []
    books = BookSet()
    opts = LiveOptions(iface=None, date=DATE, status_interval=0.05, status=lines.append,
                       on_batch=lambda b: got.append(b.copy()), books=books, install_signals=False, **kw)
    t0 = time.monotonic()
    summary = run(opts)
    elapsed = time.monotonic() - t0
    ticks = records.concat(got) if got else records.empty(0)
    return summary, ticks, books, lines, elapsed


def _reference(path=SAMPLE, date=DATE):
    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed
    ticks = Feed(path, date=date).read_all()
    books = BookSet()
    books.apply(ticks)          # enriches in place, as the live consumer does before handing batches out
    return ticks, books


def _capture_span_s(path) -> float:
    from feedhandler.pipeline import Feed
    ticks = Feed(path, date=DATE).read_all()
    mbo = ticks[ticks["rtype"] == records.RTYPE["mbo"]].view(records.DTYPES["mbo"])
    return (int(mbo["ts_recv"].max()) - int(mbo["ts_recv"].min())) / 1e9


def test_file_backend_as_fast_as_possible_equals_replay_byte_for_byte():
    summary, ticks, books, _, _ = _run(file=str(SAMPLE))
    ref, ref_books = _reference()
    assert summary["backend"] == "pcap" and summary["file"] == str(SAMPLE)
    assert summary["messages"] == N_MESSAGES and summary["gaps"] == 0
    assert summary["drops"] == {"kernel": 0, "xdp": 0, "nic": 0, "ring": 0, "ours": 0}
    assert summary["ts_recv_clock"] == "software"         # the capture's own stamps
    assert summary["capture"]["eof"] is True and summary["capture"]["packets"] == summary["packets"]
    # the capture's stamps are kept: every record equals the file replay's, ts_recv included
    assert ticks.shape == ref.shape and ticks.tobytes() == ref.tobytes()
    books.check()
    assert np.array_equal(books.bbo_all(), ref_books.bbo_all())
    assert summary["live_orders"] == ref_books.live_orders
    # wire latency has no meaning against a capture clock: reported as not measured, not as years
    assert summary["latency_ns"]["wire_to_book"]["count"] == 0
    assert "not_measured" in summary["latency_ns"]["wire_to_ring"]


def test_file_backend_paced_follows_the_recorded_schedule():
    """speed 200000: the sample's ~17 h of capture time in ~0.3 s; frames are released on schedule and
    stamped with it (user clock), so wire latencies are measured; the records equal the replay's apart
    from the capture clock."""
    from test_live_capture import _without_capture_time   # (plain function; that module's marks stay there)
    speed = 200_000.0
    span = _capture_span_s(SAMPLE)
    t_wall0 = time.time_ns()
    summary, ticks, books, lines, elapsed = _run(file=str(SAMPLE), speed=speed)
    ref, ref_books = _reference()
    assert summary["messages"] == N_MESSAGES
    assert elapsed >= 0.9 * span / speed
    assert summary["ts_recv_clock"] == "user" and summary["capture"]["waits"] > 0
    mbo = ticks[ticks["rtype"] == records.RTYPE["mbo"]].view(records.DTYPES["mbo"])
    ts = mbo["ts_recv"].astype(np.int64)
    assert ts.min() >= t_wall0 and (np.diff(ts) >= 0).all()
    assert (ts.max() - ts.min()) / 1e9 == pytest.approx(span / speed, rel=0.05)
    a, b = _without_capture_time(ticks), _without_capture_time(ref)
    assert a.shape == b.shape and (a == b).all()
    assert np.array_equal(books.bbo_all(), ref_books.bbo_all())
    assert summary["latency_ns"]["wire_to_book"]["count"] > 0
    assert len(lines) >= 2 and all(str(SAMPLE) in line for line in lines)


def test_file_backend_binaryfile_has_no_capture_clock():
    summary, ticks, books, _, _ = _run(file=str(SAMPLE_BF))
    ref, ref_books = _reference(SAMPLE_BF)
    assert summary["messages"] == N_MESSAGES and summary["capture"]["unstamped"] == N_MESSAGES
    assert summary["ts_recv_clock"] is None
    assert ticks.tobytes() == ref.tobytes()


def test_file_backend_damaged_file_is_counted_not_fatal(tmp_path):
    data = SAMPLE.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2 + 7])          # ends inside a record
    summary, ticks, _, _, _ = _run(file=str(cut))
    assert summary["capture"]["file_damage"].get("truncated_record") == 1
    assert 0 < summary["messages"] < N_MESSAGES and summary["drops"]["ours"] == 0


def test_selection_without_interface():
    from feedhandler.capture.live import BackendUnavailable, select
    sel = select(None, None, pcap_file=str(SAMPLE))
    assert sel.backend == "pcap" and "afxdp" in sel.skipped and "interface" in sel.skipped["afxdp"]
    with pytest.raises(BackendUnavailable, match="--file"):
        select("pcap", None)


def test_run_main_file_cli(capsys):
    from feedhandler.live import run_main
    rc = run_main(["--file", str(SAMPLE), "--date", DATE, "--status-interval", "0", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["backend"] == "pcap" and s["messages"] == N_MESSAGES
    # the recorded pace: the sample spans ~17 h, so half a second delivers only its first packets
    rc = run_main(["--file", str(SAMPLE), "--date", DATE, "--pace", "recorded", "--duration", "0.5",
                   "--status-interval", "0", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert 0 < s["packets"] < 100 and s["elapsed_s"] < 5


def test_run_main_needs_an_interface_or_a_file(capsys):
    from feedhandler.live import run_main
    with pytest.raises(SystemExit) as e:
        run_main(["--status-interval", "0"])
    assert e.value.code == 2
    assert "--iface" in capsys.readouterr().err
    assert run_main(["--file", "/nonexistent.pcap"]) != 0
    assert run_main(["--iface", "lo", "--file", str(SAMPLE), "--status-interval", "0"]) != 0
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_main(["--file", str(SAMPLE), "--pace", "fast"])


def test_receive_and_book_threads_pinned():
    """--rx-cpu / --book-cpu: the native receive thread (named fh-rx) and the book consumer thread run on
    the CPUs asked for (read from /proc while the run is on)."""
    import glob
    import os
    seen = {}

    def on_batch(_b):
        seen.setdefault("books", os.sched_getaffinity(0))        # the consumer thread calls this
        for comm in glob.glob("/proc/self/task/*/comm"):
            if open(comm).read().strip() == "fh-rx":
                with open(os.path.join(os.path.dirname(comm), "status")) as f:
                    for line in f:
                        if line.startswith("Cpus_allowed_list:"):
                            seen.setdefault("rx", line.split(":")[1].strip())
    from feedhandler.live import LiveOptions, run
    cpu = max(os.sched_getaffinity(0))
    summary = run(LiveOptions(iface=None, file=str(SAMPLE), date=DATE, status_interval=0, rx_cpu=cpu,
                              book_cpu=cpu, on_batch=on_batch, install_signals=False))
    assert summary["messages"] == N_MESSAGES
    assert seen["books"] == {cpu} and seen["rx"] == str(cpu)
