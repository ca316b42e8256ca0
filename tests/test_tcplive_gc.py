"""A long live run keeps bounded state: ``feedhandler run`` (``TcpSessionFramer`` incremental mode) over
thousands of short sequential FIX and OUCH connections retires each connection once both directions are
closed and decoded (``Reassembler.retire``, ``FixLiveDecoder`` / ``OuchLiveDecoder``), sweeps the order
lifecycle entries of retired connections, and still gives replay's records and counters exactly."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from feedhandler import records
from feedhandler.capture.pcapwriter import write_pcap
from feedhandler.framing.tcp import TCP_ACK, TCP_RST, Reassembler, TcpConversation
from feedhandler.protocols import fix_stream, ouch_events

from test_tcplive_records import _assert_same, _frames, _live_decode, _run_file, _unenriched

T0 = 1_700_000_000_000_000_000
N_CONN = 2000


def _close(conv, k, ts):
    """Every 7th connection ends with an RST from the client, the others with FIN both ways and the
    client's last ACK (a segment for a stream that is retired by then)."""
    if k % 7 == 3:
        conv.frames.append((ts, conv._frame("c", b"", TCP_RST | TCP_ACK)))
        return
    conv.close(ts)
    conv.frames.append((ts + 500, conv._frame("c", b"", TCP_ACK)))


