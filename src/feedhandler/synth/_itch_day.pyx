# cython: language_level=3
"""Native core of the synthetic ITCH 5.0 day: the order-flow simulation and the byte shuffling.

The simulation keeps, per instrument, every live order in a price-time priority heap per side (best
price first, then lowest order reference number, i.e. oldest), so executions always hit the
best-priced oldest order exactly as NASDAQ's matching does, and a heap of live orders by cancel
deadline for deletes and replaces (the order lifetime model, below).

Order lifetimes (why: on a real NASDAQ day most orders are cancelled within a second of being added
- quotes flicker - while a minority rests for minutes to hours, so deletes and replaces hit recent
orders far more often than old ones; a generator that deletes uniformly among live orders makes the
books an old, cold, ever-growing pile instead). Lifetimes are counted on the instrument's own
clock, its bulk events (a scaled-down day - 10 M messages instead of NASDAQ's ~300 M - has too few
events per symbol for nanosecond lifetimes to be honoured; events come in bursts that stay on one
instrument, see pick_instruments, so a few events of one instrument are microseconds to
milliseconds). Every new order (an add, or the new half of a replace) draws an intended lifetime L
from a mixture of two log-logistic laws (heavy, power-law tails):
    with probability FLEETING_SHARE   median FLEETING_MEDIAN   events  (quote flicker)
    otherwise                         median RESTING_MEDIAN    events  (resting liquidity)
    L = median * (u / (1 - u)) ** LIFETIME_SHAPE,  u uniform in (0, 1)
and its cancel deadline is (instrument clock at the add) + L. A delete or a replace on an instrument
takes the live order with the EARLIEST deadline (a min-heap per instrument), i.e. the one whose
drawn lifetime runs out first. The result: most orders die within a few events of their add (in
the same burst), deletes hit recent orders far more often than old ones, and a long tail of orders
rests for hours. Partial cancels (X) pick a uniformly random live order
(they reduce a resting order), executions hit the best-priced oldest order of a side (the top of the
book). The balance between adds and removals comes from the mix (feedhandler.synth.day.DEFAULT_MIX). It emits one EVENT per message into parallel column arrays;
the Python layer (feedhandler.synth.day) turns the columns into wire bytes through numpy dtypes
derived from the one ITCH field table (protocols/itch50_spec.py), so no wire layout is typed here.

Randomness is xoshiro256** seeded through splitmix64: the same seed gives the same day on every
platform and numpy version. Everything runs without the GIL; memory is malloc'd and freed before
return (MemoryError when it cannot be had).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy
from libc.math cimport exp, log

import numpy as np

cdef extern from *:
    """
    /* xoshiro256** 1.0 (Blackman & Vigna, public domain) */
    typedef struct fh_synth_rng { uint64_t s[4]; } fh_synth_rng;
    static inline uint64_t fh_synth_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    static inline uint64_t fh_synth_next(fh_synth_rng *r) {
        uint64_t *s = r->s;
        uint64_t result = fh_synth_rotl(s[1] * 5, 7) * 9;
        uint64_t t = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
        s[2] ^= t; s[3] = fh_synth_rotl(s[3], 45);
        return result;
    }
    static inline void fh_synth_seed(fh_synth_rng *r, uint64_t seed) {
        for (int i = 0; i < 4; i++) {          /* splitmix64 */
            uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            r->s[i] = z ^ (z >> 31);
        }
    }
    /* uniform double in [0, 1) with 53 random bits */
    static inline double fh_synth_uniform(fh_synth_rng *r) { return (fh_synth_next(r) >> 11) * 0x1.0p-53; }
    /* uniform integer in [0, n), n > 0 (Lemire's multiply-shift; the bias is below 2^-32 for our n) */
    static inline uint64_t fh_synth_below(fh_synth_rng *r, uint64_t n) {
        return (uint64_t)(((unsigned __int128)fh_synth_next(r) * n) >> 64);
    }
    """
    ctypedef struct fh_synth_rng:
        uint64_t s[4]
    uint64_t fh_synth_next(fh_synth_rng *r) noexcept nogil
    void fh_synth_seed(fh_synth_rng *r, uint64_t seed) noexcept nogil
    double fh_synth_uniform(fh_synth_rng *r) noexcept nogil
    uint64_t fh_synth_below(fh_synth_rng *r, uint64_t n) noexcept nogil


# Bulk actions, in the order of the `mix` probabilities passed to simulate().
ACTIONS = "AFDXUECPB"
# Scheduled event kinds.
cdef enum:
    _SCHED_CROSS = 1    # Q: opening/closing cross print (flag = cross type)
    _SCHED_NOII = 2     # I: imbalance indicator before a cross (flag = cross type)
SCHED_CROSS = _SCHED_CROSS
SCHED_NOII = _SCHED_NOII

cdef enum:
    TICK = 100          # price4 units per $0.01
    MIN_PRICE = 10000   # price4: $1.00, floor of the fair-value random walk

# ---- live order pool --------------------------------------------------------------------------
cdef double FLEETING_SHARE = 0.7          # share of orders that are quote flicker
cdef double FLEETING_MEDIAN = 1.0           # instrument events: median lifetime of a fleeting order
cdef double RESTING_MEDIAN = 2000.0          # instrument events: median lifetime of a resting order
cdef double LIFETIME_SHAPE = 1.0            # log-logistic shape: P(L > x) ~ x ** -(1 / shape)
cdef double MAX_LIFETIME = 1e12             # instrument events: cap
cdef double CLOCK_UNIT = 16.0               # deadline units per instrument event

ctypedef struct order_t:
    uint64_t ref
    uint64_t deadline   # instrument clock (CLOCK_UNIT per event): when its drawn lifetime runs out
    uint32_t price      # price4
    uint32_t shares
    int32_t inst        # instrument index (locate - 1)
    int32_t hpos        # position in its side heap
    int32_t dpos        # position in its instrument's deadline heap
    uint8_t side        # 0 bid (ITCH 'B'), 1 ask ('S')

ctypedef struct vec_t:
    int32_t *v
    int32_t n
    int32_t cap

ctypedef struct inst_t:
    vec_t heap[2]
    vec_t live          # min-heap of the instrument's live orders by deadline
    int64_t fv          # fair value, price4, on the tick grid
    uint64_t clock      # bulk events of this instrument so far, CLOCK_UNIT each

ctypedef struct sim_t:
    order_t *o
    int32_t n_orders
    int32_t cap_orders
    int32_t *free_ids
    int32_t n_free
    inst_t *inst
    int32_t n_inst


cdef int vec_push(vec_t *v, int32_t x) except -1 nogil:
    cdef int32_t *nv
    cdef int32_t ncap
    if v.n == v.cap:
        ncap = 16 if v.cap == 0 else v.cap * 2
        nv = <int32_t *>realloc(v.v, ncap * sizeof(int32_t))
        if nv == NULL:
            with gil:
                raise MemoryError()
        v.v = nv
        v.cap = ncap
    v.v[v.n] = x
    v.n += 1
    return 0


cdef inline bint before(sim_t *s, int side, int32_t a, int32_t b) noexcept nogil:
    """Price-time priority: does order a rank before order b on `side`?"""
    cdef order_t *oa = &s.o[a]
    cdef order_t *ob = &s.o[b]
    if oa.price != ob.price:
        return oa.price > ob.price if side == 0 else oa.price < ob.price
    return oa.ref < ob.ref


cdef void heap_up(sim_t *s, vec_t *h, int side, int32_t i) noexcept nogil:
    cdef int32_t x = h.v[i]
    cdef int32_t p
    while i > 0:
        p = (i - 1) >> 1
        if not before(s, side, x, h.v[p]):
            break
        h.v[i] = h.v[p]
        s.o[h.v[i]].hpos = i
        i = p
    h.v[i] = x
    s.o[x].hpos = i


cdef void heap_down(sim_t *s, vec_t *h, int side, int32_t i) noexcept nogil:
    cdef int32_t x = h.v[i]
    cdef int32_t c
    while True:
        c = 2 * i + 1
        if c >= h.n:
            break
        if c + 1 < h.n and before(s, side, h.v[c + 1], h.v[c]):
            c += 1
        if not before(s, side, h.v[c], x):
            break
        h.v[i] = h.v[c]
        s.o[h.v[i]].hpos = i
        i = c
    h.v[i] = x
    s.o[x].hpos = i


cdef void heap_remove(sim_t *s, vec_t *h, int side, int32_t i) noexcept nogil:
    cdef int32_t last
    h.n -= 1
    if i == h.n:
        return
    last = h.v[h.n]
    h.v[i] = last
    s.o[last].hpos = i
    heap_up(s, h, side, i)
    heap_down(s, h, side, s.o[last].hpos)


cdef void dheap_up(sim_t *s, vec_t *h, int32_t i) noexcept nogil:
    cdef int32_t x = h.v[i]
    cdef int32_t p
    cdef uint64_t d = s.o[x].deadline
    while i > 0:
        p = (i - 1) >> 1
        if s.o[h.v[p]].deadline <= d:
            break
        h.v[i] = h.v[p]
        s.o[h.v[i]].dpos = i
        i = p
    h.v[i] = x
    s.o[x].dpos = i


cdef void dheap_down(sim_t *s, vec_t *h, int32_t i) noexcept nogil:
    cdef int32_t x = h.v[i]
    cdef int32_t c
    cdef uint64_t d = s.o[x].deadline
    while True:
        c = 2 * i + 1
        if c >= h.n:
            break
        if c + 1 < h.n and s.o[h.v[c + 1]].deadline < s.o[h.v[c]].deadline:
            c += 1
        if s.o[h.v[c]].deadline >= d:
            break
        h.v[i] = h.v[c]
        s.o[h.v[i]].dpos = i
        i = c
    h.v[i] = x
    s.o[x].dpos = i


cdef void dheap_remove(sim_t *s, vec_t *h, int32_t i) noexcept nogil:
    cdef int32_t last
    h.n -= 1
    if i == h.n:
        return
    last = h.v[h.n]
    h.v[i] = last
    s.o[last].dpos = i
    dheap_up(s, h, i)
    dheap_down(s, h, s.o[last].dpos)


cdef inline uint64_t lifetime(fh_synth_rng *r) noexcept nogil:
    """An order's intended lifetime in instrument clock units (the model in the module docstring)."""
    cdef double med = FLEETING_MEDIAN if fh_synth_uniform(r) < FLEETING_SHARE else RESTING_MEDIAN
    cdef double u = fh_synth_uniform(r) + 1.1102230246251565e-16      # (0, 1): + 2**-53
    cdef double life = med * exp(LIFETIME_SHAPE * log(u / (1.0 - u)))
    if life > MAX_LIFETIME:
        life = MAX_LIFETIME
    return <uint64_t>(life * CLOCK_UNIT) + 1


