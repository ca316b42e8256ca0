"""A small, obviously correct pure-Python matcher: the oracle for the Cython engine (tests only).

It implements the semantics written in src/engine/matching.pyi with plain lists and dicts and no
attempt at speed: every price level is a Python list in arrival order, the best level is found with
max()/min() over the dict keys each time. Requests are dicts with the fields of ``REQ_DTYPE`` (ints,
``side`` as "B"/"S"); events are tuples in ``EXEC_FIELDS`` order so they compare directly with the
engine's exec records (``exec_tuples``).
"""
from __future__ import annotations

NEW, CANCEL, AMEND, EOD = 1, 2, 3, 4
LIMIT, MARKET = 1, 2
DAY, GTC, IOC, FOK = 1, 2, 3, 4
POST_ONLY, REPRICE = 0x01, 0x02
NEWEST, OLDEST, BOTH = 1, 2, 3
ACCEPTED, REJECTED, FILL, CANCELED, REPLACED, EXPIRED = 1, 2, 3, 4, 5, 6
MAKER, TAKER = 1, 2
R = dict(bad_qty=1, bad_price=2, bad_side=3, bad_type=4, bad_tif=5, would_cross=6, fok=7, ioc=8, stp=9,
         user=10, unknown_order=11, not_owner=12, eod=13, bad_request=14, bad_instrument=17, bad_kind=18)
MAX_QTY = 0x7FFFFFFF
UNDEF_PRICE = 2**63 - 1

EXEC_FIELDS = ("seq", "ts_event", "order_id", "contra_order_id", "trade_id", "price", "qty", "leaves_qty",
               "cum_qty", "account", "contra_account", "instrument_id", "type", "side", "liquidity", "reason")


def exec_tuples(events) -> list[tuple]:
    """Engine EXEC_DTYPE array -> list of tuples comparable with ReferenceMatcher output."""
    out = []
    for e in events:
        t = tuple(e[f] for f in EXEC_FIELDS)
        out.append(tuple(int(x) if not isinstance(x, bytes) else x.decode() for x in t))
    return out


class RefBook:
    def __init__(self, instrument_id: int, tick: int):
        self.instrument_id = instrument_id
        self.tick = tick
        self.trades = 0
        self.levels = {"B": {}, "S": {}}  # side -> price -> [order dicts, FIFO]

    def best(self, side):
        lv = self.levels[side]
        if not lv:
            return None
        return max(lv) if side == "B" else min(lv)

    def levels_best_first(self, side):
        lv = self.levels[side]
        return sorted(lv, reverse=(side == "B"))


def _opp(side):
    return "S" if side == "B" else "B"


def _crosses(side, limit, level_price):
    return level_price <= limit if side == "B" else level_price >= limit


