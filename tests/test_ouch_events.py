"""OUCH 4.2 / 5.0 order lifecycles over SoupBinTCP: native records vs a pure-Python reference, SoupBinTCP
sequence tracking across reconnections, and tshark as an independent decoder of OUCH 4.2."""
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from feedhandler import records
from feedhandler.framing import soupbintcp_stream as ss
from feedhandler.framing.tcp import Reassembler, TcpConversation, pair_streams
from feedhandler.protocols import ouch42, ouch50_spec, ouch_events as oe
from feedhandler.protocols import soupbintcp as sb

T0 = 1_700_000_000_000_000_000


def reference_events(pk, version):
    """Independent lifecycle reference: the synth packet list decoded with the Python codecs."""
    v5 = version == "5.0"
    spec = ouch50_spec if v5 else ouch42
    ev_of = {("in", "enter_order"): "N", ("out", "accepted" if not v5 else "order_accepted"): "A",
             ("in", "replace_order"): "P", ("out", "replaced" if not v5 else "order_replaced"): "R",
             ("in", "cancel_order"): "X", ("out", "canceled" if not v5 else "order_canceled"): "C",
             ("out", "executed" if not v5 else "order_executed"): "E",
             ("out", "rejected" if not v5 else "order_rejected"): "J"}
    ts = T0 + 10_000
    out, pending, leaves = [], {}, {}
    for dt, side, p in pk:
        ts += dt
        if p[2:3] not in (b"S", b"U"):
            continue
        d = "out" if side == "s" else "in"
        name, f = spec.decode(p[3:], d)
        ev = ev_of[(d, name)]
        key = f.get("user_ref_num") if v5 else (f.get("order_token") or f.get("replacement_order_token"))
        qty = f.get("quantity", f.get("shares", f.get("executed_shares", f.get("decrement_shares"))))
        qty = 0 if qty is None else qty
        lat = None
        if ev == "N":
            pending[key], leaves[key] = ts, qty
        elif ev == "P":
            old = f["orig_user_ref_num"] if v5 else f["existing_order_token"]
            pending[key], leaves[key] = ts, leaves.get(old, 0)
        elif ev == "X":
            pending[key] = ts
        elif ev in ("A", "R"):
            leaves[key] = qty
        elif ev in ("C", "E"):
            leaves[key] = max(0, leaves[key] - qty)
        elif ev == "J":
            leaves[key] = 0
        if ev in ("A", "R", "C", "J") and pending.get(key):
            lat = ts - pending.pop(key)
        out.append((ev, ts, qty, leaves.get(key, 0), lat))
    return out


@pytest.mark.parametrize("version", ["4.2", "5.0"])
def test_lifecycle_matches_reference(tmp_path, version):
    p = tmp_path / "o.pcap"
    pk = oe.synth(p, 600, seed=11, version=version, t0=T0)
    recs, st = oe.replay_stream(p, "ouch42" if version == "4.2" else "ouch50")
    r = records.view(recs, "order_event")
    ref = reference_events(pk, version)
    assert len(r) == len(ref)
    assert st["ouch"]["unknown_order"] == 0 and sum(st["ouch"]["rejects"].values()) == 0
    for rec, (ev, ts, qty, leaves, lat) in zip(r, ref):
        assert rec["event"].decode() == ev
        assert rec["ts_recv"] == ts
        assert rec["size"] == qty
        assert rec["leaves_qty"] == leaves, (ev, rec)
        if lat is None:
            assert not rec["flags"] & 0x08
        else:
            assert rec["flags"] & 0x08 and rec["latency_ns"] == lat
    # sequenced packets are numbered from Login Accepted (sequence 1)
    out = r[(r["flags"] & 1) == 1]
    assert list(out["sequence"]) == list(range(1, len(out) + 1))
    assert st["logins"] == [(0, "", 1, "SESSION01", 1)]
    assert st["soupbintcp"]["end_of_session"] == 1 and st["soupbintcp"]["logout"] == 1
    # instrument ids come from the symbols of the Enter Order messages
    assert set(r["instrument_id"]) <= set(st["symbols"].values()) and 0 not in set(r["instrument_id"])


def _session(conv, t, accepted_seq, seqs, req=0, name="SESS"):
    conv.send(t, "c", sb.login_request("U", "P", "", req))
    conv.send(t + 1, "s", sb.login_accepted(name, accepted_seq))
    for i, _ in enumerate(seqs):
        conv.send(t + 2 + i, "s", sb.sequenced(ouch50_spec.encode("system_event", timestamp=1, event_code="S")))


def _pairs(frames_lists):
    r = Reassembler()
    for frames in frames_lists:
        for ts, f in frames:
            r.feed(ts, f)
    sess = ss.SoupSessions()
    for c, s in pair_streams(r.finish()):
        sess.add_pair(c, s)
    return sess


def test_soup_sequence_gap_and_replay_across_reconnects():
    a = TcpConversation(client=("10.9.0.2", 50001))
    a.handshake(1)
    _session(a, 10, 1, range(5))                 # seq 1..5
    a.close(100)
    b = TcpConversation(client=("10.9.0.2", 50002))
    b.handshake(200)
    _session(b, 210, 9, range(2), req=9)          # 6..8 never seen: a gap of 3
    b.close(300)
    c = TcpConversation(client=("10.9.0.2", 50003))
    c.handshake(400)
    _session(c, 410, 4, range(4), req=4)          # replays 4..7 (4,5 and 9?): 4,5 dup; 6,7 fill
    c.close(500)
    sess = _pairs([a.frames, b.frames, c.frames])
    m = sess.messages()
    seqs = [int(x) for x in m["seq"][m["from_server"] == 1]]
    assert seqs == [1, 2, 3, 4, 5, 9, 10, 4, 5, 6, 7]
    assert sess.sessions["SESS"]["gaps"] == [(6, 3)]
    assert sess.counters["gap_messages"] == 3
    dup = m["flags"][m["from_server"] == 1] & ss.F_DUP
    assert list(dup.astype(bool)) == [False] * 7 + [True] * 4      # all <= 10, the highest seen
    assert sess.counters["duplicates"] == 4


