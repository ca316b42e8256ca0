"""Pure-Python ITCH 5.0 encoder, decoder and record mapping, driven by the field table.

This is the project's reference implementation: the tests check the native decoder
(``feedhandler.protocols.itch50``) against it message by message and byte by byte, and the synthetic
day generator uses the encoder. It is written for clarity, not speed (about 1 M messages/s would be
optimistic); nothing on a hot path may use it.

- :func:`encode` / :func:`decode`: one wire message <-> a dict of its fields (names from
  ``itch50_spec``). Integers and prices stay in wire units; ``char`` and ``alpha`` fields are bytes.
- :func:`to_records`: the normalized tick records (``feedhandler.records`` layouts) that a message
  maps to, computed independently of the native decoder from the same documented rules.
- :func:`binaryfile` / :func:`iter_binaryfile`: NASDAQ's BinaryFILE framing (each message preceded by
  its length as a big-endian u16).
"""
from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from feedhandler import records
from feedhandler.protocols.itch50_spec import BY_NAME, BY_TYPE, KINDS, PRICE_MULT, STRUCTS, Message

__all__ = [
    "Itch50Error",
    "EmptyMessage",
    "UnknownType",
    "BadLength",
    "encode",
    "decode",
    "to_records",
    "records_array",
    "binaryfile",
    "iter_binaryfile",
    "random_fields",
    "random_message",
]

# DBN flag bits and feedhandler's private bits (fh/record.h). Written out here, not imported from the
# native module, so that this reference stays independent; tests check they equal the C values.
F_LAST = 0x80
F_BAD_TS_RECV = 0x08
F_MAYBE_BAD_BOOK = 0x04
F_WHOLE_ORDER = 0x02
F_NONPRINTABLE = 0x01
# fh/msg.h
MSG_TS_NONE = 0
MSG_TS_MASK = 3
MSG_AFTER_GAP = 4

UNDEF_PRICE = 2**63 - 1
INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1
MASK64 = 2**64 - 1
DBN_MBO_LENGTH = 56 // 4
DBN_TRADE_LENGTH = 48 // 4
OWN_LENGTH = 64 // 4


class Itch50Error(ValueError):
    """A message the decoder rejects; ``reason`` names the counter it is counted under."""

    reason = "error"


class EmptyMessage(Itch50Error):
    reason = "empty"


class UnknownType(Itch50Error):
    reason = "unknown"


class BadLength(Itch50Error):
    reason = "bad_length"


def _message(type_or_name: str | bytes) -> Message:
    if isinstance(type_or_name, bytes):
        type_or_name = type_or_name.decode("latin-1")
    if type_or_name in BY_TYPE:
        return BY_TYPE[type_or_name]
    return BY_NAME[type_or_name]


def _as_bytes(v: Any, size: int, pad: bytes = b" ") -> bytes:
    b = v.encode("latin-1") if isinstance(v, str) else bytes(v)
    if len(b) > size:
        raise ValueError(f"{b!r} is longer than {size} bytes")
    return b.ljust(size, pad)


def encode(type_or_name: str | bytes, **fields: Any) -> bytes:
    """Encode one ITCH 5.0 message.

    Parameters
    ----------
    type_or_name
        The message type character (``"A"``) or table name (``"add_order"``).
    **fields
        Field values by table name. Integers and prices are wire units (price4: 1/10000 dollars).
        ``char``/``alpha`` accept str or bytes; alpha values are space padded. Omitted fields are 0 or
        spaces; ``message_type`` is always set from the message.

    Returns
    -------
    bytes
        The message, ``LENGTH[type]`` bytes long.
    """
    msg = _message(type_or_name)
    known = {f.name for f in msg.fields}
    extra = set(fields) - known
    if extra:
        raise TypeError(f"{msg.name}: unknown fields {sorted(extra)}")
    values: list[Any] = []
    for f in msg.fields:
        if f.name == "message_type":
            values.append(msg.type.encode())
            continue
        v = fields.get(f.name)
        if f.kind == "char":
            values.append(_as_bytes(b" " if v is None else v, 1))
        elif f.kind == "alpha":
            values.append(_as_bytes(b"" if v is None else v, f.size))
        elif f.kind == "ts48":
            v = int(v or 0)
            if not 0 <= v < 1 << 48:
                raise ValueError(f"{f.name}: {v} does not fit 48 bits")
            values += [v >> 32, v & 0xFFFFFFFF]
        else:
            values.append(int(v or 0))
    return STRUCTS[msg.type].pack(*values)