cdef int32_t order_new(sim_t *s) except -1 nogil:
    cdef order_t *no
    cdef int32_t *no2
    cdef int32_t ncap
    if s.n_free > 0:
        s.n_free -= 1
        return s.free_ids[s.n_free]
    if s.n_orders == s.cap_orders:
        ncap = 1024 if s.cap_orders == 0 else s.cap_orders * 2
        no = <order_t *>realloc(s.o, ncap * sizeof(order_t))
        if no == NULL:
            with gil:
                raise MemoryError()
        s.o = no
        no2 = <int32_t *>realloc(s.free_ids, ncap * sizeof(int32_t))
        if no2 == NULL:
            with gil:
                raise MemoryError()
        s.free_ids = no2
        s.cap_orders = ncap
    s.n_orders += 1
    return s.n_orders - 1


cdef int order_insert(sim_t *s, int32_t oid) except -1 nogil:
    """Put a filled-in order (deadline set) into its side heap and its instrument's deadline heap."""
    cdef order_t *o = &s.o[oid]
    cdef inst_t *it = &s.inst[o.inst]
    o.dpos = it.live.n
    vec_push(&it.live, oid)
    dheap_up(s, &it.live, o.dpos)
    o = &s.o[oid]
    o.hpos = it.heap[o.side].n
    vec_push(&it.heap[o.side], oid)
    heap_up(s, &it.heap[o.side], o.side, o.hpos)
    return 0