class ReferenceMatcher:
    def __init__(self, n_instruments: int, tick: int = 1):
        self.books = [RefBook(i, tick) for i in range(n_instruments)]
        self.orders = {}  # order_id -> order dict (resting only)
        self.out = []

    # -- events
    def _ev(self, r, typ, o_id, side, price, qty, leaves, cum, account, reason=0, contra_id=0, trade_id=0,
            contra_acct=0, liq=0):
        self.out.append((r["seq"], r["ts_recv"], o_id, contra_id, trade_id, price, qty, leaves, cum, account,
                         contra_acct, r["instrument_id"], typ, side, liq, reason))

    def _reject(self, r, reason):
        self._ev(r, REJECTED, r["order_id"], r["side"], r["price"], r["qty"], 0, 0, r["account"], R[reason])

    # -- book edits
    def _rest(self, book, o):
        book.levels[o["side"]].setdefault(o["price"], []).append(o)
        self.orders[o["order_id"]] = o

    def _remove(self, book, o):
        lvl = book.levels[o["side"]][o["price"]]
        lvl.remove(o)
        if not lvl:
            del book.levels[o["side"]][o["price"]]
        del self.orders[o["order_id"]]

    def process(self, reqs) -> list[tuple]:
        self.out = []
        for r in reqs:
            if r["instrument_id"] >= len(self.books):
                self._reject(r, "bad_instrument")
                continue
            book = self.books[r["instrument_id"]]
            kind = r["kind"]
            if kind == NEW:
                self._new(book, r)
            elif kind == CANCEL:
                self._cancel(book, r)
            elif kind == AMEND:
                self._amend(book, r)
            elif kind == EOD:
                for side in ("B", "S"):
                    for p in book.levels_best_first(side):
                        for o in list(book.levels[side][p]):
                            if o["tif"] == DAY:
                                self._ev(r, EXPIRED, o["order_id"], side, p, o["leaves"], 0, o["cum"],
                                         o["account"], R["eod"])
                                self._remove(book, o)
            else:
                self._reject(r, "bad_kind")
        return self.out

    def _post_only(self, book, t):
        best = book.best(_opp(t["side"]))
        if best is None or not _crosses(t["side"], t["price"], best):
            return None
        if not t["flags"] & REPRICE:
            return "would_cross"
        p = best - book.tick if t["side"] == "B" else best + book.tick
        if p <= 0:
            return "bad_price"
        t["price"] = p
        return None

    def _fok_ok(self, book, t, market):
        avail = 0
        opp = _opp(t["side"])
        for p in book.levels_best_first(opp):
            if not market and not _crosses(t["side"], t["price"], p):
                return False
            for m in book.levels[opp][p]:
                if t["stp"] and m["account"] == t["account"]:
                    if t["stp"] != OLDEST:
                        return False
                    continue
                avail += m["leaves"]
                if avail >= t["leaves"]:
                    return True
        return False

    def _match(self, book, t, r, market):
        """Returns True when the taker was canceled by self-trade prevention."""
        opp = _opp(t["side"])
        while t["leaves"] > 0:
            best = book.best(opp)
            if best is None or (not market and not _crosses(t["side"], t["price"], best)):
                return False
            m = book.levels[opp][best][0]
            if t["stp"] and m["account"] == t["account"]:
                if t["stp"] in (OLDEST, BOTH):
                    self._ev(r, CANCELED, m["order_id"], m["side"], m["price"], m["leaves"], 0, m["cum"],
                             m["account"], R["stp"])
                    self._remove(book, m)
                if t["stp"] in (NEWEST, BOTH):
                    self._ev(r, CANCELED, t["order_id"], t["side"], t["price"], t["leaves"], 0, t["cum"],
                             t["account"], R["stp"])
                    t["leaves"] = 0
                    return True
                continue
            q = min(t["leaves"], m["leaves"])
            book.trades += 1
            tid = (book.instrument_id << 40) | book.trades
            t["leaves"] -= q
            t["cum"] += q
            m["leaves"] -= q
            m["cum"] += q
            self._ev(r, FILL, t["order_id"], t["side"], best, q, t["leaves"], t["cum"], t["account"], 0,
                     m["order_id"], tid, m["account"], TAKER)
            self._ev(r, FILL, m["order_id"], m["side"], best, q, m["leaves"], m["cum"], m["account"], 0,
                     t["order_id"], tid, t["account"], MAKER)
            if m["leaves"] == 0:
                self._remove(book, m)
        return False

    def _new(self, book, r):
        market = r["order_type"] == MARKET
        if r["side"] not in ("B", "S"):
            return self._reject(r, "bad_side")
        if r["order_type"] not in (LIMIT, MARKET):
            return self._reject(r, "bad_type")
        if not DAY <= r["tif"] <= FOK:
            return self._reject(r, "bad_tif")
        if r["qty"] == 0 or r["qty"] > MAX_QTY:
            return self._reject(r, "bad_qty")
        if not market and (r["price"] <= 0 or r["price"] == UNDEF_PRICE or r["price"] % book.tick):
            return self._reject(r, "bad_price")
        if market and r["flags"] & POST_ONLY:
            return self._reject(r, "bad_type")
        if r["stp"] > BOTH or r["order_id"] == 0 or r["order_id"] in self.orders:
            return self._reject(r, "bad_request")
        t = dict(order_id=r["order_id"], price=0 if market else r["price"], ts_event=r["ts_recv"],
                 leaves=r["qty"], cum=0, account=r["account"], instrument_id=r["instrument_id"],
                 side=r["side"], tif=r["tif"], flags=r["flags"] & (POST_ONLY | REPRICE), stp=r["stp"])
        if t["flags"] & POST_ONLY:
            err = self._post_only(book, t)
            if err:
                return self._reject(r, err)
        self._ev(r, ACCEPTED, t["order_id"], t["side"], t["price"], t["leaves"], t["leaves"], 0, t["account"])
        if r["tif"] == FOK and not self._fok_ok(book, t, market):
            self._ev(r, CANCELED, t["order_id"], t["side"], t["price"], t["leaves"], 0, 0, t["account"], R["fok"])
            return
        stp_canceled = self._match(book, t, r, market)
        if not stp_canceled and t["leaves"] > 0:
            if market or r["tif"] in (IOC, FOK):
                self._ev(r, CANCELED, t["order_id"], t["side"], t["price"], t["leaves"], 0, t["cum"],
                         t["account"], R["ioc"])
            else:
                self._rest(book, t)

    def _find_own(self, book, r):
        o = self.orders.get(r["order_id"])
        if o is None or o["instrument_id"] != r["instrument_id"]:
            self._reject(r, "unknown_order")
            return None
        if o["account"] != r["account"]:
            self._reject(r, "not_owner")
            return None
        return o

    def _cancel(self, book, r):
        o = self._find_own(book, r)
        if o is not None:
            self._ev(r, CANCELED, o["order_id"], o["side"], o["price"], o["leaves"], 0, o["cum"], o["account"],
                     R["user"])
            self._remove(book, o)

    def _amend(self, book, r):
        o = self._find_own(book, r)
        if o is None:
            return
        new_price = o["price"] if r["price"] == UNDEF_PRICE else r["price"]
        new_leaves = o["leaves"] if r["qty"] == 0 else r["qty"]
        if new_leaves > MAX_QTY:
            return self._reject(r, "bad_qty")
        if new_price <= 0 or new_price % book.tick:
            return self._reject(r, "bad_price")
        if new_price == o["price"] and new_leaves <= o["leaves"]:
            o["leaves"] = new_leaves
            self._ev(r, REPLACED, o["order_id"], o["side"], o["price"], new_leaves, new_leaves, o["cum"],
                     o["account"])
            return
        t = dict(o, price=new_price, leaves=new_leaves, ts_event=r["ts_recv"])
        if t["flags"] & POST_ONLY:
            err = self._post_only(book, t)
            if err:
                return self._reject(r, err)
        self._remove(book, o)
        self._ev(r, REPLACED, t["order_id"], t["side"], t["price"], t["leaves"], t["leaves"], t["cum"],
                 t["account"])
        if not self._match(book, t, r, False) and t["leaves"] > 0:
            self._rest(book, t)

    # -- queries used by the tests
    def snapshot_tuples(self):
        """Resting orders in the engine's snapshot order: per instrument, bids best-first then asks, FIFO."""
        out = []
        for book in self.books:
            for side in ("B", "S"):
                for p in book.levels_best_first(side):
                    for o in book.levels[side][p]:
                        out.append((o["order_id"], o["price"], o["ts_event"], o["leaves"], o["cum"], o["account"],
                                    o["instrument_id"], o["side"], o["tif"], o["flags"], o["stp"]))
        return out

    def trade_counters(self):
        return [b.trades for b in self.books]


