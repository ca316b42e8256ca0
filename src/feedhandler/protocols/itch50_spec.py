"""NASDAQ TotalView-ITCH 5.0: the one field table every ITCH layout in this project comes from.

``MESSAGES`` lists each message of the ITCH 5.0 specification (Nasdaq TotalView-ITCH 5.0, section 1.3
onwards) as its type character and its fields in wire order. From this table:

- ``tools/gen_itch50.py`` writes ``csrc/include/fh/itch50_wire.h`` (packed structs, lengths, type
  codes and field offsets for the native decoder) and ``itch50_wire.pxd`` (its Cython view);
- ``itch50_codec`` builds its encoder and reference decoder (``STRUCTS`` below);
- the tests check the generated header is not stale and that the captures match the lengths.

Field kinds (all integers are big-endian, unsigned):

=========  =====  ==========================================================================
kind       bytes  meaning
=========  =====  ==========================================================================
``char``   1      one ASCII character (codes such as side, event code)
``alpha``  n      left-justified, space-padded ASCII (symbols, MPIDs, reason codes)
``u16``    2      unsigned integer
``u32``    4      unsigned integer
``u64``    8      unsigned integer
``ts48``   6      nanoseconds since midnight (Eastern time) of the trading day
``price4`` 4      price, 4 implied decimals (x 100000 gives 1e-9 units)
``price8`` 8      price, 8 implied decimals (x 10 gives 1e-9 units; MWCB levels only)
=========  =====  ==========================================================================
"""
from __future__ import annotations

import struct
from typing import NamedTuple

# kind -> (size in bytes, struct format, number of struct values). ts48 is packed as u16 + u32.
KINDS: dict[str, tuple[int | None, str | None, int]] = {
    "char": (1, "c", 1),
    "alpha": (None, None, 1),  # size given per field; struct format "<n>s"
    "u16": (2, "H", 1),
    "u32": (4, "I", 1),
    "u64": (8, "Q", 1),
    "ts48": (6, "HI", 2),
    "price4": (4, "I", 1),
    "price8": (8, "Q", 1),
}

# Multiplier from the wire price to 1e-9 units.
PRICE_MULT = {"price4": 100_000, "price8": 10}


class Field(NamedTuple):
    name: str
    kind: str
    size: int


class Message(NamedTuple):
    name: str  # snake_case; the C names are derived from it (FH_ITCH50_<NAME>_...)
    type: str  # the message type character (first byte on the wire)
    title: str  # the specification's name for it
    fields: tuple[Field, ...]  # every field in wire order, starting with the common header

    @property
    def length(self) -> int:
        return sum(f.size for f in self.fields)

    def offsets(self) -> dict[str, int]:
        out, off = {}, 0
        for f in self.fields:
            out[f.name] = off
            off += f.size
        return out


def _f(name: str, kind: str, size: int | None = None) -> Field:
    ksize = KINDS[kind][0]
    if ksize is None:
        if size is None:
            raise ValueError(f"{name}: alpha fields need a size")
    elif size is not None and size != ksize:
        raise ValueError(f"{name}: kind {kind} is {ksize} bytes, not {size}")
    return Field(name, kind, ksize if ksize is not None else size)


# Every ITCH 5.0 message starts with these four fields (11 bytes).
HEADER: tuple[Field, ...] = (
    _f("message_type", "char"),
    _f("stock_locate", "u16"),
    _f("tracking_number", "u16"),
    _f("timestamp", "ts48"),
)
HEADER_LENGTH = sum(f.size for f in HEADER)


def _m(name: str, type_: str, title: str, *fields: Field) -> Message:
    return Message(name, type_, title, HEADER + tuple(fields))


STOCK = _f("stock", "alpha", 8)