def test_soup_login_rejected_and_bad_packets():
    conv = TcpConversation()
    conv.handshake(1)
    conv.send(2, "c", sb.login_request("U", "P", "", 0))
    conv.send(3, "s", sb.login_rejected(b"A"))
    conv.send(4, "s", b"\x00\x05Qabcd" + sb.packet(b"H") + sb.packet(b"H") + sb.packet(b"H"))  # bad type
    conv.send(5, "c", b"\x00\x03Lxx")                                                       # bad length
    sess = _pairs([conv.frames])
    assert sess.counters["login_rejected"] == 1
    assert sess.counters["bad_type"] == 1 and sess.counters["server_heartbeats"] == 3
    assert sess.counters["bad_length"] == 1
    assert sess.logins == [(0, "", 0, None, 0)]


def test_soup_resync_after_tcp_hole():
    conv = TcpConversation(mss=40)
    conv.handshake(1)
    conv.send(2, "c", sb.login_request("U", "P", "", 1))
    conv.send(3, "s", sb.login_accepted("S1", 1))
    msg = ouch50_spec.encode("system_event", timestamp=1, event_code="S")
    conv.send(4, "s", b"".join(sb.sequenced(msg) for _ in range(20)))
    frames = conv.frames
    # drop one server data segment in the middle (a capture loss)
    srv = [i for i, (_, f) in enumerate(frames) if f[34:36] == b"\x23\x28" and len(f) > 54]
    del frames[srv[len(srv) // 2]]
    sess = _pairs([frames])
    m = sess.messages()
    srv_rows = m[m["from_server"] == 1]
    assert sess.counters["holes"] == 1
    after = srv_rows[(srv_rows["flags"] & ss.F_AFTER_GAP) != 0]
    assert len(after) == 1                           # framing resynchronized after the hole
    assert all(sess.payload(x) == msg for x in srv_rows)
    # after the hole the sequence is unknown (0) until the next Login Accepted
    i = int(np.nonzero((srv_rows["flags"] & ss.F_AFTER_GAP) != 0)[0][0])
    assert (srv_rows["seq"][i:] == 0).all() and (srv_rows["seq"][:i] > 0).all()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark (independent OUCH 4.x decoder) not installed")
def test_tshark_oracle_ouch42(tmp_path):
    p = tmp_path / "o42.pcap"
    oe.synth(p, 300, seed=4, version="4.2", t0=T0)
    res = subprocess.run(["tshark", "-r", str(p), "-d", "tcp.port==15000,soupbintcp", "-T", "fields",
                          "-E", "occurrence=a", "-e", "ouch.packet_type", "-e", "ouch.shares",
                          "-e", "ouch.executed_shares", "-e", "ouch.decrement_shares", "-e", "ouch.price"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ts_rows = [t.strip("'") for line in res.stdout.splitlines() if line.split("\t")[0]
               for t in line.split("\t")[0].split(",")]
    recs, st = oe.replay_stream(p, "ouch42")
    r = records.view(recs, "order_event")
    code = {"N": "O", "A": "A", "P": "U", "R": "U", "X": "X", "C": "C", "E": "E", "J": "J"}
    assert [code[e.decode()] for e in r["event"]] == ts_rows


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), from_server=st.booleans(), resync=st.booleans())
def test_fuzz_soup_split(data, from_server, resync):
    """Any bytes: rows stay inside the buffer, in order, and every byte before `consumed` is accounted."""
    rows, consumed = ss.split(data, 0, len(data), from_server, resync)
    assert 0 <= consumed <= len(data)
    pos = 0
    for off, ln, t, reason in rows:
        assert 0 <= off and off + ln <= len(data)
        if reason == 0:
            assert off - 3 == pos               # a packet starts where the previous one ended
            pos = off + ln
        else:
            assert off == pos                   # skipped bytes are reported as one range
            pos = off + ln
    assert pos == consumed


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_mut=st.integers(1, 30), version=st.sampled_from(["4.2", "5.0"]))
def test_fuzz_mutated_ouch_session(tmp_path_factory, seed, n_mut, version):
    """A damaged capture never crashes the pipeline and every OUCH message is accounted for."""
    import random
    rnd = random.Random(seed)
    pk = oe.synth_messages(40, seed, version)
    blob = bytearray(b"".join(p for _, side, p in pk if side == "s"))
    for _ in range(n_mut):
        blob[rnd.randrange(len(blob))] = rnd.randrange(256)
    conv = TcpConversation(mss=rnd.randint(16, 600))
    conv.handshake(T0)
    conv.send(T0 + 5, "c", b"".join(p for _, side, p in pk if side == "c"))
    conv.send(T0 + 10, "s", bytes(blob))
    sess = _pairs([conv.frames])
    d = oe.OuchEventDecoder(version)
    d.decode(sess)
    s = d.stats
    assert s["records"] + s["session_messages"] + sum(s["rejects"].values()) == s["messages"]
