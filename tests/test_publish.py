"""feedhandler.publish: the feed's market data on ZeroMQ PUB (ticks or BBO updates), in-process and through
``feedhandler run|replay --publish``."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from feedhandler.books import BookSet
from feedhandler import records
from feedhandler.pipeline import Feed
from feedhandler.publish import TickPublisher, bbo_records

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "itch50_sample.pcap"


def _batches(track_bbo=False):
    """The sample's enriched batches (and the BBO events of each) the way replay makes them."""
    feed = Feed(str(SAMPLE), "itch50")
    books = BookSet(track_bbo_events=track_bbo)
    buf = records.empty(4096)
    while (n := feed.read(buf)):
        b = buf[:n]
        books.apply(b)
        yield b.copy(), (books.bbo_events() if track_bbo else None)


def _names():
    from feedhandler.output import SymbolMap
    sm = SymbolMap()
    for b, _ in _batches():
        sm.update(b)
    return sm.by_id


def _collect(sub, until_idle=0.5):
    got = {}
    while sub.poll(int(until_idle * 1000)):
        topic, payload = sub.recv_multipart()
        got.setdefault(topic.decode(), []).append(payload)
    return {k: np.frombuffer(b"".join(v), dtype=records.TICK_DTYPE) for k, v in got.items()}


def _collect_until_exit(sub, proc, timeout=60.0):
    """Everything published by the command ``proc``: read until it has exited (its close() waits for the
    queued messages to be sent), then what is left; a slow start never ends the collection early."""
    got = {}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sub.poll(100):
            topic, payload = sub.recv_multipart()
            got.setdefault(topic.decode(), []).append(payload)
        elif proc.poll() is not None:
            break
    out = {k: np.frombuffer(b"".join(v), dtype=records.TICK_DTYPE) for k, v in got.items()}
    for k, v in _collect(sub, until_idle=0.5).items():
        out[k] = np.concatenate([out[k], v]) if k in out else v
    return out


def _sub(endpoint, *topics):
    s = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 0)
    s.connect(endpoint)
    for t in topics or ("",):
        s.setsockopt(zmq.SUBSCRIBE, t.encode())
    return s


def test_ticks_grouped_by_symbol_in_stream_order():
    pub = TickPublisher("tcp://127.0.0.1:0", "ticks", hwm=0).start()
    sub = _sub(pub.endpoint)
    try:
        assert pub.wait_subscribers(1, 5) == 1
        sent = []
        for b, _ in _batches():
            pub.publish(b)
            sent.append(b)
        got = _collect(sub)
    finally:
        sub.close(0)
        pub.close()
    allrecs = records.concat(sent)
    names = _names()
    iid = allrecs["instrument_id"]
    assert sum(v.shape[0] for v in got.values()) == allrecs.shape[0] == pub.records
    assert "*" in got and (got["*"]["instrument_id"] == 0).all()
    for topic, recs in got.items():
        if topic == "*":
            want = allrecs[iid == 0]
        else:
            assert not topic.startswith("#"), "the directory comes first: every symbol is named"
            (i,) = [k for k, s in names.items() if s == topic]
            want = allrecs[iid == i]
        assert recs.tobytes() == want.tobytes(), topic
    assert pub.unnamed == 0 and pub.messages >= len(got)


def test_bbo_updates_match_the_books_and_symbols_filter():
    names = _names()
    busiest = "AAPL" if "AAPL" in names.values() else sorted(names.values())[0]
    (bid,) = [k for k, s in names.items() if s == busiest]
    pub = TickPublisher("tcp://127.0.0.1:0", "bbo", symbols=[busiest], hwm=0).start()
    sub = _sub(pub.endpoint)
    try:
        assert pub.wait_subscribers(1, 5) == 1
        events = []
        for b, ev in _batches(track_bbo=True):
            pub.publish(b, ev)
            events.append(ev)
        got = _collect(sub)
    finally:
        sub.close(0)
        pub.close()
    ev = np.concatenate(events)
    ev = ev[ev["instrument_id"] == bid]
    assert list(got) == [busiest] and ev.shape[0] > 10
    v = got[busiest].view(records.DTYPES["bbo"])
    assert (v["rtype"] == records.RTYPE["bbo"]).all()
    for f in ("instrument_id", "ts_event", "ts_recv", "bid_px", "ask_px"):
        assert (v[f] == ev[f]).all(), f
    assert (v["bid_sz"] == ev["bid_sz"]).all() and (v["ask_sz"] == ev["ask_sz"]).all()
    assert (np.diff(v["sequence"].astype(np.int64)) > 0).all()


