"""A realistic synthetic NASDAQ TotalView-ITCH 5.0 trading day.

``generate_day`` builds the whole day in memory in three steps:

1. the reference and status messages of a day (system events O S Q M E C, stock directory, trading
   actions, Reg SHO, MPP, MWCB decline levels, IPO quoting, LULD collars, an operational halt, RPII,
   a DLCR message), encoded with ``itch50_codec.encode`` (there are only a few per symbol);
2. the order flow (adds, deletes, cancels, replaces, executions, trades, crosses, NOII, broken
   trades), simulated natively by ``_itch_day.simulate`` (see there: price-time priority books per
   symbol, no reference to a dead order), as columns;
3. the columns are turned into wire bytes with numpy dtypes derived from ``itch50_spec`` (one
   dtype per message type: no layout is typed here) and merged with (1) by timestamp.

Order lifetimes (the model; constants in ``_itch_day``, ``DEFAULT_MIX`` and ``BURST*`` below). On a
real NASDAQ day most orders are cancelled soon after they are added - a large share within a second,
many within a millisecond - and a minority rests for minutes to hours; deletes and replaces hit recent
orders far more often than old ones, and executions hit the top of the book. The generator does:

- bursts: bulk events come in bursts microseconds apart (``BURST``), and an event within
  ``BURST_GAP_NS`` of the previous one stays on its instrument with probability ``BURST_STICK``;
- lifetimes: every new order (add, or the new order of a replace) draws an intended lifetime in
  events of its instrument from a mixture of two log-logistic laws (70 % fleeting, median 1 event;
  30 % resting, median 2000 events; shape 1, i.e. a power-law tail P(L > x) ~ 1/x); a delete or a
  replace takes the instrument's live order whose lifetime runs out first (a deadline heap), a
  partial cancel any live order, an execution the best-priced oldest order of a side;
- balance: adds (A, F) and removals (D, full E/C) nearly cancel out (``DEFAULT_MIX``), so the live
  orders grow by about 0.02 per message: about 50 thousand at the end of a 2 M-message day with 2000
  symbols, about 230 thousand after 10 M messages with 8000 symbols (not millions).

Measured on ``generate_day(2_000_000, 2000, seed=7)`` (tests/test_synth_lifetimes.py checks the same
properties on a smaller day): of the orders deleted or replaced, 36 % lived under 1 s, more than a
quarter under a millisecond, the median lifetime is about 20 s and the 99th percentile about 3 hours.

The result, a :class:`SynthDay`, writes itself as a BinaryFILE (optionally gzip) or as a MoldUDP64
capture (Ethernet/IPv4/UDP multicast, classic nanosecond pcap or pcapng) through
``feedhandler.capture.pcapwriter``.
"""
from __future__ import annotations

import datetime as _dt
import gzip as _gzip
import os
import random
from dataclasses import dataclass, field
from typing import Iterator
from zoneinfo import ZoneInfo

import numpy as np

from feedhandler.capture import pcapwriter
from feedhandler.protocols import itch50_codec
from feedhandler.protocols.itch50_spec import BY_TYPE, LENGTH
from feedhandler.synth import _itch_day
from feedhandler.synth.symbols import MPIDS, REAL_TICKERS, directory_fields, make_tickers

__all__ = ["SynthDay", "generate_day", "DEFAULT_MIX", "DEPTH_PROFILES", "DEFAULT_DEPTH_PROFILE",
           "DEFAULT_CONCENTRATION", "wire_dtype", "encode_columns"]

NS = 1_000_000_000
MOLD_HEADER = 20                 # bytes: session (10) + sequence (8) + count (2)
DEFAULT_SESSION = "SYNTH00001"
HOUR = 3600 * NS
MINUTE = 60 * NS

# Share of the bulk order flow per ITCH message type (crosses, NOII and reference messages come on
# top, scheduled). Close to a real TotalView day: adds ~44 %, deletes ~40 %, replaces ~9 %,
# executions a few %. Balance: orders come from A/F (0.44) and leave through D (0.395) and the full
# executions (about 2/3 of E/C, 0.035), so the live orders grow by about 0.02 per message - some
# 100-300 thousand live at the end of a 10 M-message day, as on a real book, not millions. Which
# order a delete or replace hits follows the lifetime model of `_itch_day` (most die young).
DEFAULT_MIX = {
    "A": 0.4300,
    "F": 0.0100,
    "D": 0.3950,
    "X": 0.0100,
    "U": 0.0930,
    "E": 0.0500,
    "C": 0.0020,
    "P": 0.0100,
    "B": 0.00001,
}

