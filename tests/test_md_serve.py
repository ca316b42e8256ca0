"""The feed handler's market-data page (feedhandler.serve): pacing, sampling on the consumer thread, the server,
and `feedhandler replay --pace --serve` / `feedhandler run --file --serve` end to end (no browser: see
tests/test_md_serve_browser.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.serve import BookSampler, MarketDataServer, Pacer, serve_address

ROOT = Path(__file__).resolve().parents[1]
PCAP = ROOT / "pcaps" / "itch50_sample.pcap"


def _get(url: str, timeout: float = 5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def _post(url: str, obj) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---- pacing --------------------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.now = 1_000_000_000
        self.naps = []

    def clock(self):
        return self.now

    def sleep(self, s):
        self.naps.append(s)
        self.now += int(s * 1e9)


def _batch(ts_list):
    b = records.empty(len(ts_list))
    b["ts_event"] = ts_list
    return b


def test_pacer_hands_out_records_when_due():
    c = _Clock()
    p = Pacer(1.0, clock=c.clock, sleep=c.sleep)
    s = 1_000_000_000
    b = _batch([0, 10 * s, 10 * s, 10 * s + s // 2, 0, 12 * s])
    out = []
    for part in p.parts(b):
        out.append((c.now - 1_000_000_000, part["ts_event"].tolist()))
    # the untimed first record goes at once with the first timed one; 0 after 10.5 s goes with it
    assert [x[1] for x in out] == [[0, 10 * s, 10 * s], [10 * s + s // 2, 0], [12 * s]]
    assert out[0][0] == 0
    assert abs(out[1][0] - s // 2) <= 1_000_000 and abs(out[2][0] - 2 * s) <= 1_000_000
    assert max(c.naps) <= 0.05 + 1e-9                   # short naps: a signal stops a paced replay promptly
    # a next batch continues the same time line
    parts = list(p.parts(_batch([13 * s])))
    assert abs((c.now - 1_000_000_000) - 3 * s) <= 1_000_000 and len(parts) == 1


def test_pacer_speed_factor_and_bad_speed():
    c = _Clock()
    p = Pacer(10.0, clock=c.clock, sleep=c.sleep)
    s = 1_000_000_000
    list(p.parts(_batch([5 * s, 15 * s])))
    assert abs((c.now - 1_000_000_000) - s) <= 1_000_000     # 10 s of capture in 1 s
    with pytest.raises(ValueError):
        Pacer(0)


# ---- sampler and server ---------------------------------------------------------------------------------
class _Books:
    """A stand-in for feedhandler.books.mbo.BookSet's query side."""

    def __init__(self):
        self.iid = 7

    def bbo(self, iid):
        assert iid == self.iid
        return (101_500_000_000, 300, 2, 102 * records.PRICE_SCALE, 100, 1)

    def depth(self, iid, n):
        lv = np.dtype([("price", "<i8"), ("size", "<u8"), ("count", "<u8")])
        bids = np.array([(101_500_000_000, 300, 2), (101 * records.PRICE_SCALE, 50, 1)], lv)
        asks = np.array([(102 * records.PRICE_SCALE, 100, 1)], lv)
        return bids[:n], asks[:n]

    def bbo_all(self):
        dt = np.dtype([("instrument_id", "<u4"), ("bid_sz", "<u8"), ("ask_sz", "<u8"), ("live_orders", "<u8")])
        return np.array([(7, 300, 100, 3)], dt)


def test_sampler_rate_and_snapshot():
    s = BookSampler(counters=lambda: {"packets": 5}, hz=2.0)
    books = _Books()
    assert s.maybe_sample(books, 10, {7: "AAPL"}) is True
    assert s.maybe_sample(books, 20, {7: "AAPL"}) is False          # within the period: one clock read
    snap = s.latest
    assert snap["seq"] == 1 and snap["records"] == 10 and snap["counters"] == {"packets": 5}
    (b,) = snap["books"]                                            # none chosen: the busiest book
    assert b["symbol"] == "AAPL" and b["bid"] == "101.5" and b["bid_sz"] == 300 and b["ask"] == "102"
    assert b["bids"] == [["101.5", 300, 2], ["101", 50, 1]] and b["asks"] == [["102", 100, 1]]
    s.choose(["msft", "aapl"])
    assert s.maybe_sample(books, 30) is True                        # choosing samples at once
    assert [x["symbol"] for x in s.latest["books"]] == ["MSFT", "AAPL"] and not s.latest["books"][0]["known"]
    s.counters = lambda: 1 / 0                                      # a failing sample is counted, not raised
    s._next = 0
    assert s.maybe_sample(books, 40) is True and s.errors == 1 and "ZeroDivisionError" in s.last_error
    with pytest.raises(ValueError):
        BookSampler(dict, hz=0)


