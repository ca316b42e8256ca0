"""FIX over reassembled TCP (feedhandler.protocols.fix_stream): validation reasons, MsgSeqNum tracking,
market data and order events, against simplefix and tshark as independent decoders."""
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from feedhandler import records
from feedhandler.capture.pcapwriter import write_pcap
from feedhandler.framing.tcp import Reassembler, TcpConversation, pair_streams
from feedhandler.protocols import fix_stream as fs

T0 = 1_700_000_000_000_000_000
SPEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"


def by_type(recs, name):
    recs = np.ascontiguousarray(recs)
    return records.view(recs[recs["rtype"] == records.RTYPE[name]], name)


def decode_frames(frames, **kw):
    r = Reassembler()
    for ts, f in frames:
        r.feed(ts, f)
    dec = fs.FixStreamDecoder(**kw)
    outs = [dec.decode_pair(*fs._fix_direction(p, dec), conn=i) for i, p in enumerate(pair_streams(r.finish()))]
    return records.concat(outs), dec


def session(msgs, client_first=True):
    """A TCP conversation carrying [(side, bytes)] one message per segment."""
    conv = TcpConversation()
    conv.handshake(T0)
    t = T0 + 1000
    for side, m in msgs:
        t += 1000
        conv.send(t, side, m)
    return conv.frames


def msg(mtype, seq, body=(), possdup=False, begin=b"FIX.4.4", side="s"):
    snd, tgt = (b"EXCH", b"CLIENT") if side == "s" else (b"CLIENT", b"EXCH")
    return fs._fix_msg(begin, mtype, seq, snd, tgt, T0, list(body), possdup)


@pytest.mark.parametrize("begin", [b"FIX.4.2", b"FIX.4.4"])
def test_synthetic_session_against_simplefix(tmp_path, begin):
    simplefix = pytest.importorskip("simplefix")
    p = tmp_path / "f.pcap"
    msgs = fs.synth(p, 500, seed=3, begin=begin, t0=T0)
    recs, st = fs.replay_stream(p)
    f = st["fix"]
    assert f["messages"] == len(msgs)
    assert f["garbled"] == f["bad_checksum"] == f["bad_body_length"] == f["seq_gaps"] == 0
    # independent reference: simplefix parses the same messages
    parser = simplefix.FixParser()
    n_orders = n_book = n_trades = 0
    book_px = []
    msg_types = {}
    for _, _, m in msgs:
        parser.append_buffer(m)
        x = parser.get_message()
        t = x.get(35)
        msg_types[t.decode()] = msg_types.get(t.decode(), 0) + 1
        if t in (b"D", b"F", b"G", b"8", b"9"):
            n_orders += 1
        if t in (b"W", b"X"):
            types = [v for k, v in x.pairs if int(k) == 269]
            pxs = [v for k, v in x.pairs if int(k) == 270]
            for ty, px in zip(types, pxs):
                if ty in (b"0", b"1"):
                    n_book += 1
                    book_px.append(int(round(float(px) * 100)) * 10_000_000)
                elif ty == b"2":
                    n_trades += 1
    assert f["by_msg_type"] == msg_types
    oe = by_type(recs, "order_event")
    assert len(oe) == n_orders == f["order_events"]
    assert f["mbo"] + f["mbp"] == n_book and f["trades"] == n_trades
    mbo, mbp = by_type(recs, "mbo"), by_type(recs, "mbp_update")
    mbo, mbp = mbo[mbo["action"] != b"R"], mbp[mbp["action"] != b"R"]     # snapshot Clear records
    n_w = sum(1 for _, _, m in msgs if b"\x0135=W\x01" in m)
    assert f["md_clears"] == n_w
    got = sorted(list(mbo["price"]) + list(mbp["price"]))
    assert got == sorted(book_px)
    assert f["unknown_order"] == 0
    assert set(oe["protocol"]) == {3 if begin == b"FIX.4.2" else 4}
    # every ack carries the order->ack latency
    acks = oe[oe["event"] == b"A"]
    assert len(acks) and (acks["flags"] & 0x08).all() and (acks["latency_ns"] > 0).all()


