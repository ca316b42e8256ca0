"""The latency mode (``feedhandler run --latency``: run to completion on the receive thread).

- Without root: the producer's latency mode over a capture file replayed as a live source (the pcap
  backend) gives the same books and records as a replay; its argument checks.
- On a veth pair (root, iproute2; tcpreplay for the sample; gcc for bench/latency_tools.c): AF_PACKET
  (TPACKET_V2 slots) and AF_XDP in latency mode produce the same records and books as a replay of the
  same packets; with a sender that stamps its clock into every message, the wire -> book histograms
  have one sample per book message and per packet and are bounded (a lenient bound: this is a shared
  VM, the target figures come from bench/bench_latency.py).
Every veth/namespace is created and deleted by the test (VethPair); every process started is waited for.
"""
from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "itch50_sample.pcap"
DATE = "2024-03-15"
PORT = 26477
N_MESSAGES = 20000

_no_veth = pytest.mark.skipif(veth_unavailable_reason() is not None, reason=str(veth_unavailable_reason()))
_no_sample = pytest.mark.skipif(not SAMPLE.exists(), reason=f"missing {SAMPLE}")


def _ts_recv_offsets():
    out = {}
    for name, dt in records.DTYPES.items():
        if name in records.RTYPE and "ts_recv" in dt.fields:
            out[records.RTYPE[name]] = dt.fields["ts_recv"][1]
    return out


def _without_capture_time(ticks: np.ndarray) -> np.ndarray:
    """Record bytes with the capture clock fields zeroed (ts_recv; a gap record's ts_event)."""
    raw = ticks.view(np.uint8).reshape(-1, 64).copy()
    rt = raw[:, 1]
    for rtype, off in _ts_recv_offsets().items():
        raw[rt == rtype, off:off + 8] = 0
    raw[rt == records.RTYPE["gap"], 8:16] = 0
    return raw


def _replay(path, date=DATE):
    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed

    ticks = Feed(path, date=date, udp_port=PORT).read_all()
    books = BookSet()
    books.apply(ticks)      # enriches in place, as the receive thread does before the fan-out
    return ticks, books


def _concat(got):
    out = np.empty(sum(len(g) for g in got), dtype=records.TICK_DTYPE)
    pos = 0
    for g in got:
        out[pos:pos + len(g)] = g
        pos += len(g)
    return out


def _assert_same(ticks, books, ref, ref_books):
    assert ticks.shape == ref.shape
    a, b = _without_capture_time(ticks), _without_capture_time(ref)
    bad = np.nonzero((a != b).any(axis=1))[0]
    assert bad.size == 0, f"{bad.size} records differ, first at {bad[:5]}"
    books.check()
    assert np.array_equal(books.bbo_all(), ref_books.bbo_all())
    assert books.live_orders == ref_books.live_orders
    for inst in ref_books.bbo_all()["instrument_id"][:50].tolist():
        for got, want in zip(books.depth(inst, 20), ref_books.depth(inst, 20)):
            assert np.array_equal(got, want)


# ---- no root: the producer's latency mode over a file source ----------------------------------------

@_no_sample
def test_latency_mode_over_file_source_equals_replay():
    """The run-to-completion loop (books applied on the receive thread, records fanned out through a drop
    ring) gives the records and books of a replay, and counts every book record in its histograms."""
    from feedhandler.books import BookSet
    from feedhandler.core.latency import FanoutReader, book_sinks
    from feedhandler.capture.live._live import FileSource, LiveFeed
    from feedhandler.pipeline import midnight_ns_for_date
    from feedhandler.ring import Ring

    ref, ref_books = _replay(SAMPLE)
    src = FileSource(SAMPLE, speed=0.0)
    feed = LiveFeed(src, "itch50", midnight_ns=midnight_ns_for_date(DATE), udp_port=PORT)
    books = BookSet()
    ring = Ring(1 << 17, overflow="drop")
    got = []
    reader = FanoutReader(ring, lambda b: got.append(b.copy()))
    reader.start()
    feed.start(ring, latency=True, sinks=book_sinks(books))
    assert feed.latency_mode
    with pytest.raises(RuntimeError, match="being updated"):
        books.bbo_all()         # owned by the receive thread until it is joined
    while not src.eof:
        threading.Event().wait(0.01)
    feed.stop()
    reader.join()
    feed.join()
    src.close()
    assert reader.error is None
    st = feed.producer_stats()
    assert st["fanout_dropped"] == 0 and st["applied"] == ref.shape[0]
    _assert_same(_concat(got), books, ref, ref_books)
    book_records = int(np.isin(ref["rtype"], [records.RTYPE["mbo"], records.RTYPE["trade"]]).sum())
    assert int(feed.book_latency_hist("message").sum()) == book_records
    n_pkt = int(feed.book_latency_hist("packet").sum())
    assert 0 < n_pkt <= book_records


