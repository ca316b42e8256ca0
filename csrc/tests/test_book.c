/* test_book.c - fh_bookset: exact results of each action, then a random stream of consistent and bad
 * events with the structural invariant check (fh_bookset_check) after every batch. The differential
 * test against a pure-Python reference lives in tests/test_book.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fh/book.h"

static int failures;
#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) { printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); failures++; } \
    } while (0)

static fh_tick mbo(uint32_t inst, char action, char side, uint64_t oid, int64_t px, uint32_t size, uint8_t flags) {
    fh_tick t;
    memset(&t, 0, sizeof t);
    t.mbo.hd.length = FH_DBN_MBO_LENGTH;
    t.mbo.hd.rtype = FH_RTYPE_MBO;
    t.mbo.hd.instrument_id = inst;
    t.mbo.action = action;
    t.mbo.side = side;
    t.mbo.order_id = oid;
    t.mbo.price = px;
    t.mbo.size = size;
    t.mbo.flags = flags;
    return t;
}

static void one(fh_bookset *bs, fh_tick *t) { fh_bookset_apply(bs, t, 1); }

static void test_actions(void) {
    fh_bookset *bs = fh_bookset_new(1024, 4, 1);
    CHECK(bs != NULL);
    fh_tick t[4];
    t[0] = mbo(7, 'A', 'B', 1, 100, 10, 0);
    t[1] = mbo(7, 'A', 'B', 2, 100, 20, 0);
    t[2] = mbo(7, 'A', 'A', 3, 101, 5, 0);
    t[3] = mbo(7, 'A', 'B', 4, 99, 7, 0);
    fh_bookset_apply(bs, t, 4);
    fh_bbo b;
    CHECK(fh_bookset_bbo(bs, 7, &b) == 1);
    CHECK(b.bid_px == 100 && b.bid_sz == 30 && b.bid_count == 2 && b.ask_px == 101 && b.ask_sz == 5);
    uint64_t sh, od;
    CHECK(fh_bookset_queue_position(bs, 2, &sh, &od) == 0 && sh == 10 && od == 1);
    /* partial fill with unknown price: price and side filled in */
    fh_tick f = mbo(7, 'F', 'N', 1, FH_UNDEF_PRICE, 4, 0);
    one(bs, &f);
    CHECK(f.mbo.price == 100 && f.mbo.side == 'B');
    CHECK(fh_bookset_queue_position(bs, 2, &sh, &od) == 0 && sh == 6 && od == 1);
    /* whole-order cancel then replace: the new order takes the side and goes to the back */
    fh_tick r[2];
    r[0] = mbo(7, 'C', 'N', 1, FH_UNDEF_PRICE, 0, FH_F_WHOLE_ORDER);
    r[1] = mbo(7, 'A', 'N', 10, 100, 8, 0);
    fh_bookset_apply(bs, r, 2);
    CHECK(r[0].mbo.size == 6 && r[0].mbo.price == 100 && r[0].mbo.side == 'B');
    CHECK(r[1].mbo.side == 'B');
    CHECK(fh_bookset_queue_position(bs, 10, &sh, &od) == 0 && sh == 20 && od == 1);
    /* over-fill removes and counts */
    fh_tick o = mbo(7, 'F', 'N', 3, 101, 9, 0);
    one(bs, &o);
    const uint64_t *c = fh_bookset_counters(bs);
    CHECK(c[FH_BOOK_C_SIZE_UNDERFLOW] == 1);
    CHECK(fh_bookset_bbo(bs, 7, &b) == 1 && b.ask_px == FH_UNDEF_PRICE && b.ask_sz == 0);
    /* errors */
    fh_tick e[5];
    e[0] = mbo(7, 'C', 'N', 999, 0, 1, 0);           /* unknown */
    e[1] = mbo(7, 'A', 'B', 2, 100, 1, 0);           /* duplicate */
    e[2] = mbo(7, 'A', 'B', 50, 100, 0, 0);          /* zero size */
    e[3] = mbo(7, 'A', 'N', 51, 100, 1, 0);          /* replace without delete */
    e[4] = mbo(8, 'F', 'N', 2, FH_UNDEF_PRICE, 1, 0); /* wrong instrument */
    fh_bookset_apply(bs, e, 5);
    CHECK(c[FH_BOOK_C_UNKNOWN_ORDER] == 1 && c[FH_BOOK_C_DUPLICATE_ADD] == 1 && c[FH_BOOK_C_ZERO_SIZE_ADD] == 1);
    CHECK(c[FH_BOOK_C_REPLACE_WITHOUT_DELETE] == 1 && c[FH_BOOK_C_INSTRUMENT_MISMATCH] == 1);
    CHECK(fh_bookset_live_orders(bs) == 3);
    /* crossed add is kept and counted */
    fh_tick x = mbo(7, 'A', 'A', 60, 99, 1, 0);
    one(bs, &x);
    CHECK(c[FH_BOOK_C_CROSSED] == 1 && fh_bookset_live_orders(bs) == 4);
    /* depth, best first */
    fh_book_depth_level d[4];
    CHECK(fh_bookset_depth(bs, 7, FH_BOOK_BID, d, 4) == 2);
    CHECK(d[0].price == 100 && d[0].size == 28 && d[0].count == 2 && d[1].price == 99);
    /* clear */
    fh_tick cl = mbo(7, 'R', 'N', 0, FH_UNDEF_PRICE, 0, 0);
    one(bs, &cl);
    CHECK(fh_bookset_live_orders(bs) == 0 && fh_bookset_check(bs) == 0);
    size_t nev;
    fh_bookset_bbo_events(bs, &nev);
    CHECK(nev > 0);
    CHECK(fh_bookset_check(bs) == 0);
    fh_bookset_free(bs);
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_random(void) {
    const char *scale = getenv("FH_TEST_SCALE");
    size_t batches = scale && strcmp(scale, "small") == 0 ? 200 : 2000;
    enum { B = 256, MAXLIVE = 20000 };
    fh_bookset *bs = fh_bookset_new(64, 0, 1);
    uint64_t *live = malloc(MAXLIVE * sizeof *live);
    uint32_t *live_inst = malloc(MAXLIVE * sizeof *live_inst);
    size_t nlive = 0;
    uint64_t next_id = 1;
    fh_tick batch[B];
    for (size_t it = 0; it < batches; it++) {
        for (size_t k = 0; k < B; k++) {
            uint64_t r = rnd();
            /* instruments 0..7 plus some ids above max_instruments (hash fallback) */
            uint32_t inst = (r & 7) < 6 ? (uint32_t)(r >> 8 & 7) : 100000 + (uint32_t)(r >> 8 & 3);
            unsigned op = (unsigned)(r >> 16) % 100;
            int64_t px = 1000 + (int64_t)(r >> 24 & 63) - 32;
            uint32_t size = (uint32_t)(r >> 32 & 255);
            if (op < 45 || nlive == 0) {
                char side = (r >> 40) & 1 ? 'B' : 'A';
                if (side == 'A') px += 20;
                batch[k] = mbo(inst, 'A', side, next_id, px, size, 0);
                if (nlive < MAXLIVE) { live[nlive] = next_id; live_inst[nlive++] = inst; }
                next_id++;
            } else if (op < 95) {
                size_t j = (size_t)(r >> 44) % nlive;
                char act = op < 65 ? 'F' : 'C';
                uint8_t flags = op >= 80 ? FH_F_WHOLE_ORDER : 0;
                batch[k] = mbo(live_inst[j], act, 'N', live[j], FH_UNDEF_PRICE, size / 4, flags);
                if (flags && k + 1 < B && (r >> 50 & 1)) {   /* replace */
                    k++;
                    batch[k] = mbo(live_inst[j], 'A', 'N', next_id, px + 10, size + 1, 0);
                    live[j] = next_id++;
                } else if (flags) {
                    live[j] = live[--nlive];
                    live_inst[j] = live_inst[nlive];
                }
            } else if (op < 97) {
                batch[k] = mbo(inst, 'C', 'N', rnd() % (next_id + 10), FH_UNDEF_PRICE, size, 0);  /* maybe bad */
            } else if (op < 98) {
                batch[k] = mbo(inst, 'M', 'N', live[(size_t)(r >> 44) % nlive], px, size, 0);
            } else if (op < 99) {
                batch[k] = mbo(inst, (char)(r >> 40), (char)(r >> 48), r >> 8, px, size, (uint8_t)(r >> 56));
            } else {
                batch[k] = mbo(inst, 'R', 'N', 0, FH_UNDEF_PRICE, 0, 0);
            }
        }
        fh_bookset_apply(bs, batch, B);
        int rc = fh_bookset_check(bs);
        if (rc) { printf("FAIL invariant %d after batch %zu\n", rc, it); failures++; break; }
        size_t nev;
        fh_bookset_bbo_events(bs, &nev);
        fh_bookset_bbo_events_drain(bs);
    }
    /* strided ids force the order table into mixed hashing */
    for (uint64_t i = 0; i < 5000; i++) {
        fh_tick t = mbo(1, 'A', 'B', (i << 20) + 7, 500 + (int64_t)(i % 50), 1, 0);
        one(bs, &t);
    }
    CHECK(fh_bookset_check(bs) == 0);
    for (uint64_t i = 0; i < 5000; i += 2) {
        fh_tick t = mbo(1, 'C', 'N', (i << 20) + 7, 0, 0, FH_F_WHOLE_ORDER);
        one(bs, &t);
    }
    CHECK(fh_bookset_check(bs) == 0);
    printf("test_book: random stream: %llu live orders, %zu books, %zu bytes\n",
           (unsigned long long)fh_bookset_live_orders(bs), fh_bookset_instrument_count(bs), fh_bookset_memory(bs));
    free(live);
    free(live_inst);
    fh_bookset_free(bs);
}

