"""DBN output of every feed, read back with databento_dbn's own decoder: MDP3 MBO + trades (OUT.dbn)
and price levels as MBP-1 (OUT.mbp-1.dbn, checked against a pure-Python top-of-book reference), FIX
MBO/trade ticks; order events and other kinds (not DBN-representable) go to Parquet / .npy."""
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.output._mbp1 import Mbp1Converter
from feedhandler.output.dbn import mbp1_path
from feedhandler.replay import ReplayOptions, replay

dbn = pytest.importorskip("databento_dbn")
PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
UNDEF = records.UNDEF_PRICE


def read_dbn(path):
    dec = dbn.DBNDecoder()
    dec.write(Path(path).read_bytes())
    got = dec.decode()
    return got[0], got[1:]


def reference_mbp1(ticks):
    """Expected MBP-1 rows of mbp_update records: a plain-Python 10-deep outright book per instrument."""
    books, out = {}, []
    for r in records.view(ticks[ticks["rtype"] == records.RTYPE["mbp_update"]], "mbp_update"):
        if r["implied"]:
            continue
        iid, act, lvl = int(r["instrument_id"]), r["action"].decode(), int(r["level"])
        bk = books.setdefault(iid, {"B": [], "A": []})

        def top():
            b, a = bk["B"][:1], bk["A"][:1]
            return ((b[0] if b else (UNDEF, 0, 0)), (a[0] if a else (UNDEF, 0, 0)))

        before = top()
        side = r["side"].decode()
        entry = (int(r["price"]), int(r["size"]), int(r["number_of_orders"]))
        dact, depth = act, lvl - 1
        if act == "R":
            bk["B"], bk["A"], side, depth = [], [], "N", 0
        elif act == "D":
            bk[side], dact, depth = [], "C", 0
        elif act == "A":
            bk[side].insert(min(lvl - 1, len(bk[side])), entry)
            del bk[side][10:]
        elif act in "MO":
            dact = "M"
            if lvl - 1 < len(bk[side]):
                bk[side][lvl - 1] = entry
            elif act == "O" and lvl - 1 == len(bk[side]):
                bk[side].append(entry)
            else:
                continue
        elif act == "C":
            if lvl - 1 >= len(bk[side]):
                continue
            del bk[side][lvl - 1]
        elif act == "F":
            del bk[side][:lvl]
            dact, depth = "C", 0
        after = top()
        if act != "R" and after == before:
            continue
        out.append((iid, int(r["ts_event"]), int(r["price"]), int(r["size"]), dact, side, depth,
                    int(r["ts_recv"]), int(r["sequence"]), int(r["flags"]) & 0xFC) + after[0] + after[1])
    return out


def test_mdp3_dbn_mbo_and_mbp1(tmp_path):
    out = tmp_path / "cme.dbn"
    npy = tmp_path / "cme.npy"
    s = replay(PCAPS / "mdp3_sample.pcap", ReplayOptions(out=str(out)))
    replay(PCAPS / "mdp3_sample.pcap", ReplayOptions(out=str(npy)))
    ticks = np.load(npy).view(records.TICK_DTYPE)
    assert s["output"]["files"] == {"mbo": str(out), "mbp-1": mbp1_path(str(out))}
    assert set(s["output"]["not_written"]) == {"statistic", "security_status", "instrument_def"}
    # MBO file: the MBO records, the trades (action T) and the order fills (action F)
    meta, recs = read_dbn(out)
    assert str(meta.schema) in ("mbo", "Schema.MBO") and meta.dataset == "GLBX.MDP3"
    assert "ESZ0" in meta.symbols
    src = ticks[np.isin(ticks["rtype"], [records.RTYPE["mbo"], records.RTYPE["trade"]])]
    assert len(recs) == len(src) > 100
    mbo = records.view(src, "mbo")
    trade = records.view(src, "trade")
    for r, m, t, rt in zip(recs, mbo, trade, src["rtype"]):
        assert r.instrument_id == m["instrument_id"] and r.ts_event == m["ts_event"]
        if rt == records.RTYPE["mbo"]:
            assert (r.order_id, r.price, r.size, str(r.action)) == (m["order_id"], m["price"], m["size"],
                                                                     m["action"].decode())
        else:   # trade prints 'T', order fills 'F' (a TradeSummary's per-order entries), as in Parquet
            assert str(r.action) == t["action"].decode() and str(r.action) in ("T", "F")
    # MBP-1 file: every top-of-book change with the book after it
    meta1, recs1 = read_dbn(mbp1_path(str(out)))
    assert str(meta1.schema) in ("mbp-1", "Schema.MBP_1")
    exp = reference_mbp1(ticks)
    assert len(recs1) == len(exp) > 20
    for r, e in zip(recs1, exp):
        got = (r.instrument_id, r.ts_event, r.price, r.size, str(r.action), str(r.side), r.depth, r.ts_recv,
               r.sequence, int(r.flags), r.bid_px_00, r.bid_sz_00, r.bid_ct_00, r.ask_px_00, r.ask_sz_00,
               r.ask_ct_00)
        assert got == e
    assert s["output"]["records"] == len(recs) + len(recs1)


def test_mbp1_converter_agrees_with_mbp_book_set():
    from feedhandler.books import MbpBookSet
    from feedhandler.protocols.mdp3.pcap import decode_pcap

    ref, _ = decode_pcap(PCAPS / "mdp3_sample.pcap", channels={14310: 0, 15310: 0})
    conv, book = Mbp1Converter(), MbpBookSet()
    for i in range(0, len(ref), 17):     # batch boundaries do not matter
        conv.convert(ref[i: i + 17])
    book.apply(ref)
    assert book.instruments()
    for iid in book.instruments():
        assert conv.bbo(iid) == book.bbo(iid)
    with pytest.raises(ValueError):
        conv.convert(np.zeros(3, np.int64))


def test_fix_dbn_and_parquet(tmp_path):
    out = tmp_path / "fix.dbn"
    s = replay(PCAPS / "fix44_sample.pcap", ReplayOptions(out=str(out)))
    meta, recs = read_dbn(out)
    kinds = s["records_by_kind"]
    assert len(recs) == kinds["mbo"] + kinds["trade"] > 0
    assert set(meta.symbols) >= {"IBM", "MSFT"}
    assert s["output"]["not_written"]["order_event"] == kinds["order_event"]
    # mbp_update records of FIX market data become MBP-1 too
    _, recs1 = read_dbn(mbp1_path(str(out)))
    assert 0 < len(recs1) <= kinds["mbp_update"]
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pqo = tmp_path / "ouch.parquet"
    s2 = replay(PCAPS / "ouch42_sample.pcap", ReplayOptions(out=str(pqo)))
    t = pq.read_table(s2["output"]["files"]["order_event"])
    assert t.num_rows == s2["order_events"]["events"] == s2["records"]
    assert set(t.column_names) >= {"order_id", "event", "latency_ns", "client_ref"}