def test_latency_mode_argument_checks():
    from feedhandler.books import BookSet
    from feedhandler.core.latency import book_sinks, source_options
    from feedhandler.capture.live._live import FileSource, LiveFeed
    from feedhandler.errors import FeedError
    from feedhandler.pipeline import Feed
    from feedhandler.ring import Ring

    if not SAMPLE.exists():
        pytest.skip(f"missing {SAMPLE}")
    feed = LiveFeed(FileSource(SAMPLE), "itch50", date=DATE)
    with pytest.raises(ValueError, match="drop"):
        feed.start(Ring(1024, overflow="block"), latency=True, sinks=book_sinks(BookSet()))
    with pytest.raises(ValueError, match="latency=True"):
        feed.start(Ring(1024), sinks=book_sinks(BookSet()))
    with pytest.raises(ValueError, match="wire"):
        feed.start(None, latency=True, wire="ts_sent")
    with pytest.raises(TypeError):
        book_sinks(object())
    with pytest.raises(FeedError, match="live"):
        Feed(SAMPLE, date=DATE).start(None, latency=True)
    assert source_options("afpacket", {})["tpacket_version"] == 2
    assert source_options("afpacket", {"tpacket_version": 3})["tpacket_version"] == 3
    assert "tpacket_version" not in source_options("afxdp", {})


# ---- veth: live capture in latency mode ----------------------------------------------------------------

def _afxdp_reason():
    from feedhandler.capture.live import afxdp
    why = afxdp.unavailable_reason(None)
    if why is None:
        from feedhandler.capture.live._afxdp_source import bpf_object_path
        if bpf_object_path() is None:
            why = "the XDP filter program is not compiled (needs clang at build time)"
    return why


def _backend_reason(backend):
    return _afxdp_reason() if backend == "afxdp" else None


def _live(backend, send, *, date=DATE, latency_wire="ts_recv", stop_after_messages=None, extra=None):
    """Run `run --latency` on the host end of a fresh veth pair while send(v) sends from the namespace."""
    from feedhandler.books import BookSet
    from feedhandler.live import LiveOptions, run

    got = []
    books = BookSet()
    with VethPair(tag="flt") as v:
        out = {}

        def sender():
            out["result"] = send(v)

        t = threading.Thread(target=sender)
        opts = LiveOptions(
            iface=v.host_if, capture=backend, date=date, udp_port=PORT, latency=True, latency_wire=latency_wire,
            until_end_of_session=stop_after_messages is None, count=stop_after_messages, duration=60,
            status_interval=0, on_batch=lambda b: got.append(b.copy()), on_ready=t.start, books=books,
            install_signals=False, **(extra or {}),
        )
        try:
            summary = run(opts)
        finally:
            if t.ident:
                t.join()
    return summary, _concat(got), books, out.get("result")