def decode(data: bytes) -> dict[str, Any]:
    """Decode one ITCH 5.0 message into ``{field: value}`` (wire units; chars/alpha as bytes).

    Raises
    ------
    EmptyMessage, UnknownType, BadLength
        For the messages the native decoder skips and counts under the same reason.
    """
    data = bytes(data)
    if not data:
        raise EmptyMessage("empty message")
    t = chr(data[0])
    msg = BY_TYPE.get(t)
    if msg is None:
        raise UnknownType(f"unknown message type {data[:1]!r}")
    if len(data) != msg.length:
        raise BadLength(f"{msg.name}: {len(data)} bytes, expected {msg.length}")
    raw = iter(STRUCTS[t].unpack(data))
    out: dict[str, Any] = {}
    for f in msg.fields:
        v = next(raw)
        if f.kind == "ts48":
            v = (v << 32) | next(raw)
        out[f.name] = v
    out["message_type"] = t
    return out


def _price(kind: str, v: int) -> int:
    p = v * PRICE_MULT[kind]
    return UNDEF_PRICE if p > INT64_MAX else p


def _add_side(b: bytes) -> bytes:
    # ITCH buy/sell indicator of the resting order -> DBN book side.
    return {b"B": b"B", b"S": b"A"}.get(b, b"N")


def _aggressor_side(b: bytes) -> bytes:
    # ITCH P reports the side of the resting order; DBN trades carry the aggressor's side.
    return {b"B": b"A", b"S": b"B"}.get(b, b"N")


