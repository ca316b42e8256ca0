"""Client library for the exchange gateway (what algo bots use).

    from engine.client import Client
    with Client("tcp://127.0.0.1:5555", api_key="alice", secret=b"...") as c:
        ack = c.submit("AAPL", "B", price=100 * 10**9, qty=10)
        c.cancel(order_id=ack["events"][0]["order_id"])
        for ex in c.executions(timeout=0.1): ...

One DEALER socket carries requests, replies and unsolicited execution reports of this account; one
optional SUB socket carries public market data (tick records, see engine.marketdata). Not thread safe:
one Client per thread.

Retries: a request that gets no reply within ``timeout`` is sent again with the SAME ``rid`` and
client order id, after an exponentially growing pause (``backoff * 2**attempt``). The gateway keeps
the outcome of every (account, client order id) and (account, rid), so a retried order is never
entered twice: the retry gets the first outcome back (``"dup": true``). ``busy`` replies are retried
the same way (nothing reached the engine). Rejections are final and never retried.
"""
from __future__ import annotations

import collections
import decimal
import itertools
import os
import time
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import zmq

from engine.auth import keyed_hmac, sign_with   # = sign() from a pre-keyed HMAC (key schedule once per client)
from engine.gateway import dumpb, loads
from engine.gateway.validation import check_rid
from engine import marketdata
from engine.zmqio import SNDMORE as _SNDMORE, send as _send



PRICE_SCALE = 9                 # prices are integers of 1e-9 currency units
_MONEY_KEYS = ("realized", "unrealized", "avg_price", "mark")


def to_decimal(raw, scale: int = PRICE_SCALE) -> str | None:
    """An exact amount in 1e-``scale`` units (int, ``"n"`` or ``"num/den"``) as a decimal string in currency
    units with ``scale`` decimals, rounded half-even: ``to_decimal(1_500_000_000) == "1.500000000"``,
    ``to_decimal("1000000001/3") == "0.333333334"``."""
    if raw is None:
        return None
    q = Fraction(str(raw))
    with decimal.localcontext() as ctx:
        ctx.prec = max(60, len(str(abs(q.numerator))) + 2 * scale)
        d = (Decimal(q.numerator) / Decimal(q.denominator)).scaleb(-scale)
        return format(d.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_EVEN), "f")


def money_report(report: dict, scale: int = PRICE_SCALE) -> dict:
    """A portfolio report (engine.portfolio.PortfolioManager.report) with its money values as decimals."""
    out = dict(report)
    for k in _MONEY_KEYS:
        if k in out:
            out[k] = to_decimal(out[k], scale)
    if isinstance(out.get("positions"), dict):
        out["positions"] = {sym: {k: (to_decimal(v, scale) if k in _MONEY_KEYS else v) for k, v in p.items()}
                            for sym, p in out["positions"].items()}
    return out


class GatewayTimeout(Exception):
    """No reply from the gateway after every retry."""


