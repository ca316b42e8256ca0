"""Matching engine core: differential test against tests/reference_matcher.py, scenario tests of each
rule, hypothesis properties (FIFO, amend priority, never crossed, conservation, IOC, FOK), determinism."""
from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_matcher as ref  # noqa: E402
from reference_matcher import ReferenceMatcher, exec_tuples, random_flow, to_records  # noqa: E402

from engine.matching import REASONS, Engine  # noqa: E402
from engine.orders import EXEC_TYPE_NAME, ORDER_DTYPE  # noqa: E402


def snapshot_tuples(eng: Engine):
    orders, counters = eng.snapshot()
    out = []
    for o in orders:
        out.append(tuple(int(o[f]) if f != "side" else o[f].decode() for f in ORDER_DTYPE.names))
    return out, [int(c) for c in counters]


def run_both(reqs, n_instruments=2, tick=1, batch=None):
    eng = Engine(n_instruments, tick)
    rm = ReferenceMatcher(n_instruments, tick)
    batch = batch or len(reqs)
    got, want = [], []
    for i in range(0, len(reqs), batch):
        chunk = reqs[i : i + batch]
        got += exec_tuples(eng.process(to_records(chunk)))
        want += rm.process(chunk)
    return eng, rm, got, want


def first_difference(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return i, g, w
    return min(len(got), len(want)), None, None


# ---- differential -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_differential_random_flows(seed):
    rng = random.Random(seed)
    reqs = random_flow(rng, 3000, n_instruments=3, n_accounts=3 + seed % 3, spread=5 + 5 * (seed % 3),
                       eod_every=997 if seed % 2 else 0)
    eng, rm, got, want = run_both(reqs, n_instruments=3, batch=[1, 7, 3000][seed % 3])
    assert len(got) == len(want) and got == want, first_difference(got, want)
    assert snapshot_tuples(eng) == (rm.snapshot_tuples(), rm.trade_counters())
    kinds = {EXEC_TYPE_NAME[t[12]] for t in got}
    assert {"accepted", "fill", "canceled", "replaced", "rejected"} <= kinds  # the flow exercised them


def test_differential_with_tick():
    rng = random.Random(99)
    reqs = random_flow(rng, 2000, n_instruments=1, tick=250_000_000, spread=8)
    for r in reqs[::37]:
        if r["kind"] == ref.NEW:
            r["price"] += 1  # off-tick -> bad_price
    eng, rm, got, want = run_both(reqs, n_instruments=1, tick=250_000_000)
    assert got == want, first_difference(got, want)
    assert any(t[15] == REASONS.index("bad_price") for t in got)


# ---- scenarios ---------------------------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000


class Flow:
    """Builds requests for one engine and keeps both engine and reference in step."""

    def __init__(self, n=1, tick=1):
        self.eng = Engine(n, tick)
        self.rm = ReferenceMatcher(n, tick)
        self.seq = 0
        self.next_id = 0

    def send(self, **kw):
        self.seq += 1
        r = dict(seq=self.seq, ts_recv=T0 + self.seq, order_id=0, price=0, qty=0, account=1, instrument_id=0,
                 kind=ref.NEW, side="B", order_type=ref.LIMIT, tif=ref.DAY, flags=0, stp=ref.NEWEST)
        r.update(kw)
        if r["kind"] == ref.NEW and not r["order_id"]:
            self.next_id += 1
            r["order_id"] = self.next_id
        got = exec_tuples(self.eng.process(to_records([r])))
        want = self.rm.process([r])
        assert got == want, first_difference(got, want)
        return [dict(zip(ref.EXEC_FIELDS, t)) for t in got]

    def new(self, side, price, qty, account=1, **kw):
        return self.send(side=side, price=price, qty=qty, account=account, **kw)

    def types(self, evs):
        return [(EXEC_TYPE_NAME[e["type"]], REASONS[e["reason"]]) for e in evs]


def test_price_time_priority_and_partial_fills():
    f = Flow()
    f.new("S", 101, 5, account=1)
    f.new("S", 100, 5, account=2)
    f.new("S", 100, 5, account=3)
    evs = f.new("B", 101, 12, account=4)
    fills = [e for e in evs if e["liquidity"] == ref.TAKER]
    assert [(e["contra_order_id"], e["price"], e["qty"]) for e in fills] == [(2, 100, 5), (3, 100, 5), (1, 101, 2)]
    assert f.eng.book(0) == ([], [(101, 3, 1)])
    assert [e["trade_id"] for e in fills] == [1, 2, 3]


def test_market_ioc_never_rest():
    f = Flow()
    f.new("S", 100, 5, account=2)
    evs = f.new("B", 0, 8, order_type=ref.MARKET)
    assert f.types(evs)[-1] == ("canceled", "ioc") and evs[-1]["qty"] == 3
    evs = f.new("B", 100, 8, tif=ref.IOC)
    assert f.types(evs) == [("accepted", ""), ("canceled", "ioc")]
    assert f.eng.book(0) == ([], [])


def test_fok_all_or_none():
    f = Flow()
    f.new("S", 100, 5, account=2)
    f.new("S", 101, 5, account=3)
    evs = f.new("B", 101, 11, tif=ref.FOK)
    assert f.types(evs) == [("accepted", ""), ("canceled", "fok")]
    assert f.eng.book(0)[1] == [(100, 5, 1), (101, 5, 1)]
    evs = f.new("B", 101, 10, tif=ref.FOK)
    assert sum(e["qty"] for e in evs if e["liquidity"] == ref.TAKER) == 10
    assert f.eng.book(0) == ([], [])


def test_post_only_reject_and_reprice():
    f = Flow(tick=5)
    f.new("S", 100, 5, account=2)
    evs = f.new("B", 100, 1, flags=ref.POST_ONLY)
    assert f.types(evs) == [("rejected", "would_cross")]
    evs = f.new("B", 105, 1, flags=ref.POST_ONLY | ref.REPRICE)
    assert f.types(evs) == [("accepted", "")] and evs[0]["price"] == 95
    assert f.eng.book(0) == ([(95, 1, 1)], [(100, 5, 1)])


@pytest.mark.parametrize("mode,canceled", [(ref.NEWEST, ["taker"]), (ref.OLDEST, ["maker"]), (ref.BOTH, ["maker", "taker"])])
def test_self_trade_prevention(mode, canceled):
    f = Flow()
    f.new("S", 100, 5, account=7)           # id 1
    f.new("S", 101, 5, account=8)           # id 2
    evs = f.new("B", 101, 6, account=7, stp=mode)  # id 3
    stp = [e["order_id"] for e in evs if REASONS[e["reason"]] == "stp"]
    assert stp == [{"maker": 1, "taker": 3}[c] for c in canceled]
    fills = [e for e in evs if e["type"] == ref.FILL]
    if mode == ref.OLDEST:
        assert [(e["order_id"], e["contra_order_id"], e["qty"]) for e in fills][0] == (3, 2, 5)
    else:
        assert fills == []


def test_amend_priority_rules():
    f = Flow()
    f.new("B", 100, 10, account=1)  # 1
    f.new("B", 100, 10, account=2)  # 2
    f.send(kind=ref.AMEND, order_id=1, account=1, price=ref.UNDEF_PRICE, qty=4)  # decrease keeps priority
    assert [int(o["order_id"]) for o in f.eng.orders(0)] == [1, 2]
    f.send(kind=ref.AMEND, order_id=1, account=1, price=ref.UNDEF_PRICE, qty=6)  # increase loses it
    assert [int(o["order_id"]) for o in f.eng.orders(0)] == [2, 1]
    f.send(kind=ref.AMEND, order_id=2, account=2, price=99, qty=0)  # price change loses it
    f.send(kind=ref.AMEND, order_id=2, account=2, price=100, qty=0)
    assert [int(o["order_id"]) for o in f.eng.orders(0)] == [1, 2]
    evs = f.send(kind=ref.AMEND, order_id=1, account=9, price=ref.UNDEF_PRICE, qty=1)
    assert f.types(evs) == [("rejected", "not_owner")]
    evs = f.send(kind=ref.CANCEL, order_id=77, account=1)
    assert f.types(evs) == [("rejected", "unknown_order")]
    f.new("S", 101, 3, account=5)   # 3
    evs = f.send(kind=ref.AMEND, order_id=2, account=2, price=101, qty=0)  # crossing amend trades
    assert f.types(evs)[:2] == [("replaced", ""), ("fill", "")]


def test_end_of_day_expires_day_orders_only():
    f = Flow()
    f.new("B", 100, 1, tif=ref.DAY)
    f.new("B", 99, 1, tif=ref.GTC)
    f.new("S", 105, 1, tif=ref.DAY)
    evs = f.send(kind=ref.EOD)
    assert f.types(evs) == [("expired", "eod"), ("expired", "eod")]
    assert f.eng.book(0) == ([(99, 1, 1)], [])


def test_rejects_bad_input():
    f = Flow()
    assert f.types(f.new("B", 100, 0)) == [("rejected", "bad_qty")]
    assert f.types(f.new("B", -5, 1)) == [("rejected", "bad_price")]
    assert f.types(f.new("X", 100, 1)) == [("rejected", "bad_side")]
    assert f.types(f.new("B", 100, 1, tif=9)) == [("rejected", "bad_tif")]
    assert f.types(f.new("B", 100, 1, order_type=7)) == [("rejected", "bad_type")]
    assert f.types(f.new("B", 0, 1, order_type=ref.MARKET, flags=ref.POST_ONLY)) == [("rejected", "bad_type")]
    assert f.types(f.send(kind=9)) == [("rejected", "bad_kind")]
    assert f.types(f.send(instrument_id=5, order_id=50, price=1, qty=1)) == [("rejected", "bad_instrument")]


def test_engine_errors_and_restore():
    from engine.matching import EngineError

    eng = Engine(2)
    with pytest.raises(EngineError):
        eng.process(np.zeros(3, dtype=np.int64))
    reqs = random_flow(random.Random(5), 1500, n_instruments=2)
    eng.process(to_records(reqs))
    orders, counters = eng.snapshot()
    other = Engine(2)
    other.restore(orders, counters)
    assert other.state_hash() == eng.state_hash()
    more = random_flow(random.Random(6), 500, n_instruments=2)
    for r in more:
        r["seq"] += 10_000
        if r["kind"] == ref.NEW:
            r["order_id"] += 10_000
    assert exec_tuples(other.process(to_records(more))) == exec_tuples(eng.process(to_records(more)))
    with pytest.raises(EngineError):
        other.restore(orders, counters)


def test_deterministic_event_stream():
    reqs = to_records(random_flow(random.Random(42), 5000, n_instruments=4))
    digests = set()
    for batch in (5000, 1, 333):
        eng = Engine(4)
        h = hashlib.sha256()
        for i in range(0, len(reqs), batch):
            h.update(eng.process(reqs[i : i + batch]).tobytes())
        digests.add((h.hexdigest(), eng.state_hash()))
    assert len(digests) == 1


# ---- properties ---------------------------------------------------------------------------------------

flows = st.builds(lambda seed, n, accts, spread: random_flow(random.Random(seed), n, n_instruments=1,
                                                            n_accounts=accts, spread=spread),
                  st.integers(0, 2**32), st.integers(1, 300), st.integers(1, 4), st.integers(1, 15))


def check_invariants(eng: Engine, reqs, events):
    """Book never crossed; per-order conservation; IOC/FOK/market never rest; FOK all-or-none."""
    bids, asks = eng.book(0, depth=10**6)
    if bids and asks:
        assert bids[0][0] < asks[0][0], "crossed book"
    resting = {int(o["order_id"]): o for o in eng.orders(0)}
    new = {r["order_id"]: r for r in reqs if r["kind"] == ref.NEW}
    # conservation: original (+ amend increases) == filled + open + canceled/expired/decreases
    total_in = {}
    removed = {}
    filled = {}
    leaves = {}
    for e in events:
        oid, typ = e["order_id"], e["type"]
        if typ == ref.ACCEPTED:
            total_in[oid] = e["qty"]
            leaves[oid] = e["qty"]
        elif typ == ref.FILL:
            filled[oid] = filled.get(oid, 0) + e["qty"]
            leaves[oid] -= e["qty"]
            assert leaves[oid] == e["leaves_qty"]
        elif typ in (ref.CANCELED, ref.EXPIRED):
            removed[oid] = removed.get(oid, 0) + e["qty"]
            leaves[oid] -= e["qty"]
            assert leaves[oid] == 0 == e["leaves_qty"]
        elif typ == ref.REPLACED:
            delta = e["leaves_qty"] - leaves[oid]
            if delta > 0:
                total_in[oid] += delta
            else:
                removed[oid] = removed.get(oid, 0) - delta
            leaves[oid] = e["leaves_qty"]
    for oid, q in total_in.items():
        open_q = int(resting[oid]["leaves_qty"]) if oid in resting else 0
        assert q == filled.get(oid, 0) + open_q + removed.get(oid, 0), oid
        r = new[oid]
        if r["tif"] in (ref.IOC, ref.FOK) or r["order_type"] == ref.MARKET:
            assert oid not in resting
        if r["tif"] == ref.FOK:
            assert filled.get(oid, 0) in (0, r["qty"])
    # fills pair up: taker and maker with the same trade id, price and qty
    fills = [e for e in events if e["type"] == ref.FILL]
    assert len(fills) % 2 == 0
    for a, b in zip(fills[::2], fills[1::2]):
        assert a["trade_id"] == b["trade_id"] and a["qty"] == b["qty"] and a["price"] == b["price"]
        assert (a["liquidity"], b["liquidity"]) == (ref.TAKER, ref.MAKER)
        assert a["contra_order_id"] == b["order_id"] and b["contra_order_id"] == a["order_id"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows)
def test_property_invariants_and_reference(reqs):
    eng = Engine(1)
    rm = ReferenceMatcher(1)
    events = []
    for r in reqs:
        got = exec_tuples(eng.process(to_records([r])))
        assert got == rm.process([r])
        events += [dict(zip(ref.EXEC_FIELDS, t)) for t in got]
        bids, asks = eng.book(0, depth=1)
        if bids and asks:
            assert bids[0][0] < asks[0][0]
    check_invariants(eng, reqs, events)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 20)), min_size=2, max_size=40), st.integers(1, 200))