cdef void order_remove(sim_t *s, int32_t oid) noexcept nogil:
    cdef order_t *o = &s.o[oid]
    cdef inst_t *it = &s.inst[o.inst]
    heap_remove(s, &it.heap[o.side], o.side, o.hpos)
    dheap_remove(s, &it.live, o.dpos)
    s.free_ids[s.n_free] = oid
    s.n_free += 1


cdef inline int64_t best(sim_t *s, inst_t *it, int side) noexcept nogil:
    """Best price4 on a side, or -1 when the side is empty."""
    if it.heap[side].n == 0:
        return -1
    return s.o[it.heap[side].v[0]].price


cdef inline uint32_t lot(fh_synth_rng *r) noexcept nogil:
    """Order size: mostly round lots (100 x geometric), some odd lots, a few blocks."""
    cdef double u = fh_synth_uniform(r)
    cdef uint32_t k = 1
    if u < 0.12:
        return <uint32_t>(1 + fh_synth_below(r, 99))
    while fh_synth_uniform(r) < 0.55 and k < 50:
        k += 1
    if u > 0.995:
        k *= 20
    return 100 * k


ctypedef struct depth_t:
    # where new orders go (see distance): the depth profile of feedhandler.synth.day.DEPTH_PROFILES
    double near_share   # share of orders near the top of the book
    double p_near       # geometric continuation probability near the top (mean p / (1 - p) ticks)
    double p_deep       # the same for the others, deep in the book
    int64_t max_ticks   # cap on the distance


