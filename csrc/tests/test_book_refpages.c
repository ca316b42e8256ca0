/* test_book_refpages.c - the order store of fh_bookset: orders kept by reference number in pages
 * (dense ids, as ITCH assigns them), the hash-table fallback (ids of 2^32 and up, ids too sparse for
 * pages) and the two mixed (an id in the table whose page appears later; pages freed and reused).
 * Every step is compared with a plain model (every live order's instrument, side, price, size and
 * queue position) and the invariant check runs after every batch. */
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

/* ---- the model: live orders in arrival order (priority = seq) ---- */
typedef struct { uint64_t id; uint32_t inst; int side; int64_t px; uint32_t size; uint64_t seq; } morder;
enum { MAXM = 40000 };
static morder model[MAXM];
static size_t nmodel;
static uint64_t seq;

static long mfind(uint64_t id) {
    for (size_t i = 0; i < nmodel; i++)
        if (model[i].id == id) return (long)i;
    return -1;
}
static void mdel(long i) { model[i] = model[--nmodel]; }

/* Every model order is live in the book with its values and queue position; the counts agree. */
static int compare(const fh_bookset *bs) {
    if (fh_bookset_live_orders(bs) != nmodel) return 1;
    for (size_t i = 0; i < nmodel; i++) {
        const morder *o = &model[i];
        uint32_t inst, size;
        int side;
        int64_t px;
        if (fh_bookset_order(bs, o->id, &inst, &side, &px, &size) != 0) return 2;
        if (inst != o->inst || side != o->side || px != o->px || size != o->size) return 3;
        if (i % 13) continue;   /* queue positions of a sample: the model's scan is quadratic */
        uint64_t sh = 0, od = 0, msh = 0, mod = 0;
        if (fh_bookset_queue_position(bs, o->id, &sh, &od) != 0) return 4;
        for (size_t j = 0; j < nmodel; j++) {
            const morder *p = &model[j];
            if (p->inst == o->inst && p->side == o->side && p->px == o->px && p->seq < o->seq) {
                msh += p->size;
                mod++;
            }
        }
        if (sh != msh || od != mod) return 5;
    }
    return 0;
}

static void add(fh_bookset *bs, uint32_t inst, int side, uint64_t id, int64_t px, uint32_t size) {
    fh_tick t = mbo(inst, 'A', side ? 'A' : 'B', id, px, size, 0);
    fh_bookset_apply(bs, &t, 1);
    if (mfind(id) < 0 && nmodel < MAXM)
        model[nmodel++] = (morder){id, inst, side, px, size, seq++};
}

static void cancel_all(fh_bookset *bs, long i) {
    fh_tick t = mbo(model[i].inst, 'C', 'N', model[i].id, FH_UNDEF_PRICE, 0, FH_F_WHOLE_ORDER);
    fh_bookset_apply(bs, &t, 1);
    mdel(i);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Dense ids: every order in a ref page; pages of cancelled orders are freed and taken again. */
static void test_dense_pages(void) {
    fh_bookset *bs = fh_bookset_new(64, 16, 0);
    nmodel = 0;
    fh_book_store_stats st;
    for (uint64_t id = 1; id <= 5000; id++) add(bs, (uint32_t)(id % 5), (int)(id & 1), id, 1000 + (int64_t)(id % 37), 100);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.ref_orders == 5000 && st.table_orders == 0 && st.ref_pages == 5000 / FH_BOOK_REF_PAGE + 1);
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    /* cancel the first two pages' orders: their pages are freed, the next ids reuse them */
    for (long i = (long)nmodel - 1; i >= 0; i--)
        if (model[i].id < 2 * FH_BOOK_REF_PAGE) cancel_all(bs, i);
    fh_bookset_store_stats(bs, &st);
    uint32_t pages = st.pages;
    CHECK(st.ref_pages == 5000 / FH_BOOK_REF_PAGE + 1 - 2);   /* ids 1..2047: pages 0 and 1 */
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    for (uint64_t id = 5001; id <= 5000 + 2 * FH_BOOK_REF_PAGE; id++) add(bs, 3, 0, id, 990, 7);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.pages == pages && st.table_orders == 0);   /* freed pages were taken again */
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    /* a duplicate add of a ref page order is refused, the order keeps its values */
    fh_tick d = mbo(3, 'A', 'A', 5001, 2000, 1, 0);
    fh_bookset_apply(bs, &d, 1);
    CHECK(fh_bookset_counters(bs)[FH_BOOK_C_DUPLICATE_ADD] == 1 && compare(bs) == 0);
    /* a clear of one instrument frees its ref orders */
    fh_tick r = mbo(3, 'R', 'N', 0, FH_UNDEF_PRICE, 0, 0);
    fh_bookset_apply(bs, &r, 1);
    for (long i = (long)nmodel - 1; i >= 0; i--)
        if (model[i].inst == 3) mdel(i);
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.ref_orders == nmodel);
    fh_bookset_free(bs);
}