def to_records(
    data: bytes,
    *,
    midnight_ns: int = 0,
    publisher_id: int = 0,
    channel_id: int = 0,
    ts_recv: int = 0,
    sequence: int = 0,
    msg_flags: int = 0,
) -> list[tuple[str, dict[str, Any]]]:
    """The records one message maps to, as ``[(layout name, {field: value}), ...]``.

    Fields not listed are zero. The arguments mirror the decoder configuration and the ``fh_msg``
    that carries the message. Raises the same errors as :func:`decode`.
    """
    d = decode(data)
    msg = BY_TYPE[d["message_type"]]
    kinds = {f.name: f.kind for f in msg.fields}

    def px(name: str) -> int:
        return _price(kinds[name], d[name])

    hd = {
        "publisher_id": publisher_id,
        "instrument_id": d["stock_locate"],
        "ts_event": (midnight_ns + d["timestamp"]) & MASK64,
    }
    seq32 = sequence & 0xFFFFFFFF
    base_flags = (F_BAD_TS_RECV if (msg_flags & MSG_TS_MASK) == MSG_TS_NONE else 0) | (
        F_MAYBE_BAD_BOOK if msg_flags & MSG_AFTER_GAP else 0
    )

    def mbo(action: bytes, side: bytes, order_id: int, price: int, size: int, flags: int, **ext) -> tuple:
        return (
            "mbo",
            dict(hd, length=DBN_MBO_LENGTH, rtype=records.RTYPE["mbo"], order_id=order_id, price=price,
                 size=size, flags=flags, channel_id=channel_id, action=action, side=side, ts_recv=ts_recv,
                 ts_in_delta=0, sequence=seq32, **ext),
        )

    def trade(side: bytes, price: int, size: int, depth: int, order_id: int, match_number: int) -> tuple:
        return (
            "trade",
            dict(hd, length=DBN_TRADE_LENGTH, rtype=records.RTYPE["trade"], price=price, size=size,
                 action=b"T", side=side, flags=base_flags | F_LAST, depth=depth, ts_recv=ts_recv,
                 ts_in_delta=0, sequence=seq32, order_id=order_id, match_number=match_number),
        )

    def own(name: str, **fields) -> tuple:
        return (name, dict(hd, length=OWN_LENGTH, rtype=records.RTYPE[name], ts_recv=ts_recv, sequence=seq32,
                           **fields))

    last = base_flags | F_LAST
    t = msg.type
    if t in "AF":
        ext = {"attribution": d["attribution"]} if t == "F" else {}
        return [mbo(b"A", _add_side(d["buy_sell_indicator"]), d["order_reference_number"], px("price"),
                    d["shares"], last, **ext)]
    if t == "E":
        return [mbo(b"F", b"N", d["order_reference_number"], UNDEF_PRICE, d["executed_shares"], last,
                    match_number=d["match_number"])]
    if t == "C":
        flags = last | (F_NONPRINTABLE if d["printable"] == b"N" else 0)
        return [mbo(b"F", b"N", d["order_reference_number"], px("execution_price"), d["executed_shares"], flags,
                    match_number=d["match_number"])]
    if t == "X":
        return [mbo(b"C", b"N", d["order_reference_number"], UNDEF_PRICE, d["cancelled_shares"], last)]
    if t == "D":
        return [mbo(b"C", b"N", d["order_reference_number"], UNDEF_PRICE, 0, last | F_WHOLE_ORDER)]
    if t == "U":
        return [
            mbo(b"C", b"N", d["original_order_reference_number"], UNDEF_PRICE, 0, base_flags | F_WHOLE_ORDER),
            mbo(b"A", b"N", d["new_order_reference_number"], px("price"), d["shares"], last),
        ]
    if t == "P":
        return [trade(_aggressor_side(d["buy_sell_indicator"]), px("price"), d["shares"], 0,
                      d["order_reference_number"], d["match_number"])]
    if t == "Q":
        return [trade(b"N", px("cross_price"), min(d["shares"], UINT32_MAX), d["cross_type"][0], 0,
                      d["match_number"])]
    if t == "B":
        return [own("broken_trade", match_number=d["match_number"])]
    if t == "S":
        return [own("system_event", event_code=d["event_code"])]
    if t == "R":
        return [own("stock_directory", round_lot_size=d["round_lot_size"],
                    etp_leverage_factor=d["etp_leverage_factor"], symbol=d["stock"],
                    market_category=d["market_category"], financial_status=d["financial_status_indicator"],
                    round_lots_only=d["round_lots_only"], issue_classification=d["issue_classification"],
                    issue_subtype=d["issue_sub_type"], authenticity=d["authenticity"],
                    short_sale_threshold=d["short_sale_threshold_indicator"], ipo_flag=d["ipo_flag"],
                    luld_ref_price_tier=d["luld_reference_price_tier"], etp_flag=d["etp_flag"],
                    inverse_indicator=d["inverse_indicator"])]
    if t == "H":
        return [own("trading_action", trading_state=d["trading_state"], reserved=d["reserved"],
                    reason=d["reason"])]
    if t == "Y":
        return [own("reg_sho", action=d["reg_sho_action"])]
    if t == "L":
        return [own("mpp", mpid=d["mpid"], primary_market_maker=d["primary_market_maker"],
                    market_maker_mode=d["market_maker_mode"],
                    market_participant_state=d["market_participant_state"])]
    if t == "V":
        return [own("mwcb_decline", level1=px("level1"), level2=px("level2"), level3=px("level3"))]
    if t == "W":
        return [own("mwcb_status", breached_level=d["breached_level"])]
    if t == "K":
        return [own("ipo_quoting", ipo_price=px("ipo_price"), release_time=d["ipo_quotation_release_time"],
                    release_qualifier=d["ipo_quotation_release_qualifier"])]
    if t == "J":
        return [own("luld_collar", reference_price=px("auction_collar_reference_price"),
                    upper_price=px("upper_auction_collar_price"), lower_price=px("lower_auction_collar_price"),
                    extension=d["auction_collar_extension"])]
    if t == "h":
        return [own("operational_halt", market_code=d["market_code"], halt_action=d["operational_halt_action"])]
    if t == "I":
        return [
            own("noii", paired_shares=d["paired_shares"], imbalance_shares=d["imbalance_shares"],
                current_reference_price=px("current_reference_price"),
                imbalance_direction=d["imbalance_direction"], cross_type=d["cross_type"],
                price_variation_indicator=d["price_variation_indicator"]),
            own("noii_prices", far_price=px("far_price"), near_price=px("near_price")),
        ]
    if t == "N":
        return [own("rpii", interest_flag=d["interest_flag"])]
    if t == "O":
        return [
            own("dlcr", near_execution_time=d["near_execution_time"], near_execution_price=px("near_execution_price"),
                minimum_allowable_price=px("minimum_allowable_price"),
                open_eligibility_status=d["open_eligibility_status"]),
            own("dlcr_collars", maximum_allowable_price=px("maximum_allowable_price"),
                lower_price_range_collar=px("lower_price_range_collar"),
                upper_price_range_collar=px("upper_price_range_collar")),
        ]
    raise AssertionError(f"no record mapping for {t!r}")  # pragma: no cover - table and mapping disagree