# ---- random order flows (shared by the differential and property tests) ------------------------------

def random_flow(rng, n: int, n_instruments: int = 2, n_accounts: int = 4, mid: int = 1000, spread: int = 20,
                tick: int = 1, eod_every: int = 0) -> list[dict]:
    """n random requests over a few accounts and instruments, biased to hit live orders and cross often.

    ``rng`` is a random.Random. Order ids are 1, 2, ... (the manager's job in production).
    """
    reqs = []
    live = []  # order ids that may still rest (cancel/amend targets; may be stale on purpose)
    next_id = 1
    for seq in range(1, n + 1):
        x = rng.random()
        inst = rng.randrange(n_instruments)
        acct = rng.randrange(1, n_accounts + 1)
        r = dict(seq=seq, ts_recv=1_700_000_000_000_000_000 + seq * 1000, order_id=0, price=0, qty=0,
                 account=acct, instrument_id=inst, kind=NEW, side=rng.choice("BS"), order_type=LIMIT,
                 tif=DAY, flags=0, stp=rng.choice((0, NEWEST, OLDEST, BOTH)))
        if eod_every and seq % eod_every == 0:
            r.update(kind=EOD)
        elif x < 0.55 or not live:
            r.update(order_id=next_id, qty=rng.choice((1, 2, 5, 10, 10, 25, 100)))
            next_id += 1
            r["price"] = (mid + rng.randint(-spread, spread)) * tick
            y = rng.random()
            if y < 0.08:
                r["order_type"] = MARKET
                r["tif"] = rng.choice((DAY, IOC, FOK))
            elif y < 0.18:
                r["tif"] = IOC
            elif y < 0.26:
                r["tif"] = FOK
            elif y < 0.45:
                r["tif"] = GTC
            if rng.random() < 0.12 and r["order_type"] == LIMIT:
                r["flags"] = POST_ONLY | (REPRICE if rng.random() < 0.5 else 0)
            if rng.random() < 0.01:  # a few invalid ones
                r[rng.choice(("qty", "price", "tif"))] = 0
            live.append(r["order_id"])
        elif x < 0.78:
            oid = rng.choice(live)
            r.update(kind=CANCEL, order_id=oid, instrument_id=rng.choice((inst, (oid - 1) % n_instruments)))
        else:
            oid = rng.choice(live)
            r.update(kind=AMEND, order_id=oid, price=UNDEF_PRICE, qty=0)
            y = rng.random()
            if y < 0.4:
                r["qty"] = rng.choice((1, 2, 5, 10, 50))
            elif y < 0.8:
                r["price"] = (mid + rng.randint(-spread, spread)) * tick
            else:
                r["qty"] = rng.choice((1, 5, 30))
                r["price"] = (mid + rng.randint(-spread, spread)) * tick
        if len(live) > 400:
            live = live[-200:]
        reqs.append(r)
    # cancels/amends address the instrument their order was sent to most of the time
    sent_to = {}
    for r in reqs:
        if r["kind"] == NEW:
            sent_to[r["order_id"]] = (r["instrument_id"], r["account"])
        elif r["kind"] in (CANCEL, AMEND) and r["order_id"] in sent_to:
            if rng.random() < 0.95:
                r["instrument_id"] = sent_to[r["order_id"]][0]
            if rng.random() < 0.9:
                r["account"] = sent_to[r["order_id"]][1]
    return reqs


