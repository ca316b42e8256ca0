"""JSON envelope, error codes and exact conversions between decimal strings and the engine's integers.

Every response is ``{"code": 0, "msg": "ok", "data": ...}``; an error has a SCREAMING_SNAKE_CASE ``code``
(one of :data:`ERRORS`, or an engine/risk reject reason upper-cased, e.g. ``MAX_QTY``) and a readable
``msg``. Prices are decimal strings of at most 9 fractional digits (the engine's 1e-9 fixed point);
quantities are decimal strings of whole units. Anything that does not convert exactly is
``INVALID_PARAMETER``: no float, no rounding, no coercion of other JSON types.
"""
from __future__ import annotations

import re

PRICE_SCALE = 1_000_000_000
PRICE_DIGITS = 9
MAX_QTY = 0x7FFFFFFF
MAX_PRICE_RAW = (1 << 62)

#: code -> (HTTP status, meaning). Engine and risk reject reasons map to their upper-cased name, 422.
ERRORS: dict[str, tuple[int, str]] = {
    "INVALID_PARAMETER": (400, "a field is missing, of the wrong type, or does not convert exactly"),
    "INVALID_JSON": (400, "the body is not a JSON object"),
    "UNAUTHORIZED": (401, "no accepted credentials (or X-User-ID without --insecure-dev-auth)"),
    "UNKNOWN_API_KEY": (401, "the API key is not known"),
    "INVALID_SIGNATURE": (401, "the HMAC-SHA256 signature does not match"),
    "TIMESTAMP_EXPIRED": (401, "the request timestamp is outside the receive window"),
    "NONCE_REUSED": (401, "the nonce was already used within the receive window"),
    "TOKEN_EXPIRED": (401, "the JWT has expired"),
    "INVALID_TOKEN": (401, "the JWT is malformed, forged or of another issuer"),
    "UNKNOWN_ORDER": (404, "no such order of this account"),
    "UNKNOWN_SYMBOL": (404, "the symbol is not traded here"),
    "NOT_FOUND": (404, "no such endpoint"),
    "METHOD_NOT_ALLOWED": (405, "the endpoint does not take this method"),
    "DUPLICATE_CID": (409, "the cid is in use by another request of this account"),
    "PAYLOAD_TOO_LARGE": (413, "the body exceeds the size limit"),
    "ORDER_REJECTED": (422, "the engine or risk rejected the request (code: the reason, upper-cased)"),
    "INSUFFICIENT_BALANCE": (422, "the account's available balance does not cover the order, amend or withdrawal"),
    "ACCOUNT_EXISTS": (422, "admin create_user: the account already exists"),
    "UNKNOWN_ACCOUNT": (422, "admin deposit/withdraw: no such account (create it first)"),
    "AMOUNT_TOO_LARGE": (422, "admin deposit: the asset's net deposits would exceed 2**62"),
    "RATE_LIMITED": (429, "too many requests for this account; see Retry-After"),
    "INTERNAL_ERROR": (500, "the request failed inside the exchange; nothing was acknowledged"),
    "UNSUPPORTED": (501, "not provided by this exchange build"),
    "BUSY": (503, "the engine queue is full; retry with backoff"),
}

_DEC = re.compile(r"^(0|[1-9][0-9]{0,18})(?:\.([0-9]{1,18}))?$")
#: client order ids, api keys, nonces: printable identifiers only (no quotes, semicolons, spaces)
_IDENT = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")

SIDES = {"BUY": "B", "SELL": "S"}
SIDE_NAME = {"B": "BUY", "S": "SELL"}
ORDER_TYPES = {"LIMIT": "limit", "MARKET": "market"}
TIFS = {"DAY": "day", "GTC": "gtc", "IOC": "ioc", "FOK": "fok"}


