/* test_ring.c - fh_ring: single-thread semantics against a model, shared memory, and a two-thread
 * stress test in which every record carries its sequence number and a checksum that the consumer
 * verifies (order, no loss, no duplication under BLOCK; published + dropped == offered under DROP).
 *
 * Scale: FH_TEST_SCALE=small (the sanitizer run) streams 2 M records per stress case, the default
 * 300 M through the main BLOCK case; FH_TEST_RECORDS=N overrides both.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fh/ring.h"

static int failures;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
            failures++;                                                              \
        }                                                                            \
    } while (0)
#define CHECK_EQ(a, b)                                                               \
    do {                                                                             \
        unsigned long long _a = (unsigned long long)(a), _b = (unsigned long long)(b); \
        if (_a != _b) {                                                              \
            printf("FAIL %s:%d: %s == %s (%llu != %llu)\n", __FILE__, __LINE__, #a, #b, _a, _b); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* ---- record contents -------------------------------------------------------------------------- */
static inline uint64_t checksum(uint64_t seq) {
    uint64_t x = seq * UINT64_C(0x9E3779B97F4A7C15);
    return x ^ (x >> 29) ^ UINT64_C(0xD6E8FEB86659FD93);
}

static inline void fill(fh_tick *t, uint64_t seq) {
    t->mbo.hd.length = FH_DBN_MBO_LENGTH;
    t->mbo.hd.rtype = FH_RTYPE_MBO;
    t->mbo.hd.instrument_id = (uint32_t)seq;
    t->mbo.hd.ts_event = ~seq;
    t->mbo.order_id = seq;
    t->mbo.price = (int64_t)checksum(seq);
    t->mbo.ts_recv = seq ^ UINT64_C(0x5555555555555555);
}

/* 0 when the record is intact (whatever its sequence); *seq receives the sequence. */
static inline int verify(const fh_tick *t, uint64_t *seq) {
    uint64_t s = t->mbo.order_id;
    *seq = s;
    return !(t->mbo.hd.rtype == FH_RTYPE_MBO && t->mbo.hd.instrument_id == (uint32_t)s && t->mbo.hd.ts_event == ~s &&
             (uint64_t)t->mbo.price == checksum(s) && t->mbo.ts_recv == (s ^ UINT64_C(0x5555555555555555)));
}

static inline uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t scale_records(uint64_t dflt) {
    const char *n = getenv("FH_TEST_RECORDS");
    if (n && *n) return strtoull(n, NULL, 10);
    const char *s = getenv("FH_TEST_SCALE");
    if (s && strcmp(s, "small") == 0) return 2000000;
    return dflt;
}

/* ---- single thread ---------------------------------------------------------------------------- */
static void test_create_args(void) {
    fh_ring *r = NULL;
    CHECK_EQ(fh_ring_create(&r, 0, FH_RING_BLOCK), -EINVAL);
    CHECK_EQ(fh_ring_create(&r, 1, FH_RING_BLOCK), -EINVAL);
    CHECK_EQ(fh_ring_create(&r, 1000, FH_RING_BLOCK), -EINVAL);
    CHECK_EQ(fh_ring_create(&r, FH_RING_MAX_CAPACITY * 2, FH_RING_BLOCK), -EINVAL);
    CHECK_EQ(fh_ring_create(&r, 8, (fh_ring_overflow)7), -EINVAL);
    CHECK(r == NULL);
    CHECK_EQ(fh_ring_create(&r, 2, FH_RING_DROP), 0);
    CHECK_EQ(fh_ring_capacity(r), 2);
    CHECK_EQ(fh_ring_policy(r), FH_RING_DROP);
    CHECK_EQ(((uintptr_t)fh_ring_slots(r)) % FH_RING_LINE, 0);
    CHECK(strcmp(fh_ring_name(r), "") == 0);
    fh_ring_destroy(r);
    fh_ring_destroy(NULL);
}

