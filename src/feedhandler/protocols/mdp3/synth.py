"""Synthetic CME MDP 3.0 captures (``feedhandler synth --protocol mdp3``) and a tiny pcap reader.

``generate(path, messages=N, seed=S)`` writes a classic pcap of Ethernet/IPv4/UDP frames whose
payloads are MDP 3.0 packets built with the schema codec (schema version 9 by default, the version of
the real captures): instrument definitions (future, option, spread), security status, then a
consistent stream of price-level book updates (with their MBO order entries), order-book updates,
trade summaries with order-level fills, volume and session statistics, and a snapshot of every
instrument at the end on the snapshot channel (SnapshotFullRefresh and SnapshotFullRefreshOrderBook). ``ab=True`` also sends every incremental packet on the
B feed (a second port), as CME does, for arbitration tests.
"""
from __future__ import annotations

import random
from pathlib import Path

from feedhandler.protocols.mdp3.pcap import read_pcap
from feedhandler.protocols.mdp3.schema import encode_message, encode_packet, load_schemas

__all__ = ["generate", "read_pcap", "INCREMENTAL_A", "INCREMENTAL_B", "SNAPSHOT"]

INCREMENTAL_A = ("224.0.31.1", 14310)
INCREMENTAL_B = ("224.0.32.1", 15310)
SNAPSHOT = ("224.0.31.43", 14320)
T0 = 1_700_000_000_000_000_000  # ns since epoch
TICK = 250_000_000  # price increment in 1e-9 units (0.25)


class _Book:
    """One instrument's outright book on one side: [price, qty, orders] best first."""

    def __init__(self):
        self.levels = {"0": [], "1": []}


