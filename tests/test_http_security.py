"""Hostile HTTP input: each gets its documented code, and nothing reaches the journal."""
from __future__ import annotations

import json
import time

import pytest

from _http_support import Signed, engine_seq, httpx, journal_size, running_exchange, signed_headers

jwt = pytest.importorskip("jwt")

ORDER = {"symbol": "AAPL", "side": "BUY", "type": "LIMIT", "price": "10", "qty": "1"}


@pytest.fixture
def ex(tmp_path):
    with running_exchange(tmp_path) as ex:
        yield ex


class Unchanged:
    """Asserts that the block journaled nothing (engine sequence and journal file size)."""

    def __init__(self, ex):
        self.ex = ex

    def __enter__(self):
        self.seq, self.size = engine_seq(self.ex), journal_size(self.ex)

    def __exit__(self, *exc):
        if exc[0] is None:
            assert engine_seq(self.ex) == self.seq
            assert journal_size(self.ex) == self.size


def _post(ex, headers, body: bytes, path="/api/v1/create_order"):
    return httpx.post(ex.http.url + path, content=body, headers=headers)


def _expect(r, status, code):
    assert r.status_code == status, r.text
    j = r.json()
    assert j["code"] == code and j["data"] is None and j["msg"], j


def test_bad_signature(ex):
    body = json.dumps(ORDER).encode()
    with Unchanged(ex):
        _expect(_post(ex, signed_headers("MM", "POST", "/api/v1/create_order", body, secret="not-the-secret"), body),
                401, "INVALID_SIGNATURE")
        # signed for another path (a create_order body replayed to cancel_order)
        h = signed_headers("MM", "POST", "/api/v1/create_order", body)
        _expect(_post(ex, h, body, "/api/v1/cancel_order"), 401, "INVALID_SIGNATURE")
        # body changed after signing
        h = signed_headers("MM", "POST", "/api/v1/create_order", body)
        _expect(_post(ex, h, body.replace(b'"1"', b'"9"')), 401, "INVALID_SIGNATURE")
        h = signed_headers("MM", "POST", "/api/v1/create_order", body)
        h["X-API-KEY"] = "nobody"
        _expect(_post(ex, h, body), 401, "UNKNOWN_API_KEY")


def test_stale_timestamp(ex):
    body = json.dumps(ORDER).encode()
    with Unchanged(ex):
        for skew in (-60, 60):
            h = signed_headers("MM", "POST", "/api/v1/create_order", body, ts_ns=time.time_ns() + skew * 10**9)
            _expect(_post(ex, h, body), 401, "TIMESTAMP_EXPIRED")


def test_reused_nonce(ex):
    body = json.dumps(ORDER).encode()
    h = signed_headers("MM", "POST", "/api/v1/create_order", body, nonce="n-1")
    assert _post(ex, h, body).status_code == 202
    with Unchanged(ex):
        _expect(_post(ex, h, body), 401, "NONCE_REUSED")            # the very same request replayed
        h2 = signed_headers("MM", "POST", "/api/v1/create_order", body, nonce="n-1")
        _expect(_post(ex, h2, body), 401, "NONCE_REUSED")           # a new signature, same nonce
        h3 = dict(h2)
        del h3["X-NONCE"]
        _expect(_post(ex, h3, body), 400, "INVALID_PARAMETER")


def test_expired_and_forged_jwt(ex):
    now = int(time.time())
    secret = ex.http.auth.jwt_secret
    good = {"sub": "MM", "iat": now, "exp": now + 60, "iss": "feedhandler-exchange"}
    expired = jwt.encode({**good, "iat": now - 120, "exp": now - 60}, secret, algorithm="HS256")
    forged = jwt.encode(good, "another-key-of-32-bytes-or-more-0123456789", algorithm="HS256")
    none_alg = jwt.encode(good, None, algorithm="none")
    wrong_iss = jwt.encode({**good, "iss": "elsewhere"}, secret, algorithm="HS256")
    body = json.dumps(ORDER).encode()
    with Unchanged(ex):
        _expect(_post(ex, {"Authorization": f"Bearer {expired}"}, body), 401, "TOKEN_EXPIRED")
        for tok in (forged, none_alg, wrong_iss, "not.a.token", good["sub"]):
            _expect(_post(ex, {"Authorization": f"Bearer {tok}"}, body), 401, "INVALID_TOKEN")
        _expect(_post(ex, {"Authorization": "Basic abc"}, body), 401, "UNAUTHORIZED")
    ok = jwt.encode(good, secret, algorithm="HS256")
    assert _post(ex, {"Authorization": f"Bearer {ok}"}, body).status_code == 202


