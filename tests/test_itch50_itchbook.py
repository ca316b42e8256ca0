"""Differential test against a third-party ITCH 5.0 parser (PyPI ``itch-book``, a C++ core written
independently of this project's field table): a coherent synthetic session is decoded by both and
every wire field both expose must agree. This catches a wrong field order or offset in the table,
which the native-vs-reference tests (both driven by the same table) cannot."""
from __future__ import annotations

import random

import numpy as np
import pytest

from feedhandler import records
from feedhandler.protocols import itch50_codec as codec
from feedhandler.protocols.itch50 import Itch50Decoder

itch_core = pytest.importorskip("itch_book._core", reason="itch-book (independent ITCH parser) not installed")

MIDNIGHT = 1_692_676_800_000_000_000
F_NONPRINTABLE = 0x01


def synthetic_session(rng: random.Random, n: int) -> list[bytes]:
    """A session whose order events reference live orders with valid sizes (so a book-building parser
    accepts every one), with every message type itch-book reports mixed in."""
    syms = {loc: f"S{loc:03d}" for loc in range(1, 6)}
    msgs = [codec.encode("S", event_code="O", timestamp=1)]
    for loc, sym in syms.items():
        msgs.append(codec.encode("R", **dict(codec.random_fields("R", rng), stock_locate=loc, stock=sym, timestamp=2)))
    live: dict[int, list] = {}  # order id -> [locate, side, shares, price]
    next_id, match, ts = 1, 1, 3
    for _ in range(n):
        ts += rng.randrange(1, 10**6)
        loc = rng.choice(list(syms))
        kind = rng.choices("AFECXUDPQBIHhYJ", weights=[30, 5, 8, 5, 8, 8, 8, 3, 1, 1, 2, 1, 1, 1, 1])[0]
        hd = dict(stock_locate=loc, tracking_number=rng.randrange(1 << 16), timestamp=ts)
        if kind in "ECXUD" and not live:
            kind = "A"
        if kind in "AF":
            side = rng.choice("BS")
            price = rng.randrange(1, 20000) * 100
            shares = rng.randrange(1, 5000)
            extra = {"attribution": rng.choice(["UBSS", "GSCO", "MSCO"])} if kind == "F" else {}
            msgs.append(codec.encode(kind, **hd, order_reference_number=next_id, buy_sell_indicator=side,
                                     shares=shares, stock=syms[loc], price=price, **extra))
            live[next_id] = [loc, side, shares, price]
            next_id += 1
        elif kind in "ECXUD":
            oid = rng.choice(list(live))
            o = live[oid]
            hd["stock_locate"] = o[0]
            if kind == "E" or kind == "C" or kind == "X":
                q = rng.randrange(1, o[2] + 1)
                if kind == "E":
                    msgs.append(codec.encode("E", **hd, order_reference_number=oid, executed_shares=q,
                                             match_number=match))
                elif kind == "C":
                    msgs.append(codec.encode("C", **hd, order_reference_number=oid, executed_shares=q,
                                             match_number=match, printable=rng.choice("YN"),
                                             execution_price=rng.randrange(1, 20000) * 100))
                else:
                    msgs.append(codec.encode("X", **hd, order_reference_number=oid, cancelled_shares=q))
                match += kind != "X"
                o[2] -= q
                if o[2] == 0:
                    del live[oid]
            elif kind == "U":
                shares, price = rng.randrange(1, 5000), rng.randrange(1, 20000) * 100
                msgs.append(codec.encode("U", **hd, original_order_reference_number=oid,
                                         new_order_reference_number=next_id, shares=shares, price=price))
                live[next_id] = [o[0], o[1], shares, price]
                del live[oid]
                next_id += 1
            else:
                msgs.append(codec.encode("D", **hd, order_reference_number=oid))
                del live[oid]
        elif kind == "P":
            msgs.append(codec.encode("P", **hd, order_reference_number=0, buy_sell_indicator="B",
                                     shares=rng.randrange(1, 10**6), stock=syms[loc],
                                     price=rng.randrange(1, 20000) * 100, match_number=match))
            match += 1
        elif kind == "Q":
            msgs.append(codec.encode("Q", **hd, shares=rng.randrange(0, 1 << 32), stock=syms[loc],
                                     cross_price=rng.randrange(1, 20000) * 100, match_number=match,
                                     cross_type=rng.choice("OCHI")))
            match += 1
        elif kind == "B":
            msgs.append(codec.encode("B", **hd, match_number=rng.randrange(1, match + 1)))
        else:
            fields = dict(codec.random_fields(kind, rng), **hd)
            fields["stock"] = syms[loc]
            msgs.append(codec.encode(kind, **fields))
    return msgs


