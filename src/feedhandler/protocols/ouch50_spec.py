"""NASDAQ OUCH 5.0 messages, declared once as a field table (like ``ouch42.TABLE``).

Differences from OUCH 4.2 that matter to a decoder:

* orders are identified by a 4-byte ``user_ref_num`` (UserRefNum, strictly increasing per session)
  instead of a 14-byte token; ``cl_ord_id`` (14 bytes) is a free client reference;
* prices are signed 8-byte integers with 4 implied decimals (``price_raw = price * 100_000``);
* enter / replace / accepted / replaced / executed / restated messages end with a 2-byte
  ``appendage_length`` followed by that many bytes of TagValue appendages: each is
  ``length(1) tag(1) value(length - 1)``, the length counting the tag byte and the value.

``decode(msg, direction)`` checks the fixed length and the appendage length before touching a field
and raises :class:`Ouch50Error`; ``encode(name, appendages=[(tag, value)], **fields)`` fills missing
fields with defaults. The native batch decoder (``feedhandler.protocols.ouch_events``) derives its
field offsets from :data:`TABLE`; ``ouch50.pyx`` walks appendages natively. Wire sizes were checked
against the real captures in ``../shared/data/ouch50`` (tests/test_ouch50.py).
"""
from __future__ import annotations

import struct

# kind: "s" alphanumeric (space padded), "c" one character, "u2"/"u4"/"u8" unsigned big endian,
# "i8" signed big endian (prices), "a" appendages (the u2 length + TagValue bytes; always last)
TABLE: dict[tuple[str, bytes], tuple[str, list[tuple[str, str, int]]]] = {
    # ---- inbound (client -> exchange) ----
    ("in", b"O"): ("enter_order", [
        ("user_ref_num", "u4", 4), ("side", "c", 1), ("quantity", "u4", 4), ("symbol", "s", 8),
        ("price", "i8", 8), ("time_in_force", "c", 1), ("display", "c", 1), ("capacity", "c", 1),
        ("intermarket_sweep", "c", 1), ("cross_type", "c", 1), ("cl_ord_id", "s", 14),
        ("appendages", "a", 2)]),
    ("in", b"U"): ("replace_order", [
        ("orig_user_ref_num", "u4", 4), ("user_ref_num", "u4", 4), ("quantity", "u4", 4), ("price", "i8", 8),
        ("time_in_force", "c", 1), ("display", "c", 1), ("intermarket_sweep", "c", 1), ("cl_ord_id", "s", 14),
        ("appendages", "a", 2)]),
    ("in", b"X"): ("cancel_order", [("user_ref_num", "u4", 4), ("quantity", "u4", 4)]),
    ("in", b"M"): ("modify_order", [("user_ref_num", "u4", 4), ("side", "c", 1), ("quantity", "u4", 4)]),
    ("in", b"C"): ("mass_cancel_request", [("user_ref_num", "u4", 4), ("firm", "s", 4), ("symbol", "s", 8)]),
    ("in", b"D"): ("disable_order_entry_request", [("user_ref_num", "u4", 4), ("firm", "s", 4)]),
    ("in", b"E"): ("enable_order_entry_request", [("user_ref_num", "u4", 4), ("firm", "s", 4)]),
    ("in", b"Q"): ("account_query_request", []),
    # ---- outbound (exchange -> client) ----
    ("out", b"S"): ("system_event", [("timestamp", "u8", 8), ("event_code", "c", 1)]),
    ("out", b"A"): ("order_accepted", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("side", "c", 1), ("quantity", "u4", 4),
        ("symbol", "s", 8), ("price", "i8", 8), ("time_in_force", "c", 1), ("display", "c", 1),
        ("order_reference_number", "u8", 8), ("capacity", "c", 1), ("intermarket_sweep", "c", 1),
        ("cross_type", "c", 1), ("order_state", "c", 1), ("cl_ord_id", "s", 14), ("appendages", "a", 2)]),
    ("out", b"U"): ("order_replaced", [
        ("timestamp", "u8", 8), ("orig_user_ref_num", "u4", 4), ("user_ref_num", "u4", 4), ("side", "c", 1),
        ("quantity", "u4", 4), ("symbol", "s", 8), ("price", "i8", 8), ("time_in_force", "c", 1),
        ("display", "c", 1), ("order_reference_number", "u8", 8), ("capacity", "c", 1),
        ("intermarket_sweep", "c", 1), ("cross_type", "c", 1), ("order_state", "c", 1),
        ("cl_ord_id", "s", 14), ("appendages", "a", 2)]),
    ("out", b"C"): ("order_canceled", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("quantity", "u4", 4), ("reason", "c", 1)]),
    ("out", b"D"): ("aiq_canceled", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("decrement_shares", "u4", 4), ("reason", "c", 1),
        ("quantity_prevented_from_trading", "u4", 4), ("execution_price", "i8", 8), ("liquidity_flag", "c", 1),
        ("aiq_strategy", "c", 1)]),
    ("out", b"E"): ("order_executed", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("quantity", "u4", 4), ("price", "i8", 8),
        ("liquidity_flag", "c", 1), ("match_number", "u8", 8), ("appendages", "a", 2)]),
    ("out", b"B"): ("broken_trade", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("match_number", "u8", 8), ("reason", "c", 1),
        ("cl_ord_id", "s", 14)]),
    ("out", b"J"): ("order_rejected", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("reason", "u2", 2), ("cl_ord_id", "s", 14)]),
    ("out", b"P"): ("cancel_pending", [("timestamp", "u8", 8), ("user_ref_num", "u4", 4)]),
    ("out", b"I"): ("cancel_reject", [("timestamp", "u8", 8), ("user_ref_num", "u4", 4)]),
    ("out", b"T"): ("order_priority_update", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("price", "i8", 8), ("display", "c", 1),
        ("order_reference_number", "u8", 8)]),
    ("out", b"M"): ("order_modified", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("side", "c", 1), ("quantity", "u4", 4)]),
    ("out", b"R"): ("order_restated", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("reason", "c", 1), ("appendages", "a", 2)]),
    ("out", b"X"): ("mass_cancel_response", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("firm", "s", 4), ("symbol", "s", 8)]),
    ("out", b"G"): ("disable_order_entry_response", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("firm", "s", 4)]),
    ("out", b"K"): ("enable_order_entry_response", [
        ("timestamp", "u8", 8), ("user_ref_num", "u4", 4), ("firm", "s", 4)]),
    ("out", b"Q"): ("account_query_response", [("timestamp", "u8", 8), ("next_user_ref_num", "u4", 4)]),
}

