"""NASDAQ OUCH 4.2 messages, declared once as a field table; struct layouts, encoders and decoders are
derived from it (like the ITCH 5.0 table). All integers are big endian; alphanumeric fields are left
justified and space padded; prices are unsigned 4-byte integers with 4 implied decimals (``price_raw``
of the tick record = OUCH price * 100_000); timestamps are ns since midnight.

``decode(msg)`` checks the length against the table before touching a field and raises
:class:`OuchError` (never reads past the message); ``encode(name, **fields)`` fills missing fields
with their defaults (spaces / 0).
"""
from __future__ import annotations

import struct

# kind: "s" alphanumeric (bytes, stripped on decode), "c" one character, "u4"/"u8" unsigned big endian
# direction "in" = client -> exchange, "out" = exchange -> client
TABLE: dict[tuple[str, bytes], tuple[str, list[tuple[str, str, int]]]] = {
    ("in", b"O"): ("enter_order", [
        ("order_token", "s", 14), ("side", "c", 1), ("shares", "u4", 4), ("stock", "s", 8),
        ("price", "u4", 4), ("time_in_force", "u4", 4), ("firm", "s", 4), ("display", "c", 1),
        ("capacity", "c", 1), ("intermarket_sweep", "c", 1), ("minimum_quantity", "u4", 4),
        ("cross_type", "c", 1), ("customer_type", "c", 1)]),
    ("in", b"U"): ("replace_order", [
        ("existing_order_token", "s", 14), ("replacement_order_token", "s", 14), ("shares", "u4", 4),
        ("price", "u4", 4), ("time_in_force", "u4", 4), ("display", "c", 1), ("intermarket_sweep", "c", 1),
        ("minimum_quantity", "u4", 4)]),
    ("in", b"X"): ("cancel_order", [("order_token", "s", 14), ("shares", "u4", 4)]),
    ("in", b"M"): ("modify_order", [("order_token", "s", 14), ("side", "c", 1), ("shares", "u4", 4)]),
    ("out", b"S"): ("system_event", [("timestamp", "u8", 8), ("event_code", "c", 1)]),
    ("out", b"A"): ("accepted", [
        ("timestamp", "u8", 8), ("order_token", "s", 14), ("side", "c", 1), ("shares", "u4", 4),
        ("stock", "s", 8), ("price", "u4", 4), ("time_in_force", "u4", 4), ("firm", "s", 4),
        ("display", "c", 1), ("order_reference_number", "u8", 8), ("capacity", "c", 1),
        ("intermarket_sweep", "c", 1), ("minimum_quantity", "u4", 4), ("cross_type", "c", 1),
        ("order_state", "c", 1), ("bbo_weight_indicator", "c", 1)]),
    ("out", b"U"): ("replaced", [
        ("timestamp", "u8", 8), ("replacement_order_token", "s", 14), ("side", "c", 1), ("shares", "u4", 4),
        ("stock", "s", 8), ("price", "u4", 4), ("time_in_force", "u4", 4), ("firm", "s", 4),
        ("display", "c", 1), ("order_reference_number", "u8", 8), ("capacity", "c", 1),
        ("intermarket_sweep", "c", 1), ("minimum_quantity", "u4", 4), ("cross_type", "c", 1),
        ("order_state", "c", 1), ("previous_order_token", "s", 14), ("bbo_weight_indicator", "c", 1)]),
    ("out", b"C"): ("canceled", [
        ("timestamp", "u8", 8), ("order_token", "s", 14), ("decrement_shares", "u4", 4), ("reason", "c", 1)]),
    ("out", b"D"): ("aiq_canceled", [
        ("timestamp", "u8", 8), ("order_token", "s", 14), ("decrement_shares", "u4", 4), ("reason", "c", 1),
        ("quantity_prevented_from_trading", "u4", 4), ("execution_price", "u4", 4), ("liquidity_flag", "c", 1)]),
    ("out", b"E"): ("executed", [
        ("timestamp", "u8", 8), ("order_token", "s", 14), ("executed_shares", "u4", 4),
        ("execution_price", "u4", 4), ("liquidity_flag", "c", 1), ("match_number", "u8", 8)]),
    ("out", b"B"): ("broken_trade", [
        ("timestamp", "u8", 8), ("order_token", "s", 14), ("match_number", "u8", 8), ("reason", "c", 1)]),
    ("out", b"J"): ("rejected", [("timestamp", "u8", 8), ("order_token", "s", 14), ("reason", "c", 1)]),
    ("out", b"P"): ("cancel_pending", [("timestamp", "u8", 8), ("order_token", "s", 14)]),
    ("out", b"I"): ("cancel_reject", [("timestamp", "u8", 8), ("order_token", "s", 14)]),
    ("out", b"T"): ("order_priority_update", [
        ("timestamp", "u8", 8), ("order_token", "s", 14), ("price", "u4", 4), ("display", "c", 1),
        ("order_reference_number", "u8", 8)]),
    ("out", b"M"): ("order_modified", [
        ("timestamp", "u8", 8), ("order_token", "s", 14), ("side", "c", 1), ("shares", "u4", 4)]),
}

