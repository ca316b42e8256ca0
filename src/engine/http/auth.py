"""Who is asking: three levels of authentication, and per-account rate limits, for HTTP and WebSocket.

1. ``X-User-ID: <account>`` only when the exchange runs with ``--insecure-dev-auth`` (otherwise the header
   is refused with UNAUTHORIZED, never ignored).
2. Programs: API key + HMAC-SHA256, with the same keys and :class:`engine.auth.Authenticator` as the ZeroMQ
   gateway. Headers ``X-API-KEY``, ``X-TIMESTAMP`` (ns since the epoch), ``X-NONCE`` (1-64 identifier
   characters, single use within the receive window) and ``X-SIGNATURE`` = hex
   HMAC_SHA256(secret, ts + "\\n" + METHOD + "\\n" + path?query + "\\n" + nonce + "\\n" + body) (the
   gateway's :func:`engine.auth.sign` over a message that binds method, target and nonce).
3. The web UI: ``Authorization: Bearer <JWT>``, HS256, issued by ``POST /api/v1/login`` with a short expiry
   and signed with the server key (``--jwt-secret``; a random one per process when not given).

Rate limits: order requests use the risk manager's per-client token bucket (keyed by account: one bucket
for every connection and door of the account that passes the account as the client); every other request
of an account takes a token from a bucket here (``query_rate_per_s``).
"""
from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections import OrderedDict

import jwt

from engine.auth import AuthError, Authenticator, sign
from engine.http.codec import ApiError, ident

JWT_ISSUER = "feedhandler-exchange"
_AUTH_CODES = {"unknown_api_key": "UNKNOWN_API_KEY", "bad_signature": "INVALID_SIGNATURE",
               "stale_timestamp": "TIMESTAMP_EXPIRED", "malformed_auth": "INVALID_PARAMETER"}


def signing_message(method: str, target: str, nonce: str, body: bytes) -> bytes:
    """What the HMAC signs besides the timestamp (see the module docstring)."""
    return f"{method.upper()}\n{target}\n{nonce}\n".encode() + body


def sign_request(secret: bytes | str, ts_ns: int, method: str, target: str, nonce: str, body: bytes) -> str:
    """Client side: the X-SIGNATURE header value."""
    if isinstance(secret, str):
        secret = secret.encode()
    return sign(secret, ts_ns, signing_message(method, target, nonce, body)).decode()


class NonceMemory:
    """Nonces seen per API key within the receive window (single use). Bounded: entries older than the
    window are dropped; beyond ``max_entries`` live ones the oldest go (a replay of one of those is then
    caught by the window only if its timestamp is stale, which at that volume it is)."""

    def __init__(self, window_ns: int, max_entries: int = 1_000_000):
        self.window_ns = window_ns
        self.max_entries = max_entries
        self._seen: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def use(self, key: bytes, nonce: str, now_ns: int) -> bool:
        """True when (key, nonce) is new (and remembers it); False when it is a reuse."""
        k = (key, nonce)
        with self._lock:
            seen = self._seen
            while seen:
                first = next(iter(seen.values()))
                if now_ns - first <= 2 * self.window_ns and len(seen) < self.max_entries:
                    break
                seen.popitem(last=False)
            if k in seen:
                return False
            seen[k] = now_ns
            return True