static void test_wraparound(void) {
    fh_ring *r;
    fh_tick *w;
    const fh_tick *rd;
    fh_ring_stats st;
    CHECK_EQ(fh_ring_create(&r, 8, FH_RING_BLOCK), 0);
    const fh_tick *base = fh_ring_slots(r);

    CHECK_EQ(fh_ring_peek(r, 4, &rd), 0); /* empty */
    CHECK_EQ(fh_ring_claim(r, 5, &w), 5);
    CHECK(w == base);
    for (int i = 0; i < 5; i++) fill(&w[i], (uint64_t)i);
    CHECK_EQ(fh_ring_peek(r, 4, &rd), 0); /* claimed is not published */
    fh_ring_publish(r, 5);
    CHECK_EQ(fh_ring_claim(r, 10, &w), 3); /* only up to the end */
    CHECK(w == base + 5);
    for (int i = 0; i < 3; i++) fill(&w[i], (uint64_t)(5 + i));
    fh_ring_publish(r, 3);
    CHECK_EQ(fh_ring_claim(r, 1, &w), 0); /* full */
    CHECK_EQ(fh_ring_claim(r, 0, &w), 0); /* asking for nothing is not a wait */
    fh_ring_get_stats(r, &st);
    CHECK_EQ(st.producer_waits, 1);
    CHECK_EQ(st.published, 8);

    CHECK_EQ(fh_ring_readable(r), 8);
    CHECK_EQ(fh_ring_peek(r, 100, &rd), 8);
    CHECK(rd == base);
    for (uint64_t i = 0, s; i < 8; i++) CHECK(verify(&rd[i], &s) == 0 && s == i);
    fh_ring_release(r, 3);
    CHECK_EQ(fh_ring_peek(r, 2, &rd), 2); /* max honoured */
    CHECK(rd == base + 3);

    CHECK_EQ(fh_ring_claim(r, 10, &w), 3); /* wrapped: slots 0..2 are free again */
    CHECK(w == base);
    for (int i = 0; i < 3; i++) fill(&w[i], (uint64_t)(8 + i));
    fh_ring_publish(r, 3);

    CHECK_EQ(fh_ring_peek(r, 100, &rd), 5); /* a run never crosses the end */
    CHECK(rd == base + 3);
    fh_ring_release(r, 5);
    CHECK_EQ(fh_ring_peek(r, 100, &rd), 3);
    CHECK(rd == base);
    for (uint64_t i = 0, s; i < 3; i++) CHECK(verify(&rd[i], &s) == 0 && s == 8 + i);
    fh_ring_release(r, 3);
    CHECK_EQ(fh_ring_peek(r, 100, &rd), 0);
    fh_ring_get_stats(r, &st);
    CHECK_EQ(st.capacity, 8);
    CHECK_EQ(st.published, 11);
    CHECK_EQ(st.consumed, 11);
    CHECK_EQ(st.dropped, 0);
    CHECK_EQ(st.consumer_empty_polls, 3);

    /* releasing what fh_ring_readable reported, without a peek, keeps the consumer's cache sane */
    CHECK_EQ(fh_ring_claim(r, 2, &w), 2);
    fh_ring_publish(r, 2);
    CHECK_EQ(fh_ring_readable(r), 2);
    fh_ring_release(r, 2);
    CHECK_EQ(fh_ring_peek(r, 100, &rd), 0);
    CHECK_EQ(fh_ring_readable(r), 0);
    fh_ring_destroy(r);
}

/* Random claim/publish/peek/release/push against a model FIFO; checks contiguity and contents. */
static void test_model(void) {
    enum { CAP = 16, OPS = 200000 };
    fh_ring *r;
    CHECK_EQ(fh_ring_create(&r, CAP, FH_RING_DROP), 0);
    const fh_tick *base = fh_ring_slots(r);
    uint64_t rng = 88172645463325252ull, head = 0, tail = 0, dropped = 0, offered = 0;
    fh_tick batch[40];
    int bad = 0;
    for (int op = 0; op < OPS && !bad; op++) {
        uint64_t want = xorshift(&rng) % (CAP + 4);
        switch (xorshift(&rng) % 3) {
        case 0: { /* claim + partial publish */
            fh_tick *w;
            uint64_t n = fh_ring_claim(r, want, &w);
            uint64_t room = CAP - (head - tail), to_end = CAP - (head % CAP);
            uint64_t expect = want < room ? want : room;
            if (expect > to_end) expect = to_end;
            if (n != expect || w != base + (head % CAP)) bad = 1;
            uint64_t k = n ? xorshift(&rng) % (n + 1) : 0;
            for (uint64_t i = 0; i < k; i++) fill(&w[i], offered + i);
            fh_ring_publish(r, k);
            head += k;
            offered += k;
            break;
        }
        case 1: { /* push under DROP */
            for (uint64_t i = 0; i < want; i++) fill(&batch[i], offered + i);
            uint64_t n = fh_ring_push(r, batch, want);
            uint64_t room = CAP - (head - tail);
            uint64_t expect = want < room ? want : room;
            if (n != expect) bad = 2;
            head += n;
            dropped += want - n;
            /* what was dropped is the tail of this batch: later sequences continue after it */
            offered += want;
            break;
        }
        default: { /* peek + partial release */
            const fh_tick *rd;
            uint64_t n = fh_ring_peek(r, want, &rd);
            uint64_t ready = head - tail, to_end = CAP - (tail % CAP);
            uint64_t expect = want < ready ? want : ready;
            if (expect > to_end) expect = to_end;
            if (n != expect || rd != base + (tail % CAP)) bad = 3;
            uint64_t prev = UINT64_MAX, s;
            for (uint64_t i = 0; i < n; i++) {
                if (verify(&rd[i], &s) || (prev != UINT64_MAX && s <= prev)) bad = 4;
                prev = s;
            }
            uint64_t k = n ? xorshift(&rng) % (n + 1) : 0;
            fh_ring_release(r, k);
            tail += k;
            break;
        }
        }
    }
    CHECK_EQ(bad, 0);
    fh_ring_stats st;
    fh_ring_get_stats(r, &st);
    CHECK_EQ(st.published, head);
    CHECK_EQ(st.consumed, tail);
    CHECK_EQ(st.dropped, dropped);
    fh_ring_destroy(r);
}