# Fixed wire sizes (type byte and the 2-byte appendage length included, appendages excluded), from
# the OUCH 5.0 specification; the captures in ../shared/data/ouch50 confirm O, A, X, C.
SPEC_SIZES = {"enter_order": 47, "replace_order": 40, "cancel_order": 9, "modify_order": 10,
              "mass_cancel_request": 17, "disable_order_entry_request": 9, "enable_order_entry_request": 9,
              "account_query_request": 1, "system_event": 10, "order_accepted": 64, "order_replaced": 68,
              "order_canceled": 18, "aiq_canceled": 32, "order_executed": 36, "broken_trade": 36,
              "order_rejected": 29, "cancel_pending": 13, "cancel_reject": 13, "order_priority_update": 30,
              "order_modified": 18, "order_restated": 16, "mass_cancel_response": 25,
              "disable_order_entry_response": 17, "enable_order_entry_response": 17,
              "account_query_response": 13}

# TagValue appendages: tag -> (name, kind, value bytes)
APPENDAGES: dict[int, tuple[str, str, int]] = {
    1: ("secondary_ord_ref_num", "u8", 8),
    2: ("firm", "s", 4),
    3: ("min_qty", "u4", 4),
    4: ("customer_type", "c", 1),
    5: ("max_floor", "u4", 4),
    6: ("price_type", "c", 1),
    7: ("peg_offset", "i4", 4),
    9: ("discretion_price", "i8", 8),
    10: ("discretion_price_type", "c", 1),
    11: ("discretion_peg_offset", "i4", 4),
    12: ("post_only", "c", 1),
    13: ("random_reserves", "u4", 4),
    14: ("route", "s", 4),
    15: ("expire_time", "u4", 4),
    16: ("trade_now", "c", 1),
    17: ("handle_inst", "c", 1),
    18: ("bbo_weight_indicator", "c", 1),
    22: ("display_quantity", "u4", 4),
    23: ("display_price", "i8", 8),
    24: ("group_id", "u2", 2),
    25: ("shares_located", "c", 1),
}
APPENDAGE_BY_NAME = {v[0]: (k, v[1], v[2]) for k, v in APPENDAGES.items()}

PRICE_TO_RAW = 100_000          # OUCH price units (1e-4) -> price_raw (1e-9)

_FMT = {"s": "{}s", "c": "c", "u2": "H", "u4": "I", "u8": "Q", "i4": "i", "i8": "q", "a": "H"}


class Ouch50Error(ValueError):
    """Malformed OUCH 5.0 message (unknown type, wrong length, bad appendage)."""


class _Layout:
    __slots__ = ("type", "name", "direction", "fields", "struct", "size", "defaults", "has_appendages",
                 "offsets")

    def __init__(self, direction, mtype, name, fields):
        self.type, self.name, self.direction = mtype, name, direction
        self.fields = fields
        self.struct = struct.Struct(">c" + "".join(_FMT[k].format(n) for _, k, n in fields))
        self.size = self.struct.size
        self.has_appendages = bool(fields) and fields[-1][1] == "a"
        self.defaults = {f: (b" " * n if k in ("s", "c") else 0) for f, k, n in fields if k != "a"}
        off, self.offsets = 1, {}
        for f, k, n in fields:
            self.offsets[f] = (off, k, n)
            off += n