def generate(path: str | Path, messages: int = 1000, seed: int = 1, *, version: int = 9,
             instruments: int = 4, ab: bool = False, schema_dir: str | Path | None = None,
             first_security_id: int = 100_000) -> dict:
    """Write a synthetic MDP 3.0 pcap; returns a summary dict (packets, messages, per template).
    Security ids are ``first_security_id + 7 * i`` (SBE int32)."""
    from feedhandler.capture.pcapwriter import build_udp_frame, write_pcap

    rng = random.Random(seed)
    s = load_schemas(schema_dir)[version]
    names = {t.description: t.name for t in sorted(s.templates.values(), key=lambda t: t.id)}
    sids = [first_security_id + 7 * i for i in range(instruments)]
    rpt = {sid: 0 for sid in sids}
    books = {sid: _Book() for sid in sids}
    mid = {sid: (4000 + 100 * i) * 1_000_000_000 for i, sid in enumerate(sids)}
    orders: dict[int, list] = {sid: [] for sid in sids}  # resting orders: [order_id, side, price, qty]
    next_oid = [10_000_000]
    trade_id = [1]
    summary: dict[str, int] = {}
    frames: list[tuple[int, bytes]] = []
    seq = [0]
    clock = [T0]

    def count(name):
        summary[name] = summary.get(name, 0) + 1

    def send(msgs, dst=INCREMENTAL_A, seqno=None):
        clock[0] += rng.randrange(1_000, 200_000)
        if seqno is None:
            seq[0] += 1
            seqno = seq[0]
        payload = encode_packet(seqno, clock[0], msgs)
        frames.append((clock[0] + 3_000, build_udp_frame(payload, dst=dst[0], dport=dst[1])))
        if ab and dst == INCREMENTAL_A:
            frames.append((clock[0] + 9_000, build_udp_frame(payload, dst=INCREMENTAL_B[0],
                                                             dport=INCREMENTAL_B[1])))

    def msg(desc, values=None, groups=None):
        name = names[desc]
        count(name)
        return encode_message(s, name, values, groups)

    def next_rpt(sid):
        rpt[sid] += 1
        return rpt[sid]

    # reference data first: a future per instrument, one option and one spread on the first
    defs = []
    for i, sid in enumerate(sids):
        defs.append(msg("MDInstrumentDefinitionFuture", {
            "MatchEventIndicator": 0x80, "SecurityUpdateAction": "A", "LastUpdateTime": clock[0],
            "MarketSegmentID": 1, "ApplID": 310, "SecurityID": sid, "Symbol": f"ESZ{i}",
            "SecurityGroup": "ES", "Asset": "ES", "MinPriceIncrement": TICK, "DisplayFactor": 1_000_000_000,
            "Currency": "USD", "SecurityType": "FUT", "CFICode": "FFIXSX",
        }, {"NoEvents": [], "NoMDFeedTypes": [{"MDFeedType": "GBX", "MarketDepth": 10}]}))
    if "MDInstrumentDefinitionOption" in names:
        defs.append(msg("MDInstrumentDefinitionOption", {
            "MatchEventIndicator": 0x80, "SecurityUpdateAction": "A", "LastUpdateTime": clock[0],
            "SecurityID": 900_001, "Symbol": "ESZ0 C4000", "PutOrCall": 1, "StrikePrice": 4000 * 10**9,
            "MinPriceIncrement": TICK, "DisplayFactor": 1_000_000_000, "SecurityGroup": "ES", "Asset": "ES",
        }))
    if "MDInstrumentDefinitionSpread" in names:
        defs.append(msg("MDInstrumentDefinitionSpread", {
            "MatchEventIndicator": 0x80, "SecurityUpdateAction": "A", "LastUpdateTime": clock[0],
            "SecurityID": 900_002, "Symbol": "ESZ0-ESH1", "MinPriceIncrement": TICK,
            "DisplayFactor": 1_000_000_000, "SecurityGroup": "ES", "Asset": "ES",
        }))
    for d in defs:
        send([d])
    send([msg("SecurityStatus", {"TransactTime": clock[0], "SecurityGroup": "ES", "Asset": "ES",
                                 "SecurityID": None, "TradeDate": 19700, "MatchEventIndicator": 0x80,
                                 "SecurityTradingStatus": 17, "HaltReason": 0, "SecurityTradingEvent": 0})])

    total = len(defs) + 1
    while total < messages:
        sid = rng.choice(sids)
        book = books[sid]
        side = rng.choice("01")
        lv = book.levels[side]
        r = rng.random()
        if r < 0.55 and len(orders[sid]) > 200:
            r = 0.9  # keep books small: cancel instead of adding
        ts = clock[0]
        batch = []
        if r < 0.55 or not lv:
            # a new order: new level or more size at an existing one, plus its MBO entry
            sign = -1 if side == "0" else 1
            price = mid[sid] + sign * TICK * rng.randrange(1, 12)
            qty = rng.randrange(1, 50)
            oid = next_oid[0]
            next_oid[0] += 1
            orders[sid].append([oid, side, price, qty])
            idx = next((k for k, l in enumerate(lv) if l[0] == price), None)
            if idx is None and len(lv) >= 10:
                orders[sid].pop()  # keep every level inside the published depth (10)
                continue
            if idx is None:
                lv.append([price, qty, 1])
                lv.sort(key=lambda l: -l[0] if side == "0" else l[0])
                idx = next(k for k, l in enumerate(lv) if l[0] == price)
                action = 0
            else:
                lv[idx][1] += qty
                lv[idx][2] += 1
                action = 1
            entry = {"MDEntryPx": price, "MDEntrySize": lv[idx][1], "SecurityID": sid, "RptSeq": next_rpt(sid),
                     "NumberOfOrders": lv[idx][2], "MDPriceLevel": idx + 1, "MDUpdateAction": action,
                     "MDEntryType": side}
            batch.append(msg("MDIncrementalRefreshBook", {"TransactTime": ts, "MatchEventIndicator": 0x84},
                             {"NoMDEntries": [entry],
                              "NoOrderIDEntries": [{"OrderID": oid, "MDOrderPriority": oid, "MDDisplayQty": qty,
                                                    "ReferenceID": 1, "OrderUpdateAction": 0}]}))
            if rng.random() < 0.3:
                batch.append(msg("MDIncrementalRefreshOrderBook", {"TransactTime": ts, "MatchEventIndicator": 0x80},
                                 {"NoMDEntries": [{"OrderID": oid, "MDOrderPriority": oid, "MDEntryPx": price,
                                                   "MDDisplayQty": qty, "SecurityID": sid,
                                                   "MDUpdateAction": 1, "MDEntryType": side}]}))
        elif r < 0.8:
            # a trade at the best level of `side`: trade summary with fills, volume, book change
            price, lqty, _n = lv[0]
            resting = [o for o in orders[sid] if o[1] == side and o[2] == price]
            if not resting:
                continue
            o = resting[0]
            q = rng.randrange(1, o[3] + 1)
            aggr = 2 if side == "0" else 1
            batch.append(msg("MDIncrementalRefreshTradeSummary", {"TransactTime": ts, "MatchEventIndicator": 0x01},
                             {"NoMDEntries": [{"MDEntryPx": price, "MDEntrySize": q, "SecurityID": sid,
                                               "RptSeq": next_rpt(sid), "NumberOfOrders": 2, "AggressorSide": aggr,
                                               "MDUpdateAction": 0, "MDTradeEntryID": trade_id[0]}],
                              "NoOrderIDEntries": [{"OrderID": next_oid[0] + 10**9, "LastQty": q},
                                                   {"OrderID": o[0], "LastQty": q}]}))
            trade_id[0] += 1
            batch.append(msg("MDIncrementalRefreshVolume", {"TransactTime": ts, "MatchEventIndicator": 0x02},
                             {"NoMDEntries": [{"MDEntrySize": trade_id[0] * 3, "SecurityID": sid,
                                               "RptSeq": next_rpt(sid), "MDUpdateAction": 0}]}))
            o[3] -= q
            lv[0][1] -= q
            oact = 1
            if o[3] == 0:
                orders[sid].remove(o)
                lv[0][2] -= 1
                oact = 2
            if lv[0][1] == 0:
                del lv[0]
                entry = {"MDEntryPx": price, "MDEntrySize": 0, "SecurityID": sid, "RptSeq": next_rpt(sid),
                         "NumberOfOrders": 0, "MDPriceLevel": 1, "MDUpdateAction": 2, "MDEntryType": side}
            else:
                entry = {"MDEntryPx": price, "MDEntrySize": lv[0][1], "SecurityID": sid, "RptSeq": next_rpt(sid),
                         "NumberOfOrders": lv[0][2], "MDPriceLevel": 1, "MDUpdateAction": 1, "MDEntryType": side}
            batch.append(msg("MDIncrementalRefreshBook", {"TransactTime": ts, "MatchEventIndicator": 0x84},
                             {"NoMDEntries": [entry],
                              "NoOrderIDEntries": [{"OrderID": o[0], "MDOrderPriority": o[0], "MDDisplayQty": o[3],
                                                    "ReferenceID": 1, "OrderUpdateAction": oact}]}))
        elif r < 0.95:
            # cancel a resting order
            side_orders = [o for o in orders[sid] if o[1] == side]
            if not side_orders:
                continue
            o = rng.choice(side_orders)
            idx = next(k for k, l in enumerate(lv) if l[0] == o[2])
            orders[sid].remove(o)
            lv[idx][1] -= o[3]
            lv[idx][2] -= 1
            if lv[idx][1] <= 0 or lv[idx][2] <= 0:
                price = lv[idx][0]
                del lv[idx]
                entry = {"MDEntryPx": price, "MDEntrySize": 0, "SecurityID": sid, "RptSeq": next_rpt(sid),
                         "NumberOfOrders": 0, "MDPriceLevel": idx + 1, "MDUpdateAction": 2, "MDEntryType": side}
                # orders left at that price would be inconsistent: drop them too
                for x in [x for x in orders[sid] if x[1] == side and x[2] == price]:
                    orders[sid].remove(x)
            else:
                entry = {"MDEntryPx": lv[idx][0], "MDEntrySize": lv[idx][1], "SecurityID": sid,
                         "RptSeq": next_rpt(sid), "NumberOfOrders": lv[idx][2], "MDPriceLevel": idx + 1,
                         "MDUpdateAction": 1, "MDEntryType": side}
            batch.append(msg("MDIncrementalRefreshBook", {"TransactTime": ts, "MatchEventIndicator": 0x84},
                             {"NoMDEntries": [entry],
                              "NoOrderIDEntries": [{"OrderID": o[0], "MDOrderPriority": o[0], "MDDisplayQty": o[3],
                                                    "ReferenceID": 1, "OrderUpdateAction": 2}]}))
        else:
            batch.append(msg("MDIncrementalRefreshSessionStatistics",
                             {"TransactTime": ts, "MatchEventIndicator": 0x88},
                             {"NoMDEntries": [{"MDEntryPx": mid[sid] + TICK * rng.randrange(-8, 9),
                                               "SecurityID": sid, "RptSeq": next_rpt(sid),
                                               "OpenCloseSettlFlag": None, "MDUpdateAction": 0,
                                               "MDEntryType": rng.choice("78"), "MDEntrySize": None}]}))
        total += len(batch)
        send(batch)

    # the snapshot loop: one SnapshotFullRefresh per instrument on the snapshot channel
    snap_seq = 0
    for sid in sids:
        ents = []
        for side in "01":
            for k, (price, qty, n) in enumerate(books[sid].levels[side][:10]):
                ents.append({"MDEntryPx": price, "MDEntrySize": qty, "NumberOfOrders": n, "MDPriceLevel": k + 1,
                             "TradingReferenceDate": None, "OpenCloseSettlFlag": None, "SettlPriceType": 0,
                             "MDEntryType": side})
        snap_seq += 1
        name = names["SnapshotFullRefresh"]
        count(name)
        m = encode_message(s, name, {"LastMsgSeqNumProcessed": seq[0], "TotNumReports": len(sids), "SecurityID": sid,
                                     "RptSeq": rpt[sid], "TransactTime": clock[0], "LastUpdateTime": T0,
                                     "TradeDate": 19700, "MDSecurityTradingStatus": 17}, {"NoMDEntries": ents})
        send([m], dst=SNAPSHOT, seqno=snap_seq)
        if "SnapshotFullRefreshOrderBook" in names:
            # the order book in chunks of at most 40 orders (29 bytes each: one packet under the MTU)
            name = names["SnapshotFullRefreshOrderBook"]
            rows = [{"OrderID": o[0], "MDOrderPriority": o[0], "MDEntryPx": o[2], "MDDisplayQty": o[3],
                     "MDEntryType": o[1]} for o in orders[sid]]
            chunks = [rows[k : k + 40] for k in range(0, len(rows), 40)] or [[]]
            for k, chunk in enumerate(chunks):
                count(name)
                m = encode_message(s, name, {"LastMsgSeqNumProcessed": seq[0], "TotNumReports": len(sids),
                                             "SecurityID": sid, "NoChunks": len(chunks), "CurrentChunk": k + 1,
                                             "TransactTime": clock[0]}, {"NoMDEntries": chunk})
                snap_seq += 1
                send([m], dst=SNAPSHOT, seqno=snap_seq)
    frames.sort(key=lambda f: f[0])
    write_pcap(path, frames)
    return {"packets": len(frames), "messages": sum(summary.values()), "templates": summary,
            "books": {sid: {side: [tuple(l) for l in books[sid].levels[side]] for side in "01"} for sid in sids},
            "orders": {sid: [tuple(o) for o in orders[sid]] for sid in sids}}