cdef inline int64_t distance(fh_synth_rng *r, const depth_t *dp) noexcept nogil:
    """Ticks away from the fair value: most orders at or near the top of the book, the rest deep in
    the book, as resting limit orders are (geometric laws; by default 75 % with mean 3 ticks, 25 %
    with mean 49 ticks, at most 2000)."""
    cdef int64_t d = 0
    cdef double p = dp.p_near if fh_synth_uniform(r) < dp.near_share else dp.p_deep
    while fh_synth_uniform(r) < p and d < dp.max_ticks:
        d += 1
    return d


cdef inline int64_t place(sim_t *s, inst_t *it, int side, int64_t px) noexcept nogil:
    """Clamp a new order's price so that the book never crosses (and stays positive)."""
    cdef int64_t opp
    if side == 0:
        opp = best(s, it, 1)
        if opp >= 0 and px >= opp:
            px = opp - TICK
        if px < TICK:
            px = TICK
    else:
        opp = best(s, it, 0)
        if opp >= 0 and px <= opp:
            px = opp + TICK
    return px


def simulate(uint64_t seed, const uint64_t[::1] ts, const int32_t[::1] inst_of, const int64_t[::1] fv0,
             const double[::1] mix, const uint64_t[::1] sched_ts, const uint8_t[::1] sched_kind,
             const int32_t[::1] sched_inst, const uint8_t[::1] sched_flag, uint64_t first_ref,
             uint64_t first_match, uint8_t n_mpids,
             uint8_t[::1] o_type, int32_t[::1] o_inst, uint64_t[::1] o_ts, uint64_t[::1] o_ref,
             uint64_t[::1] o_ref2, uint8_t[::1] o_side, uint32_t[::1] o_shares, uint32_t[::1] o_price,
             uint64_t[::1] o_match, uint64_t[::1] o_aux, uint8_t[::1] o_flag,
             double near_share=0.75, double near_mean=3.0, double deep_mean=49.0, int64_t max_ticks=2000):
    """Run the order flow of one day.

    Parameters
    ----------
    ts : sorted bulk event times (ns since midnight), one message each.
    inst_of : instrument index per bulk event.
    fv0 : starting fair value per instrument (price4).
    mix : probabilities of ACTIONS (sum 1).
    sched_* : scheduled crosses / NOII (sorted by time), emitted with the fair value of their time.
    o_* : output columns, len(ts) + len(sched_ts) rows.
    near_share, near_mean, deep_mean, max_ticks : where new orders go: a share ``near_share`` of them
        a geometric number of ticks from the fair value with mean ``near_mean``, the others with mean
        ``deep_mean``, at most ``max_ticks`` (the depth of the books).

    Returns (n_events, last_ref, last_match, live_orders).
    """
    cdef Py_ssize_t n = ts.shape[0], ns = sched_ts.shape[0], ni = fv0.shape[0]
    cdef Py_ssize_t i = 0, j = 0, k = 0, a
    cdef sim_t s
    cdef fh_synth_rng rng
    cdef double cum[9]
    cdef double u, acc = 0.0
    cdef int act, side
    cdef int32_t oid, ix
    cdef inst_t *it
    cdef order_t *o
    cdef int64_t px, bb, ba
    cdef uint64_t next_ref = first_ref, next_match = first_match, t
    cdef uint32_t q
    if mix.shape[0] != 9:
        raise ValueError("mix needs 9 probabilities (AFDXUECPB)")
    if inst_of.shape[0] != n:
        raise ValueError("one instrument per bulk event")
    if sched_kind.shape[0] != ns or sched_inst.shape[0] != ns or sched_flag.shape[0] != ns:
        raise ValueError("sched_ts, sched_kind, sched_inst and sched_flag must have the same length")
    for col in (o_type, o_inst, o_ts, o_ref, o_ref2, o_side, o_shares, o_price, o_match, o_aux, o_flag):
        if col.shape[0] < n + ns:
            raise ValueError("output columns too short")
    if n_mpids == 0:
        raise ValueError("n_mpids must be positive")
    if not (0.0 <= near_share <= 1.0) or near_mean < 0 or deep_mean < 0 or max_ticks < 0:
        raise ValueError("depth: near_share in [0, 1], near_mean, deep_mean and max_ticks >= 0")
    cdef depth_t dp
    dp.near_share = near_share
    dp.p_near = near_mean / (near_mean + 1.0)
    dp.p_deep = deep_mean / (deep_mean + 1.0)
    dp.max_ticks = max_ticks
    # the loop runs without bounds checks: validate every index it will use
    for a in range(n):
        if inst_of[a] < 0 or inst_of[a] >= ni:
            raise ValueError(f"bulk event {a}: instrument {inst_of[a]} out of range")
    for a in range(ns):
        if sched_inst[a] < 0 or sched_inst[a] >= ni:
            raise ValueError(f"scheduled event {a}: instrument {sched_inst[a]} out of range")
    for a in range(9):
        acc += mix[a]
        cum[a] = acc
    cum[8] = 2.0
    fh_synth_seed(&rng, seed)
    s.o = NULL
    s.free_ids = NULL
    s.n_orders = s.cap_orders = s.n_free = 0
    s.n_inst = <int32_t>ni
    s.inst = <inst_t *>calloc(ni if ni > 0 else 1, sizeof(inst_t))
    if s.inst == NULL:
        raise MemoryError()
    for a in range(ni):
        s.inst[a].fv = fv0[a]
    try:
        with nogil:
            while i < n or j < ns:
                if j < ns and (i >= n or sched_ts[j] <= ts[i]):
                    # ---- scheduled: cross print or imbalance indicator at the current fair value
                    ix = sched_inst[j]
                    it = &s.inst[ix]
                    o_ts[k] = sched_ts[j]
                    o_inst[k] = ix
                    o_flag[k] = sched_flag[j]
                    o_price[k] = <uint32_t>it.fv
                    o_ref[k] = 0
                    o_ref2[k] = 0
                    if sched_kind[j] == _SCHED_CROSS:
                        o_type[k] = ord('Q')
                        o_aux[k] = 100 * (1 + fh_synth_below(&rng, 2000))
                        o_match[k] = next_match
                        next_match += 1
                        o_shares[k] = 0
                        o_side[k] = ord(' ')
                    else:
                        o_type[k] = ord('I')
                        o_shares[k] = <uint32_t>(100 * (1 + fh_synth_below(&rng, 5000)))   # paired
                        o_aux[k] = 100 * fh_synth_below(&rng, 300)                          # imbalance
                        o_side[k] = ord('N') if o_aux[k] == 0 else (ord('B') if fh_synth_below(&rng, 2) else ord('S'))
                        o_match[k] = 0
                    j += 1
                    k += 1
                    continue
                t = ts[i]
                ix = inst_of[i]
                i += 1
                it = &s.inst[ix]
                it.clock += <uint64_t>CLOCK_UNIT
                # fair value random walk: one tick, now and then
                u = fh_synth_uniform(&rng)
                if u < 0.04:
                    if u < 0.02:
                        it.fv += TICK
                    elif it.fv > MIN_PRICE:
                        it.fv -= TICK
                u = fh_synth_uniform(&rng)
                act = 0
                while u >= cum[act]:
                    act += 1
                # actions on live orders fall back to adds when there is nothing to act on
                if act in (2, 3, 4) and it.live.n == 0:
                    act = 0
                if act in (5, 6) and it.heap[0].n == 0 and it.heap[1].n == 0:
                    act = 0
                if act == 8 and next_match == first_match:
                    act = 0
                o_ts[k] = t
                o_inst[k] = ix
                o_ref[k] = 0
                o_ref2[k] = 0
                o_side[k] = ord(' ')
                o_shares[k] = 0
                o_price[k] = 0
                o_match[k] = 0
                o_aux[k] = 0
                o_flag[k] = ord(' ')
                if act <= 1:                                   # A / F: add
                    side = <int>fh_synth_below(&rng, 2)
                    if side == 0:
                        px = it.fv - distance(&rng, &dp) * TICK
                    else:
                        px = it.fv + TICK + distance(&rng, &dp) * TICK
                    px = place(&s, it, side, px)
                    oid = order_new(&s)
                    o = &s.o[oid]
                    o.ref = next_ref
                    next_ref += 1
                    o.price = <uint32_t>px
                    o.shares = lot(&rng)
                    o.inst = ix
                    o.side = <uint8_t>side
                    o.deadline = it.clock + lifetime(&rng)
                    order_insert(&s, oid)
                    o = &s.o[oid]
                    o_type[k] = ord('A') if act == 0 else ord('F')
                    o_ref[k] = o.ref
                    o_side[k] = ord('B') if side == 0 else ord('S')
                    o_shares[k] = o.shares
                    o_price[k] = o.price
                    if act == 1:
                        o_aux[k] = fh_synth_below(&rng, n_mpids)
                elif act <= 4:                                 # D / X / U on a live order
                    # D and U: the order whose drawn lifetime runs out first; X: any live order
                    # (the lifetime model in the module docstring)
                    if act == 3:
                        oid = it.live.v[fh_synth_below(&rng, it.live.n)]
                    else:
                        oid = it.live.v[0]
                    o = &s.o[oid]
                    o_ref[k] = o.ref
                    if act == 3 and o.shares <= 1:
                        act = 2
                    if act == 2:
                        o_type[k] = ord('D')
                        order_remove(&s, oid)
                    elif act == 3:
                        o_type[k] = ord('X')
                        if o.shares > 100 and o.shares % 100 == 0:
                            q = 100 * <uint32_t>(1 + fh_synth_below(&rng, o.shares // 100 - 1))
                        else:
                            q = <uint32_t>(1 + fh_synth_below(&rng, o.shares - 1))
                        o.shares -= q
                        o_shares[k] = q
                    else:
                        o_type[k] = ord('U')
                        side = o.side
                        heap_remove(&s, &it.heap[side], side, o.hpos)
                        px = <int64_t>o.price + (<int64_t>fh_synth_below(&rng, 5) - 2) * TICK
                        px = place(&s, it, side, px)
                        o.price = <uint32_t>px
                        o.ref = next_ref
                        next_ref += 1
                        if fh_synth_uniform(&rng) < 0.5:
                            o.shares = lot(&rng)
                        o.hpos = it.heap[side].n
                        vec_push(&it.heap[side], oid)
                        heap_up(&s, &it.heap[side], side, o.hpos)
                        o = &s.o[oid]
                        # the new order of a replace draws its own lifetime
                        o.deadline = it.clock + lifetime(&rng)
                        dheap_down(&s, &it.live, o.dpos)
                        dheap_up(&s, &it.live, s.o[oid].dpos)
                        o = &s.o[oid]
                        o_ref2[k] = o.ref
                        o_shares[k] = o.shares
                        o_price[k] = o.price
                elif act <= 6:                                 # E / C: hit the best-priced oldest order
                    bb = best(&s, it, 0)
                    ba = best(&s, it, 1)
                    if ba >= 0 and ba <= it.fv:
                        side = 1
                    elif bb >= 0 and bb > it.fv:
                        side = 0
                    else:
                        side = <int>fh_synth_below(&rng, 2)
                    if it.heap[side].n == 0:
                        side = 1 - side
                    oid = it.heap[side].v[0]
                    o = &s.o[oid]
                    o_ref[k] = o.ref
                    if o.shares > 1 and fh_synth_uniform(&rng) < 0.35:
                        q = <uint32_t>(1 + fh_synth_below(&rng, o.shares - 1))
                    else:
                        q = o.shares
                    o_shares[k] = q
                    o_match[k] = next_match
                    next_match += 1
                    if act == 5:
                        o_type[k] = ord('E')
                    else:
                        o_type[k] = ord('C')
                        o_price[k] = o.price
                        o_flag[k] = ord('N') if fh_synth_uniform(&rng) < 0.1 else ord('Y')
                    if q == o.shares:
                        order_remove(&s, oid)
                    else:
                        o.shares -= q
                elif act == 7:                                 # P: non-displayed execution
                    o_type[k] = ord('P')
                    o_side[k] = ord('B') if fh_synth_below(&rng, 2) else ord('S')
                    o_shares[k] = lot(&rng)
                    o_price[k] = <uint32_t>(it.fv if it.fv > 0 else TICK)
                    o_match[k] = next_match
                    next_match += 1
                else:                                          # B: break an earlier match
                    o_type[k] = ord('B')
                    o_match[k] = first_match + fh_synth_below(&rng, next_match - first_match)
                k += 1
        live = 0
        for a in range(ni):
            live += s.inst[a].live.n
        return k, next_ref, next_match, live
    finally:
        for a in range(ni):
            free(s.inst[a].heap[0].v)
            free(s.inst[a].heap[1].v)
            free(s.inst[a].live.v)
        free(s.inst)
        free(s.o)
        free(s.free_ids)


def bulk_times(uint64_t seed, Py_ssize_t n, const uint64_t[::1] bounds, const double[::1] weights,
               double burst=0.8):
    """n event times (ns since midnight), unsorted: piece p of `bounds` (p, p+1) gets weights[p] of them.

    Events come in bursts, as on a real feed: each event follows the previous one by a few
    microseconds with probability `burst` (mean burst length 1 / (1 - burst)).

    Inside the regular session piece (the one with the largest weight) the density is U-shaped
    (busier after the open and before the close), as on a real trading day.
    """
    cdef fh_synth_rng rng
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t i, p, npieces = weights.shape[0], busy = 0
    cdef double u, x, acc
    cdef double cum[16]
    if npieces > 16 or bounds.shape[0] != npieces + 1:
        raise ValueError("bounds must have len(weights) + 1 entries, at most 16 pieces")
    acc = 0.0
    for p in range(npieces):
        acc += weights[p]
        cum[p] = acc
        if weights[p] > weights[busy]:
            busy = p
    fh_synth_seed(&rng, seed ^ 0x5eed71e5)
    with nogil:
        for i in range(n):
            if i > 0 and fh_synth_uniform(&rng) < burst:
                # same burst as the previous event: a few microseconds later (exponential)
                x = -log(1.0 - fh_synth_uniform(&rng)) * 2000.0
                o[i] = o[i - 1] + <uint64_t>x
                if o[i] < bounds[npieces]:
                    continue
            u = fh_synth_uniform(&rng) * acc
            p = 0
            while p < npieces - 1 and u >= cum[p]:
                p += 1
            x = fh_synth_uniform(&rng)
            if p == busy:
                u = fh_synth_uniform(&rng)
                if u < 0.25:
                    x = x * x * x
                elif u < 0.5:
                    x = 1.0 - x * x * x
            o[i] = bounds[p] + <uint64_t>(x * <double>(bounds[p + 1] - bounds[p]))
            if o[i] >= bounds[p + 1]:
                o[i] = bounds[p + 1] - 1
    return out


def pick_instruments(uint64_t seed, Py_ssize_t n, const double[::1] cum_weights, const uint64_t[::1] ts=None,
                     uint64_t burst_gap_ns=0, double stick=0.0):
    """n instrument indices drawn from a cumulative weight table (binary search per draw).

    With ``ts`` (the n sorted event times): an event at most ``burst_gap_ns`` after the previous one
    is, with probability ``stick``, on the previous event's instrument (bursts of activity are
    mostly one instrument's: a quote update is a delete and an add, an order sweeps the book)."""
    cdef fh_synth_rng rng
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef Py_ssize_t i, lo, hi, mid, m = cum_weights.shape[0]
    cdef double u, total
    cdef bint sticky = ts is not None and stick > 0.0
    if m == 0:
        raise ValueError("need at least one weight")
    if ts is not None and ts.shape[0] != n:
        raise ValueError("ts must have n entries")
    total = cum_weights[m - 1]
    fh_synth_seed(&rng, seed ^ 0x1257)
    with nogil:
        for i in range(n):
            if sticky and i > 0 and ts[i] - ts[i - 1] <= burst_gap_ns and fh_synth_uniform(&rng) < stick:
                o[i] = o[i - 1]
                continue
            u = fh_synth_uniform(&rng) * total
            lo = 0
            hi = m - 1
            while lo < hi:
                mid = (lo + hi) >> 1
                if cum_weights[mid] > u:
                    hi = mid
                else:
                    lo = mid + 1
            o[i] = <int32_t>lo
    return out


def scatter_rows(uint8_t[::1] out, const int64_t[::1] offsets, const uint8_t[:, ::1] rows):
    """Copy row r of `rows` to out[offsets[r]:offsets[r] + rows.shape[1]] (bounds checked first)."""
    cdef Py_ssize_t r, n = rows.shape[0], w = rows.shape[1], cap = out.shape[0]
    if offsets.shape[0] != n:
        raise ValueError("one offset per row")
    for r in range(n):
        if offsets[r] < 0 or offsets[r] + w > cap:
            raise ValueError(f"row {r} at {offsets[r]} does not fit in {cap} bytes")
    with nogil:
        for r in range(n):
            memcpy(&out[offsets[r]], &rows[r, 0], w)


def pack_packets(const int64_t[::1] starts, const uint64_t[::1] times, int64_t max_payload,
                 uint64_t max_span_ns):
    """Group consecutive length-prefixed messages into MoldUDP64 packets.

    starts[i] is where message i (with its 2-byte length) begins in the framed stream, starts[n] the
    end. A packet takes messages while their framed bytes fit in max_payload and they are within
    max_span_ns of the packet's first message (a real feed flushes a packet when it is full or when
    the matching engine goes quiet). Returns the index of each packet's first message (+ n at the end).
    """
    cdef Py_ssize_t n = starts.shape[0] - 1, i, npk = 0
    out = np.empty(n + 1, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef int64_t first_byte
    cdef uint64_t first_t
    if n < 0 or times.shape[0] < n:
        raise ValueError("starts needs n + 1 entries and times n")
    with nogil:
        i = 0
        while i < n:
            o[npk] = i
            npk += 1
            first_byte = starts[i]
            first_t = times[i]
            i += 1
            while i < n and starts[i + 1] - first_byte <= max_payload and times[i] - first_t <= max_span_ns:
                i += 1
        o[npk] = n
    return out[: npk + 1]


cdef inline void put_le32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef inline void put_be16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


def pcap_records(uint8_t[::1] out, const uint8_t[::1] template, Py_ssize_t ip_off, const uint8_t[::1] session,
                 const int64_t[::1] ts, const uint64_t[::1] seq, const int32_t[::1] count,
                 const int64_t[::1] body_a, const int64_t[::1] body_b, const uint8_t[::1] framed):
    """Lay out classic little-endian nanosecond pcap records of MoldUDP64 packets into `out`.

    template: an Ethernet/IPv4/UDP frame with an EMPTY payload (from pcapwriter.build_udp_frame), whose
    IPv4 header starts at ip_off; per packet the IPv4 total length and header checksum and the UDP
    length are patched (UDP checksum stays 0, "not computed", as on NASDAQ's feeds). Packet p carries
    MoldUDP64 header (session, seq[p], count[p]) and framed[body_a[p]:body_b[p]] (length-prefixed
    messages). A test checks the result is byte-identical to pcapwriter.pcap_bytes. Returns bytes used.
    """
    cdef Py_ssize_t n = ts.shape[0], p, pos = 0, hl = template.shape[0], ihl, blen, i
    cdef uint32_t csum, plen
    cdef uint8_t *r
    if session.shape[0] != 10:
        raise ValueError("a MoldUDP64 session is 10 bytes")
    if seq.shape[0] != n or count.shape[0] != n or body_a.shape[0] != n or body_b.shape[0] != n:
        raise ValueError("one seq/count/body range per packet")
    ihl = (template[ip_off] & 0x0F) * 4
    if ip_off + ihl + 8 != hl:
        raise ValueError("template must end with the UDP header")
    for p in range(n):
        if body_a[p] < 0 or body_b[p] < body_a[p] or body_b[p] > framed.shape[0]:
            raise ValueError(f"packet {p}: bad body range")
        pos += 16 + hl + 20 + (body_b[p] - body_a[p])
    if pos > out.shape[0]:
        raise ValueError(f"out holds {out.shape[0]} bytes, {pos} needed")
    pos = 0
    with nogil:
        for p in range(n):
            blen = body_b[p] - body_a[p]
            plen = <uint32_t>(hl + 20 + blen)
            r = &out[pos]
            put_le32(r, <uint32_t>(ts[p] // 1000000000))
            put_le32(r + 4, <uint32_t>(ts[p] % 1000000000))
            put_le32(r + 8, plen)
            put_le32(r + 12, plen)
            r += 16
            memcpy(r, &template[0], hl)
            put_be16(r + ip_off + 2, <uint32_t>(ihl + 8 + 20 + blen))
            put_be16(r + ip_off + ihl + 4, <uint32_t>(8 + 20 + blen))
            r[ip_off + 10] = 0
            r[ip_off + 11] = 0
            csum = 0
            for i in range(0, ihl, 2):
                csum += (<uint32_t>r[ip_off + i] << 8) | r[ip_off + i + 1]
            while csum >> 16:
                csum = (csum & 0xFFFF) + (csum >> 16)
            put_be16(r + ip_off + 10, (~csum) & 0xFFFF)
            r += hl
            memcpy(r, &session[0], 10)
            for i in range(8):
                r[10 + i] = (seq[p] >> (56 - 8 * i)) & 0xFF
            put_be16(r + 18, <uint32_t>count[p])
            r += 20
            if blen > 0:
                memcpy(r, &framed[body_a[p]], blen)
            pos += 16 + plen
    return pos
