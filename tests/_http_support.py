"""Helpers of the HTTP gateway tests: an in-process exchange with --http-port, signed clients."""
from __future__ import annotations

import json
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="httpx (test extra) is not installed")
pytest.importorskip("aiohttp", reason="aiohttp (a dependency of the HTTP gateway) is not installed")
pytest.importorskip("jwt", reason="PyJWT (a dependency of the HTTP gateway) is not installed")

from engine.http.auth import sign_request  # noqa: E402

KEYS = {"MM": ("demo-mm", "demo-mm-secret"), "TAKER": ("demo-taker", "demo-taker-secret")}


def exchange_cfg(tmp_path, **http):
    from engine.exchange import load_config
    cfg = load_config(None, {"data_dir": str(tmp_path / "data"), "gateway.endpoint": "tcp://127.0.0.1:*",
                             "marketdata.endpoint": "tcp://127.0.0.1:*", "symbols": ["AAPL", "MSFT"]})
    cfg["http"] = {"port": 0, **http}
    return cfg


@contextmanager
def running_exchange(tmp_path, **http):
    from engine.exchange import Exchange
    ex = Exchange(exchange_cfg(tmp_path, **http))
    ex.start()
    try:
        yield ex
        assert ex.http.listener_errors == 0, ex.http.last_listener_error
    finally:
        ex.stop()


def signed_headers(account: str, method: str, target: str, body: bytes = b"", *, ts_ns: int | None = None,
                   nonce: str | None = None, secret: str | None = None) -> dict:
    key, sec = KEYS[account]
    ts = time.time_ns() if ts_ns is None else ts_ns
    nonce = nonce or secrets.token_hex(8)
    return {"X-API-KEY": key, "X-TIMESTAMP": str(ts), "X-NONCE": nonce,
            "X-SIGNATURE": sign_request(secret or sec, ts, method, target, nonce, body),
            "Content-Type": "application/json"}


class Signed:
    """An httpx client that signs every request as ``account`` (API key + HMAC + nonce)."""

    def __init__(self, base: str, account: str):
        self.c = httpx.Client(base_url=base, timeout=10)
        self.account = account

    def post(self, path: str, obj) -> "httpx.Response":
        body = json.dumps(obj).encode()
        return self.c.post(path, content=body, headers=signed_headers(self.account, "POST", path, body))

    def get(self, target: str) -> "httpx.Response":
        return self.c.get(target, headers=signed_headers(self.account, "GET", target))

    def close(self):
        self.c.close()


def journal_size(ex) -> int:
    p = Path(ex.data_dir) / "journal" / "journal.bin"
    return p.stat().st_size if p.exists() else 0


def engine_seq(ex) -> int:
    return ex.pipeline.in_engine(lambda: ex.engine.seq)
