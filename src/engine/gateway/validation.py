"""Stateless validation of one gateway request: strict types and documented sizes (engine.limits), once.

:func:`validate` turns a decoded request of an authenticated account into the engine's request dict, or
raises :class:`BadRequest` (reason ``bad_request``). Nothing here reads or changes state, so a request it
refuses is answered at the edge and never sequenced; a retry of it gets the same answer.

Types are checked before anything else and never coerced: quantities and prices are JSON integers
(``1.5``, ``true``, ``"7"``, ``"100"`` are refused), strings are strings, ``post_only`` is a boolean.
"""
from __future__ import annotations

from engine.limits import MAX_ID_BYTES, MAX_QTY, MAX_RID_BYTES, MAX_SYMBOL_BYTES

#: the one side table of the gateway protocol (FIX's "1"/"2" included)
SIDES = {"B": "B", "S": "S", "buy": "B", "sell": "S", "BUY": "B", "SELL": "S", "1": "B", "2": "S"}
ORDER_TYPES = ("limit", "market")
TIFS = ("day", "gtc", "ioc", "fok")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
ORDER_KINDS = ("new", "cancel", "amend")
# a str of at most limit // 4 characters is within the limit in UTF-8 whatever it holds: the fast path
_ID_FAST = MAX_ID_BYTES // 4
_SYMBOL_FAST = MAX_SYMBOL_BYTES // 4


class BadRequest(ValueError):
    """A request refused by a stateless check; ``reason`` is the reject reason of the reply."""

    def __init__(self, text: str, reason: str = "bad_request"):
        super().__init__(text)
        self.reason = reason


def _is_int(v) -> bool:
    """A JSON integer (or a numpy integer from an in-process caller); never bool, float or str."""
    return type(v) is int or (not isinstance(v, (bool, float, str, bytes)) and hasattr(v, "__index__"))


def _int(req: dict, key: str, lo: int, hi: int) -> int:
    v = req.get(key)
    if v is None:
        raise BadRequest(f"missing {key}")
    if not _is_int(v):
        raise BadRequest(f"{key} must be an integer (prices in 1e-9 units), got {type(v).__name__}")
    v = v.__index__()
    if not lo <= v <= hi:
        raise BadRequest(f"{key} out of range [{lo}, {hi}]")
    return v


def _str(req: dict, key: str, max_bytes: int, required: bool = False) -> str | None:
    v = req.get(key)
    if v is None or v == "":
        if required:
            raise BadRequest(f"missing {key}")
        return None
    if type(v) is not str:
        raise BadRequest(f"{key} must be a string, got {type(v).__name__}")
    if len(v) > max_bytes or (not v.isascii() and len(v.encode()) > max_bytes):
        raise BadRequest(f"{key} longer than {max_bytes} bytes")
    return v


def check_rid(rid) -> None:
    """A rid is echoed in the reply and keys the retry memory: a short string or an int64."""
    if rid is None:
        return
    if type(rid) is str:
        if len(rid) > MAX_RID_BYTES or (not rid.isascii() and len(rid.encode()) > MAX_RID_BYTES):
            raise BadRequest(f"rid longer than {MAX_RID_BYTES} bytes")
    elif type(rid) is not int or not INT64_MIN <= rid <= INT64_MAX:
        raise BadRequest("rid must be a string or an int64 integer")


def validate(account: str, req: dict, nonce: bytes | str | None = None, rid_checked: bool = False,
             ts_recv: int = 0) -> dict:
    """The engine request for ``req`` (kinds new, cancel, amend), with its ``dedup_key``; raises BadRequest.

    ``ts_recv`` (ns, 0: the engine stamps it) goes into the request. The dedup key names the request in
    the account's retry memory: ``c:<client_order_id>`` for a new order that has one, else ``r:<rid>``,
    else ``s:<nonce>`` (the request's signature: a signed request without either cannot be replayed as a
    second order), else none. ``rid_checked``: the caller already ran :func:`check_rid`.

    (The common case, short strings and plain ints, is tested inline; anything else goes through
    the general checks, which give the reasons.)"""
    kind = req.get("type")
    rid = req.get("rid")
    if not rid_checked and rid is not None:
        check_rid(rid)
    clid = req.get("client_order_id")
    if clid is not None and not (type(clid) is str and len(clid) <= _ID_FAST):
        clid = _str(req, "client_order_id", MAX_ID_BYTES)
    if kind == "new":
        symbol = req.get("symbol")
        if not (type(symbol) is str and 0 < len(symbol) <= _SYMBOL_FAST):
            symbol = _str(req, "symbol", MAX_SYMBOL_BYTES, required=True)
        side = req.get("side")
        side = SIDES.get(side) if type(side) is str else None
        if side is None:
            raise BadRequest(f"side must be one of {sorted(SIDES)}")
        order_type = req.get("order_type", "limit")
        if order_type != "limit" and (type(order_type) is not str or order_type not in ORDER_TYPES):
            raise BadRequest(f"order_type must be one of {ORDER_TYPES}")
        tif = req.get("tif", "day")
        if type(tif) is not str or tif not in TIFS:
            raise BadRequest(f"tif must be one of {TIFS}")
        post_only = req.get("post_only", False)
        if type(post_only) is not bool:
            raise BadRequest("post_only must be true or false")
        qty = req.get("qty")
        if type(qty) is not int or not 0 < qty <= MAX_QTY:
            qty = _int(req, "qty", 1, MAX_QTY)
        if order_type == "market":
            p = req.get("price")
            if p is not None and (type(p) is not int or p != 0):
                raise BadRequest("a market order has no price (0 or absent)")
            price = 0
        else:
            price = req.get("price")
            if type(price) is not int or not INT64_MIN <= price <= INT64_MAX:
                price = _int(req, "price", INT64_MIN, INT64_MAX)
        # one literal with every key (an insert past the literal's size would grow the dict)
        out = {"type": "new", "account": account, "client_order_id": clid or "", "symbol": symbol,
               "side": side, "price": price, "qty": qty, "order_type": order_type, "tif": tif,
               "post_only": post_only, "ts_recv": ts_recv, "dedup_key": "c:" + clid if clid else None}
        if clid:
            return out
    elif kind == "cancel" or kind == "amend":
        out = {"type": kind, "account": account, "client_order_id": clid or "", "ts_recv": ts_recv,
               "dedup_key": None}
        if req.get("order_id") is not None:
            oid = req["order_id"]
            out["order_id"] = oid if type(oid) is int and 0 < oid < (1 << 64) else _int(req, "order_id", 1,
                                                                                       (1 << 64) - 1)
        else:
            out["orig_client_order_id"] = _str(req, "orig_client_order_id", MAX_ID_BYTES, required=True)
        sym = req.get("symbol")
        if sym is not None:
            sym = _str(req, "symbol", MAX_SYMBOL_BYTES)
            if sym is not None:
                out["symbol"] = sym
        if kind == "amend":
            np_, nq = req.get("new_price"), req.get("new_qty")
            out["new_price"] = None if np_ is None else _int(req, "new_price", INT64_MIN, INT64_MAX)
            out["new_qty"] = None if nq is None else _int(req, "new_qty", 1, MAX_QTY)
            if out["new_price"] is None and out["new_qty"] is None:
                raise BadRequest("amend needs new_price or new_qty")
    else:
        raise BadRequest(f"unknown request type {kind!r}"[:80])
    if rid is not None:
        out["dedup_key"] = "r:" + str(rid)
    elif nonce:
        if type(nonce) is not str:
            nonce = nonce.decode("ascii", "replace")
        out["dedup_key"] = "s:" + nonce[:MAX_RID_BYTES]
    return out