# Depth of the books: where new orders go, in ticks from the fair value (see _itch_day.distance): a
# share `near_share` of them a geometric number of ticks away with mean `near_mean`, the others with
# mean `deep_mean`, at most `max_ticks`. With the day's concentration (below) and its order lifetimes
# this sets how many price levels a book has. "normal" is the generator's historical law (the same
# seed gives the same bytes as before the profiles existed).
DEPTH_PROFILES = {
    "shallow": {"near_share": 0.95, "near_mean": 2.0, "deep_mean": 10.0, "max_ticks": 100},
    "normal": {"near_share": 0.75, "near_mean": 3.0, "deep_mean": 49.0, "max_ticks": 2000},
    "deep": {"near_share": 0.50, "near_mean": 5.0, "deep_mean": 300.0, "max_ticks": 5000},
}
DEFAULT_DEPTH_PROFILE = "normal"
# Concentration: symbol k (by rank of activity, 0 = busiest) gets a share of the order flow
# proportional to 1 / (k + 1) ** concentration (Zipf). 0 spreads the flow evenly; 0.9 (default) is
# close to a real day, where a few dozen names carry a large part of the messages; above 1 a handful
# of symbols take nearly everything, so their books are deep.
DEFAULT_CONCENTRATION = 0.9

# Time of day (ns since midnight, US/Eastern).
T_START_MESSAGES = 3 * HOUR + 2 * MINUTE
T_START_SYSTEM = 4 * HOUR
T_OPEN = 9 * HOUR + 30 * MINUTE
T_CLOSE = 16 * HOUR
T_END_SYSTEM = 20 * HOUR
T_END_MESSAGES = 20 * HOUR + 5 * MINUTE
# Bulk order flow: pre-market, regular session (U-shaped inside), post-market.
BULK_BOUNDS = (T_START_SYSTEM, T_OPEN, T_CLOSE, T_END_SYSTEM)
BULK_WEIGHTS = (0.08, 0.88, 0.04)
# Bursts: an event at most BURST_GAP_NS after the previous one stays on its instrument with
# probability BURST_STICK (order lifetimes are counted in instrument events: see _itch_day).
BURST = 0.9                      # probability that an event continues the previous one's burst
BURST_GAP_NS = 20_000
BURST_STICK = 0.9


# ---- wire encoding from the field table -----------------------------------------------------------
_NP_KIND = {"char": "S1", "u16": ">u2", "u32": ">u4", "u64": ">u8", "price4": ">u4", "price8": ">u8"}


def wire_dtype(type_char: str) -> np.dtype:
    """The numpy dtype of one ITCH message, derived from ``itch50_spec`` (ts48 -> ``<name>_hi`` u16 +
    ``<name>_lo`` u32, alpha -> ``S<n>``); ``itemsize`` is the message length."""
    msg = BY_TYPE[type_char]
    names, formats, offsets = [], [], []
    for f, off in zip(msg.fields, msg.offsets().values()):
        if f.kind == "ts48":
            names += [f.name + "_hi", f.name + "_lo"]
            formats += [">u2", ">u4"]
            offsets += [off, off + 2]
        else:
            names.append(f.name)
            formats.append(f"S{f.size}" if f.kind == "alpha" else _NP_KIND[f.kind])
            offsets.append(off)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.length})