def _many_fix(path, n_conn=N_CONN, msgs_per_conn=14):
    frames = []
    ts = T0
    for k in range(n_conn):
        conv = TcpConversation(client=("10.5.%d.%d" % (k // 250, 2 + k % 250), 41000 + k % 20000),
                               server=("10.5.255.1", 9878), isn_c=1000 + 7919 * k, isn_s=(0xFFFFF000 + 31 * k))
        msgs = fix_stream.synth_messages(msgs_per_conn, seed=k % 97, t0=ts + 10_000)
        conv.handshake(ts)
        for t, side, m in msgs:
            conv.send(t, side, m)
        ts = msgs[-1][0] + 1000
        _close(conv, k, ts)
        frames += conv.frames
        ts += 10_000
    write_pcap(path, frames, nanosecond=True)


def _many_ouch(path, version, n_conn=N_CONN, msgs_per_conn=14):
    frames = []
    ts = T0
    for k in range(n_conn):
        conv = TcpConversation(client=("10.6.%d.%d" % (k // 250, 2 + k % 250), 42000 + k % 20000),
                               server=("10.6.255.1", 15000), isn_c=77 + 104729 * k, isn_s=0xFFFFFF00 - k)
        conv.handshake(ts)
        ts += 10_000
        for dt, side, p in ouch_events.synth_messages(msgs_per_conn, seed=k % 89, version=version):
            ts += dt
            conv.send(ts, side, p.replace(b"SESSION01", b"SESSION%02d" % (k % 10)))
        ts += 1000
        _close(conv, k, ts)
        frames += conv.frames
        ts += 10_000
    write_pcap(path, frames, nanosecond=True)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    d = tmp_path_factory.mktemp("gc")
    out = {"fix": d / "fix.pcap", "ouch42": d / "ouch42.pcap", "ouch50": d / "ouch50.pcap"}
    _many_fix(out["fix"])
    _many_ouch(out["ouch42"], "4.2")
    _many_ouch(out["ouch50"], "5.0")
    return out


def _replay(path, protocol):
    if protocol == "fix":
        return fix_stream.replay_stream(path)
    return ouch_events.replay_stream(path, protocol)


def _decoder(protocol):
    return fix_stream.FixLiveDecoder() if protocol == "fix" else ouch_events.OuchLiveDecoder(protocol)


def _tracked(r, dec):
    """Everything the live path keeps per connection or per order."""
    d = {"streams": len(r.streams), "tombstones": r.n_closed, "pairs": len(dec.conns.pairs),
         "index": len(dec.conns.index), "waiting": len(dec.conns.waiting), "parse": len(dec.parse),
         "side": len(dec.side)}
    if isinstance(dec, fix_stream.FixLiveDecoder):
        d["orders"] = len(dec.dec.orders)
        d["held"] = len(dec.held)
    else:
        d["orders"] = len(dec.dec.orders) if dec.dec is not None else 0
        d["seq"] = len(dec.seq)
        d["ouch_streams"] = len(dec.streams)
        d["midnight"] = len(dec.dec.midnight) if dec.dec is not None else 0
    return d


@pytest.mark.parametrize("protocol", ["fix", "ouch42", "ouch50"])
def test_live_state_stays_bounded_and_equal_to_replay(captures, protocol):
    path = captures[protocol]
    ref, rst = _replay(path, protocol)
    assert rst["tcp"]["connections"] == N_CONN
    frames = _frames(path)
    dec = _decoder(protocol)
    dec.sweep_min = 64
    r = Reassembler(max_closed=16).track()
    out = []
    peak = {}
    for i, (ts, lt, fr) in enumerate(frames):
        r.feed(ts, fr, lt)
        if (i + 1) % 5 == 0:
            out.append(dec.feed_marks(r, r.take_marks()))
        if i > len(frames) // 10:
            for k, v in _tracked(r, dec).items():
                peak[k] = max(peak.get(k, 0), v)
    got, st = dec.finish(r)
    out.append(got)
    got = records.concat([o for o in out if len(o)])
    # at most a couple of connections open at once (each is closed before the next one starts)
    assert peak["streams"] <= 4 and peak["pairs"] <= 2 and peak["parse"] <= 4 and peak["side"] <= 2, peak
    assert peak["index"] <= 4 and peak["waiting"] <= 2 and peak["tombstones"] <= 16, peak
    assert peak["orders"] <= 2 * 64 + 40, peak          # swept at sweep_min, then twice what is left
    end = _tracked(r, dec)
    assert end["streams"] <= 2 and end["pairs"] <= 1 and end["orders"] <= 2 * 64 + 40, end
    assert st["live"]["connections_retired"] >= N_CONN - 1
    assert st["live"]["tombstones_evicted"] == 2 * st["live"]["connections_retired"] - 16
    # ... and exactly replay's records and counters
    _assert_same(got, ref)
    assert st["tcp"] == rst["tcp"]
    if protocol == "fix":
        assert {k: v for k, v in st["fix"].items() if k != "ref_after_use"} == rst["fix"]
    else:
        assert st["soupbintcp"] == rst["soupbintcp"] and st["ouch"] == rst["ouch"]
        assert st["sessions"] == rst["sessions"] and st["logins"] == rst["logins"]
    assert st["symbols"] == rst["symbols"]


@pytest.mark.parametrize("protocol", ["fix", "ouch50"])
def test_run_file_summary_equals_replay_after_retiring_connections(captures, protocol):
    """``feedhandler run --file`` (default bounds) over the 2000 connections: the records, and the
    summary's session section, are replay's; the live section shows the connections retired."""
    path = captures[protocol]
    ref, rst = _replay(path, protocol)
    got, s = _run_file(path, protocol)
    _assert_same(got, _unenriched(ref))
    t = s["tcp_session"]
    assert t["live"]["connections_retired"] >= N_CONN - 1 and t["live"]["connections_open"] <= 1
    rep = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(path), "--json", "--protocol", protocol],
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    r = json.loads(rep.stdout)
    for k in ("connections", "order_events", "tcp_holes", "messages_by_type", "malformed_by_reason", "truncated"):
        assert t[k] == r[k], k
    assert s["messages"] == r["messages"] and s["gaps"] == r["gaps"] and s["duplicates"] == r["duplicates"]
    assert s["records"] == r["records"] == len(ref)


@pytest.mark.parametrize("protocol", ["fix", "ouch42", "ouch50"])
def test_terminal_orders_of_a_long_session_leave_the_map(tmp_path, protocol):
    """One long session (no connection to retire): orders that reached a terminal state (canceled,
    fully filled, rejected, replaced) stay among the last ``term_cap`` terminal orders, then leave the
    lifecycle map (counted in ``live["orders_evicted"]``); the records stay replay's (nothing names
    them afterwards in this session). Without the bound (replay) the map keeps every order."""
    p = tmp_path / "long.pcap"
    if protocol == "fix":
        fix_stream.synth(p, 20000, seed=8)
    else:
        ouch_events.synth(p, 20000, seed=8, version="4.2" if protocol == "ouch42" else "5.0")
    ref, rst = _replay(p, protocol)
    dec = _decoder(protocol)
    dec.sweep_min = 1 << 40             # (the connection's close would sweep its orders: not measured here)
    if protocol == "fix":
        dec.dec.term_cap = 8
    else:
        dec.term_cap = 8
        dec.dec.term_cap = 8
    r = Reassembler().track()
    out, peak = [], 0
    for i, (ts, lt, fr) in enumerate(_frames(p)):
        r.feed(ts, fr, lt)
        if (i + 1) % 7 == 0:
            out.append(dec.feed_marks(r, r.take_marks()))
            peak = max(peak, len(dec.dec.orders))
    got, st = dec.finish(r)
    out.append(got)
    got = records.concat([o for o in out if len(o)])
    _assert_same(got, ref)
    if protocol == "fix":
        assert {k: v for k, v in st["fix"].items() if k != "ref_after_use"} == rst["fix"]
        n_orders = rst["fix"]["order_events"]
    else:
        assert st["ouch"] == rst["ouch"] and st["soupbintcp"] == rst["soupbintcp"]
        n_orders = rst["ouch"]["records"]
    # the same decoding without the bound keeps every order: the difference is what was evicted
    dec2 = _decoder(protocol)
    dec2.sweep_min = 1 << 40
    if protocol == "fix":
        dec2.dec.term_cap = 0
    else:
        dec2.term_cap = 0
        if dec2.dec is not None:
            dec2.dec.term_cap = 0
    got2, st2, _ = _live_decode(_frames(p), dec2, 7)
    _assert_same(got2, ref)
    kept, evicted, every = st["live"]["order_entries"], st["live"]["orders_evicted"], st2["live"]["order_entries"]
    assert st2["live"]["orders_evicted"] == 0
    assert kept + evicted == every and evicted > n_orders // 10, (kept, evicted, every, n_orders)
    # swept when the map doubles: at most twice what the last sweep left (the open orders and the last 8)
    lc = dec.dec
    left = len(lc.orders) - lc.sweep_terminal(force=True)
    assert peak <= 2 * max(left, 8) + 2 * 64, (peak, left, kept)