def test_another_users_order_is_unknown(ex):
    mm, tk = Signed(ex.http.url, "MM"), Signed(ex.http.url, "TAKER")
    oid = mm.post("/api/v1/create_order", {**ORDER, "cid": "mine"}).json()["data"]["order_id"]
    with Unchanged(ex):
        _expect(tk.get(f"/api/v1/order/{oid}"), 404, "UNKNOWN_ORDER")
        _expect(tk.post("/api/v1/cancel_order", {"order_id": oid}), 404, "UNKNOWN_ORDER")
        _expect(tk.post("/api/v1/amend_order", {"order_id": oid, "qty": "5"}), 404, "UNKNOWN_ORDER")
        _expect(tk.post("/api/v1/cancel_order", {"cid": "mine"}), 404, "UNKNOWN_ORDER")
        assert tk.get("/api/v1/orders").json()["data"] == []
    assert mm.get(f"/api/v1/order/{oid}").json()["data"]["status"] == "ACCEPTED"


def test_x_user_id_refused_without_insecure_dev_auth(ex):
    with Unchanged(ex):
        _expect(_post(ex, {"X-User-ID": "MM"}, json.dumps(ORDER).encode()), 401, "UNAUTHORIZED")
        _expect(httpx.get(ex.http.url + "/api/v1/orders", headers={"X-User-ID": "MM"}), 401, "UNAUTHORIZED")
        _expect(_post(ex, {}, json.dumps(ORDER).encode()), 401, "UNAUTHORIZED")


def test_oversized_body(ex):
    big = json.dumps({**ORDER, "cid": "x" * 100_000}).encode()
    with Unchanged(ex):
        _expect(_post(ex, signed_headers("MM", "POST", "/api/v1/create_order", big), big), 413, "PAYLOAD_TOO_LARGE")

        def chunks():                 # no Content-Length: the limit holds while reading
            for _ in range(40):
                yield b"x" * 1024
        h = signed_headers("MM", "POST", "/api/v1/create_order", b"")
        r = httpx.post(ex.http.url + "/api/v1/create_order", content=chunks(), headers=h)
        _expect(r, 413, "PAYLOAD_TOO_LARGE")
    assert httpx.get(ex.http.url + "/health").status_code == 200


SQL = ["x' OR '1'='1", "1; DROP TABLE orders;--", 'a"); DELETE FROM trades; --', "%' --", "\\'; SELECT 1"]


@pytest.mark.parametrize("payload", SQL)
def test_sql_metacharacters_in_every_string_field(ex, payload):
    mm = Signed(ex.http.url, "MM")
    with Unchanged(ex):
        for field in ("symbol", "side", "type", "price", "qty", "cid", "tif"):
            r = mm.post("/api/v1/create_order", {**ORDER, field: payload})
            assert r.status_code == 400 and r.json()["code"] == "INVALID_PARAMETER", (field, r.text)
        for path, body in (("/api/v1/cancel_order", {"order_id": payload}), ("/api/v1/cancel_order", {"cid": payload}),
                           ("/api/v1/amend_order", {"order_id": payload, "qty": "1"}),
                           ("/api/v1/amend_order", {"cid": "c", "price": payload})):
            r = mm.post(path, body)
            assert r.status_code == 400 and r.json()["code"] == "INVALID_PARAMETER", (path, body, r.text)
        r = httpx.post(ex.http.url + "/api/v1/login", json={"api_key": payload, "secret": payload})
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
        from urllib.parse import quote
        q = quote(payload, safe="")
        for target in (f"/api/v1/order/{q}", f"/api/v1/orders?status={q}"):
            r = mm.get(target)
            assert r.status_code in (400, 404) and r.json()["code"] in ("INVALID_PARAMETER", "NOT_FOUND"), target
        for target in (f"/api/v1/trades?symbol={q}", f"/api/v1/depth/{q}"):
            r = httpx.get(ex.http.url + target)
            assert r.status_code in (404,) and r.json()["code"] in ("UNKNOWN_SYMBOL", "NOT_FOUND"), target
        r = _post(ex, {"X-API-KEY": payload, "X-TIMESTAMP": payload, "X-NONCE": "n", "X-SIGNATURE": payload},
                  json.dumps(ORDER).encode())
        assert r.status_code == 401


def test_malformed_json_and_types(ex):
    mm = Signed(ex.http.url, "MM")
    with Unchanged(ex):
        for body in (b"{", b"[]", b"null", b'"x"'):
            h = signed_headers("MM", "POST", "/api/v1/create_order", body)
            _expect(_post(ex, h, body), 400, "INVALID_JSON")
        for bad in ({"qty": 1}, {"qty": "1.5"}, {"price": 10}, {"price": "10.0000000001"}, {"post_only": 1},
                    {"side": "buy"}, {"cid": 7}, {"qty": True}):
            r = mm.post("/api/v1/create_order", {**ORDER, **bad})
            assert r.status_code == 400 and r.json()["code"] == "INVALID_PARAMETER", (bad, r.text)