def encode_columns(type_char: str, n: int, columns: dict) -> np.ndarray:
    """Encode n messages of one type from column arrays (wire units; chars/alpha as bytes arrays).

    Returns a (n, length) uint8 array, one message per row. Missing fields are zero bytes, except alpha
    and char fields, which are spaces, as ``itch50_codec.encode`` leaves them.
    """
    dt = wire_dtype(type_char)
    arr = np.zeros(n, dtype=dt)
    msg = BY_TYPE[type_char]
    for f in msg.fields:
        if f.kind in ("char", "alpha") and f.name not in columns:
            arr[f.name] = b" " * f.size
    arr["message_type"] = type_char.encode()
    for name, col in columns.items():
        if name == "timestamp":
            col = np.asarray(col, dtype=np.uint64)
            arr["timestamp_hi"] = (col >> np.uint64(32)).astype(np.uint16)
            arr["timestamp_lo"] = (col & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        else:
            arr[name] = col
    return arr.view(np.uint8).reshape(n, msg.length)


# ---- the day -------------------------------------------------------------------------------------
@dataclass
class SynthDay:
    """One generated ITCH 5.0 day.

    ``framed`` is the BinaryFILE image (each message preceded by its u16 big-endian length);
    message i is ``framed[starts[i] + 2 : starts[i + 1]]``.
    """

    date: _dt.date
    midnight_ns: int              # ns since the UNIX epoch of the day's midnight, America/New_York
    symbols: list[str]            # ticker of stock locate i + 1
    types: np.ndarray             # uint8 message type per message
    timestamps: np.ndarray        # uint64 ns since midnight per message
    starts: np.ndarray            # int64, len n + 1
    framed: np.ndarray            # uint8 BinaryFILE image
    live_orders: int = 0          # orders still on the books at the end of the day
    seed: int = 0
    stats: dict = field(default_factory=dict)

    # -- queries
    @property
    def n_messages(self) -> int:
        return int(self.types.shape[0])

    def message(self, i: int) -> bytes:
        return self.framed[self.starts[i] + 2 : self.starts[i + 1]].tobytes()

    def messages(self) -> Iterator[bytes]:
        buf = self.framed.tobytes()
        st = self.starts.tolist()
        for i in range(len(st) - 1):
            yield buf[st[i] + 2 : st[i + 1]]

    def counts(self) -> dict[str, int]:
        """Messages per type character."""
        vals, cnt = np.unique(self.types, return_counts=True)
        return {chr(v): int(c) for v, c in zip(vals, cnt)}

    def binaryfile(self) -> bytes:
        return self.framed.tobytes()

    # -- writers
    def write_binaryfile(self, path: str | os.PathLike, *, gzip: bool = False) -> None:
        """NASDAQ BinaryFILE day file (optionally gzip-compressed)."""
        if gzip:
            # mtime 0 and no file name in the gzip header: the same day gives the same bytes
            with open(path, "wb") as raw, _gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw,
                                                         mtime=0) as f:
                f.write(memoryview(self.framed))
        else:
            with open(path, "wb") as f:
                f.write(memoryview(self.framed))

    def packet_table(self, *, max_payload: int = 1400, max_span_ns: int = 50_000, heartbeat_ns: int = NS,
                     max_heartbeats_per_gap: int = 1, latency_ns: int = 25_000, first_sequence: int = 1) -> dict:
        """The MoldUDP64 packets of the day as columns: ts (capture time, ns since epoch), seq, count,
        body_a/body_b (byte range of the length-prefixed messages in ``framed``).

        Packets hold as many messages as fit in ``max_payload`` bytes (MoldUDP64 header included)
        that lie within ``max_span_ns`` of the packet's first message; heartbeats (count 0) fill quiet
        periods every ``heartbeat_ns`` (at most ``max_heartbeats_per_gap`` per gap, to keep files
        small); an end-of-session packet (count 0xFFFF) closes the stream.
        """
        bounds = _itch_day.pack_packets(self.starts, self.timestamps, max_payload - MOLD_HEADER, max_span_ns)
        first, end = bounds[:-1], bounds[1:]
        # capture time: the last message's exchange time + wire latency + a little jitter
        last = self.timestamps[end - 1].astype(np.int64)
        rng = np.random.Generator(np.random.PCG64(self.seed & 0xFFFFFFFF))
        cap = self.midnight_ns + last + latency_ns + rng.integers(0, 5_000, size=last.shape[0])
        cap = np.maximum.accumulate(cap)
        seq = first.astype(np.uint64) + np.uint64(first_sequence)
        count = (end - first).astype(np.int32)
        body_a, body_b = self.starts[first], self.starts[end]
        # heartbeats in the quiet gaps between data packets
        if heartbeat_ns > 0 and cap.shape[0] > 1:
            gap = cap[1:] - cap[:-1]
            nhb = np.minimum((gap - 1) // heartbeat_ns, max_heartbeats_per_gap).clip(0)
            owner = np.repeat(np.arange(1, cap.shape[0]), nhb)          # the data packet each precedes
            k = np.arange(owner.shape[0]) - np.repeat(np.cumsum(nhb) - nhb, nhb) + 1
            hb_ts = cap[owner - 1] + k * heartbeat_ns
            pos = np.arange(cap.shape[0]) + np.concatenate(([0], np.cumsum(nhb)))
            n = cap.shape[0] + owner.shape[0]
            ts_all = np.empty(n, np.int64)
            seq_all = np.empty(n, np.uint64)
            cnt_all = np.zeros(n, np.int32)
            a_all = np.zeros(n, np.int64)
            b_all = np.zeros(n, np.int64)
            hb_pos = np.setdiff1d(np.arange(n), pos, assume_unique=True)
            ts_all[pos], seq_all[pos], cnt_all[pos], a_all[pos], b_all[pos] = cap, seq, count, body_a, body_b
            ts_all[hb_pos], seq_all[hb_pos] = hb_ts, seq[owner]
            cap, seq, count, body_a, body_b = ts_all, seq_all, cnt_all, a_all, b_all
        end_t = int(cap[-1]) if cap.shape[0] else self.midnight_ns + T_END_MESSAGES
        next_seq = first_sequence + self.n_messages
        return {
            "ts": np.append(cap, end_t + 1_000_000).astype(np.int64),
            "seq": np.append(seq, np.uint64(next_seq)).astype(np.uint64),
            "count": np.append(count, pcapwriter.MOLD_END_OF_SESSION).astype(np.int32),
            "body_a": np.append(body_a, 0).astype(np.int64),
            "body_b": np.append(body_b, 0).astype(np.int64),
        }

    def packets(self, *, session: str = DEFAULT_SESSION, **table_kw) -> Iterator[tuple[int, bytes]]:
        """MoldUDP64 payloads with their capture times, (ts_ns since epoch, payload), built with
        ``pcapwriter.build_moldudp64`` (see ``packet_table`` for the options)."""
        tb = self.packet_table(**table_kw)
        buf = self.framed
        for t, sq, c, a, b in zip(tb["ts"].tolist(), tb["seq"].tolist(), tb["count"].tolist(),
                                  tb["body_a"].tolist(), tb["body_b"].tolist()):
            yield t, pcapwriter.build_moldudp64(session, sq, [], count=c) + buf[a:b].tobytes()

    def write_pcap(self, path: str | os.PathLike, *, pcapng: bool = False, session: str = DEFAULT_SESSION,
                   src: str = "206.200.43.72", group: str = "233.54.12.111", sport: int = 18001,
                   dport: int = 26477, vlan: int | None = None, **table_kw) -> int:
        """Write the day as a MoldUDP64 capture (nanosecond pcap, or pcapng with ``pcapng=True``).

        Classic pcap is laid out natively (``_itch_day.pcap_records``, byte-identical to
        ``pcapwriter.pcap_bytes`` of the same packets: a test checks it); pcapng goes through
        ``pcapwriter.pcapng_bytes`` packet by packet (slower: about 100 k packets/s).
        Returns the number of packets written.
        """
        if pcapng:
            frames = [(t, pcapwriter.build_udp_frame(p, src, group, sport, dport, vlan=vlan))
                      for t, p in self.packets(session=session, **table_kw)]
            with open(path, "wb") as f:
                f.write(pcapwriter.pcapng_bytes(frames, extra_blocks=False))
            return len(frames)
        tb = self.packet_table(**table_kw)
        template = np.frombuffer(pcapwriter.build_udp_frame(b"", src, group, sport, dport, vlan=vlan), np.uint8)
        ip_off = template.shape[0] - 28  # the template has no IPv4 options: IPv4 (20) + UDP (8) at the end
        n = tb["ts"].shape[0]
        size = int(n * (16 + template.shape[0] + MOLD_HEADER) + (tb["body_b"] - tb["body_a"]).sum())
        out = np.empty(size, np.uint8)
        sess = np.frombuffer(session.encode("ascii").ljust(10, b" ")[:10], np.uint8)
        used = _itch_day.pcap_records(out, template, ip_off, sess, tb["ts"], tb["seq"], tb["count"],
                                      tb["body_a"], tb["body_b"], self.framed)
        with open(path, "wb") as f:
            f.write(pcapwriter.pcap_bytes([], True))
            f.write(memoryview(out)[:used])
        return n

    def write(self, path: str | os.PathLike, fmt: str = "pcap", *, gzip: bool = False, **kw) -> None:
        """Write as ``pcap``, ``pcapng`` or ``binaryfile``."""
        if fmt == "binaryfile":
            self.write_binaryfile(path, gzip=gzip)
        elif fmt in ("pcap", "pcapng"):
            if gzip:
                raise ValueError("--gzip applies to binaryfile output only")
            self.write_pcap(path, pcapng=fmt == "pcapng", **kw)
        else:
            raise ValueError(f"unknown synth format {fmt!r} (pcap, pcapng, binaryfile)")


def midnight_ns_of(date: _dt.date) -> int:
    """ns since the UNIX epoch of midnight America/New_York on ``date``."""
    mid = _dt.datetime(date.year, date.month, date.day, tzinfo=ZoneInfo("America/New_York"))
    return int(mid.timestamp()) * NS


def _reference_messages(tickers: list[str], ranks: list[int], fv0: np.ndarray, rng: random.Random):
    """The scheduled non-order messages of the day: [(ts, bytes)], sorted by time."""
    enc = itch50_codec.encode
    out: list[tuple[int, bytes]] = []
    k = len(tickers)

    def add(ts: int, t: str, **f):
        out.append((ts, enc(t, timestamp=ts, **f)))

    def sysev(ts: int, code: str):
        add(ts, "S", event_code=code)

    def px(loc: int, mult: float = 1.0) -> int:
        return int(round(int(fv0[loc - 1]) * mult / 100)) * 100

    sysev(T_START_MESSAGES + 123_456_789, "O")
    t = T_START_MESSAGES + 2 * NS
    for loc, tk in enumerate(tickers, 1):
        add(t + loc * 15_000, "R", stock_locate=loc, **directory_fields(tk, ranks[loc - 1], rng))
    t = 3 * HOUR + 5 * MINUTE
    for loc, tk in enumerate(tickers, 1):
        add(t + loc * 12_000, "H", stock_locate=loc, stock=tk, trading_state="T", reason="")
    t = 3 * HOUR + 6 * MINUTE
    for loc, tk in enumerate(tickers, 1):
        if rng.random() < 0.5 or loc == 1:
            add(t + loc * 10_000, "Y", stock_locate=loc, stock=tk, reg_sho_action="0" if rng.random() < 0.9 else "1")
    t = 3 * HOUR + 7 * MINUTE
    for loc, tk in enumerate(tickers, 1):
        if ranks[loc - 1] < 50 or rng.random() < 0.05:
            for j, mpid in enumerate(rng.sample(MPIDS, 3)):
                add(t + loc * 30_000 + j * 1000, "L", stock_locate=loc, stock=tk, mpid=mpid,
                    primary_market_maker="Y" if j == 0 else "N", market_maker_mode="N",
                    market_participant_state="A")
    # MWCB decline levels (price8): 7 %, 13 %, 20 % below a 4,800.00 S&P 500 close
    add(3 * HOUR + 8 * MINUTE, "V", level1=446400000000, level2=417600000000, level3=384000000000)
    sysev(T_START_SYSTEM, "S")
    if k:
        # IPO quoting period update for the last symbol, then its direct-listing price discovery
        ipo = k
        add(8 * HOUR, "K", stock_locate=ipo, stock=tickers[ipo - 1], ipo_quotation_release_time=10 * 3600 + 30 * 60,
            ipo_quotation_release_qualifier="A", ipo_price=px(ipo))
        add(9 * HOUR + 45 * MINUTE, "O", stock_locate=ipo, stock=tickers[ipo - 1], open_eligibility_status="Y",
            minimum_allowable_price=px(ipo, 0.8), maximum_allowable_price=px(ipo, 1.2),
            near_execution_price=px(ipo), near_execution_time=9 * HOUR + 45 * MINUTE + 30 * NS,
            lower_price_range_collar=px(ipo, 0.9), upper_price_range_collar=px(ipo, 1.1))
    sysev(T_OPEN, "Q")
    if k:
        # an operational halt and resume of one symbol on NASDAQ
        oh = 1 + (k // 3)
        add(11 * HOUR + 15 * MINUTE, "h", stock_locate=oh, stock=tickers[oh - 1], market_code="Q",
            operational_halt_action="H")
        add(11 * HOUR + 20 * MINUTE, "h", stock_locate=oh, stock=tickers[oh - 1], market_code="Q",
            operational_halt_action="T")
        # LULD pauses with auction collars for a few symbols
        for j in range(max(1, k // 100)):
            loc = 1 + rng.randrange(k)
            t = 12 * HOUR + rng.randrange(3 * HOUR)
            tk = tickers[loc - 1]
            add(t, "H", stock_locate=loc, stock=tk, trading_state="P", reason="LUDP")
            add(t + 5 * MINUTE - 1 * NS, "J", stock_locate=loc, stock=tk, auction_collar_reference_price=px(loc),
                upper_auction_collar_price=px(loc, 1.05), lower_auction_collar_price=px(loc, 0.95),
                auction_collar_extension=0)
            add(t + 5 * MINUTE, "H", stock_locate=loc, stock=tk, trading_state="T", reason="LUDP")
        # retail price improvement interest
        for j in range(max(1, k // 20)):
            loc = 1 + rng.randrange(k)
            add(T_OPEN + rng.randrange(T_CLOSE - T_OPEN), "N", stock_locate=loc, stock=tickers[loc - 1],
                interest_flag=rng.choice("BSA"))
    sysev(T_CLOSE, "M")
    sysev(T_END_SYSTEM, "E")
    sysev(T_END_MESSAGES, "C")
    out.sort(key=lambda x: x[0])  # stable: same-time messages keep their order
    return out


def _schedule(k: int, busy: list[int]):
    """Crosses and NOII: (ts, kind, instrument index, flag) sorted by time."""
    rows = []
    n_noii = min(k, 200)
    for cross, t0 in ((b"O", T_OPEN), (b"C", T_CLOSE)):
        for step in range(6):
            for j, ix in enumerate(busy[:n_noii]):
                rows.append((t0 - 2 * MINUTE + step * 20 * NS + j * 1000, _itch_day.SCHED_NOII, ix, cross[0]))
        for ix in range(k):
            rows.append((t0 + 5_000_000 + ix * 2_000, _itch_day.SCHED_CROSS, ix, cross[0]))
    rows.sort(key=lambda r: r[0])
    ts = np.array([r[0] for r in rows], dtype=np.uint64)
    kind = np.array([r[1] for r in rows], dtype=np.uint8)
    inst = np.array([r[2] for r in rows], dtype=np.int32)
    flag = np.array([r[3] for r in rows], dtype=np.uint8)
    return ts, kind, inst, flag


def generate_day(messages: int = 100_000, symbols: int = 50, seed: int = 1, *,
                 date: str | _dt.date = "2024-03-15", mix: dict | None = None,
                 concentration: float = DEFAULT_CONCENTRATION,
                 depth_profile: str | dict = DEFAULT_DEPTH_PROFILE) -> SynthDay:
    """Generate one realistic ITCH 5.0 day.

    Parameters
    ----------
    messages : total number of messages (reference + order flow); must leave room for the
        reference messages (about 4 per symbol plus crosses).
    symbols : number of instruments (locate codes 1..symbols).
    seed : the same seed gives the same bytes.
    date : the trading day (sets ``midnight_ns`` and pcap capture times).
    mix : share of each bulk order-flow type (keys of ``DEFAULT_MIX``).
    concentration : Zipf exponent of the symbols' activity (``DEFAULT_CONCENTRATION``): 0 = every
        symbol equally busy; higher = the flow concentrates on the busiest symbols (deeper books).
    depth_profile : a name of ``DEPTH_PROFILES`` (shallow, normal, deep) or a dict with the same keys:
        how far from the top of the book new orders go.

    Returns
    -------
    SynthDay
    """
    if symbols < 1:
        raise ValueError("need at least one symbol")
    if symbols > 65535:
        raise ValueError(f"{symbols} symbols: ITCH 5.0 has at most 65,535 (its stock locate code is 16 bits)")
    if isinstance(date, str):
        date = _dt.date.fromisoformat(date)
    if not (concentration >= 0.0 and concentration < 100.0):
        raise ValueError(f"concentration must be in [0, 100), got {concentration!r}")
    if isinstance(depth_profile, str):
        if depth_profile not in DEPTH_PROFILES:
            raise ValueError(f"unknown depth profile {depth_profile!r} (one of {', '.join(DEPTH_PROFILES)})")
        depth = DEPTH_PROFILES[depth_profile]
    else:
        depth = dict(depth_profile)
        if set(depth) != set(DEPTH_PROFILES[DEFAULT_DEPTH_PROFILE]):
            raise ValueError(f"depth profile keys: {sorted(DEPTH_PROFILES[DEFAULT_DEPTH_PROFILE])}; got {sorted(depth)}")
    rng = random.Random(seed)
    tickers = make_tickers(symbols, rng)
    k = len(tickers)
    # activity: Zipf-like, busiest symbols the real big names when present
    order = list(range(k))
    rng.shuffle(order)
    big = set(REAL_TICKERS[:30])
    real_first = sorted(order, key=lambda ix: tickers[ix] not in big)  # stable: shuffled otherwise
    ranks = [0] * k
    for r, ix in enumerate(real_first):
        ranks[ix] = r
    weights = np.array([1.0 / (ranks[ix] + 1) ** concentration for ix in range(k)])
    busy = sorted(range(k), key=lambda ix: ranks[ix])
    # starting prices: lognormal around $60, $2 .. $900, on the cent grid (price4)
    fv0 = np.array([int(min(900.0, max(2.0, rng.lognormvariate(4.1, 0.9))) * 100) * 100 for _ in range(k)],
                   dtype=np.int64)

    ref = _reference_messages(tickers, ranks, fv0, rng)
    s_ts, s_kind, s_inst, s_flag = _schedule(k, busy)
    n_bulk = messages - len(ref) - s_ts.shape[0]
    if n_bulk < 0:
        raise ValueError(f"{messages} messages are too few for {symbols} symbols: the reference messages, "
                         f"crosses and NOII alone take {len(ref) + s_ts.shape[0]}")
    m = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(m) - set(_itch_day.ACTIONS)
    if unknown or any(v < 0 for v in m.values()) or sum(m.values()) <= 0:
        raise ValueError(f"mix: shares of {_itch_day.ACTIONS!r} (non-negative, not all 0); got {mix!r}")
    mixv = np.array([m.get(a, 0.0) for a in _itch_day.ACTIONS], dtype=np.float64)
    mixv /= mixv.sum()

    seed64 = seed & 0xFFFFFFFFFFFFFFFF
    b_ts = _itch_day.bulk_times(seed64, n_bulk, np.array(BULK_BOUNDS, dtype=np.uint64),
                                np.array(BULK_WEIGHTS, dtype=np.float64), BURST)
    b_ts.sort()
    b_inst = _itch_day.pick_instruments(seed64, n_bulk, np.cumsum(weights), b_ts, BURST_GAP_NS, BURST_STICK)
    n_core = n_bulk + s_ts.shape[0]
    col = {
        "type": np.empty(n_core, np.uint8), "inst": np.empty(n_core, np.int32), "ts": np.empty(n_core, np.uint64),
        "ref": np.empty(n_core, np.uint64), "ref2": np.empty(n_core, np.uint64), "side": np.empty(n_core, np.uint8),
        "shares": np.empty(n_core, np.uint32), "price": np.empty(n_core, np.uint32),
        "match": np.empty(n_core, np.uint64), "aux": np.empty(n_core, np.uint64), "flag": np.empty(n_core, np.uint8),
    }
    n_ev, last_ref, last_match, live = _itch_day.simulate(
        seed64, b_ts, b_inst, fv0, mixv, s_ts, s_kind, s_inst, s_flag, 1, 1, len(MPIDS),
        col["type"], col["inst"], col["ts"], col["ref"], col["ref2"], col["side"], col["shares"], col["price"],
        col["match"], col["aux"], col["flag"], float(depth["near_share"]), float(depth["near_mean"]),
        float(depth["deep_mean"]), int(depth["max_ticks"]))
    assert n_ev == n_core

    # ---- merge reference messages (first at equal times) with the order flow, then lay out bytes
    r_ts = np.array([t for t, _ in ref], dtype=np.uint64)
    r_type = np.array([b[0] for _, b in ref], dtype=np.uint8)
    c_ts = col["ts"]
    n = n_core + len(ref)
    r_pos = np.searchsorted(c_ts, r_ts, side="left") + np.arange(len(ref))
    c_pos = np.arange(n_core) + np.searchsorted(r_ts, c_ts, side="right")
    types = np.empty(n, np.uint8)
    types[r_pos] = r_type
    types[c_pos] = col["type"]
    times = np.empty(n, np.uint64)
    times[r_pos] = r_ts
    times[c_pos] = c_ts
    lens = np.zeros(256, np.int64)
    for t, ln in LENGTH.items():
        lens[ord(t)] = ln
    framed_len = lens[types] + 2
    starts = np.zeros(n + 1, np.int64)
    np.cumsum(framed_len, out=starts[1:])
    framed = np.zeros(int(starts[-1]), np.uint8)
    framed[starts[:-1]] = (framed_len - 2) >> 8
    framed[starts[:-1] + 1] = (framed_len - 2) & 0xFF
    body = starts[:-1] + 2
    for i, (_, b) in enumerate(ref):
        p = body[r_pos[i]]
        framed[p : p + len(b)] = np.frombuffer(b, np.uint8)
    _encode_flow(framed, body[c_pos], col, tickers)
    return SynthDay(date=date, midnight_ns=midnight_ns_of(date), symbols=tickers, types=types, timestamps=times,
                    starts=starts, framed=framed, live_orders=int(live), seed=seed,
                    stats={"last_order_ref": int(last_ref) - 1, "matches": int(last_match) - 1})


def _encode_flow(framed: np.ndarray, at: np.ndarray, col: dict, tickers: list[str]) -> None:
    """Encode the simulated order flow, type by type, into ``framed`` at byte offsets ``at``."""
    stocks = np.array([t.encode() for t in tickers], dtype="S8")
    stocks = np.char.ljust(stocks, 8, b" ")
    mpids = np.array([m.encode() for m in MPIDS], dtype="S4")
    typ = col["type"]
    for t in "AFDXUECPBQI":
        sel = np.nonzero(typ == ord(t))[0]
        if sel.shape[0] == 0:
            continue
        g = {k: v[sel] for k, v in col.items()}
        inst = g["inst"]
        c = {"stock_locate": (inst + 1).astype(np.uint16), "tracking_number": np.zeros(sel.shape[0], np.uint16),
             "timestamp": g["ts"]}
        side = g["side"].view("S1")
        if t in "AF":
            c.update(order_reference_number=g["ref"], buy_sell_indicator=side, shares=g["shares"],
                     stock=stocks[inst], price=g["price"])
            if t == "F":
                c["attribution"] = mpids[g["aux"].astype(np.int64)]
        elif t == "D":
            c.update(order_reference_number=g["ref"])
        elif t == "X":
            c.update(order_reference_number=g["ref"], cancelled_shares=g["shares"])
        elif t == "U":
            c.update(original_order_reference_number=g["ref"], new_order_reference_number=g["ref2"],
                     shares=g["shares"], price=g["price"])
        elif t == "E":
            c.update(order_reference_number=g["ref"], executed_shares=g["shares"], match_number=g["match"])
        elif t == "C":
            c.update(order_reference_number=g["ref"], executed_shares=g["shares"], match_number=g["match"],
                     printable=g["flag"].view("S1"), execution_price=g["price"])
        elif t == "P":
            c.update(order_reference_number=g["ref"], buy_sell_indicator=side, shares=g["shares"],
                     stock=stocks[inst], price=g["price"], match_number=g["match"])
        elif t == "B":
            c.update(match_number=g["match"])
        elif t == "Q":
            c.update(shares=g["aux"], stock=stocks[inst], cross_price=g["price"], match_number=g["match"],
                     cross_type=g["flag"].view("S1"))
        elif t == "I":
            p = g["price"].astype(np.int64)
            imb = g["aux"]
            direction = g["side"].view("S1")
            # near/far indicative prices lean toward the imbalance side by a few cents
            lean = np.where(direction == b"B", 1, np.where(direction == b"S", -1, 0)) * 300
            c.update(paired_shares=g["shares"].astype(np.uint64), imbalance_shares=imb, imbalance_direction=direction,
                     stock=stocks[inst], far_price=np.maximum(p + 2 * lean, 100).astype(np.uint32),
                     near_price=np.maximum(p + lean, 100).astype(np.uint32), current_reference_price=p.astype(np.uint32),
                     cross_type=g["flag"].view("S1"), price_variation_indicator=np.full(sel.shape[0], b"L", "S1"))
        rows = encode_columns(t, sel.shape[0], c)
        _itch_day.scatter_rows(framed, np.ascontiguousarray(at[sel], dtype=np.int64), rows)