def test_serve_address():
    assert serve_address("8081") == ("127.0.0.1", 8081)
    assert serve_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    for bad in ("x", "70000", "host:", ":-1"):
        with pytest.raises(ValueError):
            serve_address(bad)


def test_server_endpoints_and_stream():
    s = BookSampler(counters=lambda: {"packets": 1}, hz=50)
    with MarketDataServer(s, "127.0.0.1", 0) as srv:
        base = srv.url.rstrip("/")
        st, ct, body = _get(base + "/")
        assert st == 200 and ct.startswith("text/html") and b"/static/marketdata.js" in body
        assert _get(base + "/static/marketdata.js")[0] == 200 and _get(base + "/static/marketdata.css")[0] == 200
        st, _, body = _get(base + "/static/../server.py")
        assert st == 404 and json.loads(body)["code"] == "NOT_FOUND"
        st, _, body = _get(base + "/api/snapshot")
        assert st == 503 and json.loads(body)["code"] == "NOT_READY"
        s.maybe_sample(_Books(), 42, {7: "AAPL"})
        st, _, body = _get(base + "/api/snapshot")
        d = json.loads(body)
        assert st == 200 and d["code"] == 0 and d["data"]["records"] == 42
        assert json.loads(_get(base + "/api/symbols")[2])["data"] == [{"instrument_id": 7, "symbol": "AAPL"}]
        assert _post(base + "/api/choose", {"symbols": ["AAPL", "MSFT"]}) == (200, {"code": 0, "msg": "ok", "data": {
            "chosen": ["AAPL", "MSFT"]}})
        assert _post(base + "/api/choose", {"symbols": "AAPL"})[1]["code"] == "INVALID_PARAMETER"
        assert _post(base + "/api/choose", {"symbols": ["A'; DROP"]})[1]["code"] == "INVALID_PARAMETER"
        assert _post(base + "/api/nope", {})[0] == 404
        # the stream: the current snapshot, each new one, then "end"
        with urllib.request.urlopen(base + "/api/stream", timeout=5) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            assert r.readline() == b"event: snapshot\n"
            assert json.loads(r.readline()[len(b"data: "):])["seq"] == 1
            r.readline()
            time.sleep(0.05)
            s.finish(_Books(), 50)
            events = [r.readline() for _ in range(6)]
        assert events[0] == b"event: snapshot\n" and json.loads(events[1][6:])["final"] is True
        assert events[3] == b"event: end\n"