class ApiError(Exception):
    """A request answered with an error envelope: ``code`` (SCREAMING_SNAKE_CASE), ``msg``, HTTP status."""

    def __init__(self, code: str, msg: str = "", status: int | None = None, headers: dict | None = None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg or ERRORS.get(code, (0, code))[1]
        self.status = status if status is not None else ERRORS.get(code, (422, ""))[0]
        self.headers = headers or {}


def ok(data) -> dict:
    return {"code": 0, "msg": "ok", "data": data}


def err(code: str, msg: str) -> dict:
    return {"code": code, "msg": msg, "data": None}


def parse_price(value, field: str = "price") -> int:
    """``"101.25"`` -> 101_250_000_000 (1e-9 units), exactly; positive; else INVALID_PARAMETER."""
    ip, frac = _decimal(value, field)
    if len(frac) > PRICE_DIGITS:
        if frac[PRICE_DIGITS:].strip("0"):
            raise ApiError("INVALID_PARAMETER", f"{field} {value!r} has more than {PRICE_DIGITS} decimals")
        frac = frac[:PRICE_DIGITS]
    raw = int(ip) * PRICE_SCALE + int(frac.ljust(PRICE_DIGITS, "0") or 0)
    if raw <= 0 or raw >= MAX_PRICE_RAW:
        raise ApiError("INVALID_PARAMETER", f"{field} {value!r} is out of range")
    return raw


def parse_qty(value, field: str = "qty") -> int:
    """``"10"`` (or ``"10.000"``) -> 10; a fraction, zero, or more than 2**31-1 is INVALID_PARAMETER."""
    ip, frac = _decimal(value, field)
    if frac.strip("0"):
        raise ApiError("INVALID_PARAMETER", f"{field} {value!r} is not a whole number of units")
    q = int(ip)
    if not 0 < q <= MAX_QTY:
        raise ApiError("INVALID_PARAMETER", f"{field} {value!r} must be between 1 and {MAX_QTY}")
    return q


def _decimal(value, field: str) -> tuple[str, str]:
    if not isinstance(value, str):
        raise ApiError("INVALID_PARAMETER", f"{field} must be a decimal string, not {type(value).__name__}")
    m = _DEC.match(value)
    if m is None:
        raise ApiError("INVALID_PARAMETER", f"{field} {value[:40]!r} is not a plain decimal number")
    return m.group(1), m.group(2) or ""


def price_str(raw: int) -> str:
    """1e-9 units -> the shortest exact decimal string (``101250000000`` -> ``"101.25"``)."""
    ip, frac = divmod(int(raw), PRICE_SCALE)
    if not frac:
        return str(ip)
    return f"{ip}.{frac:09d}".rstrip("0")


def parse_amount(value, quote: bool, field: str = "amount") -> int:
    """An admin amount: the quote asset as a decimal of at most 9 fractional digits (-> 1e-9 units, the
    engine's price x qty units), a base asset as a whole quantity; positive; else INVALID_PARAMETER."""
    ip, frac = _decimal(value, field)
    if quote:
        if frac[PRICE_DIGITS:].strip("0"):
            raise ApiError("INVALID_PARAMETER", f"{field} {value!r} has more than {PRICE_DIGITS} decimals")
        raw = int(ip) * PRICE_SCALE + int(frac[:PRICE_DIGITS].ljust(PRICE_DIGITS, "0"))
    else:
        if frac.strip("0"):
            raise ApiError("INVALID_PARAMETER", f"{field} {value!r} is not a whole number of units")
        raw = int(ip)
    if raw <= 0:
        raise ApiError("INVALID_PARAMETER", f"{field} {value!r} must be positive")
    return raw


def amount_str(raw: int, quote: bool) -> str:
    """A balance amount as a decimal string: quote amounts in units of the quote asset (1e-9 scale), base
    amounts as quantities."""
    if not quote:
        return str(int(raw))
    if raw < 0:
        return "-" + price_str(-raw)
    return price_str(raw)


def ident(value, field: str, required: bool = False) -> str | None:
    """A client identifier (cid, nonce): 1-64 characters of ``A-Z a-z 0-9 _ . : -``."""
    if value is None:
        if required:
            raise ApiError("INVALID_PARAMETER", f"{field} is required")
        return None
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ApiError("INVALID_PARAMETER", f"{field} must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


def enum(value, table: dict, field: str, default=None):
    if value is None and default is not None:
        return table[default]
    if not isinstance(value, str) or value not in table:
        raise ApiError("INVALID_PARAMETER", f"{field} must be one of {', '.join(table)}")
    return table[value]


def order_id(value, field: str = "order_id") -> int:
    """An order id: a decimal string (ids exceed 2**53, so JSON numbers are refused)."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 20:
        raise ApiError("INVALID_PARAMETER", f"{field} must be a decimal string")
    v = int(value)
    if not 0 < v < (1 << 63):
        raise ApiError("INVALID_PARAMETER", f"{field} is out of range")
    return v


def check_keys(body: dict, allowed: tuple[str, ...]) -> None:
    extra = [k for k in body if k not in allowed]
    if extra:
        raise ApiError("INVALID_PARAMETER", f"unknown field {str(extra[0])[:40]!r} (allowed: {', '.join(allowed)})")


def reject_code(reason: str) -> str:
    """An engine/risk reject reason (``max_qty``) as an error code (``MAX_QTY``)."""
    r = re.sub(r"[^A-Za-z0-9]+", "_", str(reason or "rejected")).strip("_").upper()
    return r or "ORDER_REJECTED"