@_no_veth
@_no_sample
@pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="needs tcpreplay (Debian package tcpreplay)")
@pytest.mark.parametrize("backend", ["afpacket", "afxdp"])
def test_latency_run_equals_replay(backend):
    """`run --latency` over veth: the records fanned out and the books built on the receive thread equal
    a replay of the same capture."""
    why = _backend_reason(backend)
    if why:
        pytest.skip(why)

    def send(v):
        return v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "5000", str(SAMPLE)], check=False).returncode

    summary, ticks, books, rc = _live(backend, send)
    assert rc == 0
    assert summary["backend"] == backend
    lm = summary["latency_mode"]
    assert lm["mode"] == "latency" and lm["fanout_dropped"] == 0
    if backend == "afpacket":
        assert summary["capture"]["tpacket_version"] == 2      # per-frame slots, no block retire timer
        assert summary["ts_recv_clock"] == "software"
    assert summary["messages"] == N_MESSAGES
    assert summary["gaps"] == 0 and summary["lost_messages"] == 0
    ref, ref_books = _replay(SAMPLE)
    _assert_same(ticks, books, ref, ref_books)
    assert summary["latency_ns"]["wire_to_book"]["count"] > 0
    assert lm["applied_on_receive_thread"] == ref.shape[0]


def _tools(tmp: Path) -> Path:
    exe = tmp / "latency_tools"
    r = subprocess.run(["gcc", "-O2", "-std=gnu11", f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}", "-o",
                        str(exe), str(ROOT / "bench" / "latency_tools.c"),
                        str(ROOT / "csrc" / "afxdp" / "capture_afxdp.c"), str(ROOT / "csrc" / "capture_afpacket.c"),
                        "-lxdp", "-lbpf"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build bench/latency_tools.c (gcc, libxdp-dev, libbpf-dev): {r.stderr[-300:]}")
    return exe


def _today_ny():
    from zoneinfo import ZoneInfo
    return datetime.datetime.now(ZoneInfo("America/New_York")).date().isoformat()


@_no_veth
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build bench/latency_tools.c")
@pytest.mark.parametrize("spin_us", [0.0, 50.0])
@pytest.mark.parametrize("backend", ["afpacket", "afxdp"])
def test_latency_run_wire_to_book_bounded(backend, spin_us, tmp_path):
    """A paced sender stamps its clock into every message (the wire time); the latency mode (busy poll
    always, or for 50 us after a packet) applies each packet on the receive thread: one wire -> book
    sample per book message and per packet, bounded (lenient, for a shared VM where a spinning thread
    can lose most of its core: p50 < 50 ms, p99 < 0.5 s, while books applied only when the 1 s of
    traffic ended would read about 0.5 s and 1 s), and the records equal a replay of the packets
    exactly as sent."""
    why = _backend_reason(backend)
    if why:
        pytest.skip(why)
    from feedhandler.pipeline import midnight_ns_for_date

    exe = _tools(tmp_path)
    day = _today_ny()
    midnight = midnight_ns_for_date(day)
    n_packets, per_packet = 2000, 4
    sent_pcap = tmp_path / "sent.pcap"

    def send(v):
        r = v.ns_run([str(exe), "send", v.ns_if, "2000", str(n_packets), str(per_packet), str(midnight), str(PORT),
                      "-1", str(sent_pcap)], timeout=60, check=False)
        return r

    summary, ticks, books, r = _live(backend, send, date=day, latency_wire="ts_event",
                                     stop_after_messages=n_packets * per_packet,
                                     extra={"latency_spin_us": spin_us})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sent"] == n_packets
    assert summary["messages"] == n_packets * per_packet
    lm = summary["latency_mode"]
    per_msg, per_pkt = lm["wire_to_book_per_message"], lm["wire_to_book_per_packet"]
    assert per_msg["count"] == n_packets * per_packet       # every message is an add or a delete
    assert per_pkt["count"] == n_packets                    # one distinct sender stamp a packet
    assert lm["messages_per_packet"] == per_packet
    assert per_msg["p50"] < 50_000_000, per_msg
    assert per_msg["p99"] < 500_000_000, per_msg
    assert lm["spin_us"] == spin_us and (lm["idle_waits"] > 0) == (spin_us > 0)
    ref, ref_books = _replay(sent_pcap, date=day)
    _assert_same(ticks, books, ref, ref_books)


def test_latency_option_rejects_negative_spin(capsys):
    from feedhandler.live import run_main

    with pytest.raises(SystemExit) as e:
        run_main(["--iface", "lo", "--latency", "-5"])
    assert e.value.code == 2
    assert "SPIN_US must be >= 0" in capsys.readouterr().err


@_no_veth
@_no_sample
@pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="needs tcpreplay (Debian package tcpreplay)")
def test_latency_cli_with_spin_budget(capsys):
    """`feedhandler run --iface IF --latency 50 --json` (AF_PACKET): the summary reports the latency mode,
    the TPACKET_V2 ring, and waits in the source while the feed was idle (a bounded spin)."""
    from feedhandler.live import run_main

    with VethPair(tag="flc") as v:
        t = threading.Thread(target=lambda: (threading.Event().wait(1.0), v.ns_run(
            ["tcpreplay", "-q", "-i", v.ns_if, "--pps", "5000", str(SAMPLE)], check=False)))
        t.start()
        try:
            rc = run_main(["--iface", v.host_if, "--capture", "afpacket", "--date", DATE, "--port", str(PORT),
                           "--until-eos", "--duration", "60", "--status-interval", "0", "--latency", "50", "--json"])
        finally:
            t.join()
    out = capsys.readouterr().out
    assert rc == 0
    s = json.loads(out)
    lm = s["latency_mode"]
    assert lm["spin_us"] == 50 and lm["idle_waits"] > 0
    assert s["capture"]["tpacket_version"] == 2
    assert s["messages"] == N_MESSAGES and lm["applied_on_receive_thread"] == s["records"]
    assert lm["wire_to_book_per_message"]["count"] > 0
    # no fan-out reader here (no --out): the run still reports its wire -> ring/book latencies
    assert s["latency_ns"]["wire_to_ring"]["count"] > 0 and "not_measured" not in s["latency_ns"]["wire_to_ring"]
    assert s["latency_ns"]["wire_to_book"]["count"] == lm["wire_to_book_per_message"]["count"]


