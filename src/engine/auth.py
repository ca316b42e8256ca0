"""Request authentication for the gateway: API key + HMAC-SHA256 over the body, timestamp, window.

A client signs every request::

    signature = HMAC_SHA256(secret, ascii(ts_ns) + b"\\n" + body)

and sends ``api_key``, ``ts_ns`` (ASCII decimal nanoseconds since the UNIX epoch), the hex signature
and the body as separate ZeroMQ frames. The gateway accepts a request when the key is known, the
signature matches (constant-time compare) and ``|now - ts_ns| <= recv_window_ns``. Secrets live only in
the gateway process (the :class:`KeyStore`); engines never see them.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Callable, Mapping

DEFAULT_RECV_WINDOW_NS = 5_000_000_000  # 5 s


class AuthError(Exception):
    """A request failed authentication; ``reason`` is one of the REASON_* strings."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


REASON_UNKNOWN_KEY = "unknown_api_key"
REASON_BAD_SIGNATURE = "bad_signature"
REASON_STALE = "stale_timestamp"
REASON_MALFORMED = "malformed_auth"


def sign(secret: bytes, ts_ns: int, body: bytes) -> bytes:
    """Hex HMAC-SHA256 signature of ``body`` at time ``ts_ns`` (bytes, 64 ASCII hex digits)."""
    mac = hmac.new(secret, str(int(ts_ns)).encode() + b"\n" + body, hashlib.sha256)
    return mac.hexdigest().encode()


def keyed_hmac(secret: bytes):
    """A pre-keyed HMAC-SHA256 object for :func:`sign_with` (the key schedule is computed once per key).

    OpenSSL's own HMAC object when hashlib has one (``copy``/``update``/``hexdigest`` are then C calls,
    without the four Python frames of the ``hmac.HMAC`` wrapper, which cost most on a cold cache), else
    the ``hmac.HMAC`` wrapper itself: both have the same three methods."""
    wrapper = hmac.new(secret, digestmod=hashlib.sha256)
    inner = getattr(wrapper, "_hmac", None)
    return inner if inner is not None and hasattr(inner, "copy") else wrapper


def sign_with(keyed, ts: bytes, body: bytes) -> bytes:
    """:func:`sign` from a pre-keyed HMAC object (:func:`keyed_hmac`)."""
    mac = keyed.copy()
    mac.update(ts + b"\n" + body)
    return mac.hexdigest().encode()


@dataclass(frozen=True)
class ApiKey:
    key: str
    secret: bytes
    account: str
    keyed: object = None      # hmac.HMAC keyed with the secret, copied per request


class KeyStore:
    """API key -> (secret, account). Read-only after construction, so safe from any thread."""

    def __init__(self, keys: Mapping[str, tuple[bytes | str, str]] | None = None):
        self._keys: dict[bytes, ApiKey] = {}
        for k, (secret, account) in (keys or {}).items():
            self.add(k, secret, account)

    def add(self, key: str, secret: bytes | str, account: str) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        self._keys[key.encode()] = ApiKey(key, secret, account, keyed_hmac(secret))

    def get(self, key: bytes) -> ApiKey | None:
        return self._keys.get(key)

    def __len__(self) -> int:
        return len(self._keys)


class Authenticator:
    """Verifies signed requests.

    Parameters
    ----------
    keys : KeyStore
    recv_window_ns : int
        Largest accepted distance between the request timestamp and the gateway clock (ns).
    clock : callable
        Returns the current time in ns since the UNIX epoch (``time.time_ns``; tests inject one).
    """

    def __init__(self, keys: KeyStore, recv_window_ns: int = DEFAULT_RECV_WINDOW_NS,
                 clock: Callable[[], int] = time.time_ns):
        self.keys = keys
        self.recv_window_ns = int(recv_window_ns)
        self.clock = clock

    def verify(self, api_key: bytes, ts: bytes, signature: bytes, body: bytes) -> str:
        """Return the account of a valid request; raise :class:`AuthError` with a reason otherwise."""
        entry = self.keys.get(api_key)
        if entry is None:
            raise AuthError(REASON_UNKNOWN_KEY)
        try:
            ts_ns = int(ts)
        except ValueError:
            raise AuthError(REASON_MALFORMED) from None
        if abs(self.clock() - ts_ns) > self.recv_window_ns:
            raise AuthError(REASON_STALE)
        expected = sign_with(entry.keyed, str(ts_ns).encode(), body)
        if not hmac.compare_digest(expected, signature):
            raise AuthError(REASON_BAD_SIGNATURE)
        return entry.account