/* Deep books: two instruments with thousands of price levels a side. Adds land anywhere from the top
 * to 4000 ticks away, deletes/fills/partial cancels/replaces hit orders at any depth, whole ranges
 * of levels are swept empty (every block of the ladder emptied, neighbours merged) and refilled,
 * modifies move orders across the book. After every batch the invariant check runs and the FULL
 * depth of both sides is compared with a plain model: shares and orders per (instrument, side,
 * price tick), kept by this test from the same events. */
enum { DEEP_TICKS = 4096, DEEP_INST = 2, DEEP_MAXLIVE = 60000 };
typedef struct { uint64_t id; uint32_t inst; int side; int64_t px; uint32_t size; } deep_order;
static uint64_t deep_total[DEEP_INST][2][DEEP_TICKS];
static uint32_t deep_count[DEEP_INST][2][DEEP_TICKS];

static int deep_compare(fh_bookset *bs, fh_book_depth_level *d) {
    for (uint32_t inst = 0; inst < DEEP_INST; inst++) {
        for (int side = 0; side < 2; side++) {
            size_t n = fh_bookset_depth(bs, inst + 1, side, d, DEEP_TICKS + 1);
            size_t k = 0;
            for (int j = 0; j < DEEP_TICKS; j++) {
                int t = side == FH_BOOK_BID ? DEEP_TICKS - 1 - j : j;   /* best first */
                if (!deep_count[inst][side][t]) continue;
                if (k >= n || d[k].price != 100 * (int64_t)t || d[k].size != deep_total[inst][side][t] ||
                    d[k].count != deep_count[inst][side][t])
                    return -1;
                k++;
            }
            if (k != n) return -1;
        }
    }
    return 0;
}

