"""Accounts and balances: part of the journaled state machine (owned by engine.gateway.state.OrderState).

Each account holds, per asset, an ``available`` and a ``locked`` integer amount. Assets are the quote
currency (``quote``, e.g. ``"USD"``) and each symbol's base asset (``base[symbol]``, by default the symbol's
own name). Amounts are fixed point integers, never floats:

- a base asset amount is a quantity (the engine's integer qty);
- a quote amount is price x qty in the engine's price units (prices are integers in 1e-9 of the quote
  currency, so a quote amount of 1_000_000_000 is one unit of the quote currency). Deposits and
  withdrawals of the quote asset are given in the same units.

Rules (all integer arithmetic, deterministic):

- a limit buy locks ``lock(price, leaves) = price*leaves + price*leaves*max(maker_bps, taker_bps) // 10000``
  of the quote asset (the notional plus the largest fee it could pay); a (limit or market) sell locks
  ``leaves`` of the base asset. A limit order with a price <= 0 is refused with ``bad_price``.
- a market buy has no price to lock against: it gets a protection price ``P`` when it is checked (engine
  thread, in sequence order, before sequencing: :attr:`Accounts.protection_price`, by default the price of
  the ask level at which the book's asks cover its quantity, capped at the risk price band's ceiling when
  there is one) and is sequenced as a limit IOC (FOK stays FOK) at ``P``: it locks ``lock(P, qty)``, every
  fill is at ``P`` or better and settles like a limit buy's, and what is not filled expires at once,
  unlocking the rest. ``P`` is in the journaled record, so a replay locks exactly the same amount. No ask at
  all: refused with ``no_liquidity`` (nothing to buy). Without a protection price source (an Accounts used
  alone) a market buy is refused with ``market_buy_unsupported``.
- a fill of ``q`` at ``px``: the buyer pays ``px*q + fee`` out of its order's lock (the lock shrinks to
  ``lock(price, leaves - q)``, the difference above what was paid goes back to ``available``) and receives
  ``q`` base; the seller's lock shrinks by ``q`` base and it receives ``px*q - fee`` quote. The fee of each
  side is ``px*q*bps // 10000`` (floor: the sum of the fees of partial fills never exceeds the fee locked
  for the whole order) with the side's maker or taker rate, and is credited to ``fee_account``. So the
  sum of every asset over all accounts, the fee account included, changes only by deposits and
  withdrawals.
- cancel and expiry unlock what the order still had locked; an amend (``replaced``) re-locks to the new
  price and leaves (the increase must be available).
- an order, amend or withdrawal that cannot be covered is refused with ``insufficient_balance`` by the
  engine thread, in sequence order, before it reaches the engine: it is never sequenced, so a replay
  (which sees only sequenced requests) never re-decides it.

State changes come only from events of sequenced requests (:meth:`Accounts.on_events`) and from admin
events (:meth:`Accounts.apply_admin`) - the live path and a journal replay call the same methods. Every
change is additive, so the balances after replaying several shard journals (seq numbers are per shard; the
admin records live in shard 0's journal) do not depend on the order in which the shards are replayed:
the final state equals the live one. Only decisions (checks) depend on order, and decisions are made
live, once, and never replayed.
"""
from __future__ import annotations

import hashlib
import json

FEE_DIVISOR = 10_000      # fees are in basis points
MAX_FEE_BPS = 1_000       # 10%: a configured fee above it is a config error
MAX_AMOUNT = 2 ** 96      # a deposit or withdrawal above it is a bad request (fixed point, not a float)
ADMIN_OPS = ("create_account", "deposit", "withdraw")


class AccountsConfigError(ValueError):
    """An [accounts] configuration that cannot be used."""