MDP3 = ROOT / "pcaps" / "mdp3_sample.pcap"


@pytest.mark.skipif(not MDP3.exists(), reason=f"missing {MDP3}")
def test_latency_mode_mdp3_both_book_kinds_on_receive_thread():
    """CME MDP 3.0 in the latency mode: the order books (BookSet) and the price-level books (MbpBookSet)
    are both sinks of the receive thread; they and the fanned-out records equal a replay's."""
    from feedhandler.books import BookSet, MbpBookSet
    from feedhandler.core.latency import FanoutReader, book_sinks
    from feedhandler.capture.live._live import FileSource, LiveFeed
    from feedhandler.pipeline import Feed
    from feedhandler.ring import Ring

    ref = Feed(MDP3, "mdp3").read_all()
    ref_books, ref_mbp = BookSet(), MbpBookSet()
    ref_books.apply(ref)
    ref_mbp.apply(ref)
    src = FileSource(MDP3)
    feed = LiveFeed(src, "mdp3")
    books, mbp = BookSet(), MbpBookSet()
    ring = Ring(1 << 17, overflow="drop")
    got = []
    reader = FanoutReader(ring, lambda b: got.append(b.copy()))
    reader.start()
    feed.start(ring, latency=True, sinks=book_sinks(books, mbp))
    while not src.eof:
        threading.Event().wait(0.01)
    feed.stop()
    reader.join()
    feed.join()
    src.close()
    ticks = _concat(got)
    assert ticks.shape == ref.shape and feed.producer_stats()["fanout_dropped"] == 0
    assert np.array_equal(_without_capture_time(ticks), _without_capture_time(ref))
    assert np.array_equal(books.bbo_all(), ref_books.bbo_all())
    assert sorted(mbp.instruments()) == sorted(ref_mbp.instruments()) and len(ref_mbp.instruments()) > 0
    for inst in ref_mbp.instruments():
        for side in ("B", "A"):
            for implied in (False, True):
                assert np.array_equal(mbp.levels(inst, side, implied), ref_mbp.levels(inst, side, implied))


def test_latency_mode_refuses_a_book_thread_cpu(capsys):
    from feedhandler.live import run_main

    assert run_main(["--iface", "lo", "--latency", "--book-cpu", "0", "--capture", "afpacket"]) != 0
    assert "--book-cpu: the latency mode applies the books on the receive thread" in capsys.readouterr().err