def to_records(reqs: list[dict]):
    """List of request dicts -> REQ_DTYPE array."""
    import numpy as np

    from engine.orders import REQ_DTYPE

    a = np.zeros(len(reqs), dtype=REQ_DTYPE)
    for i, r in enumerate(reqs):
        for k, v in r.items():
            a[i][k] = v.encode() if k == "side" else v
    return a


def dict_flow(seed: int, n: int, symbols: list[str], t0: int = 1_700_000_000_000_000_000, **kw) -> list[dict]:
    """random_flow() as EngineManager request dicts; order ids are the ones the manager will assign.

    Every request passes the manager's dict validation, so request i gets input sequence i + 1.
    """
    import random

    tif_name = {DAY: "day", GTC: "gtc", IOC: "ioc", FOK: "fok"}
    stp_name = {0: "none", NEWEST: "cancel_newest", OLDEST: "cancel_oldest", BOTH: "cancel_both"}
    flow = random_flow(random.Random(seed), n, n_instruments=len(symbols), **kw)
    ids, count, out = {}, [0] * len(symbols), []
    for i, r in enumerate(flow):
        inst = r["instrument_id"]
        d = {"account": f"acct{r['account']}", "client_order_id": f"r{i}", "ts_recv": t0 + i}
        if r["kind"] == NEW:
            count[inst] += 1
            ids[r["order_id"]] = ((inst + 1) << 40) | count[inst]
            d.update(type="new", symbol=symbols[inst], side=r["side"], price=r["price"], qty=r["qty"] or 1,
                     order_type="market" if r["order_type"] == MARKET else "limit",
                     tif=tif_name.get(r["tif"], "day"), stp=stp_name[r["stp"]])
            if r["flags"] & POST_ONLY:
                d.update(post_only=True, post_only_mode="reprice" if r["flags"] & REPRICE else "reject")
        elif r["kind"] == EOD:
            d.update(type="eod", symbol=symbols[inst])
        else:
            oid = ids.get(r["order_id"], ((inst + 1) << 40) | 999_999)
            d.update(type="cancel" if r["kind"] == CANCEL else "amend", order_id=oid, symbol=symbols[inst])
            if r["kind"] == AMEND:
                d["new_price"] = None if r["price"] == UNDEF_PRICE else r["price"]
                d["new_qty"] = r["qty"] or None
        out.append(d)
    return out