class TokenBucket:
    """Token bucket per account (integers, monotonic clock)."""

    def __init__(self, rate_per_s: int, burst: int, clock=time.monotonic_ns):
        self.rate, self.burst, self.clock = int(rate_per_s), int(burst), clock
        self._b: dict[str, list] = {}
        self._lock = threading.Lock()

    def take(self, account: str) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            b = self._b.get(account)
            if b is None:
                b = self._b[account] = [self.burst * 1000, now]
            b[0] = min(self.burst * 1000, b[0] + (now - b[1]) * self.rate // 1_000_000)
            b[1] = now
            if b[0] >= 1000:
                b[0] -= 1000
                return 0.0
            return (1000 - b[0]) / (self.rate * 1000)


def retry_after(seconds: float) -> dict:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class HttpAuth:
    """Authenticates HTTP requests and WebSocket logins; issues and checks JWTs."""

    def __init__(self, authenticator: Authenticator, insecure_dev_auth: bool = False, jwt_secret: str = "",
                 jwt_ttl_s: int = 300, clock=time.time_ns):
        self.authenticator = authenticator
        self.insecure_dev_auth = bool(insecure_dev_auth)
        self.jwt_secret = jwt_secret or secrets.token_urlsafe(32)
        self.jwt_ttl_s = int(jwt_ttl_s)
        self.clock = clock
        self.nonces = NonceMemory(authenticator.recv_window_ns)
        self.failures: dict[str, int] = {}

    # ---- the three levels ------------------------------------------------------------------------
    def account_of(self, headers, method: str, target: str, body: bytes) -> str:
        """The authenticated account of a request, or ApiError (401)."""
        try:
            if headers.get("X-API-KEY") is not None:
                return self.verify_hmac(headers.get("X-API-KEY", ""), headers.get("X-TIMESTAMP", ""),
                                        headers.get("X-NONCE"), headers.get("X-SIGNATURE", ""),
                                        method, target, body)
            authz = headers.get("Authorization")
            if authz is not None:
                scheme, _, token = authz.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise ApiError("UNAUTHORIZED", "Authorization must be 'Bearer <token>'")
                return self.verify_jwt(token.strip())
            if headers.get("X-User-ID") is not None:
                return self.dev_user(headers.get("X-User-ID"))
            raise ApiError("UNAUTHORIZED", "credentials required: X-API-KEY + signature, or a Bearer token")
        except ApiError as e:
            self.failures[e.code] = self.failures.get(e.code, 0) + 1
            raise

    def dev_user(self, user) -> str:
        if not self.insecure_dev_auth:
            raise ApiError("UNAUTHORIZED", "X-User-ID is accepted only when the exchange runs with "
                                           "--insecure-dev-auth")
        return ident(user, "X-User-ID", required=True)

    def verify_hmac(self, api_key: str, ts: str, nonce, signature: str, method: str, target: str,
                    body: bytes) -> str:
        nonce = ident(nonce, "X-NONCE", required=True)
        key = api_key.encode()
        try:
            account = self.authenticator.verify(key, ts.encode(), signature.encode(),
                                                signing_message(method, target, nonce, body))
        except AuthError as e:
            raise ApiError(_AUTH_CODES.get(e.reason, "UNAUTHORIZED"), e.reason) from None
        if not self.nonces.use(key, nonce, self.clock()):
            raise ApiError("NONCE_REUSED", f"nonce {nonce!r} was already used")
        return account

    def login(self, api_key, secret) -> dict:
        """``POST /api/v1/login``: an API key and its secret -> a short-lived JWT for that account."""
        if not isinstance(api_key, str) or not isinstance(secret, str):
            raise ApiError("INVALID_PARAMETER", "api_key and secret must be strings")
        entry = self.authenticator.keys.get(api_key.encode())
        # constant time whether or not the key exists
        expect = entry.secret if entry is not None else secrets.token_bytes(16)
        if not hmac.compare_digest(expect, secret.encode()) or entry is None:
            self.failures["UNAUTHORIZED"] = self.failures.get("UNAUTHORIZED", 0) + 1
            raise ApiError("UNAUTHORIZED", "unknown api_key or wrong secret")
        now = self.clock() // 1_000_000_000
        claims = {"sub": entry.account, "iat": now, "exp": now + self.jwt_ttl_s, "iss": JWT_ISSUER,
                  "jti": secrets.token_hex(8)}
        return {"token": jwt.encode(claims, self.jwt_secret, algorithm="HS256"), "token_type": "Bearer",
                "expires_at": (now + self.jwt_ttl_s) * 1000, "account": entry.account}

    def verify_jwt(self, token: str) -> str:
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], issuer=JWT_ISSUER,
                                options={"require": ["exp", "iat", "sub", "iss"]},
                                leeway=0)
        except jwt.ExpiredSignatureError:
            raise ApiError("TOKEN_EXPIRED", "the token has expired: log in again") from None
        except jwt.PyJWTError as e:
            raise ApiError("INVALID_TOKEN", f"the token is not valid: {type(e).__name__}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ApiError("INVALID_TOKEN", "the token names no account")
        return sub