def test_order_lifecycle_and_latency():
    fr = session([
        ("c", msg(b"D", 1, [(11, b"A1"), (55, b"IBM"), (54, b"1"), (38, b"300"), (40, b"2"), (44, b"101.25")], side="c")),
        ("s", msg(b"8", 1, [(37, b"O1"), (11, b"A1"), (17, b"e1"), (150, b"0"), (39, b"0"), (55, b"IBM"),
                            (54, b"1"), (38, b"300"), (44, b"101.25"), (151, b"300"), (14, b"0")])),
        ("s", msg(b"8", 2, [(37, b"O1"), (11, b"A1"), (17, b"e2"), (150, b"F"), (39, b"1"), (55, b"IBM"),
                            (54, b"1"), (31, b"101.2"), (32, b"100"), (151, b"200"), (14, b"100")])),
        ("c", msg(b"G", 2, [(41, b"A1"), (11, b"A2"), (55, b"IBM"), (54, b"1"), (38, b"300"), (44, b"101.5")], side="c")),
        ("s", msg(b"8", 3, [(37, b"O1"), (11, b"A2"), (41, b"A1"), (17, b"e3"), (150, b"5"), (39, b"5"),
                            (44, b"101.5"), (151, b"200")])),
        ("c", msg(b"F", 3, [(41, b"A2"), (11, b"A3"), (55, b"IBM"), (54, b"1")], side="c")),
        ("s", msg(b"9", 4, [(37, b"O1"), (11, b"A3"), (41, b"A2"), (39, b"1"), (434, b"1")])),
    ])
    recs, dec = decode_frames(fr)
    oe = by_type(recs, "order_event")
    assert [e.decode() for e in oe["event"]] == ["N", "A", "E", "P", "R", "X", "K"]
    assert list(oe["latency_ns"]) == [0, 1000, 0, 0, 1000, 0, 1000]
    assert list(oe["leaves_qty"]) == [300, 300, 200, 200, 200, 200, 200]
    assert oe["price"][2] == 101_200_000_000 and oe["size"][2] == 100
    assert oe["price"][4] == 101_500_000_000
    assert (oe["instrument_id"] == 1).all() and (oe["side"] == b"B").all()
    assert len(set(oe["order_id"][1:])) == 1 and oe["order_id"][1] != 0
    assert dec.symbol_map() == {"IBM": 1}


def test_sequence_gaps_duplicates_and_possdup():
    body = [(58, b"x")]
    fr = session([("s", msg(b"0", 1, body)), ("s", msg(b"0", 2, body)), ("s", msg(b"0", 5, body)),
                  ("s", msg(b"0", 3, body, possdup=True)), ("s", msg(b"0", 4, body, possdup=True)),
                  ("s", msg(b"0", 5, body)),                     # duplicate without PossDup
                  ("s", msg(b"4", 6, [(123, b"Y"), (36, b"10")])),  # gap fill to 10
                  ("s", msg(b"0", 10, body)), ("s", msg(b"4", 11, [(36, b"20")])), ("s", msg(b"0", 20, body))])
    recs, dec = decode_frames(fr)
    s = dec.stats
    assert s["seq_gaps"] == 1 and s["seq_gap_messages"] == 2
    assert s["possdup"] == 2 and s["possdup_filled"] == 2
    assert s["duplicates"] == 1 and s["seq_resets"] == 1
    gaps = by_type(recs, "gap")
    assert [(g["kind"], g["first_missing"], g["count"]) for g in gaps] == [(1, 3, 2), (2, 4, 0)]