def test_property_fifo_within_level(makers, take):
    """Fills at one price go to makers strictly in arrival order, each fully before the next."""
    f = Flow()
    for acct, q in makers:
        f.new("S", 100, q, account=acct)
    evs = f.new("B", 100, take, account=99)
    got = [(e["contra_order_id"], e["qty"]) for e in evs if e["liquidity"] == ref.TAKER]
    want, left = [], take
    for i, (_a, q) in enumerate(makers, start=1):
        if left == 0:
            break
        want.append((i, min(q, left)))
        left -= min(q, left)
    assert got == want


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(0, 7), st.integers(-5, 5), st.integers(-3, 3))
def test_property_amend_priority(n, which, dq, dp):
    """Decrease at the same price keeps the queue position; increase or price change goes to the back."""
    which %= n
    f = Flow()
    for i in range(n):
        f.new("B", 100, 10, account=i + 1)
    new_qty = max(1, 10 + dq)
    f.send(kind=ref.AMEND, order_id=which + 1, account=which + 1, price=100 + dp, qty=new_qty)
    order = [int(o["order_id"]) for o in f.eng.orders(0)]
    keeps = dp == 0 and new_qty <= 10
    if keeps:
        assert order == list(range(1, n + 1))
    else:
        at_100 = [int(o["order_id"]) for o in f.eng.orders(0) if int(o["price"]) == 100]
        if dp == 0:
            assert at_100[-1] == which + 1  # quantity increase: back of the queue
        else:
            assert which + 1 not in at_100
            at_new = [int(o["order_id"]) for o in f.eng.orders(0) if int(o["price"]) == 100 + dp]
            assert at_new == [which + 1]