def records_array(recs: Iterable[tuple[str, Mapping[str, Any]]]) -> np.ndarray:
    """Build a ``TICK_DTYPE`` array (zeroed slots, fields set) from :func:`to_records` output."""
    recs = list(recs)
    out = np.zeros(len(recs), dtype=records.TICK_DTYPE)
    for i, (name, fields) in enumerate(recs):
        row = out[i : i + 1].view(records.DTYPES[name])
        for k, v in fields.items():
            row[k] = v
    return out


def binaryfile(messages: Iterable[bytes]) -> bytes:
    """Frame messages as NASDAQ BinaryFILE: each preceded by its length (big-endian u16)."""
    parts = []
    for m in messages:
        parts.append(struct.pack(">H", len(m)))
        parts.append(m)
    return b"".join(parts)


def iter_binaryfile(buf: bytes) -> Iterator[bytes]:
    """Split a BinaryFILE buffer into messages; raises ValueError on a truncated tail."""
    off, n = 0, len(buf)
    while off < n:
        if off + 2 > n:
            raise ValueError(f"truncated length prefix at offset {off}")
        (ln,) = struct.unpack_from(">H", buf, off)
        if off + 2 + ln > n:
            raise ValueError(f"truncated message at offset {off}: {ln} bytes announced, {n - off - 2} left")
        yield bytes(buf[off + 2 : off + 2 + ln])
        off += 2 + ln


_PRINTABLE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "


def random_fields(type_or_name: str | bytes, rng: random.Random) -> dict[str, Any]:
    """Random but well-formed field values for one message (full integer ranges, ASCII characters)."""
    msg = _message(type_or_name)
    out: dict[str, Any] = {}
    for f in msg.fields[1:]:
        if f.kind in ("char", "alpha"):
            out[f.name] = bytes(rng.choice(_PRINTABLE) for _ in range(f.size))
        elif f.kind == "ts48":
            out[f.name] = rng.randrange(1 << 48)
        else:
            out[f.name] = rng.randrange(1 << (8 * KINDS[f.kind][0]))
    # Codes the mapping interprets: include the meaningful values often.
    for name, choices in (("buy_sell_indicator", b"BSX"), ("printable", b"YNX")):
        if name in out:
            out[name] = bytes([rng.choice(choices)])
    return out


def random_message(type_or_name: str | bytes, rng: random.Random) -> bytes:
    """A random, well-formed message of the given type."""
    return encode(type_or_name, **random_fields(type_or_name, rng))