# ---- the commands ----------------------------------------------------------------------------------------
def _fh(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "feedhandler", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _page_url(proc, timeout=30.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if "market-data page at " in line:
            return line.strip().rsplit(" ", 1)[1]
        if not line and proc.poll() is not None:
            break
    raise AssertionError("no page URL on stderr")


def reference_bbo(path, n_records: int, iid: int):
    """The BBO of ``iid`` after the first ``n_records`` records of the capture (an independent replay)."""
    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed

    feed, books, buf, done = Feed(str(path), "itch50"), BookSet(), records.empty(8192), 0
    while done < n_records:
        n = feed.read(buf)
        assert n, "the capture ended first"
        take = min(n, n_records - done)
        books.apply(buf[:take])
        done += take
    return books.bbo(iid)


def test_replay_paced_serve_matches_the_books(tmp_path):
    """`feedhandler replay --pace F --serve` (the sample: 17 h of capture time, 15 s at 4000x): snapshots taken during the replay equal an independent replay's
    books at the same record count; the summary is unchanged; the page stops with the replay."""
    proc = _fh("replay", str(PCAP), "--pace", "4000", "--serve", "127.0.0.1:0", "--json")
    try:
        url = _page_url(proc)
        seen = {}
        end = time.monotonic() + 60
        while time.monotonic() < end and proc.poll() is None:
            st, _, body = _get(url + "api/snapshot")
            if st == 200:
                d = json.loads(body)["data"]
                if d["books"] and d["books"][0].get("known") and not d["final"]:
                    seen[d["seq"]] = d
            if len(seen) >= 3:
                break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert len(seen) >= 2, "fewer than two snapshots during the paced replay"
    records_seen = sorted({d["records"] for d in seen.values()})
    assert len(records_seen) >= 2                               # the books moved while we watched
    for d in list(seen.values())[:3]:
        for b in d["books"]:
            if not b["known"]:
                continue
            bid_px, bid_sz, _, ask_px, ask_sz, _ = reference_bbo(PCAP, d["records"], b["instrument_id"])
            assert (b["bid_sz"], b["ask_sz"]) == (int(bid_sz), int(ask_sz)), (d["records"], b)
            assert b["bid"] == (None if bid_px == records.UNDEF_PRICE else _dec(bid_px))
            assert b["ask"] == (None if ask_px == records.UNDEF_PRICE else _dec(ask_px))
            assert d["counters"]["latency_label"] == "schedule lag" and d["counters"]["pace"] == 4000.0
    s = json.loads(out)
    assert s["messages"] > 0 and s["gaps"] == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "api/snapshot", timeout=2)     # stopped with the replay


def _dec(px: int) -> str:
    ip, frac = divmod(int(px), records.PRICE_SCALE)
    return str(ip) if not frac else f"{ip}.{frac:09d}".rstrip("0")


def test_replay_serve_options_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(PCAP), "--pace", "fast"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--pace must be" in r.stderr
    r = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(PCAP), "--serve", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--serve 'nope'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(PCAP), "--pace", "recorded",
                        "--mode", "pipelined"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--pace replays in --mode single" in r.stderr
    r = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(ROOT / "pcaps" / "mdp3_sample.pcap"),
                        "--pace", "10"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "implemented for itch50" in r.stderr
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        r = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(PCAP), "--serve",
                            f"127.0.0.1:{busy.getsockname()[1]}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--serve" in r.stderr and "in use" in r.stderr


def test_replay_with_watch_equals_replay_without(tmp_path):
    """Serving changes nothing in what the replay computes."""
    from feedhandler.replay import ReplayOptions, replay
    a = replay(str(PCAP), ReplayOptions())
    s = BookSampler(counters=dict, hz=50)
    b = replay(str(PCAP), ReplayOptions(watch=s))
    for k in ("messages", "records", "gaps", "live_orders", "bbo", "book_counters"):
        assert a[k] == b[k], k
    assert s.done and s.latest["final"] and s.latest["records"] == b["records"]
    top = b["bbo"][0]
    s2 = BookSampler(counters=dict, hz=50, symbols=[top["symbol"]])
    replay(str(PCAP), ReplayOptions(watch=s2))
    (bk,) = s2.latest["books"]
    assert (bk["bid_sz"], bk["ask_sz"]) == (top["bid_sz"], top["ask_sz"])
    assert bk["bid"] == (_dec(top["bid_px"]) if top["bid_px"] is not None else None)


def test_run_file_serve(tmp_path):
    """`feedhandler run --file X --pace F --serve`: the page's counters are the live pipeline's."""
    proc = _fh("run", "--file", str(PCAP), "--pace", "4000", "--serve", "127.0.0.1:0", "--json",
               "--status-interval", "0")
    try:
        url = _page_url(proc)
        snap = None
        end = time.monotonic() + 60
        while time.monotonic() < end and proc.poll() is None:
            st, _, body = _get(url + "api/snapshot")
            if st == 200 and json.loads(body)["data"]["counters"].get("packets"):
                snap = json.loads(body)["data"]
                break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert snap is not None, err
    c = snap["counters"]
    assert c["packets"] > 0 and c["gaps"] == 0 and c["drops"] == 0 and snap["source"].startswith("run ")
    s = json.loads(out)
    assert c["packets"] <= s["packets"] and c["messages"] <= s["messages"]


def test_serve_does_not_import_engine():
    code = ("import sys, feedhandler.serve, feedhandler.serve.feeds; "
            "bad = [m for m in sys.modules if m == 'engine' or m.startswith('engine.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=dict(os.environ))