class Accounts:
    """Balances per account and asset, locks per live order, and the fee account.

    Parameters
    ----------
    symbols : list of str
        The exchange's symbols.
    quote : str
        The quote asset every symbol trades against.
    base : dict, optional
        ``symbol -> base asset`` (default: the symbol's name).
    maker_fee_bps, taker_fee_bps : int
        Fees in basis points (0..MAX_FEE_BPS), paid in the quote asset by both sides of a fill.
    fee_account : str
        The account the fees are credited to.
    """

    def __init__(self, symbols, quote: str = "USD", base: dict | None = None, maker_fee_bps: int = 0,
                 taker_fee_bps: int = 0, fee_account: str = "fees"):
        for name, v in (("maker_fee_bps", maker_fee_bps), ("taker_fee_bps", taker_fee_bps)):
            if type(v) is not int or not 0 <= v <= MAX_FEE_BPS:
                raise AccountsConfigError(f"[accounts] {name} must be an integer 0..{MAX_FEE_BPS}, got {v!r}")
        if not isinstance(quote, str) or not quote:
            raise AccountsConfigError("[accounts] quote must be a non-empty asset name")
        base = dict(base or {})
        unknown = sorted(set(base) - set(symbols))
        if unknown:
            raise AccountsConfigError(f"[accounts] base names symbols the exchange does not trade: {unknown}")
        self.quote = quote
        self.base = {s: str(base.get(s, s)) for s in symbols}
        if quote in self.base.values():
            raise AccountsConfigError(f"[accounts] the quote asset {quote!r} is also a base asset")
        self.assets = sorted({quote, *self.base.values()})
        self.maker_bps = maker_fee_bps
        self.taker_bps = taker_fee_bps
        self.max_bps = max(maker_fee_bps, taker_fee_bps)
        self.fee_account = fee_account
        #: account -> asset -> [available, locked]
        self.bal: dict[str, dict[str, list]] = {fee_account: {}}
        #: order id -> [account, side, symbol, price, leaves, locked amount]
        self.orders: dict[int, list] = {}
        self._reserved: dict[tuple, int] = {}   # (account, asset) -> amount reserved in the current batch
        self._last: tuple | None = None
        #: (account, asset) touched since the last take_changes()
        self._touched: set = set()
        self.deposits: dict[str, int] = {}      # asset -> sum of deposits minus withdrawals (conservation)
        #: ``(account, symbol, qty) -> price | None``: a market buy's protection price (set by the order
        #: pipeline, engine.gateway.balances.wire, from the live book and the risk band); None refuses them
        self.protection_price = None
        self.market_buys = 0        # market buys sequenced as limit IOC at their protection price

    def config(self) -> dict:
        """The keyword arguments (besides the symbols) that build an Accounts with the same rules (the history
        writer's copy, engine.history)."""
        return {"quote": self.quote, "base": dict(self.base), "maker_fee_bps": self.maker_bps,
                "taker_fee_bps": self.taker_bps, "fee_account": self.fee_account}

    # ---- arithmetic -----------------------------------------------------------------------------
    def lock_for(self, side: str, price: int, leaves: int) -> int:
        if side == "B":
            n = price * leaves
            return n + n * self.max_bps // FEE_DIVISOR
        return leaves

    def fee(self, notional: int, liquidity: str) -> int:
        return notional * (self.maker_bps if liquidity == "maker" else self.taker_bps) // FEE_DIVISOR

    def _cell(self, account: str, asset: str) -> list:
        a = self.bal.get(account)
        if a is None:
            a = self.bal[account] = {}
        c = a.get(asset)
        if c is None:
            c = a[asset] = [0, 0]
        return c

    def available(self, account: str, asset: str) -> int:
        a = self.bal.get(account)
        c = a.get(asset) if a is not None else None
        return c[0] if c is not None else 0

    # ---- decisions (engine thread, sequence order, before the engine) ----------------------------------
    def check(self, account: str, ereq: dict) -> str | None:
        """``None`` if ``ereq`` (new/amend) is covered (the amount is then reserved until
        :meth:`clear_reservations`), else the reason to refuse it."""
        self._last = None
        kind = ereq.get("type", "new")
        if kind == "new":
            side = ereq.get("side")
            sym = ereq.get("symbol")
            if sym not in self.base:
                return None      # the engine rejects it (unknown symbol), sequenced: nothing locked
            if side == "B":
                if ereq.get("order_type", "limit") == "market":
                    reason = self._protect(account, ereq)
                    if reason is not None:
                        return reason
                asset = self.quote
            else:
                asset = self.base[sym]
            price = ereq.get("price") or 0
            if ereq.get("order_type", "limit") != "market" and price <= 0:
                return "bad_price"
            need = self.lock_for(side, price, ereq.get("qty", 0))
        elif kind == "amend":
            o = self.orders.get(ereq.get("order_id"))
            if o is None:
                return None      # unknown/finished order: the engine rejects it
            acct, side, sym, price, leaves, locked = o
            if acct != account:
                return None      # not the owner's order: the engine rejects it
            new_price = ereq.get("new_price")
            new_price = price if new_price is None else new_price
            if new_price <= 0:
                return "bad_price"
            new_qty = ereq.get("new_qty")
            # the worst case: the new quantity becomes the leaves (the engine may reduce it by what filled)
            new_leaves = leaves if new_qty is None else max(leaves, new_qty)
            need = self.lock_for(side, new_price, new_leaves) - locked
            if need <= 0:
                return None
            asset = self.quote if side == "B" else self.base[sym]
        else:
            return None
        k = (account, asset)
        reserved = self._reserved.get(k, 0)
        if self.available(account, asset) - reserved < need:
            return "insufficient_balance"
        self._reserved[k] = reserved + need
        self._last = (k, need)
        return None

    def _protect(self, account: str, ereq: dict) -> str | None:
        """A market buy -> a limit IOC (FOK kept) at its protection price, in place (see the module docs)."""
        source = self.protection_price
        if source is None:
            return "market_buy_unsupported"
        price = source(account, ereq.get("symbol"), ereq.get("qty", 0))
        if price is None or price <= 0:
            return "no_liquidity"
        ereq["order_type"] = "limit"
        ereq["price"] = int(price)
        if ereq.get("tif") != "fok":
            ereq["tif"] = "ioc"
        self.market_buys += 1
        return None

    def undo_last(self) -> None:
        """Give back the reservation of the last successful :meth:`check` (another check refused it)."""
        if self._last is not None:
            k, need = self._last
            self._reserved[k] -= need
            self._last = None

    def clear_reservations(self) -> None:
        self._reserved.clear()
        self._last = None

    def check_admin(self, op: dict) -> str | None:
        """The stateful check of an admin operation (see engine.accounts.validate_admin for the rest)."""
        kind, acct = op["op"], op["account"]
        if kind == "create_account":
            return "account_exists" if acct in self.bal else None
        if acct not in self.bal:
            return "unknown_account"
        if kind == "withdraw" and self.available(acct, op["asset"]) < op["amount"]:
            return "insufficient_balance"
        return None

    # ---- state changes (sequenced only; live and replay alike) -----------------------------------------
    def apply_admin(self, ev: dict) -> None:
        kind, acct = ev["op"], ev["account"]
        if kind == "create_account":
            self.bal.setdefault(acct, {})
            return
        asset, amount = ev["asset"], ev["amount"]
        c = self._cell(acct, asset)
        if kind == "deposit":
            c[0] += amount
            self.deposits[asset] = self.deposits.get(asset, 0) + amount
        else:
            c[0] -= amount
            self.deposits[asset] = self.deposits.get(asset, 0) - amount
        self._touched.add((acct, asset))

    def on_events(self, events: list) -> None:
        orders = self.orders
        touched = self._touched
        for ev in events:
            t = ev["type"]
            if t == "fill":
                self._fill(ev)
            elif t == "accepted":
                side, sym = ev["side"], ev["symbol"]
                if sym not in self.base:
                    continue
                acct = ev["account"]
                leaves = ev["leaves_qty"] or ev["qty"]
                price = ev["price"] or 0
                locked = self.lock_for(side, price, leaves)
                asset = self.quote if side == "B" else self.base[sym]
                c = self._cell(acct, asset)
                c[0] -= locked
                c[1] += locked
                touched.add((acct, asset))
                orders[ev["order_id"]] = [acct, side, sym, price, leaves, locked]
            elif t == "canceled" or t == "expired" or t == "replaced":
                o = orders.get(ev["order_id"])
                if o is None:
                    continue
                if t == "replaced" and ev.get("price"):
                    o[3] = ev["price"]
                self._relock(ev["order_id"], o, ev["leaves_qty"])

    def _relock(self, oid: int, o: list, leaves: int, paid: int = 0) -> None:
        """Set order ``oid``'s leaves (and lock) to ``leaves``, ``paid`` of the old lock having been spent."""
        acct, side, sym, price = o[0], o[1], o[2], o[3]
        new = self.lock_for(side, price, leaves) if leaves > 0 else 0
        asset = self.quote if side == "B" else self.base[sym]
        c = self._cell(acct, asset)
        # the old lock: `paid` of it was spent, the rest is either kept (new) or given back
        c[1] -= o[5]
        c[0] += o[5] - paid - new
        c[1] += new
        self._touched.add((acct, asset))
        if leaves > 0:
            o[4], o[5] = leaves, new
        else:
            del self.orders[oid]

    def _fill(self, ev: dict) -> None:
        sym = ev["symbol"]
        if sym not in self.base:
            return
        acct, side, q, px = ev["account"], ev["side"], ev["qty"], ev["price"]
        notional = px * q
        fee = self.fee(notional, ev.get("liquidity", ""))
        base = self.base[sym]
        quote = self.quote
        o = self.orders.get(ev["order_id"])
        if side == "B":
            pay = notional + fee
            if o is not None:
                self._relock(ev["order_id"], o, ev["leaves_qty"], paid=pay)
            else:        # an order the accounts never saw locked (placed before balances were on)
                self._cell(acct, quote)[0] -= pay
                self._touched.add((acct, quote))
            self._cell(acct, base)[0] += q
            self._touched.add((acct, base))
        else:
            if o is not None:
                self._relock(ev["order_id"], o, ev["leaves_qty"], paid=q)
            else:
                self._cell(acct, base)[0] -= q
                self._touched.add((acct, base))
            self._cell(acct, quote)[0] += notional - fee
            self._touched.add((acct, quote))
        if fee:
            self._cell(self.fee_account, quote)[0] += fee
            self._touched.add((self.fee_account, quote))

    # ---- outputs -----------------------------------------------------------------------------------
    def take_changes(self, seq: int = 0) -> list[dict]:
        """One ``balance`` event per (account, asset) changed since the last call (sorted)."""
        if not self._touched:
            return []
        out = []
        for acct, asset in sorted(self._touched):
            c = self._cell(acct, asset)
            out.append({"type": "balance", "account": acct, "asset": asset, "available": c[0],
                        "locked": c[1], "seq": seq})
        self._touched.clear()
        return out

    def balances(self, account: str) -> dict:
        """``{asset: {"available": int, "locked": int}}`` of ``account`` (assets it ever held)."""
        return {asset: {"available": c[0], "locked": c[1]}
                for asset, c in sorted(self.bal.get(account, {}).items())}

    def totals(self) -> dict:
        """Per asset: the sum of available + locked over all accounts (the fee account included)."""
        out: dict[str, int] = {}
        for cells in self.bal.values():
            for asset, c in cells.items():
                out[asset] = out.get(asset, 0) + c[0] + c[1]
        return out

    # ---- snapshots and hash --------------------------------------------------------------------------
    def export(self) -> dict:
        return {"bal": {a: {k: list(c) for k, c in cells.items()} for a, cells in self.bal.items()},
                "orders": [[oid, *o] for oid, o in self.orders.items()],
                "deposits": dict(self.deposits)}

    def load(self, data: dict) -> None:
        self.bal = {a: {k: list(c) for k, c in cells.items()} for a, cells in data["bal"].items()}
        self.orders = {o[0]: list(o[1:]) for o in data["orders"]}
        self.deposits = dict(data["deposits"])
        self._touched.clear()

    def digest(self, h=None) -> bytes:
        data = json.dumps([sorted((a, sorted((k, c) for k, c in cells.items())) for a, cells in self.bal.items()),
                           sorted([oid, *o] for oid, o in self.orders.items()),
                           sorted(self.deposits.items())]).encode()
        d = hashlib.sha256(data).digest()
        if h is not None:
            h.update(d)
        return d


class AdminRequestError(ValueError):
    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


def validate_admin(req: dict, assets, max_account_bytes: int = 64) -> dict:
    """The stateless check of an admin request: ``{"op", "account"[, "asset", "amount"]}``; raises
    AdminRequestError (reason ``bad_request``)."""
    op = req.get("op")
    if op not in ADMIN_OPS:
        raise AdminRequestError("bad_request", f"op must be one of {', '.join(ADMIN_OPS)}")
    acct = req.get("account")
    if type(acct) is not str or not acct or len(acct.encode()) > max_account_bytes:
        raise AdminRequestError("bad_request", f"account must be a non-empty string of at most "
                                                f"{max_account_bytes} bytes")
    out = {"op": op, "account": acct}
    if op != "create_account":
        asset = req.get("asset")
        if asset not in assets:
            raise AdminRequestError("bad_request", f"asset must be one of {', '.join(assets)}")
        amount = req.get("amount")
        if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
            raise AdminRequestError("bad_request", f"amount must be an integer 1..2**96 (fixed point), "
                                                   f"got {type(amount).__name__}")
        out["asset"], out["amount"] = asset, amount
    return out