/* Ids beyond 2^32 and sparse ids go to the table; an id in the table whose page is created later by
 * a neighbour is still found (and a duplicate add of it refused) through the table. */
static void test_fallback(void) {
    fh_bookset *bs = fh_bookset_new(64, 16, 0);
    nmodel = 0;
    fh_book_store_stats st;
    uint64_t big = (uint64_t)1 << 40;
    for (uint64_t i = 0; i < 300; i++) add(bs, 1, (int)(i & 1), big + i * 977, 500 + (int64_t)(i % 11), 10);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.table_orders == 300 && st.ref_orders == 0);
    /* sparse: one id every 2^20 fills the allowed ref pages, then the rest go to the table */
    for (uint64_t i = 1; i <= 2000; i++) add(bs, 2, 0, i << 20, 700 + (int64_t)(i % 13), 5);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.ref_pages > 0 && st.ref_pages < 2000 && st.table_orders > 300);
    CHECK(st.ref_orders + st.table_orders == nmodel);
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    /* the table's orders count for the pages' budget: dense ids get pages again */
    uint64_t victim = (uint64_t)2000 << 20;   /* the last sparse id: in the table */
    CHECK(mfind(victim) >= 0);
    uint32_t sparse_pages = st.ref_pages;
    for (uint64_t k = 0; k < 10000; k++) add(bs, 4, 1, victim + 2 * FH_BOOK_REF_PAGE + k, 900, 1);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.ref_orders > 3000 && st.ref_pages > sparse_pages);
    /* a table order's page appears (a neighbour id takes it): the order is still found in the table */
    uint64_t table_before = st.table_orders;
    add(bs, 4, 0, victim + 1, 800, 2);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.table_orders == table_before);   /* victim + 1 went to a ref page: the victim's */
    fh_tick d = mbo(2, 'A', 'B', victim, 701, 3, 0);
    fh_bookset_apply(bs, &d, 1);
    CHECK(fh_bookset_counters(bs)[FH_BOOK_C_DUPLICATE_ADD] == 1);
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    /* fills, partial cancels and modifies of both kinds */
    for (int it = 0; it < 3000 && nmodel; it++) {
        long i = (long)(rnd() % nmodel);
        unsigned op = (unsigned)(rnd() % 4);
        morder *o = &model[i];
        fh_tick t;
        if (op == 0) {
            t = mbo(o->inst, 'F', 'N', o->id, FH_UNDEF_PRICE, 1, 0);
            fh_bookset_apply(bs, &t, 1);
            if (--o->size == 0) mdel(i);
        } else if (op == 1) {
            cancel_all(bs, i);
        } else if (op == 2) {
            int64_t px = o->px + (int64_t)(rnd() % 5) - 2;
            uint32_t sz = o->size + (uint32_t)(rnd() % 3);
            t = mbo(o->inst, 'M', 'N', o->id, px, sz, 0);
            fh_bookset_apply(bs, &t, 1);
            if (px != o->px || sz > o->size) o->seq = seq++;
            o->px = px;
            o->size = sz;
        } else {   /* replace: delete + add of a new id on the same side */
            fh_tick r[2];
            uint64_t nid = (rnd() & 1) ? big + 1000000 + (uint64_t)it : victim + 30000 + (uint64_t)it;
            r[0] = mbo(o->inst, 'C', 'N', o->id, FH_UNDEF_PRICE, 0, FH_F_WHOLE_ORDER);
            r[1] = mbo(o->inst, 'A', 'N', nid, o->px + 1, 4, 0);
            fh_bookset_apply(bs, r, 2);
            morder n = {nid, o->inst, o->side, o->px + 1, 4, seq++};
            mdel(i);
            model[nmodel++] = n;
        }
        if (it % 500 == 0) {
            int rc = fh_bookset_check(bs), mc = compare(bs);
            if (rc || mc) { printf("FAIL mixed stream step %d: check %d compare %d\n", it, rc, mc); failures++; break; }
        }
    }
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    /* clear everything: both kinds go */
    for (uint32_t inst = 1; inst <= 4; inst++) {
        fh_tick r = mbo(inst, 'R', 'N', 0, FH_UNDEF_PRICE, 0, 0);
        fh_bookset_apply(bs, &r, 1);
    }
    nmodel = 0;
    fh_bookset_store_stats(bs, &st);
    CHECK(st.ref_orders == 0 && st.table_orders == 0 && st.ref_pages == 0);
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    fh_bookset_free(bs);
}

/* An old ref page kept by few orders moves them to the table and is freed (long-lived orders must
 * not pin a page each); the moved orders keep their queue places and can be filled and cancelled. */