static void test_deep_ladder(void) {
    const char *scale = getenv("FH_TEST_SCALE");
    size_t batches = scale && strcmp(scale, "small") == 0 ? 150 : 1200;
    enum { B = 128 };
    memset(deep_total, 0, sizeof deep_total);
    memset(deep_count, 0, sizeof deep_count);
    fh_bookset *bs = fh_bookset_new(16, 0, 1);
    deep_order *live = malloc(DEEP_MAXLIVE * sizeof *live);
    fh_book_depth_level *d = malloc((DEEP_TICKS + 1) * sizeof *d);
    size_t nlive = 0, max_levels = 0;
    uint64_t next_id = 1;
    fh_tick batch[B];
    int64_t mid = DEEP_TICKS / 2;
    for (size_t it = 0; it < batches && !failures; it++) {
        size_t k = 0;
        /* every 100 batches: sweep a band of levels of one side (every order in it deleted) */
        int sweep = it % 100 == 50;
        int64_t lo = (int64_t)(rnd() % (DEEP_TICKS - 600)), hi = lo + 500;
        while (k < B) {
            uint64_t r = rnd();
            unsigned op = (unsigned)(r % 100);
            if (sweep) {   /* delete every order of the band, as many as fit in this batch */
                size_t j = 0;
                while (j < nlive && k < B) {
                    deep_order *o = &live[j];
                    if (o->px / 100 < lo || o->px / 100 >= hi) { j++; continue; }
                    batch[k++] = mbo(o->inst, 'C', 'N', o->id, FH_UNDEF_PRICE, 0, FH_F_WHOLE_ORDER);
                    deep_total[o->inst - 1][o->side][o->px / 100] -= o->size;
                    deep_count[o->inst - 1][o->side][o->px / 100]--;
                    *o = live[--nlive];
                }
                break;
            }
            if (op < 47 || nlive < 100) {
                if (nlive >= DEEP_MAXLIVE) continue;
                int side = (r >> 8) & 1;
                /* a third at the top, the rest anywhere (uniform) up to 2000 ticks away */
                int64_t dist = (r >> 9) % 3 == 0 ? (int64_t)((r >> 12) % 4) : (int64_t)((r >> 12) % 2000);
                int64_t t = side == FH_BOOK_BID ? mid - 1 - dist : mid + dist;
                if (t < 1) t = 1;
                if (t >= DEEP_TICKS) t = DEEP_TICKS - 1;
                uint32_t size = 1 + (uint32_t)((r >> 32) % 500);
                batch[k] = mbo(1 + (uint32_t)((r >> 40) & 1), 'A', side ? 'A' : 'B', next_id, 100 * t, size, 0);
                deep_order *o = &live[nlive++];
                o->id = next_id++; o->inst = batch[k].mbo.hd.instrument_id; o->side = side; o->px = 100 * t;
                o->size = size;
                deep_total[o->inst - 1][side][t] += size;
                deep_count[o->inst - 1][side][t]++;
                k++;
                continue;
            }
            size_t j = (size_t)(r >> 20) % nlive;
            deep_order *o = &live[j];
            uint32_t inst = o->inst - 1;
            int64_t t = o->px / 100;
            if (op < 57) {            /* fill or partial cancel: partial or the whole rest */
                uint32_t q = (r >> 50) & 1 ? o->size : 1 + (uint32_t)((r >> 52) % o->size);
                batch[k] = mbo(o->inst, op < 52 ? 'F' : 'C', 'N', o->id, FH_UNDEF_PRICE, q, 0);
                deep_total[inst][o->side][t] -= q;
                o->size -= q;
                if (!o->size) deep_count[inst][o->side][t]--;
            } else if (op < 85 || k + 1 == B) {   /* delete */
                batch[k] = mbo(o->inst, 'C', 'N', o->id, FH_UNDEF_PRICE, 0, FH_F_WHOLE_ORDER);
                deep_total[inst][o->side][t] -= o->size;
                deep_count[inst][o->side][t]--;
                o->size = 0;
            } else if (op < 97) {     /* replace (ITCH U): up to 300 ticks away, same side */
                int64_t nt = t + (int64_t)((r >> 40) % 601) - 300;
                if (nt < 1) nt = 1;
                if (nt >= DEEP_TICKS) nt = DEEP_TICKS - 1;
                uint32_t size = 1 + (uint32_t)((r >> 32) % 300);
                batch[k++] = mbo(o->inst, 'C', 'N', o->id, FH_UNDEF_PRICE, 0, FH_F_WHOLE_ORDER);
                batch[k] = mbo(o->inst, 'A', 'N', next_id, 100 * nt, size, 0);
                deep_total[inst][o->side][t] -= o->size;
                deep_count[inst][o->side][t]--;
                deep_total[inst][o->side][nt] += size;
                deep_count[inst][o->side][nt]++;
                o->id = next_id++; o->px = 100 * nt; o->size = size;
            } else {                  /* modify to another price (loses priority) */
                int64_t nt = t + (int64_t)((r >> 40) % 2001) - 1000;
                if (nt < 1) nt = 1;
                if (nt >= DEEP_TICKS) nt = DEEP_TICKS - 1;
                batch[k] = mbo(o->inst, 'M', 'N', o->id, 100 * nt, o->size, 0);
                deep_total[inst][o->side][t] -= o->size;
                deep_count[inst][o->side][t]--;
                deep_total[inst][o->side][nt] += o->size;
                deep_count[inst][o->side][nt]++;
                o->px = 100 * nt;
            }
            if (!o->size) *o = live[--nlive];
            k++;
        }
        if (k) fh_bookset_apply(bs, batch, k);
        int rc = fh_bookset_check(bs);
        if (rc) { printf("FAIL deep invariant %d after batch %zu\n", rc, it); failures++; break; }
        if (deep_compare(bs, d)) { printf("FAIL deep depth differs after batch %zu\n", it); failures++; break; }
        size_t levels = fh_bookset_depth(bs, 1, FH_BOOK_BID, d, DEEP_TICKS + 1);
        if (levels > max_levels) max_levels = levels;
        fh_bookset_bbo_events_drain(bs);
    }
    const uint64_t *c = fh_bookset_counters(bs);
    /* nothing was rejected: the model and the books saw the same consistent stream */
    CHECK(c[FH_BOOK_C_UNKNOWN_ORDER] == 0 && c[FH_BOOK_C_SIZE_UNDERFLOW] == 0 && c[FH_BOOK_C_NO_MEMORY] == 0);
    CHECK(max_levels > (batches > 500 ? 1000u : 250u));   /* deep: the ladder split into dozens of blocks */
    /* empty every level of instrument 1 by deletes, then refill: blocks freed and reused */
    size_t j = 0;
    while (j < nlive) {
        if (live[j].inst != 1) { j++; continue; }
        fh_tick t = mbo(1, 'C', 'N', live[j].id, FH_UNDEF_PRICE, 0, FH_F_WHOLE_ORDER);
        one(bs, &t);
        deep_total[0][live[j].side][live[j].px / 100] -= live[j].size;
        deep_count[0][live[j].side][live[j].px / 100]--;
        live[j] = live[--nlive];
    }
    fh_book_depth_level top;
    CHECK(fh_bookset_depth(bs, 1, FH_BOOK_BID, &top, 1) == 0 && fh_bookset_depth(bs, 1, FH_BOOK_ASK, &top, 1) == 0);
    CHECK(fh_bookset_check(bs) == 0 && deep_compare(bs, d) == 0);
    for (int64_t t = 1; t < DEEP_TICKS; t += 3) {
        int side = t < mid ? FH_BOOK_BID : FH_BOOK_ASK;
        fh_tick a = mbo(1, 'A', side ? 'A' : 'B', next_id++, 100 * t, 7, 0);
        one(bs, &a);
        deep_total[0][side][t] += 7;
        deep_count[0][side][t]++;
    }
    CHECK(fh_bookset_check(bs) == 0 && deep_compare(bs, d) == 0);
    fh_bbo b;
    CHECK(fh_bookset_bbo(bs, 1, &b) == 1 && b.bid_px == 100 * 2047 && b.ask_px == 100 * 2050 && b.bid_sz == 7);
    printf("test_book: deep ladder: %zu levels at most on a side, %zu live orders, %zu bytes\n", max_levels,
           (size_t)fh_bookset_live_orders(bs), fh_bookset_memory(bs));
    free(live);
    free(d);
    fh_bookset_free(bs);
}

int main(void) {
    test_actions();
    test_random();
    test_deep_ladder();
    printf("test_book: %d failures\n", failures);
    return failures != 0;
}