static void test_drop_and_close(void) {
    fh_ring *r;
    fh_tick batch[8];
    const fh_tick *rd;
    fh_ring_stats st;
    for (int i = 0; i < 8; i++) fill(&batch[i], (uint64_t)i);

    CHECK_EQ(fh_ring_create(&r, 8, FH_RING_DROP), 0);
    CHECK_EQ(fh_ring_push(r, batch, 5), 5);
    CHECK_EQ(fh_ring_push(r, batch + 5, 3), 3);
    CHECK_EQ(fh_ring_push(r, batch, 5), 0); /* full: all dropped */
    CHECK_EQ(fh_ring_peek(r, 2, &rd), 2);
    fh_ring_release(r, 2);
    CHECK_EQ(fh_ring_push(r, batch, 5), 2); /* 2 fit (across the wrap), 3 dropped */
    fh_ring_get_stats(r, &st);
    CHECK_EQ(st.published, 10);
    CHECK_EQ(st.dropped, 8);
    CHECK_EQ(st.producer_waits, 0); /* DROP never waits */

    CHECK(!fh_ring_is_closed(r));
    fh_ring_close(r);
    CHECK(fh_ring_is_closed(r));
    CHECK(!fh_ring_is_finished(r));
    CHECK_EQ(fh_ring_push(r, batch, 4), 0); /* after close: counted as dropped */
    fh_ring_get_stats(r, &st);
    CHECK_EQ(st.dropped, 12);
    uint64_t got = 0, n;
    while ((n = fh_ring_wait(r, 100, &rd)) != 0) {
        got += n;
        fh_ring_release(r, n);
    }
    CHECK_EQ(got, 8);
    CHECK(fh_ring_is_finished(r));
    CHECK_EQ(fh_ring_wait(r, 100, &rd), 0);
    fh_ring_destroy(r);

    /* BLOCK with a deadline: returns what fitted, does not count the rest as dropped */
    CHECK_EQ(fh_ring_create(&r, 4, FH_RING_BLOCK), 0);
    CHECK_EQ(fh_ring_push_for(r, batch, 6, 2000000), 4);
    fh_ring_get_stats(r, &st);
    CHECK_EQ(st.dropped, 0);
    CHECK_EQ(st.producer_waits, 1);
    CHECK_EQ(st.published, 4);
    /* wait with a deadline on a live (not closed) ring that has data returns at once */
    CHECK_EQ(fh_ring_wait_for(r, 10, &rd, 1000000), 4);
    fh_ring_release(r, 4);
    CHECK_EQ(fh_ring_wait_for(r, 10, &rd, 1000000), 0); /* timed out: empty, not finished */
    CHECK(!fh_ring_is_finished(r));
    fh_ring_get_stats(r, &st);
    CHECK_EQ(st.consumer_empty_polls, 1);
    fh_ring_destroy(r);
}

