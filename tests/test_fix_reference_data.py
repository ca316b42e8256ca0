"""FIX instrument ids from the session's own reference data (SecurityList 35=y, SecurityDefinition 35=d)
and per-MsgType counts (feedhandler.protocols.fix_stream), checked against simplefix as an independent
parser of the same messages."""
import collections
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from feedhandler import records
from feedhandler.framing.tcp import Reassembler, TcpConversation, pair_streams
from feedhandler.protocols import fix_stream as fs

T0 = 1_700_000_000_000_000_000
UINT32_MAX = 0xFFFFFFFF
DEF = records.RTYPE["instrument_def"]


def of_kind(recs, name):
    recs = np.ascontiguousarray(recs)
    return records.view(recs[recs["rtype"] == records.RTYPE[name]], name)


def frames_of(msgs):
    """One TCP conversation carrying [(side, bytes)], one message per segment."""
    conv = TcpConversation()
    conv.handshake(T0)
    t = T0 + 1000
    for side, m in msgs:
        t += 1000
        conv.send(t, side, m)
    return conv.frames


def decode(msgs, dec=None, **kw):
    r = Reassembler()
    for ts, f in frames_of(msgs):
        r.feed(ts, f)
    dec = dec or fs.FixStreamDecoder(**kw)
    outs = [dec.decode_pair(*fs._fix_direction(p, dec), conn=i) for i, p in enumerate(pair_streams(r.finish()))]
    return records.concat(outs), dec


def m(mtype, seq, body=(), begin=b"FIX.4.4", side="s"):
    snd, tgt = (b"EXCH", b"CLIENT") if side == "s" else (b"CLIENT", b"EXCH")
    return side, fs._fix_msg(begin, mtype, seq, snd, tgt, T0 + seq * 1000, list(body))


def seclist(seq, entries, begin=b"FIX.4.4"):
    grp = []
    for sym, sid, src in entries:
        grp += [(55, sym)] + ([(48, sid)] if sid is not None else []) + ([(22, src)] if src is not None else [])
    return m(b"y", seq, [(320, b"R"), (322, b"L"), (560, 0), (146, len(entries))] + grp, begin)


def x_trade(seq, sym, px=b"100.5", qty=7):
    return m(b"X", seq, [(262, b"md"), (268, 1), (279, b"0"), (269, b"2"), (55, sym), (270, px), (271, qty)])


def order(seq, cl, sym):
    return m(b"D", seq, [(11, cl), (21, b"1"), (55, sym), (54, b"1"), (38, 100), (40, b"2"), (44, b"10.5")],
             side="c")


def first_use_index(recs, iid):
    """Index of the first non-definition record of instrument iid (None when unused)."""
    idx = np.flatnonzero((recs["instrument_id"] == iid) & (recs["rtype"] != DEF))
    return int(idx[0]) if len(idx) else None


# ---- synthetic session with reference data --------------------------------------------------------
@pytest.mark.parametrize("begin", [b"FIX.4.2", b"FIX.4.4"])
def test_synth_reference_data_against_simplefix(tmp_path, begin):
    simplefix = pytest.importorskip("simplefix")
    p = tmp_path / "ref.pcap"
    msgs = fs.synth(p, 400, seed=5, begin=begin, t0=T0, reference_data=True)
    recs, stats = fs.replay_stream(p)
    f = stats["fix"]
    # independent reference: simplefix parses every message the synth wrote
    parser = simplefix.FixParser()
    types = collections.Counter()
    ref = {}                                   # symbol -> SecurityID from 35=y / 35=d
    d_syms = []                                # Symbol of every NewOrderSingle, in order
    for _, side, raw in msgs:
        parser.append_buffer(raw)
        fm = parser.get_message()
        mt = fm.get(35).decode()
        types[mt] += 1
        if mt == "y":
            for sym, sid in zip(_all(fm, 55), _all(fm, 48)):
                ref[sym.decode()] = sid.decode()
        elif mt == "d":
            ref[fm.get(55).decode()] = fm.get(48).decode()
        elif mt == "D":
            d_syms.append(fm.get(55).decode())
    assert f["by_msg_type"] == dict(types)
    assert sum(f["by_msg_type"].values()) == f["messages"] == len(msgs)
    assert f["ref_messages"] == types["y"] + types["d"] == 2
    assert set(stats["reference"]) == set(ref) == {s.decode() for s, _, _ in fs.SYNTH_REFERENCE} | {"ESZ6"}
    # numeric SecurityIDs are the instrument ids; the ISIN one gets a free id of its own
    ids = {s: r["instrument_id"] for s, r in stats["reference"].items()}
    for s, sid in ref.items():
        assert stats["reference"][s]["security_id"] == sid
        if sid.isdigit():
            assert ids[s] == int(sid)
    assert ids["GOOG"] not in {int(v) for v in ref.values() if v.isdigit()}
    assert len(set(ids.values())) == len(ids)
    assert stats["symbols"] == ids
    # one fh_instrument_def per symbol, ahead of every record that uses it
    defs = of_kind(recs, "instrument_def")
    assert len(defs) == len(ids) == f["ref_symbols"]
    assert {d["symbol"].decode(): int(d["instrument_id"]) for d in defs} == ids
    assert (defs["update_action"] == b"A").all() and (defs["instrument_class"] == b"X").all()
    assert (defs["put_or_call"] == 255).all() and (defs["min_price_increment"] == np.iinfo(np.int64).max).all()
    assert (defs["strike_price"] == np.iinfo(np.int64).max).all() and (defs["ts_event"] > T0).all()
    for iid in ids.values():
        first = first_use_index(recs, iid)
        assert first is not None and first > int(np.flatnonzero(recs["instrument_id"] == iid)[0])
        assert recs[int(np.flatnonzero(recs["instrument_id"] == iid)[0])]["rtype"] == DEF
    # every order event of a NewOrderSingle carries the id of the order's symbol
    new = of_kind(recs, "order_event")
    new = new[new["event"] == b"N"]
    assert [int(x) for x in new["instrument_id"]] == [ids[s] for s in d_syms]
    # market data on reference symbols only, never instrument 0
    for kind in ("mbo", "trade", "mbp_update"):
        got = of_kind(recs, kind)
        assert len(got) and set(int(x) for x in got["instrument_id"]) <= set(ids.values())