def test_bytes_input_and_noncontiguous():
    reqs = to_records(random_flow(random.Random(3), 400, n_instruments=2))
    a = Engine(2).process(reqs)
    assert Engine(2).process(reqs.tobytes()).tobytes() == a.tobytes()
    assert Engine(2).process(bytearray(reqs.tobytes())).tobytes() == a.tobytes()
    doubled = np.repeat(reqs, 2)[::2]  # a strided view
    assert Engine(2).process(doubled).tobytes() == a.tobytes()
    from engine.matching import EngineError

    with pytest.raises(EngineError):
        Engine(2).process(reqs.tobytes()[:-1])
    assert len(Engine(2).process(reqs[:0])) == 0


def test_one_owner_at_a_time():
    """A second thread entering process() while a batch runs gets an error, never a data race."""
    import threading

    from engine.matching import EngineError

    eng = Engine(1)
    big = to_records(random_flow(random.Random(4), 20000, n_instruments=1))
    errors, done = [], threading.Event()

    def worker():
        while not done.is_set():
            try:
                eng.process(big[:1])
            except EngineError as e:
                errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    try:
        for _ in range(5):
            try:
                eng.process(big)
            except EngineError as e:
                errors.append(e)
    finally:
        done.set()
        t.join()
    # correctness of the guard: whatever interleaving happened, the books are still consistent
    bids, asks = eng.book(0, 1)
    assert not (bids and asks and bids[0][0] >= asks[0][0])