static void test_shm(void) {
    char name[64], bad[300];
    snprintf(name, sizeof name, "/fh_test_ring_%d", (int)getpid());
    fh_ring *p = NULL, *c = NULL, *x = NULL;
    CHECK_EQ(fh_ring_attach_shm(&c, name), -ENOENT);
    CHECK_EQ(fh_ring_create_shm(&p, name, 1000, FH_RING_BLOCK), -EINVAL);
    CHECK_EQ(fh_ring_create_shm(&p, "", 16, FH_RING_BLOCK), -EINVAL);
    CHECK_EQ(fh_ring_create_shm(&p, "/", 16, FH_RING_BLOCK), -EINVAL);
    CHECK_EQ(fh_ring_create_shm(&p, "a/b", 16, FH_RING_BLOCK), -EINVAL);
    memset(bad, 'x', sizeof bad - 1);
    bad[sizeof bad - 1] = 0;
    CHECK_EQ(fh_ring_create_shm(&p, bad, 16, FH_RING_BLOCK), -EINVAL);
    CHECK_EQ(fh_ring_attach_shm(&c, bad), -EINVAL);

    CHECK_EQ(fh_ring_create_shm(&p, name + 1, 16, FH_RING_DROP), 0); /* '/' added */
    CHECK(strcmp(fh_ring_name(p), name) == 0);
    CHECK_EQ(fh_ring_create_shm(&x, name, 16, FH_RING_DROP), -EEXIST);
    CHECK_EQ(fh_ring_attach_shm(&c, name), 0);
    CHECK_EQ(fh_ring_capacity(c), 16);
    CHECK_EQ(fh_ring_policy(c), FH_RING_DROP);
    CHECK(fh_ring_slots(c) != fh_ring_slots(p)); /* two mappings of one object */

    fh_tick batch[20];
    for (int i = 0; i < 20; i++) fill(&batch[i], (uint64_t)i);
    CHECK_EQ(fh_ring_push(p, batch, 20), 16);
    const fh_tick *rd;
    CHECK_EQ(fh_ring_peek(c, 100, &rd), 16);
    for (uint64_t i = 0, s; i < 16; i++) CHECK(verify(&rd[i], &s) == 0 && s == i);
    fh_ring_release(c, 16);
    fh_ring_stats sp, sc;
    fh_ring_get_stats(p, &sp);
    fh_ring_get_stats(c, &sc);
    CHECK_EQ(sp.consumed, 16);
    CHECK_EQ(sc.dropped, 4);
    CHECK_EQ(memcmp(&sp, &sc, sizeof sp), 0);
    fh_ring_close(p);
    CHECK(fh_ring_is_finished(c));

    fh_ring_destroy(p); /* creator unlinks the name; the attached mapping stays valid */
    CHECK_EQ(fh_ring_attach_shm(&x, name), -ENOENT);
    CHECK(fh_ring_is_closed(c));
    fh_ring_destroy(c);

    /* objects that are not rings */
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(fd >= 0);
    CHECK_EQ(fh_ring_attach_shm(&x, name), -EAGAIN); /* empty: still being created */
    CHECK(ftruncate(fd, 4096 + 64 * 16) == 0);
    CHECK_EQ(fh_ring_attach_shm(&x, name), -EAGAIN); /* zero magic */
    uint64_t junk = 0x1234;
    CHECK(pwrite(fd, &junk, sizeof junk, 0) == (ssize_t)sizeof junk);
    CHECK_EQ(fh_ring_attach_shm(&x, name), -EPROTO);
    close(fd);
    shm_unlink(name);
    CHECK(strstr(fh_ring_strerror(-ENOENT), "no shared memory ring") != NULL);
}

/* ---- two threads ------------------------------------------------------------------------------ */
typedef struct {
    fh_ring *r;
    uint64_t n;            /* records offered */
    uint64_t seed;
    /* consumer results */
    uint64_t received, gaps, next, bad_checksum, bad_order;
} stress_ctx;