def test_agrees_with_itch_book():
    rng = random.Random(20230822)
    msgs = synthetic_session(rng, 4000)
    buf = codec.binaryfile(msgs)

    ses = itch_core.Session(tables=["messages", "trades", "noii", "halts", "reg_sho", "luld"], depth=0, symbols=[])
    ses.feed(buf)
    stats = ses.stats()
    assert stats["messages"] == len(msgs)
    assert stats["unknown"] == stats["malformed"] == stats["missing_ref"] == stats["clamped"] == 0

    dec = Itch50Decoder(midnight_ns=MIDNIGHT)
    out = dec.decode_binaryfile(buf, first_sequence=1)
    assert dec.counters()["decoded"] == len(msgs)
    by_seq: dict[int, list] = {}
    for i, rt in enumerate(out["rtype"]):
        name = records.RTYPE_NAME[int(rt)]
        rec = records.view(out[i : i + 1], name)[0]
        by_seq.setdefault(int(rec["sequence"]), []).append((name, rec))
    checked = {}

    def rows(table):
        cols = getattr(ses, "take_" + table)()
        keys = list(cols)
        for j in range(len(cols["seq"])):
            yield {k: cols[k][j] for k in keys}

    def common(row, rec):
        assert rec["instrument_id"] == row["locate"]
        assert rec["ts_event"] == MIDNIGHT + int(row["ts"])

    mpids = None
    for row in rows("messages"):
        recs = by_seq[int(row["seq"])]
        t = chr(row["type"])
        checked[t] = checked.get(t, 0) + 1
        name, rec = recs[-1]
        assert name == "mbo"
        common(row, rec)
        assert rec["order_id"] == row["order_id"]
        if t in "AF":
            assert (rec["price"], rec["size"]) == (row["px"] * 100_000, row["size"])
            assert rec["side"] == {ord("B"): b"B", ord("S"): b"A"}[int(row["side"])]
            if t == "F":
                mpids = mpids or ses.mpids()
                assert rec["attribution"] == mpids[int(row["mpid"])].encode()
        elif t in "EX":
            assert rec["size"] == row["size"]
        elif t == "C":
            assert (rec["price"], rec["size"]) == (row["px"] * 100_000, row["size"])
            assert bool(rec["flags"] & F_NONPRINTABLE) == (not row["printable"])
        elif t == "U":
            assert recs[0][1]["order_id"] == row["old_order_id"]
            assert (rec["price"], rec["size"]) == (row["px"] * 100_000, row["size"])
        elif t == "D":
            assert rec["size"] == 0
    for row in rows("trades"):
        t = chr(row["kind"])
        name, rec = by_seq[int(row["seq"])][-1]
        common(row, rec)
        if t in "EC":
            assert rec["match_number"] == row["match"]
            continue
        checked[t] = checked.get(t, 0) + 1
        assert rec["match_number"] == row["match"]
        if t == "P":
            assert (rec["price"], rec["size"], rec["order_id"]) == (row["px"] * 100_000, row["size"], row["order_id"])
        elif t == "Q":
            assert (rec["price"], rec["size"], rec["depth"]) == (row["px"] * 100_000, row["size"], row["cross_type"])
        else:
            assert name == "broken_trade"
    for row in rows("noii"):
        (_, a), (_, b) = by_seq[int(row["seq"])]
        common(row, a)
        checked["I"] = checked.get("I", 0) + 1
        assert (a["paired_shares"], a["imbalance_shares"]) == (row["paired"], row["imbalance"])
        assert (a["imbalance_direction"], a["cross_type"], a["price_variation_indicator"]) == (
            bytes([row["direction"]]), bytes([row["cross_type"]]), bytes([row["variation"]]))
        assert a["current_reference_price"] == row["ref_px"] * 100_000
        assert (b["far_price"], b["near_price"]) == (row["far_px"] * 100_000, row["near_px"] * 100_000)
    for row in rows("halts"):
        name, rec = by_seq[int(row["seq"])][0]
        common(row, rec)
        t = chr(row["kind"])
        checked[t] = checked.get(t, 0) + 1
        if t == "H":
            assert rec["trading_state"] == bytes([row["state"]])
            assert rec["reason"] == int(row["reason"]).to_bytes(4, "little").rstrip(b"\0")
        else:
            assert (rec["market_code"], rec["halt_action"]) == (bytes([row["market"]]), bytes([row["state"]]))
    for row in rows("reg_sho"):
        name, rec = by_seq[int(row["seq"])][0]
        common(row, rec)
        checked["Y"] = checked.get("Y", 0) + 1
        assert rec["action"] == bytes([row["action"]])
    for row in rows("luld"):
        name, rec = by_seq[int(row["seq"])][0]
        common(row, rec)
        checked["J"] = checked.get("J", 0) + 1
        assert (rec["reference_price"], rec["upper_price"], rec["lower_price"]) == (
            row["ref_px"] * 100_000, row["upper_px"] * 100_000, row["lower_px"] * 100_000)
        assert rec["extension"] == row["extension"]
    # Stock directory: itch-book's symbol table against our records.
    dirs = {int(r["instrument_id"]): r for r in records.view(out[out["rtype"] == records.RTYPE["stock_directory"]],
                                                             "stock_directory")}
    for (loc, sym, mcat, fin, lot, lots_only, icls, isub, auth, ssti, ipo, luld, etp, lev, inv) in ses.take_symbols():
        r = dirs[loc]
        assert r["symbol"].decode().strip() == sym and r["round_lot_size"] == lot and r["etp_leverage_factor"] == lev
        assert [r[f].decode() for f in ("market_category", "financial_status", "issue_classification", "authenticity",
                                        "short_sale_threshold", "ipo_flag", "luld_ref_price_tier", "etp_flag",
                                        "inverse_indicator")] == [mcat, fin, icls, auth, ssti, ipo, luld, etp, inv]
        assert r["issue_subtype"].decode().strip() == isub.strip()
        assert bool(r["round_lots_only"] == b"Y") == lots_only
        checked["R"] = checked.get("R", 0) + 1
    # Every type itch-book reports was exercised.
    assert set(checked) == set("AFECXUDPQBIHhYJR"), checked
    assert sum(checked.values()) == len(msgs) - 1  # all but the system event