static void test_evict(void) {
    fh_bookset *bs = fh_bookset_new(64, 16, 0);
    nmodel = 0;
    fh_book_store_stats st;
    for (uint64_t p = 0; p < 80; p++)
        for (uint64_t j = 0; j < 40; j++)   /* 40 orders a page, queues across pages */
            add(bs, 1 + (uint32_t)(j % 3), (int)(j & 1), p * FH_BOOK_REF_PAGE + 1 + j * 25, 100 + (int64_t)(j % 4), 10);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.ref_pages == 80 && st.table_orders == 0);
    /* one order of page 0 goes: page 0 is old (80 pages below the newest) and keeps 39: evicted */
    cancel_all(bs, mfind(1));
    fh_bookset_store_stats(bs, &st);
    CHECK(st.ref_pages == 79 && st.table_orders == 39 && st.ref_orders == 79 * 40);
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    /* a page near the newest is not old: it stays */
    cancel_all(bs, mfind(79 * FH_BOOK_REF_PAGE + 1));
    fh_bookset_store_stats(bs, &st);
    CHECK(st.ref_pages == 79 && st.table_orders == 39);
    /* the moved orders: partial fills, replaces and cancels */
    for (long i = (long)nmodel - 1; i >= 0; i--) {
        if (model[i].id >= FH_BOOK_REF_PAGE) continue;
        fh_tick f = mbo(model[i].inst, 'F', 'N', model[i].id, FH_UNDEF_PRICE, 3, 0);
        fh_bookset_apply(bs, &f, 1);
        model[i].size -= 3;
        if (model[i].id % 2) cancel_all(bs, i);
    }
    CHECK(fh_bookset_check(bs) == 0 && compare(bs) == 0);
    fh_bookset_store_stats(bs, &st);
    CHECK(st.table_orders == nmodel - st.ref_orders && st.table_orders > 0);
    fh_bookset_free(bs);
}

/* An ITCH-like stream in batches: ids increase, most orders die young, some live long (their pages
 * stay), cancels of unknown ids are counted; the model agrees after every batch. */
static void test_itch_like(void) {
    fh_bookset *bs = fh_bookset_new(64, 16, 0);
    nmodel = 0;
    uint64_t next = 1;
    enum { B = 64 };
    fh_tick batch[B];
    morder pend[B];
    int npend;
    for (int it = 0; it < 300; it++) {
        npend = 0;
        for (int k = 0; k < B; k++) {
            uint64_t r = rnd();
            if ((r & 3) != 0 || nmodel < 50) {
                uint32_t inst = 1 + (uint32_t)(r >> 8) % 6;
                int side = (int)(r >> 12) & 1;
                int64_t px = side ? 1010 + (int64_t)(r >> 16) % 40 : 1000 - (int64_t)(r >> 16) % 40;
                batch[k] = mbo(inst, 'A', side ? 'A' : 'B', next, px, 100, 0);
                pend[npend++] = (morder){next, inst, side, px, 100, 0};
                next++;
            } else {
                /* cancel: a young order usually, an old one sometimes, an unknown id rarely */
                uint64_t id = (r >> 20) % 10 == 0 ? next + 5 : next - 1 - (r >> 24) % ((r >> 30) % 8 ? 200 : next);
                batch[k] = mbo(1, 'C', 'N', id, FH_UNDEF_PRICE, 0, FH_F_WHOLE_ORDER);
                pend[npend++] = (morder){id, 0, -1, 0, 0, 0};
            }
        }
        /* the model applies the same records in order (a cancel of an order added in this batch too) */
        fh_tick copy[B];
        memcpy(copy, batch, sizeof batch);
        fh_bookset_apply(bs, copy, B);
        for (int k = 0; k < npend; k++) {
            if (pend[k].side >= 0) {
                if (nmodel < MAXM) { pend[k].seq = seq++; model[nmodel++] = pend[k]; }
            } else {
                long i = mfind(pend[k].id);
                /* the book rejects a cancel naming another instrument: the batch cancels as inst 1 */
                if (i >= 0 && model[i].inst == 1) mdel(i);
            }
        }
        if (it % 100 == 0 || it == 299) {
            int rc = fh_bookset_check(bs), mc = compare(bs);
            if (rc || mc) { printf("FAIL itch-like batch %d: check %d compare %d\n", it, rc, mc); failures++; break; }
        }
    }
    fh_book_store_stats st;
    fh_bookset_store_stats(bs, &st);
    CHECK(st.table_orders == 0 && st.ref_orders == nmodel);
    printf("test_book_refpages: itch-like: %zu live orders in %u ref pages, %u pages\n", nmodel, st.ref_pages, st.pages);
    fh_bookset_free(bs);
}

int main(void) {
    test_dense_pages();
    test_fallback();
    test_evict();
    test_itch_like();
    printf("test_book_refpages: %d failures\n", failures);
    return failures != 0;
}