def _all(fm, tag):
    return [v for t, v in fm.pairs if int(t) == tag]


def test_without_reference_data_unchanged(tmp_path):
    p = tmp_path / "plain.pcap"
    msgs = fs.synth(p, 300, seed=44, t0=T0)
    recs, stats = fs.replay_stream(p)
    assert not (recs["rtype"] == DEF).any()
    assert stats["reference"] == {} and stats["fix"]["ref_messages"] == stats["fix"]["ref_symbols"] == 0
    # ids 1.. in order of first appearance, as before
    order = []
    for _, _, raw in msgs:
        for f in raw.split(b"\x01"):
            if f.startswith(b"55=") and f[3:].decode() not in order:
                order.append(f[3:].decode())
    assert stats["symbols"] == {s: i + 1 for i, s in enumerate(order)}
    counted = collections.Counter(raw.split(b"\x0135=", 1)[1].split(b"\x01", 1)[0].decode() for _, _, raw in msgs)
    assert stats["fix"]["by_msg_type"] == dict(counted)


def test_reference_flag_off_is_byte_identical(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    fs.synth(a, 200, seed=9)
    fs.synth(b, 200, seed=9, reference_data=False)
    assert a.read_bytes() == b.read_bytes()
    with_ref = fs.synth_messages(200, 9, reference_data=True)
    assert [x[2].split(b"\x0135=")[1][:1] for x in with_ref[2:4]] == [b"y", b"d"]


# ---- id assignment rules ---------------------------------------------------------------------------
def test_reference_defined_after_use_still_precedes_records():
    msgs = [order(1, b"C1", b"LATE"), m(b"A", 1), x_trade(2, b"LATE"),
            m(b"d", 3, [(320, b"R"), (322, b"S"), (323, 1), (55, b"LATE"), (48, b"777"), (22, b"8")])]
    recs, dec = decode(msgs)
    assert dec.symbol_map() == {"LATE": 777}
    assert recs["rtype"][0] == DEF and recs["instrument_id"][0] == 777
    assert (recs["instrument_id"][1:] == 777).all() and len(recs) == 3


def test_collisions_large_and_nonnumeric_ids_and_fallback():
    ents = [(b"AAA", b"5", b"8"), (b"BBB", b"5", b"8"),           # BBB's id is taken by AAA
            (b"CCC", b"99999999999", b"8"),                        # does not fit uint32
            (b"DDD", b"XS0000000001", b"4"), (b"EEE", None, None),  # ISIN; no SecurityID at all
            (b"FFF", b"4000000000", b"8")]                         # fits uint32
    msgs = [m(b"A", 1), seclist(2, ents)] + [x_trade(3 + i, s) for i, s in enumerate(
        [b"AAA", b"BBB", b"CCC", b"DDD", b"EEE", b"FFF", b"ZZZ"])]
    recs, dec = decode(msgs)
    ids = dec.symbol_map()
    assert ids["AAA"] == 5 and ids["FFF"] == 4000000000
    assigned = [ids[s] for s in ("BBB", "CCC", "DDD", "EEE")]
    assert assigned == list(range(4000000001, 4000000005))         # after every numeric id, in list order
    assert ids["ZZZ"] == 4000000005                                # not in the reference data: fallback
    assert len(set(ids.values())) == len(ids)
    assert dec.stats["ref_id_collisions"] == 1 and dec.stats["ref_nonnumeric_ids"] == 3
    defs = of_kind(recs, "instrument_def")
    assert [d["symbol"].decode() for d in defs] == ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
    trades = of_kind(recs, "trade")
    assert [int(x) for x in trades["instrument_id"]] == [ids[s] for s in
                                                         ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "ZZZ")]
    assert dec.reference["EEE"]["security_id"] == "" and dec.reference["DDD"]["security_id_source"] == "4"