MESSAGES: tuple[Message, ...] = (
    _m("system_event", "S", "System Event Message",
       _f("event_code", "char")),
    _m("stock_directory", "R", "Stock Directory",
       STOCK,
       _f("market_category", "char"),
       _f("financial_status_indicator", "char"),
       _f("round_lot_size", "u32"),
       _f("round_lots_only", "char"),
       _f("issue_classification", "char"),
       _f("issue_sub_type", "alpha", 2),
       _f("authenticity", "char"),
       _f("short_sale_threshold_indicator", "char"),
       _f("ipo_flag", "char"),
       _f("luld_reference_price_tier", "char"),
       _f("etp_flag", "char"),
       _f("etp_leverage_factor", "u32"),
       _f("inverse_indicator", "char")),
    _m("stock_trading_action", "H", "Stock Trading Action",
       STOCK,
       _f("trading_state", "char"),
       _f("reserved", "char"),
       _f("reason", "alpha", 4)),
    _m("reg_sho_restriction", "Y", "Reg SHO Short Sale Price Test Restricted Indicator",
       STOCK,
       _f("reg_sho_action", "char")),
    _m("market_participant_position", "L", "Market Participant Position",
       _f("mpid", "alpha", 4),
       STOCK,
       _f("primary_market_maker", "char"),
       _f("market_maker_mode", "char"),
       _f("market_participant_state", "char")),
    _m("mwcb_decline_level", "V", "MWCB Decline Level Message",
       _f("level1", "price8"),
       _f("level2", "price8"),
       _f("level3", "price8")),
    _m("mwcb_status", "W", "MWCB Status Message",
       _f("breached_level", "char")),
    _m("ipo_quoting_period_update", "K", "IPO Quoting Period Update",
       STOCK,
       _f("ipo_quotation_release_time", "u32"),
       _f("ipo_quotation_release_qualifier", "char"),
       _f("ipo_price", "price4")),
    _m("luld_auction_collar", "J", "LULD Auction Collar",
       STOCK,
       _f("auction_collar_reference_price", "price4"),
       _f("upper_auction_collar_price", "price4"),
       _f("lower_auction_collar_price", "price4"),
       _f("auction_collar_extension", "u32")),
    _m("operational_halt", "h", "Operational Halt",
       STOCK,
       _f("market_code", "char"),
       _f("operational_halt_action", "char")),
    _m("add_order", "A", "Add Order - No MPID Attribution",
       _f("order_reference_number", "u64"),
       _f("buy_sell_indicator", "char"),
       _f("shares", "u32"),
       STOCK,
       _f("price", "price4")),
    _m("add_order_mpid", "F", "Add Order with MPID Attribution",
       _f("order_reference_number", "u64"),
       _f("buy_sell_indicator", "char"),
       _f("shares", "u32"),
       STOCK,
       _f("price", "price4"),
       _f("attribution", "alpha", 4)),
    _m("order_executed", "E", "Order Executed Message",
       _f("order_reference_number", "u64"),
       _f("executed_shares", "u32"),
       _f("match_number", "u64")),
    _m("order_executed_with_price", "C", "Order Executed With Price Message",
       _f("order_reference_number", "u64"),
       _f("executed_shares", "u32"),
       _f("match_number", "u64"),
       _f("printable", "char"),
       _f("execution_price", "price4")),
    _m("order_cancel", "X", "Order Cancel Message",
       _f("order_reference_number", "u64"),
       _f("cancelled_shares", "u32")),
    _m("order_delete", "D", "Order Delete Message",
       _f("order_reference_number", "u64")),
    _m("order_replace", "U", "Order Replace Message",
       _f("original_order_reference_number", "u64"),
       _f("new_order_reference_number", "u64"),
       _f("shares", "u32"),
       _f("price", "price4")),
    _m("trade", "P", "Trade Message (Non-Cross)",
       _f("order_reference_number", "u64"),
       _f("buy_sell_indicator", "char"),
       _f("shares", "u32"),
       STOCK,
       _f("price", "price4"),
       _f("match_number", "u64")),
    _m("cross_trade", "Q", "Cross Trade Message",
       _f("shares", "u64"),
       STOCK,
       _f("cross_price", "price4"),
       _f("match_number", "u64"),
       _f("cross_type", "char")),
    _m("broken_trade", "B", "Broken Trade / Order Execution Message",
       _f("match_number", "u64")),
    _m("noii", "I", "Net Order Imbalance Indicator (NOII) Message",
       _f("paired_shares", "u64"),
       _f("imbalance_shares", "u64"),
       _f("imbalance_direction", "char"),
       STOCK,
       _f("far_price", "price4"),
       _f("near_price", "price4"),
       _f("current_reference_price", "price4"),
       _f("cross_type", "char"),
       _f("price_variation_indicator", "char")),
    _m("rpii", "N", "Retail Price Improvement Indicator (RPII)",
       STOCK,
       _f("interest_flag", "char")),
    _m("dlcr", "O", "Direct Listing with Capital Raise Price Discovery Message",
       STOCK,
       _f("open_eligibility_status", "char"),
       _f("minimum_allowable_price", "price4"),
       _f("maximum_allowable_price", "price4"),
       _f("near_execution_price", "price4"),
       _f("near_execution_time", "u64"),
       _f("lower_price_range_collar", "price4"),
       _f("upper_price_range_collar", "price4")),
)

# Message lengths as the specification states them (bytes, including the type byte). The table above
# must add up to these; a test checks it, so a typo in a field size cannot go unnoticed.
SPEC_LENGTHS = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21,
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
    "I": 50, "N": 20, "O": 48,
}

BY_TYPE: dict[str, Message] = {m.type: m for m in MESSAGES}
BY_NAME: dict[str, Message] = {m.name: m for m in MESSAGES}
LENGTH: dict[str, int] = {m.type: m.length for m in MESSAGES}


def struct_format(msg: Message) -> str:
    """The big-endian ``struct`` format of a message (ts48 becomes two values: high u16, low u32)."""
    parts = [">"]
    for f in msg.fields:
        fmt = KINDS[f.kind][1]
        parts.append(f"{f.size}s" if fmt is None else fmt)
    return "".join(parts)


# One struct.Struct per message type character.
STRUCTS: dict[str, struct.Struct] = {m.type: struct.Struct(struct_format(m)) for m in MESSAGES}

for _m_ in MESSAGES:
    if STRUCTS[_m_.type].size != _m_.length:  # pragma: no cover - table consistency
        raise AssertionError(f"{_m_.name}: struct size {STRUCTS[_m_.type].size} != {_m_.length}")
del _m_