static void *stress_producer(void *arg) {
    stress_ctx *x = arg;
    fh_ring *r = x->r;
    uint64_t rng = x->seed | 1, seq = 0;
    static __thread fh_tick batch[256];
    while (seq < x->n) {
        uint64_t want = (xorshift(&rng) & 255) + 1;
        if (want > x->n - seq) want = x->n - seq;
        if (fh_ring_policy(r) == FH_RING_BLOCK && (rng & 0x300) != 0) {
            /* zero copy: fill claimed slots in place, publish what was filled */
            fh_tick *w;
            uint64_t k = fh_ring_claim(r, want, &w);
            if (k == 0) {
                fh_ring__cpu_relax();
                continue;
            }
            for (uint64_t i = 0; i < k; i++) fill(&w[i], seq + i);
            fh_ring_publish(r, k);
            seq += k;
        } else {
            for (uint64_t i = 0; i < want; i++) fill(&batch[i], seq + i);
            uint64_t k = fh_ring_push(r, batch, want);
            if (fh_ring_policy(r) == FH_RING_BLOCK && k != want) x->bad_order++; /* BLOCK must take all */
            seq += want; /* under DROP the rest is dropped and counted by the ring */
        }
    }
    fh_ring_close(r);
    return NULL;
}

static void *stress_consumer(void *arg) {
    stress_ctx *x = arg;
    fh_ring *r = x->r;
    uint64_t rng = (x->seed * 3) | 1, next = 0, received = 0, gaps = 0, bad_sum = 0, bad_order = 0;
    for (;;) {
        const fh_tick *rd;
        uint64_t max = (xorshift(&rng) & 511) + 1, n;
        if (rng & 0x1000) {
            n = fh_ring_wait(r, max, &rd);
            if (n == 0) break; /* closed and empty */
        } else {
            n = fh_ring_peek(r, max, &rd);
            if (n == 0) {
                if (fh_ring_is_finished(r)) break;
                fh_ring__cpu_relax();
                continue;
            }
        }
        /* release a random prefix: the rest comes back on the next peek */
        uint64_t k = (rng & 0x2000) ? n : (xorshift(&rng) % n) + 1;
        for (uint64_t i = 0; i < k; i++) {
            uint64_t s;
            bad_sum += verify(&rd[i], &s);
            if (s < next) bad_order++;      /* duplicate or reordered */
            else gaps += s - next;          /* lost (allowed only under DROP) */
            next = s + 1;
        }
        received += k;
        fh_ring_release(r, k);
    }
    x->received = received;
    x->gaps = gaps;
    x->next = next;
    x->bad_checksum = bad_sum;
    x->bad_order += bad_order;
    return NULL;
}

static void stress(const char *label, uint64_t capacity, fh_ring_overflow policy, uint64_t n, uint64_t seed) {
    fh_ring *r;
    CHECK_EQ(fh_ring_create(&r, capacity, policy), 0);
    stress_ctx x = {.r = r, .n = n, .seed = seed};
    pthread_t tp, tc;
    uint64_t t0 = fh_ring__now_ns();
    CHECK(pthread_create(&tc, NULL, stress_consumer, &x) == 0);
    CHECK(pthread_create(&tp, NULL, stress_producer, &x) == 0);
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    double secs = (double)(fh_ring__now_ns() - t0) / 1e9;
    fh_ring_stats st;
    fh_ring_get_stats(r, &st);
    CHECK_EQ(x.bad_checksum, 0);
    CHECK_EQ(x.bad_order, 0);
    CHECK_EQ(st.published + st.dropped, n);
    CHECK_EQ(x.received, st.published);
    CHECK_EQ(st.consumed, st.published);
    CHECK_EQ(x.gaps + (n - x.next), st.dropped); /* drops after the last record received count too */
    if (policy == FH_RING_BLOCK) CHECK_EQ(st.dropped, 0);
    CHECK(fh_ring_is_finished(r));
    printf("  stress %-12s cap %6llu: %llu offered, %llu received, %llu dropped, %llu producer waits, "
           "%llu empty polls, %.2f s (%.0f M/s)\n",
           label, (unsigned long long)capacity, (unsigned long long)n, (unsigned long long)x.received,
           (unsigned long long)st.dropped, (unsigned long long)st.producer_waits,
           (unsigned long long)st.consumer_empty_polls, secs, (double)n / secs / 1e6);
    fh_ring_destroy(r);
}

int main(void) {
    test_create_args();
    test_wraparound();
    test_model();
    test_drop_and_close();
    test_shm();
    uint64_t n = scale_records(300000000);
    stress("block", 4096, FH_RING_BLOCK, n, 1);
    stress("block-tiny", 4, FH_RING_BLOCK, n / 300 + 1, 2);
    stress("drop", 1024, FH_RING_DROP, n / 6 + 1, 3);
    stress("drop-tiny", 2, FH_RING_DROP, n / 30 + 1, 4);
    printf("test_ring: %d failures\n", failures);
    return failures != 0;
}