# Wire sizes from the OUCH 4.2 specification (type byte included); a test checks the table against them.
SPEC_SIZES = {"enter_order": 49, "replace_order": 47, "cancel_order": 19, "modify_order": 20,
              "system_event": 10, "accepted": 66, "replaced": 80, "canceled": 28, "aiq_canceled": 37,
              "executed": 40, "broken_trade": 32, "rejected": 24, "cancel_pending": 23, "cancel_reject": 23,
              "order_priority_update": 36, "order_modified": 28}

PRICE_TO_RAW = 100_000          # OUCH price units (1e-4) -> price_raw (1e-9)
TIF_IOC = 0
TIF_MARKET_HOURS = 99998
TIF_SYSTEM_HOURS = 99999

_FMT = {"s": "{}s", "c": "c", "u4": "I", "u8": "Q"}


class OuchError(ValueError):
    """Malformed OUCH message (unknown type, wrong length)."""


class _Layout:
    __slots__ = ("type", "name", "direction", "fields", "struct", "size", "defaults")

    def __init__(self, direction, mtype, name, fields):
        self.type, self.name, self.direction = mtype, name, direction
        self.fields = fields
        self.struct = struct.Struct(">c" + "".join(_FMT[k].format(n) for _, k, n in fields))
        self.size = self.struct.size
        self.defaults = {f: (b" " * n if k in ("s", "c") else 0) for f, k, n in fields}


LAYOUTS: dict[tuple[str, bytes], _Layout] = {key: _Layout(key[0], key[1], n, f) for key, (n, f) in TABLE.items()}
BY_NAME: dict[str, _Layout] = {l.name: l for l in LAYOUTS.values()}


def encode(name: str, **fields) -> bytes:
    """Encode one message; str values are Latin-1 encoded (one byte a character: a token decoded from the
    wire with ``.decode("latin-1")`` is echoed byte for byte) and padded, missing fields take defaults."""
    lay = BY_NAME[name]
    vals = []
    for f, kind, n in lay.fields:
        v = fields.get(f, lay.defaults[f])
        if kind in ("s", "c"):
            if isinstance(v, str):
                try:
                    v = v.encode("latin-1")
                except UnicodeEncodeError:
                    raise OuchError(f"{name}.{f}: {v!r} is not one byte a character") from None
            if len(v) > n:
                raise OuchError(f"{name}.{f}: {v!r} longer than {n}")
            v = v.ljust(n, b" ")
        vals.append(v)
    unknown = set(fields) - set(lay.defaults)
    if unknown:
        raise OuchError(f"{name}: unknown fields {sorted(unknown)}")
    return lay.struct.pack(lay.type, *vals)


def decode(msg: bytes, direction: str) -> tuple[str, dict]:
    """(name, fields) of one message; alphanumeric fields are returned stripped (bytes)."""
    if not msg:
        raise OuchError("empty message")
    lay = LAYOUTS.get((direction, msg[:1]))
    if lay is None:
        raise OuchError(f"unknown {direction} message type {msg[:1]!r}")
    if len(msg) != lay.size:
        raise OuchError(f"{lay.name}: {len(msg)} bytes, expected {lay.size}")
    vals = lay.struct.unpack(msg)
    out = {}
    for (f, kind, _), v in zip(lay.fields, vals[1:]):
        out[f] = v.rstrip(b" ") if kind == "s" else v
    return lay.name, out