def test_given_symbols_take_precedence():
    msgs = [m(b"A", 1), seclist(2, [(b"AAA", b"11", b"8"), (b"BBB", b"12", b"8")]), x_trade(3, b"AAA"),
            x_trade(4, b"BBB"), x_trade(5, b"CCC")]
    recs, dec = decode(msgs, symbols={"AAA": 3})
    assert dec.symbol_map() == {"AAA": 3, "BBB": 12}
    assert dec.stats["ref_premapped"] == 1
    assert [int(x) for x in of_kind(recs, "trade")["instrument_id"]] == [3, 12, 0]   # CCC: not in the map
    assert {d["symbol"].decode(): int(d["instrument_id"]) for d in of_kind(recs, "instrument_def")} == \
        {"AAA": 3, "BBB": 12}


def test_redefinition_and_second_connection_define_once():
    sl = seclist(2, [(b"AAA", b"21", b"8")])
    msgs = [m(b"A", 1), sl, seclist(3, [(b"AAA", b"22", b"8")]), x_trade(4, b"AAA")]
    recs, dec = decode(msgs)
    assert dec.symbol_map() == {"AAA": 21} and dec.stats["ref_redefined"] == 1
    assert (recs["rtype"] == DEF).sum() == 1
    again, dec = decode(msgs, dec=dec)                               # same decoder, another connection
    assert not (again["rtype"] == DEF).any() and dec.symbol_map() == {"AAA": 21}
    assert dec.stats["ref_symbols"] == 1 and dec.stats["ref_messages"] == 4


def test_secdef_field_order_and_fix42():
    d = m(b"d", 2, [(320, b"R"), (322, b"S"), (323, 1), (48, b"31"), (22, b"8"), (55, b"ESH7"),
                    (311, b"UNDERLYING"), (309, b"999")], begin=b"FIX.4.2")
    recs, dec = decode([m(b"A", 1, begin=b"FIX.4.2"), d, x_trade(3, b"ESH7")])
    assert dec.symbol_map() == {"ESH7": 31}
    assert dec.reference["ESH7"] == {"instrument_id": 31, "security_id": "31", "security_id_source": "8",
                                     "msg_type": "d"}


def test_long_symbol_truncated_in_record():
    sym = b"S" * 22
    recs, dec = decode([m(b"A", 1), seclist(2, [(sym, b"41", b"8")]), x_trade(3, sym)])
    d = of_kind(recs, "instrument_def")
    assert d["symbol"][0] == b"S" * 20 and d["instrument_id"][0] == 41


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_ref_entries_never_crash(data, is_list):
    out = fs._ref_entries(data, is_list, 1)
    assert all(e[0] and e[3] == 1 and e[4] in ("d", "y") for e in out)
    if not is_list:
        assert len(out) <= 1


# ---- replay summary ---------------------------------------------------------------------------------
def test_replay_summary_messages_by_type(tmp_path, capsys):
    from feedhandler.cli import main
    p = tmp_path / "ref.pcap"
    fs.synth(p, 250, seed=2, reference_data=True)
    _, stats = fs.replay_stream(p)
    assert main(["replay", str(p), "--json", "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["messages_by_type"] == stats["fix"]["by_msg_type"]
    assert sum(s["messages_by_type"].values()) == s["messages"] == 250
    assert s["reference"] == stats["reference"] and s["records_by_kind"].get("instrument_def") == 5
    # the books are keyed by the reference data's ids and named by its symbols
    names = {sym: r["instrument_id"] for sym, r in s["reference"].items()}
    assert s["bbo"] and {(row["symbol"], row["instrument_id"]) for row in s["bbo"]} <= set(names.items())