def test_bbo_records_saturate_sizes():
    ev = np.zeros(2, dtype=[("instrument_id", "<u4"), ("ts_event", "<u8"), ("ts_recv", "<u8"), ("bid_px", "<i8"),
                            ("bid_sz", "<u8"), ("ask_px", "<i8"), ("ask_sz", "<u8")])
    ev["bid_sz"] = [5, 1 << 40]
    ev["ask_px"] = records.UNDEF_PRICE
    r = bbo_records(ev, 10).view(records.DTYPES["bbo"])
    assert r["bid_sz"].tolist() == [5, 0xFFFFFFFF] and r["sequence"].tolist() == [11, 12]
    assert (r["ask_px"] == records.UNDEF_PRICE).all() and (r["flags"] == 0x80).all()


def test_wait_subscribers_counts_every_subscriber():
    pub = TickPublisher("tcp://127.0.0.1:0").start()
    subs = [_sub(pub.endpoint, "AAPL") for _ in range(3)]      # the same topic three times
    try:
        assert pub.wait_subscribers(3, 10) == 3
        assert pub.wait_subscribers(1, 0.2) == 0                  # nobody else
    finally:
        for s in subs:
            s.close(0)
        pub.close()


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="publish-what"):
        TickPublisher("tcp://127.0.0.1:0", "quotes")
    with pytest.raises(ValueError, match="tcp://"):
        TickPublisher("127.0.0.1:5000")
    a = TickPublisher("tcp://127.0.0.1:0").start()
    try:
        with pytest.raises(OSError, match="--publish"):
            TickPublisher(a.endpoint).start()          # port in use
    finally:
        a.close()


def _free_port():
    from _durability_support import free_port   # below the ephemeral range (see there)
    return free_port()


def _cli(*args, **kw):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "feedhandler", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT), **kw)


@pytest.mark.parametrize("command", ["replay", "run"])
def test_cli_publish_waits_for_its_subscriber(command):
    port = _free_port()
    ep = f"tcp://127.0.0.1:{port}"
    args = ([command, str(SAMPLE)] if command == "replay" else [command, "--file", str(SAMPLE), "--status-interval", "0"])
    p = _cli(*args, "--publish", ep, "--publish-wait-subs", "1", "--json")
    sub = _sub(ep)
    try:
        got = _collect_until_exit(sub, p)
        out, err = p.communicate(timeout=60)
    finally:
        sub.close(0)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "published:" in err
    total = sum(v.shape[0] for v in got.values())
    import json
    s = json.loads(out[out.index("{"):])
    assert s["publish"]["records"] == total > 10_000
    assert s["records"] == total if command == "replay" else s["records_consumed"] == total


def test_cli_replay_without_publish_never_loads_zmq():
    env = dict(os.environ)
    code = ("import sys; from feedhandler.cli import main; rc = main(['replay', %r, '--json']); "
            "print('ZMQ' if 'zmq' in sys.modules else 'NOZMQ', file=sys.stderr)" % str(SAMPLE))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "NOZMQ" in r.stderr, r.stderr


def test_cli_publish_refuses_tcp_protocols():
    p = _cli("replay", str(ROOT / "pcaps" / "fix44_sample.pcap"), "--publish", f"tcp://127.0.0.1:{_free_port()}")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--publish applies to market-data feeds" in err


def test_cli_run_publish_needs_the_books():
    p = _cli("run", "--file", str(SAMPLE), "--no-books", "--publish", f"tcp://127.0.0.1:{_free_port()}")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--no-books" in err
