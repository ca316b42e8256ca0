"""Helpers shared by the capture / framing / MoldUDP64 / pipeline tests (not a test module)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from feedhandler.records import DTYPES, RTYPE

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ITCH_DIR = DATA / "itch50"
SESSION = b"000010059B"
MIDNIGHT = 1_692_676_800_000_000_000  # 2023-08-22 00:00 America/New_York

GAP_OPENED, GAP_FILLED, GAP_LOST, GAP_RESET = 1, 2, 3, 4
F_BAD_TS_RECV = 0x08
F_MAYBE_BAD_BOOK = 0x04


def add_msg(ref: int, ts: int = 1000, locate: int = 7, shares: int = 100, price: int = 1_000_000) -> bytes:
    """An ITCH 5.0 'A' (add order, 36 bytes) whose order reference number identifies it in the output."""
    return (b"A" + struct.pack(">HH", locate, 0) + ts.to_bytes(6, "big") + struct.pack(">Q", ref) + b"B"
            + struct.pack(">I", shares) + b"TEST    " + struct.pack(">I", price))


def events(ticks: np.ndarray) -> list[tuple]:
    """('msg', sequence, order_id, ts_recv, flags) for MBO records, ('gap', kind, first, count, channel,
    session) for gap records, in stream order."""
    mbo = ticks.view(DTYPES["mbo"])
    gap = ticks.view(DTYPES["gap"])
    out = []
    for i, rt in enumerate(ticks["rtype"]):
        if rt == RTYPE["mbo"]:
            r = mbo[i]
            out.append(("msg", int(r["sequence"]), int(r["order_id"]), int(r["ts_recv"]), int(r["flags"])))
        elif rt == RTYPE["gap"]:
            g = gap[i]
            out.append(("gap", int(g["kind"]), int(g["first_missing"]), int(g["count"]), int(g["channel"]),
                        bytes(g["session"])))
        else:
            out.append(("other", int(rt)))
    return out


def msg_seqs(ev: list[tuple]) -> list[int]:
    return [e[1] for e in ev if e[0] == "msg"]


def gaps(ev: list[tuple], kind: int | None = None) -> list[tuple]:
    return [(e[1], e[2], e[3]) for e in ev if e[0] == "gap" and (kind is None or e[1] == kind)]


def mold_packets(first_seq: int, counts: list[int], session: bytes = SESSION, ts0: int = MIDNIGHT + 34_200 * 10**9):
    """Consecutive MoldUDP64 packets (seq, payload-messages) with `counts[i]` add-order messages each;
    message with sequence s has order_id s."""
    from feedhandler.capture.pcapwriter import build_moldudp64

    out = []
    s = first_seq
    for i, c in enumerate(counts):
        msgs = [add_msg(s + k) for k in range(c)]
        out.append((s, c, build_moldudp64(session, s, msgs)))
        s += c
    return out