def test_bad_checksum_body_length_garbage_are_counted():
    good = msg(b"0", 1, [(58, b"ok")])
    badck = bytearray(msg(b"0", 2, [(58, b"ok")]))
    badck[-4:-1] = b"%03d" % ((int(badck[-4:-1]) + 1) % 256)
    badlen = msg(b"0", 3, [(58, b"ok")])
    i = badlen.index(b"\x019=") + 3
    j = badlen.index(b"\x01", i)
    badlen = badlen[:i] + b"%d" % (int(badlen[i:j]) - 3) + badlen[j:]     # BodyLength too short by 3
    garbage = b"8=FIX.4.4\x01XX=1\x01"
    fr = session([("s", good), ("s", bytes(badck)), ("s", badlen), ("s", garbage), ("s", msg(b"0", 4, [(58, b"ok")]))])
    recs, dec = decode_frames(fr)
    s = dec.stats
    assert s["messages"] == 2
    assert s["bad_checksum"] == 1 and s["bad_body_length"] == 1 and s["garbled"] >= 1


@pytest.mark.skipif(not (SPEC / "FIX44.xml").is_file(), reason="FIX dictionaries (../shared/data/fix/spec) absent")
def test_builtin_md_groups_agree_with_dictionaries():
    t, src = fs.group_tables(SPEC)
    assert src == "dictionary"
    for bs, md in fs.BUILTIN_MD.items():
        for mt, delim in md.items():
            assert t[bs][mt][1] == delim
            assert fs.BUILTIN_MD[bs][mt] in t[bs][mt][0]
    b, src = fs.group_tables(builtin=True)
    assert src == "builtin" and b["FIX.4.4"]["X"][1] == 279


def test_builtin_groups_decode_the_same_market_data(tmp_path):
    p = tmp_path / "f.pcap"
    fs.synth(p, 300, seed=2, t0=T0)
    a, sa = fs.replay_stream(p)
    r = Reassembler()
    r.feed_file(p)
    dec = fs.FixStreamDecoder(builtin_groups=True)
    b = records.concat([dec.decode_pair(*fs._fix_direction(pr, dec), conn=i)
                        for i, pr in enumerate(pair_streams(r.finish()))])
    assert dec.groups_source == "builtin"
    assert sorted(by_type(a, "mbp_update")["price"]) == sorted(by_type(b, "mbp_update")["price"])
    assert dec.stats["mbo"] == sa["fix"]["mbo"] and dec.stats["trades"] == sa["fix"]["trades"]