LAYOUTS: dict[tuple[str, bytes], _Layout] = {key: _Layout(key[0], key[1], n, f) for key, (n, f) in TABLE.items()}
BY_NAME: dict[str, _Layout] = {}
for _l in LAYOUTS.values():
    BY_NAME.setdefault(_l.name, _l)


def encode_appendages(items) -> bytes:
    """TagValue bytes of [(tag or name, value)]; ints are packed by the tag's kind, str/bytes padded."""
    out = []
    for tag, val in items:
        if isinstance(tag, str):
            tag = APPENDAGE_BY_NAME[tag][0]
        name, kind, n = APPENDAGES[tag] if tag in APPENDAGES else (str(tag), "raw", len(bytes(val)))
        if kind in ("s", "c"):
            v = val.encode("ascii") if isinstance(val, str) else bytes(val)
            v = v.ljust(n, b" ")[:n]
        elif kind == "raw":
            v = bytes(val)
        else:
            v = struct.pack(">" + _FMT[kind], val)
        out.append(bytes([len(v) + 1, tag]) + v)
    return b"".join(out)


def parse_appendages(data: bytes) -> list[tuple[int, bytes]]:
    """[(tag, raw value)] of a TagValue block; raises Ouch50Error when an entry overruns the block."""
    out, i, n = [], 0, len(data)
    while i < n:
        ln = data[i]
        if ln < 1 or i + 1 + ln > n:
            raise Ouch50Error(f"appendage at {i}: length {ln} overruns the {n}-byte block")
        out.append((data[i + 1], bytes(data[i + 2:i + 1 + ln])))
        i += 1 + ln
    return out


def encode(name: str, appendages=(), **fields) -> bytes:
    """Encode one message; str values are ASCII encoded and padded, missing fields take defaults."""
    lay = BY_NAME[name]
    unknown = set(fields) - set(lay.defaults)
    if unknown:
        raise Ouch50Error(f"{name}: unknown fields {sorted(unknown)}")
    app = encode_appendages(appendages) if lay.has_appendages else b""
    if appendages and not lay.has_appendages:
        raise Ouch50Error(f"{name} carries no appendages")
    vals = []
    for f, kind, n in lay.fields:
        if kind == "a":
            vals.append(len(app))
            continue
        v = fields.get(f, lay.defaults[f])
        if kind in ("s", "c"):
            if isinstance(v, str):
                v = v.encode("ascii")
            if len(v) > n:
                raise Ouch50Error(f"{name}.{f}: {v!r} longer than {n}")
            v = v.ljust(n, b" ")
        vals.append(v)
    return lay.struct.pack(lay.type, *vals) + app


def decode(msg: bytes, direction: str) -> tuple[str, dict]:
    """(name, fields) of one message; alphanumeric fields stripped; appendages as {name: value}."""
    if not msg:
        raise Ouch50Error("empty message")
    lay = LAYOUTS.get((direction, msg[:1]))
    if lay is None:
        raise Ouch50Error(f"unknown {direction} message type {msg[:1]!r}")
    if len(msg) < lay.size:
        raise Ouch50Error(f"{lay.name}: {len(msg)} bytes, expected at least {lay.size}")
    vals = lay.struct.unpack_from(msg)
    out: dict = {}
    for (f, kind, _), v in zip(lay.fields, vals[1:]):
        out[f] = v.rstrip(b" ") if kind == "s" else v
    if lay.has_appendages:
        alen = out.pop("appendages")
        if len(msg) != lay.size + alen:
            raise Ouch50Error(f"{lay.name}: {len(msg)} bytes, expected {lay.size} + appendages {alen}")
        apps = {}
        for tag, raw in parse_appendages(msg[lay.size:]):
            name, kind, n = APPENDAGES.get(tag, (f"tag_{tag}", "raw", len(raw)))
            if kind in ("s", "c"):
                # alpha padding: trailing spaces and NULs (the native batch stores alpha values in numpy
                # ``S`` fields, which cannot hold trailing NULs; both decoders define padding the same way)
                apps[name] = raw.rstrip(b" \x00")
            elif kind == "raw" or len(raw) != n:
                apps[name] = raw
            else:
                apps[name] = struct.unpack(">" + _FMT[kind], raw)[0]
        out["appendages"] = apps
    elif len(msg) != lay.size:
        raise Ouch50Error(f"{lay.name}: {len(msg)} bytes, expected {lay.size}")
    return lay.name, out
