"""The HTTP gateway's routes, and the OpenAPI 3.1 description generated from them (served at /docs).

:data:`ROUTES` is the one table: the server registers exactly these (method, path, handler) and the
document lists exactly these, so the description cannot drift from what is served (tests/test_http_api.py
also calls every documented path)."""
from __future__ import annotations

from engine.http.codec import ERRORS
from engine.http.dashboard import DATA_SCHEMAS as _DASH_DATA, ROUTES as DASHBOARD_ROUTES

_DEC = {"type": "string", "pattern": r"^(0|[1-9][0-9]*)(\.[0-9]+)?$"}
_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,64}$"}
_OID = {"type": "string", "pattern": r"^[0-9]{1,20}$", "description": "order id (decimal string: ids exceed 2**53)"}

_ORDER = {"type": "object", "properties": {
    "order_id": _OID, "cid": {"type": "string"}, "symbol": {"type": "string"},
    "side": {"enum": ["BUY", "SELL"]}, "type": {"enum": ["LIMIT", "MARKET"]}, "price": {**_DEC, "nullable": True},
    "qty": _DEC, "filled_qty": _DEC, "leaves_qty": _DEC,
    "status": {"enum": ["ACCEPTED", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"]},
    "created_at": {"type": "integer", "description": "ms since the epoch"}, "updated_at": {"type": "integer"}}}
_TRADE = {"type": "object", "properties": {"trade_id": {"type": "string"}, "symbol": {"type": "string"},
                                           "price": _DEC, "qty": _DEC, "taker_side": {"enum": ["BUY", "SELL"]},
                                           "ts": {"type": "integer"}}}


_AMOUNT_BODY = {"type": "object", "required": ["account", "asset", "amount"], "additionalProperties": False,
                "properties": {"account": _ID, "asset": {"type": "string"}, "amount": _DEC,
                               "rid": {**_ID, "description": "retry key: a repeated rid is answered, not redone"}}}
_BALANCES = {"type": "object", "properties": {"account": {"type": "string"}, "balances": {"type": "array", "items": {
    "type": "object", "properties": {"asset": {"type": "string"}, "available": _DEC, "locked": _DEC}}}}}


def _q(name, schema, required=False, desc=""):
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": desc}


def _p(name, schema, desc=""):
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": desc}


#: (method, path, handler name, auth ("none" | "account" | "admin"), summary, parameters, request body schema, 2xx)
ROUTES = [
    ("POST", "/api/v1/login", "login", "none", "Exchange an API key and its secret for a short-lived JWT",
     [], {"type": "object", "required": ["api_key", "secret"],
          "properties": {"api_key": {"type": "string"}, "secret": {"type": "string"}}}, 200),
    ("POST", "/api/v1/create_order", "create_order", "account",
     "Enter an order: 202 with order_id once it is sequenced and journaled",
     [], {"type": "object", "required": ["symbol", "side", "qty"], "additionalProperties": False,
          "properties": {"symbol": {"type": "string"}, "side": {"enum": ["BUY", "SELL"]},
                         "type": {"enum": ["LIMIT", "MARKET"], "default": "LIMIT"}, "price": _DEC, "qty": _DEC,
                         "cid": _ID, "tif": {"enum": ["DAY", "GTC", "IOC", "FOK"], "default": "DAY"},
                         "post_only": {"type": "boolean", "default": False}}}, 202),
    ("POST", "/api/v1/cancel_order", "cancel_order", "account", "Cancel an order (by order_id or cid)",
     [], {"type": "object", "additionalProperties": False,
          "properties": {"order_id": _OID, "cid": _ID}}, 200),
    ("POST", "/api/v1/amend_order", "amend_order", "account", "Change an order's price and/or quantity",
     [], {"type": "object", "additionalProperties": False,
          "properties": {"order_id": _OID, "cid": _ID, "price": _DEC, "qty": _DEC}}, 200),
    ("GET", "/api/v1/order/{order_id}", "get_order", "account", "One order of the caller's account",
     [_p("order_id", _OID)], None, 200),
    ("GET", "/api/v1/orders", "get_orders", "account", "The caller's orders",
     [_q("status", {"enum": ["open", "all"], "default": "all"})], None, 200),
    ("GET", "/api/v1/trades", "get_trades", "none", "Recent public trades of a symbol",
     [_q("symbol", {"type": "string"}, True), _q("since", {"type": "integer"}, False, "ms since the epoch"),
      _q("limit", {"type": "integer", "maximum": 1000, "default": 100})], None, 200),
    ("GET", "/api/v1/depth/{symbol}", "get_depth", "none", "Order book levels (best first)",
     [_p("symbol", {"type": "string"}), _q("levels", {"type": "integer", "minimum": 1, "maximum": 100,
                                                      "default": 10})], None, 200),
    ("GET", "/api/v1/symbols", "get_symbols", "none", "Traded symbols and their number formats", [], None, 200),
    ("GET", "/api/v1/balances", "get_balances", "account",
     "The caller's balances (decimal strings: the quote asset in its units, base assets as quantities); "
     "UNSUPPORTED (501) when the exchange runs without [accounts]",
     [_q("account", _ID, False, "another account's (admins only)")], None, 200),
    ("POST", "/api/v1/admin/create_user", "admin_create_user", "admin",
     "Admin: create an account (journaled); an [accounts] admins account's signed API key only",
     [], {"type": "object", "required": ["account"], "additionalProperties": False,
          "properties": {"account": _ID, "rid": _ID}}, 200),
    ("POST", "/api/v1/admin/deposit", "admin_deposit", "admin",
     "Admin: credit an account (journaled); amount: the quote asset to 9 decimals, a base asset whole",
     [], _AMOUNT_BODY, 200),
    ("POST", "/api/v1/admin/withdraw", "admin_withdraw", "admin",
     "Admin: debit an account's available balance (journaled); INSUFFICIENT_BALANCE if it does not cover it",
     [], _AMOUNT_BODY, 200),
    ("GET", "/health", "health", "none", "Liveness and the engine's sequence", [], None, 200),
    ("GET", "/metrics", "metrics", "none", "Prometheus text format: counters, latency histograms, lags",
     [], None, 200),
    ("GET", "/docs", "docs", "none", "This OpenAPI description", [], None, 200),
    ("GET", "/ws", "ws", "none", "WebSocket (upgrade): auth, subscribe; see engine.http.ws", [], None, 101),
]
ROUTES += DASHBOARD_ROUTES        # candles, pnl, ops: engine.http.dashboard

_DATA = {"create_order": {"type": "object", "properties": {
    "order_id": _OID, "cid": {"type": "string"}, "status": {"enum": ["ACCEPTED"]},
    "accepted_at": {"type": "integer", "description": "ms since the epoch"}, "duplicate": {"type": "boolean"}}},
         "get_order": _ORDER, "get_orders": {"type": "array", "items": _ORDER},
         "get_trades": {"type": "array", "items": _TRADE}, "get_balances": _BALANCES, **_DASH_DATA}


def document(server_url: str = "/") -> dict:
    paths: dict = {}
    for method, path, handler, auth, summary, params, body, status in ROUTES:
        op = {"operationId": handler, "summary": summary, "parameters": params,
              "responses": {str(status): {"description": "code 0", "content": {"application/json": {"schema": {
                  "type": "object", "properties": {"code": {"const": 0}, "msg": {"const": "ok"},
                                                   "data": _DATA.get(handler, {})}}}}},
                            "default": {"description": "an error envelope", "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"}}}}}}
        if auth == "admin":
            op["security"] = [{"apiKey": [], "timestamp": [], "nonce": [], "signature": []}]
        if auth == "account":
            op["security"] = [{"apiKey": [], "timestamp": [], "nonce": [], "signature": []}, {"bearer": []},
                              {"devUser": []}]
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "feedhandler exchange HTTP gateway", "version": "1",
                 "description": "Every response is {code, msg, data}; code 0 is success, else one of the "
                                "error codes below (or an engine/risk reject reason upper-cased, HTTP 422). "
                                "Prices and quantities are decimal strings; enums SCREAMING_CASE."},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": {"Error": {"type": "object", "properties": {
                "code": {"type": "string", "enum": sorted(ERRORS)}, "msg": {"type": "string"},
                "data": {"type": "null"}}}},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "timestamp": {"type": "apiKey", "in": "header", "name": "X-TIMESTAMP"},
                "nonce": {"type": "apiKey", "in": "header", "name": "X-NONCE"},
                "signature": {"type": "apiKey", "in": "header", "name": "X-SIGNATURE",
                              "description": "hex HMAC-SHA256(secret, ts\\nMETHOD\\npath?query\\nnonce\\nbody)"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "devUser": {"type": "apiKey", "in": "header", "name": "X-User-ID",
                            "description": "only with --insecure-dev-auth"}}},
        "x-error-codes": {k: {"http_status": v[0], "meaning": v[1]} for k, v in ERRORS.items()},
    }