def test_group_member_tags_are_not_order_fields():
    # FIX 4.4 ExecutionReport: Parties group (453) members must not be taken as top-level fields;
    # ContraBroker group (382) has 375 ContraBroker; PartyID 448 would be a false ClOrdID if mixed up.
    fr = session([("s", msg(b"8", 1, [(37, b"O9"), (11, b"Z1"), (17, b"e"), (150, b"0"), (39, b"0"), (55, b"MSFT"),
                                      (54, b"2"), (38, b"10"), (44, b"5"), (453, b"1"), (448, b"P"), (447, b"D"),
                                      (452, b"1"), (151, b"10")]))])
    recs, dec = decode_frames(fr)
    oe = by_type(recs, "order_event")
    assert len(oe) == 1 and oe["event"][0] == b"A" and oe["side"][0] == b"A" and oe["leaves_qty"][0] == 10


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark (independent FIX decoder) not installed")
def test_tshark_oracle_seqnums_and_checksums(tmp_path):
    p = tmp_path / "f.pcap"
    msgs = fs.synth(p, 300, seed=8, t0=T0)
    # corrupt one checksum in place (same length) and rewrite the capture
    data = bytearray(p.read_bytes())
    k = data.find(b"\x0110=", len(data) // 2)
    d = data[k + 4:k + 7]
    data[k + 4:k + 7] = b"%03d" % ((int(d) + 1) % 256)
    p.write_bytes(bytes(data))
    res = subprocess.run(["tshark", "-r", str(p), "-d", "tcp.port==9878,fix", "-T", "fields", "-E", "occurrence=a",
                          "-E", "aggregator=;", "-e", "fix.MsgSeqNum", "-e", "fix.checksum_bad"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    seqs, bad = [], 0
    for line in res.stdout.splitlines():
        cols = line.split("\t")
        if cols[0]:
            seqs += [int(x) for x in cols[0].split(";")]
        if len(cols) > 1 and cols[1]:
            bad += sum(1 for x in cols[1].split(";") if x in ("1", "True"))
    recs, st = fs.replay_stream(p)
    assert st["fix"]["bad_checksum"] == bad == 1
    assert st["fix"]["messages"] == len(seqs) - 1 == len(msgs) - 1


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**6), n_mut=st.integers(0, 20), junk=st.binary(max_size=64))
def test_fuzz_mutated_streams_never_crash(seed, n_mut, junk):
    rnd = random.Random(seed)
    ms = [m for _, _, m in fs.synth_messages(30, seed)]
    data = bytearray(b"".join(ms))
    for _ in range(n_mut):
        data[rnd.randrange(len(data))] = rnd.randrange(256)
    pos = rnd.randrange(len(data))
    data[pos:pos] = junk
    conv = TcpConversation(mss=rnd.randint(20, 1460))
    conv.handshake(T0)
    conv.send(T0 + 10, "s", bytes(data))
    recs, dec = decode_frames(conv.frames)
    s = dec.stats
    assert s["messages"] <= len(ms) + len(junk)
    assert s["bad_field"] <= s["messages"]
    assert len(recs) >= 0


def test_tcp_hole_resyncs_and_opens_a_seq_gap():
    msgs = [("s", msg(b"0", i, [(58, b"x" * 30)])) for i in range(1, 41)]
    conv = TcpConversation(mss=100)
    conv.handshake(T0)
    conv.send(T0 + 10, "s", b"".join(m for _, m in msgs))
    frames = conv.frames
    data_frames = [i for i, (_, f) in enumerate(frames) if len(f) > 54]
    del frames[data_frames[len(data_frames) // 2]]          # lose 100 bytes in the middle
    recs, dec = decode_frames(frames)
    s = dec.stats
    assert s["holes"] == 1
    lost = 40 - s["messages"]
    assert 1 <= lost <= 2                                   # a 100-byte hole touches one or two messages
    assert s["seq_gaps"] == 1 and s["seq_gap_messages"] == lost
    g = by_type(recs, "gap")
    assert len(g) == 1 and g["count"][0] == lost and g["kind"][0] == 1


def test_snapshot_and_incrementals_build_an_mbp_book():
    book_mod = pytest.importorskip("feedhandler.books.mbp")
    w = msg(b"W", 1, [(262, b"r"), (55, b"ESZ6"), (268, 4), (269, b"0"), (270, b"99.5"), (271, b"10"),
                      (269, b"0"), (270, b"99.25"), (271, b"20"), (269, b"1"), (270, b"100"), (271, b"5"),
                      (269, b"1"), (270, b"100.25"), (271, b"7")])
    x = msg(b"X", 2, [(262, b"r"), (268, 2), (279, b"0"), (269, b"0"), (55, b"ESZ6"), (270, b"99.75"), (271, b"3"),
                      (290, b"1"), (279, b"2"), (269, b"1"), (55, b"ESZ6"), (270, b"100"), (271, b"5"), (290, b"1")])
    recs, dec = decode_frames(session([("s", w), ("s", x)]))
    mbp = by_type(recs, "mbp_update")
    assert [a.decode() for a in mbp["action"]] == ["R", "A", "A", "A", "A", "A", "C"]
    assert list(mbp["level"][1:5]) == [1, 2, 1, 2]
    books = book_mod.MbpBookSet()
    books.apply(recs[recs["rtype"] == records.RTYPE["mbp_update"]])
    bid_px, bid_sz, ask_px, ask_sz = books.bbo(1)
    assert (bid_px, bid_sz) == (99_750_000_000, 3) and (ask_px, ask_sz) == (100_250_000_000, 7)
