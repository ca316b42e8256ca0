"""The messages between strategy processes and the executor (msgpack maps, version 1).

Signal (strategy PUSH -> executor PULL), one frame::

    {"v": 1, "id": "breakout.3f9a01c2.17", "from": "breakout.3f9a01c2", "symbol": "AAPL", "side": "B",
     "qty": 100, "price": 150250000000, "order_type": "limit", "tif": "ioc", "ts": <ns created>,
     "md_ts": <ns ts_recv of the tick that caused it>, "ttl_ms": 5000, "reason": "..."}

- ``id`` is unique for ever (strategy name, a per-process session, a counter): the executor acts on an id
  once, and the exchange's client order id is derived from it (:func:`client_order_id`).
- ``from`` names the strategy instance: its acknowledgements are published under that topic.
- ``price`` is an integer of 1e-9 currency units (None for a market order).
- ``ttl_ms``: a signal that reaches the executor later than this after ``ts`` is not traded (outcome
  ``expired``) - unless an earlier executor already sent its order (then the order's outcome is fetched).

Acknowledgement (executor PUB, topic = the signal's ``from``), frames ``[topic, msgpack map]``::

    {"v": 1, "id": ..., "status": "filled" | "accepted" | "rejected" | "expired" | "invalid",
     "order_id": int | None, "filled": int, "client_order_id": str, "reason": str, "dup": bool,
     "md_ts": int (the signal's md_ts: tick -> acknowledgement latency can be measured anywhere)}

``dup`` is true when the executor had already processed the id (the acknowledgement is repeated from its
ledger, nothing was sent again). Decoding checks every field and raises :class:`BadMessage` with the reason.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgpack

VERSION = 1
SIDES = ("B", "S")
ORDER_TYPES = ("limit", "market")
TIFS = ("day", "gtc", "ioc", "fok")
STATUSES = ("filled", "accepted", "rejected", "expired", "invalid")
MAX_ID = 96                   # bytes of a signal id
MAX_REASON = 256


class BadMessage(ValueError):
    """A signal or acknowledgement that does not follow the schema (the reason is the message)."""


@dataclass(frozen=True)
class Signal:
    id: str
    sender: str
    symbol: str
    side: str
    qty: int
    price: int | None
    order_type: str = "limit"
    tif: str = "ioc"
    ts: int = 0
    md_ts: int = 0
    ttl_ms: int = 5000
    reason: str = ""

    def encode(self) -> bytes:
        return msgpack.packb({"v": VERSION, "id": self.id, "from": self.sender, "symbol": self.symbol,
                              "side": self.side, "qty": self.qty, "price": self.price, "order_type": self.order_type,
                              "tif": self.tif, "ts": self.ts, "md_ts": self.md_ts, "ttl_ms": self.ttl_ms,
                              "reason": self.reason[:MAX_REASON]})

    def expired(self, now_ns: int) -> bool:
        return self.ttl_ms > 0 and now_ns - self.ts > self.ttl_ms * 1_000_000


def _field(m: dict, key: str, types, required: bool = True):
    v = m.get(key)
    if v is None:
        if required:
            raise BadMessage(f"missing {key}")
        return None
    if type(v) is bool or not isinstance(v, types):
        raise BadMessage(f"{key} has the wrong type ({type(v).__name__})")
    return v


def _map(data: bytes) -> dict:
    try:
        m = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise BadMessage(f"not msgpack: {e}") from None
    if not isinstance(m, dict):
        raise BadMessage(f"not a map but a {type(m).__name__}")
    if m.get("v") != VERSION:
        raise BadMessage(f"unknown version {m.get('v')!r} (this executor reads {VERSION})")
    return m


def peek_id(data: bytes) -> tuple[str | None, str | None]:
    """(id, from) of a message that may not decode as a whole (to acknowledge it as invalid)."""
    try:
        m = msgpack.unpackb(data, raw=False)
    except Exception:       # any damage: there is nothing to acknowledge to
        return None, None
    if not isinstance(m, dict):
        return None, None
    i, f = m.get("id"), m.get("from")
    return (i if isinstance(i, str) and 0 < len(i.encode()) <= MAX_ID else None,
            f if isinstance(f, str) and 0 < len(f.encode()) <= MAX_ID else None)


def decode_signal(data: bytes) -> Signal:
    m = _map(data)
    sid = _field(m, "id", str)
    sender = _field(m, "from", str)
    for name, v in (("id", sid), ("from", sender)):
        if not 0 < len(v.encode()) <= MAX_ID:
            raise BadMessage(f"{name} must be 1..{MAX_ID} bytes")
    symbol = _field(m, "symbol", str)
    if not symbol or len(symbol) > 16:
        raise BadMessage("symbol must be 1..16 characters")
    side = _field(m, "side", str)
    if side not in SIDES:
        raise BadMessage(f"side must be one of {SIDES}, not {side!r}")
    qty = _field(m, "qty", int)
    if qty <= 0:
        raise BadMessage(f"qty must be positive, not {qty}")
    order_type = m.get("order_type", "limit")
    if order_type not in ORDER_TYPES:
        raise BadMessage(f"order_type must be one of {ORDER_TYPES}, not {order_type!r}")
    price = _field(m, "price", int, required=order_type == "limit")
    if price is not None and price <= 0:
        raise BadMessage(f"price must be positive, not {price}")
    tif = m.get("tif", "ioc")
    if tif not in TIFS:
        raise BadMessage(f"tif must be one of {TIFS}, not {tif!r}")
    ts = _field(m, "ts", int)
    md_ts = _field(m, "md_ts", int, required=False) or 0
    ttl = _field(m, "ttl_ms", int, required=False)
    reason = _field(m, "reason", str, required=False) or ""
    return Signal(sid, sender, symbol, side, qty, price, order_type, tif, ts, md_ts,
                  5000 if ttl is None else ttl, reason[:MAX_REASON])


def client_order_id(signal_id: str) -> str:
    """The exchange client order id of a signal: the same for every executor that ever handles it (so the
    exchange's retry memory is the last guard against a second order), 28 ASCII characters."""
    return "sig-" + hashlib.blake2b(signal_id.encode(), digest_size=12).hexdigest()


def encode_ack(outcome: dict) -> bytes:
    return msgpack.packb({"v": VERSION, **outcome})


def decode_ack(data: bytes) -> dict:
    m = _map(data)
    _field(m, "id", str)
    if m.get("status") not in STATUSES:
        raise BadMessage(f"status must be one of {STATUSES}, not {m.get('status')!r}")
    return m