class Client:
    """DEALER-based client of :class:`engine.gateway.Gateway`.

    Parameters
    ----------
    endpoint : str
        Gateway ROUTER address.
    api_key, secret :
        Credentials (the gateway maps the key to an account).
    md_endpoint : str, optional
        Market-data PUB address, for :meth:`subscribe`.
    timeout : float
        Seconds to wait for one reply before retrying.
    retries : int
        Extra attempts after the first (0: no retry).
    backoff : float
        First retry pause in seconds; doubled on every further attempt.
    """

    def __init__(self, endpoint: str, api_key: str, secret: bytes | str, md_endpoint: str | None = None,
                 timeout: float = 1.0, retries: int = 3, backoff: float = 0.05, ctx: zmq.Context | None = None,
                 clock=time.time_ns):
        self.ctx = ctx or zmq.Context.instance()
        self.endpoint = endpoint
        self.api_key = api_key.encode()
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self._keyed = keyed_hmac(self.secret)
        self.md_endpoint = md_endpoint
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.clock = clock
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self.sub: zmq.Socket | None = None
        self._execs: collections.deque = collections.deque()
        self._prefix = os.urandom(4).hex()
        self._n = itertools.count(1)
        self.retries_done = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        self.sock.close(linger=0)
        if self.sub is not None:
            self.sub.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- requests ----------------------------------------------------------------------------
    def next_id(self) -> str:
        return f"{self._prefix}-{next(self._n)}"

    def send_raw(self, body: bytes, ts_ns: int | None = None) -> None:
        """Sign and send one body (no wait)."""
        ts = self.clock() if ts_ns is None else ts_ns
        sock = self.sock
        _send(sock, self.api_key, _SNDMORE)     # engine.zmqio: no Python-level wrapper, plain int flags
        tsb = str(int(ts)).encode()
        _send(sock, tsb, _SNDMORE)
        _send(sock, sign_with(self._keyed, tsb, body), _SNDMORE)
        _send(sock, body)

    def request(self, req: dict, timeout: float | None = None, retries: int | None = None) -> dict:
        """Send ``req`` (a ``rid`` is added if missing) and return its reply, retrying on timeout/busy."""
        req.setdefault("rid", self.next_id())
        rid = req["rid"]
        check_rid(rid)      # the gateway rejects a bad rid without echoing it: no reply could be matched to it
        body = dumpb(req)
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            if attempt:
                self.retries_done += 1
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            self.send_raw(body)   # re-signed each time: a retry must not go stale
            reply = self._await(rid, timeout)
            if reply is None:
                continue
            if reply.get("status") == "busy" and attempt < retries:
                continue
            return reply
        raise GatewayTimeout(f"no reply to {req.get('type')} rid={rid} after {retries + 1} attempts")

    def _await(self, rid: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        sock = self.sock
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._poller.poll(int(left * 1000) + 1):   # Socket.poll builds a Poller per call
                continue
            msg = loads(sock.recv())
            if msg.get("type") == "exec":
                self._execs.append(msg)
            elif msg.get("rid") == rid:
                return msg
            elif "rid" not in msg:
                return msg  # auth/framing rejects carry no rid: they answer the request in flight
            # else: a late reply to an earlier, already retried request: ignore

    def hello(self) -> dict:
        """Register this connection for unsolicited execution reports of the account."""
        return self.request({"type": "hello"})

    def submit(self, symbol: str, side: str, price: int | None, qty: int, order_type: str = "limit",
               tif: str = "day", post_only: bool = False, client_order_id: str | None = None, **kw) -> dict:
        """Enter an order (price in 1e-9 units); returns the reply (status ack/rejected, events)."""
        req = {"type": "new", "client_order_id": client_order_id or self.next_id(), "symbol": symbol,
               "side": side, "price": price if price is not None else 0, "qty": qty, "order_type": order_type,
               "tif": tif, "post_only": post_only}
        return self.request(req, **kw)

    def cancel(self, order_id: int | None = None, orig_client_order_id: str | None = None, **kw) -> dict:
        req = {"type": "cancel"}
        if order_id is not None:
            req["order_id"] = order_id
        else:
            req["orig_client_order_id"] = orig_client_order_id
        return self.request(req, **kw)

    def amend(self, order_id: int | None = None, new_price: int | None = None, new_qty: int | None = None,
              orig_client_order_id: str | None = None, **kw) -> dict:
        req = {"type": "amend", "new_price": new_price, "new_qty": new_qty}
        if order_id is not None:
            req["order_id"] = order_id
        else:
            req["orig_client_order_id"] = orig_client_order_id
        return self.request(req, **kw)

    def book(self, symbol: str, depth: int = 10) -> dict:
        return self.request({"type": "query", "what": "book", "symbol": symbol, "depth": depth})

    def position(self, symbol: str | None = None, exact: bool = False, **kw) -> dict:
        """This account's positions and PnL. Money values (``realized``, ``unrealized``, ``avg_price``,
        ``mark``) come back as decimal strings in price units with the prices' scale, 9 decimals
        (``"-12.340000000"``; prices are integers of 1e-9): exact for every fill price, rounded half-even
        at 1e-9 where an average of several fills is not. ``exact=True`` returns the gateway's exact
        rational strings (``"num/den"`` in 1e-9 units) instead."""
        reply = self.request({"type": "query", "what": "position", "symbol": symbol}, **kw)
        if not exact and isinstance(reply.get("portfolio"), dict):
            reply["portfolio"] = money_report(reply["portfolio"])
        return reply

    # ---- balances (an exchange with [accounts] enabled; engine.accounts) ----------------------------
    def balances(self, account: str | None = None, **kw) -> dict:
        """This account's balances: the reply's ``balances`` is ``{asset: {"available": int, "locked":
        int}}`` (integers: base assets in qty, the quote asset in price units (1e-9) x qty). Another
        account's (``account=``) for admin accounts only. ``reason`` ``accounts_disabled`` when the
        exchange runs without balances."""
        req = {"type": "query", "what": "balances"}
        if account is not None:
            req["account"] = account
        return self.request(req, **kw)

    def create_account(self, account: str, **kw) -> dict:
        """Admin: create ``account`` (journaled; ``account_exists`` if it does)."""
        return self.request({"type": "admin", "op": "create_account", "account": account}, **kw)

    def deposit(self, account: str, asset: str, amount: int, **kw) -> dict:
        """Admin: credit ``amount`` (an integer in the asset's units) of ``asset`` to ``account``'s available
        balance (journaled; a retry of the same request - same rid - is applied once)."""
        return self.request({"type": "admin", "op": "deposit", "account": account, "asset": asset,
                             "amount": amount}, **kw)

    def withdraw(self, account: str, asset: str, amount: int, **kw) -> dict:
        """Admin: debit ``amount`` of ``asset`` from ``account``'s available balance (journaled;
        ``insufficient_balance`` when it does not have it)."""
        return self.request({"type": "admin", "op": "withdraw", "account": account, "asset": asset,
                             "amount": amount}, **kw)

    def balance_updates(self, timeout: float = 0.0) -> list[dict]:
        """The balance events among the unsolicited messages received so far (``"type": "exec",
        "exec_type": "balance"``, with account, asset, available, locked, seq; see :meth:`executions`,
        where the other events stay)."""
        evs = self.executions(timeout)
        self._execs.extend(e for e in evs if e.get("exec_type") != "balance")
        return [e for e in evs if e.get("exec_type") == "balance"]

    # ---- executions and market data ------------------------------------------------------------
    def executions(self, timeout: float = 0.0) -> list[dict]:
        """Unsolicited execution reports received so far (waits up to ``timeout`` s for the first)."""
        deadline = time.monotonic() + timeout
        while True:
            while self.sock.poll(0):
                msg = loads(self.sock.recv())
                if msg.get("type") == "exec":
                    self._execs.append(msg)
            if self._execs or time.monotonic() >= deadline:
                break
            self.sock.poll(max(1, int((deadline - time.monotonic()) * 1000)))
        out = list(self._execs)
        self._execs.clear()
        return out

    def subscribe(self, symbols: list[str] | None = None, md_endpoint: str | None = None) -> None:
        """Subscribe to public market data of ``symbols`` (all when None)."""
        ep = md_endpoint or self.md_endpoint
        if ep is None:
            raise ValueError("no market-data endpoint given")
        if self.sub is None:
            self.sub = self.ctx.socket(zmq.SUB)
            self.sub.setsockopt(zmq.LINGER, 0)
            self.sub.connect(ep)
        for s in symbols or [""]:
            self.sub.setsockopt(zmq.SUBSCRIBE, s.encode())

    def market_data(self, timeout: float = 0.0):
        """Received market data as a list of (symbol, TICK_DTYPE array); waits up to ``timeout`` s."""
        if self.sub is None:
            raise RuntimeError("subscribe() first")
        out = []
        if self.sub.poll(int(timeout * 1000)):
            while True:
                try:
                    topic, payload = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                out.append((topic.decode(), marketdata.decode(payload)))
        return out
