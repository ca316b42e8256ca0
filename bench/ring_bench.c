/* ring_bench.c - fh_ring throughput and handoff latency, next to a plain SPSC ring in the same run.
 *
 * Two threads pinned to two cores (--cores P,C; default 0,1). Cases, each for "fh" (csrc/ring.c +
 * fh/ring.h) and "plain" (a textbook Lamport ring below: acquire/release indices on separate lines,
 * no cached indices, same batch shape):
 *   batched     producer claims up to --batch slots, writes every record, publishes the run;
 *               consumer peeks up to --batch, reads every record, releases        -> records/s
 *   per_record  claim(1)/publish(1) and peek(1)/release(1)                         -> records/s
 *   latency     ping-pong over two rings, one record each way; one-way handoff = round trip / 2,
 *               timed with the TSC (calibrated against CLOCK_MONOTONIC)           -> p50/p90/p99 ns
 * Every record carries its sequence number; the consumer sums them and the sum is checked, so the
 * compiler cannot drop the work and a broken ring shows up as an error instead of a fast number.
 * Each case runs --repeat times; the median and the best run are printed.
 *
 * Build: bench/bench_ring.py does it (gcc -O2 -std=gnu11 -pthread -Icsrc/include bench/ring_bench.c
 * csrc/ring.c csrc/record.c). Usage: ring_bench [--records N] [--batch B] [--capacity C]
 * [--rtt-samples S] [--repeat R] [--cores P,C] [--json]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "fh/ring.h"

/* ---- a plain SPSC ring: the baseline ------------------------------------------------------------ */
typedef struct {
    _Alignas(128) _Atomic uint64_t head; /* producer */
    _Alignas(128) _Atomic uint64_t tail; /* consumer */
    _Alignas(128) fh_tick *slots;
    uint64_t mask, capacity;
} plain_ring;

static inline uint64_t plain_claim(plain_ring *q, uint64_t want, fh_tick **first) {
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint64_t room = q->capacity - (head - atomic_load_explicit(&q->tail, memory_order_acquire));
    uint64_t to_end = q->capacity - (head & q->mask);
    uint64_t n = want < room ? want : room;
    *first = &q->slots[head & q->mask];
    return n < to_end ? n : to_end;
}
static inline void plain_publish(plain_ring *q, uint64_t n) {
    atomic_store_explicit(&q->head, atomic_load_explicit(&q->head, memory_order_relaxed) + n, memory_order_release);
}
static inline uint64_t plain_peek(plain_ring *q, uint64_t max, const fh_tick **first) {
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint64_t ready = atomic_load_explicit(&q->head, memory_order_acquire) - tail;
    uint64_t to_end = q->capacity - (tail & q->mask);
    uint64_t n = max < ready ? max : ready;
    *first = &q->slots[tail & q->mask];
    return n < to_end ? n : to_end;
}
static inline void plain_release(plain_ring *q, uint64_t n) {
    atomic_store_explicit(&q->tail, atomic_load_explicit(&q->tail, memory_order_relaxed) + n, memory_order_release);
}
static plain_ring *plain_create(uint64_t capacity) {
    plain_ring *q = aligned_alloc(128, sizeof *q);
    q->slots = aligned_alloc(64, capacity * sizeof(fh_tick));
    memset(q->slots, 0, capacity * sizeof(fh_tick));
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    q->capacity = capacity;
    q->mask = capacity - 1;
    return q;
}
static void plain_destroy(plain_ring *q) {
    free(q->slots);
    free(q);
}

/* One interface over both rings, resolved at compile time per instantiation below. */
#define FH_CLAIM(q, w, f) fh_ring_claim((q), (w), (f))
#define FH_PUBLISH(q, n) fh_ring_publish((q), (n))
#define FH_PEEK(q, m, f) fh_ring_peek((q), (m), (f))
#define FH_RELEASE(q, n) fh_ring_release((q), (n))
#define PL_CLAIM(q, w, f) plain_claim((q), (w), (f))
#define PL_PUBLISH(q, n) plain_publish((q), (n))
#define PL_PEEK(q, m, f) plain_peek((q), (m), (f))
#define PL_RELEASE(q, n) plain_release((q), (n))

/* ---- clocks ------------------------------------------------------------------------------------- */
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double tsc_ns_per_tick = 1.0;
static inline uint64_t ticks(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __rdtsc();
#else
    return now_ns();
#endif
}
static void calibrate_tsc(void) {
#if defined(__x86_64__) || defined(__i386__)
    uint64_t n0 = now_ns(), t0 = ticks();
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
    uint64_t n1 = now_ns(), t1 = ticks();
    tsc_ns_per_tick = (double)(n1 - n0) / (double)(t1 - t0);
#endif
}

static void pin(int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
        fprintf(stderr, "warning: could not pin to core %d\n", core);
}

/* ---- throughput ------------------------------------------------------------------------------- */
typedef struct {
    void *q;
    uint64_t n, batch;
    int core;
    uint64_t sum;
} tp_arg;

static _Atomic int start_flag;

#define DEFINE_THROUGHPUT(PFX, RING, CLAIM, PUBLISH, PEEK, RELEASE)                        \
    static void *PFX##_producer(void *p) {                                                \
        tp_arg *a = p;                                                                    \
        RING *q = a->q;                                                                   \
        pin(a->core);                                                                     \
        while (!atomic_load_explicit(&start_flag, memory_order_acquire)) fh_ring__cpu_relax(); \
        uint64_t seq = 0;                                                                 \
        while (seq < a->n) {                                                              \
            fh_tick *w;                                                                   \
            uint64_t want = a->n - seq < a->batch ? a->n - seq : a->batch;                \
            uint64_t k = CLAIM(q, want, &w);                                              \
            if (k == 0) { fh_ring__cpu_relax(); continue; }                               \
            for (uint64_t i = 0; i < k; i++) {                                            \
                w[i].mbo.order_id = seq + i;                                              \
                w[i].mbo.hd.ts_event = seq + i;                                           \
            }                                                                             \
            PUBLISH(q, k);                                                                \
            seq += k;                                                                     \
        }                                                                                 \
        return NULL;                                                                      \
    }                                                                                     \
    static void *PFX##_consumer(void *p) {                                                \
        tp_arg *a = p;                                                                    \
        RING *q = a->q;                                                                   \
        pin(a->core);                                                                     \
        uint64_t got = 0, sum = 0;                                                        \
        while (got < a->n) {                                                              \
            const fh_tick *rd;                                                            \
            uint64_t k = PEEK(q, a->batch, &rd);                                          \
            if (k == 0) { fh_ring__cpu_relax(); continue; }                               \
            for (uint64_t i = 0; i < k; i++) sum += rd[i].mbo.order_id;                   \
            RELEASE(q, k);                                                                \
            got += k;                                                                     \
        }                                                                                 \
        a->sum = sum;                                                                     \
        return NULL;                                                                      \
    }

DEFINE_THROUGHPUT(fh, fh_ring, FH_CLAIM, FH_PUBLISH, FH_PEEK, FH_RELEASE)
DEFINE_THROUGHPUT(pl, plain_ring, PL_CLAIM, PL_PUBLISH, PL_PEEK, PL_RELEASE)

/* records/s, or -1 when the consumer's checksum is wrong */
static double run_throughput(int plain, uint64_t capacity, uint64_t n, uint64_t batch, int pcore, int ccore) {
    fh_ring *fr = NULL;
    plain_ring *pr = NULL;
    if (plain) pr = plain_create(capacity);
    else if (fh_ring_create(&fr, capacity, FH_RING_BLOCK) != 0) return -1;
    void *q = plain ? (void *)pr : (void *)fr;
    tp_arg pa = {q, n, batch, pcore, 0}, ca = {q, n, batch, ccore, 0};
    pthread_t tp, tc;
    atomic_store_explicit(&start_flag, 0, memory_order_relaxed); /* threads not started yet */
    pthread_create(&tc, NULL, plain ? pl_consumer : fh_consumer, &ca);
    pthread_create(&tp, NULL, plain ? pl_producer : fh_producer, &pa);
    struct timespec settle = {0, 20000000}; /* let both threads reach their cores, 20 ms */
    nanosleep(&settle, NULL);
    uint64_t t0 = now_ns();
    atomic_store_explicit(&start_flag, 1, memory_order_release);
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    uint64_t t1 = now_ns();
    if (plain) plain_destroy(pr);
    else fh_ring_destroy(fr);
    if (ca.sum != n * (n - 1) / 2) return -1;
    return (double)n / ((double)(t1 - t0) / 1e9);
}

/* ---- latency (ping-pong) ------------------------------------------------------------------------ */
typedef struct {
    void *ping, *pong;
    uint64_t samples;
    int core;
    uint64_t *rtt; /* ticks */
    int ok;
} pp_arg;

#define DEFINE_PINGPONG(PFX, RING, CLAIM, PUBLISH, PEEK, RELEASE)                           \
    static void *PFX##_echo(void *p) {                                                     \
        pp_arg *a = p;                                                                     \
        RING *in = a->ping, *out = a->pong;                                                \
        pin(a->core);                                                                      \
        for (uint64_t i = 0; i < a->samples; i++) {                                        \
            const fh_tick *rd;                                                             \
            fh_tick *w;                                                                    \
            while (PEEK(in, 1, &rd) == 0) fh_ring__cpu_relax();                            \
            uint64_t v = rd->mbo.order_id;                                                 \
            RELEASE(in, 1);                                                                \
            while (CLAIM(out, 1, &w) == 0) fh_ring__cpu_relax();                           \
            w->mbo.order_id = v;                                                           \
            PUBLISH(out, 1);                                                               \
        }                                                                                  \
        return NULL;                                                                       \
    }                                                                                      \
    static void PFX##_pinger(pp_arg *a) {                                                  \
        RING *out = a->ping, *in = a->pong;                                                \
        pin(a->core);                                                                      \
        a->ok = 1;                                                                         \
        for (uint64_t i = 0; i < a->samples; i++) {                                        \
            const fh_tick *rd;                                                             \
            fh_tick *w;                                                                    \
            uint64_t t0 = ticks();                                                         \
            while (CLAIM(out, 1, &w) == 0) fh_ring__cpu_relax();                           \
            w->mbo.order_id = i;                                                           \
            PUBLISH(out, 1);                                                               \
            while (PEEK(in, 1, &rd) == 0) fh_ring__cpu_relax();                            \
            if (rd->mbo.order_id != i) a->ok = 0;                                          \
            RELEASE(in, 1);                                                                \
            a->rtt[i] = ticks() - t0;                                                      \
        }                                                                                  \
    }

DEFINE_PINGPONG(fh, fh_ring, FH_CLAIM, FH_PUBLISH, FH_PEEK, FH_RELEASE)
DEFINE_PINGPONG(pl, plain_ring, PL_CLAIM, PL_PUBLISH, PL_PEEK, PL_RELEASE)

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* one-way handoff percentiles in ns (p[0..2] = p50, p90, p99); 0 on success */
static int run_latency(int plain, uint64_t samples, int pcore, int ccore, double p[3]) {
    fh_ring *f1 = NULL, *f2 = NULL;
    plain_ring *p1 = NULL, *p2 = NULL;
    if (plain) {
        p1 = plain_create(1024);
        p2 = plain_create(1024);
    } else if (fh_ring_create(&f1, 1024, FH_RING_BLOCK) || fh_ring_create(&f2, 1024, FH_RING_BLOCK)) {
        return -1;
    }
    uint64_t *rtt = malloc(samples * sizeof *rtt);
    pp_arg echo = {plain ? (void *)p1 : (void *)f1, plain ? (void *)p2 : (void *)f2, samples, ccore, NULL, 1};
    pp_arg ping = echo;
    ping.core = pcore;
    ping.rtt = rtt;
    pthread_t te;
    pthread_create(&te, NULL, plain ? pl_echo : fh_echo, &echo);
    if (plain) pl_pinger(&ping);
    else fh_pinger(&ping);
    pthread_join(te, NULL);
    /* drop the first 1% (warm-up: page faults, frequency ramp) */
    uint64_t skip = samples / 100, m = samples - skip;
    qsort(rtt + skip, m, sizeof *rtt, cmp_u64);
    const double q[3] = {0.50, 0.90, 0.99};
    for (int i = 0; i < 3; i++) p[i] = (double)rtt[skip + (uint64_t)(q[i] * (double)(m - 1))] * tsc_ns_per_tick / 2.0;
    free(rtt);
    if (plain) {
        plain_destroy(p1);
        plain_destroy(p2);
    } else {
        fh_ring_destroy(f1);
        fh_ring_destroy(f2);
    }
    return ping.ok ? 0 : -1;
}

/* ---- driver ----------------------------------------------------------------------------------- */
static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct { double median, best; } summary;

static summary summarize(double *v, int n, int higher_is_better) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    summary s = {v[n / 2], higher_is_better ? v[n - 1] : v[0]};
    return s;
}

int main(int argc, char **argv) {
    uint64_t records = 100000000, batch = 256, capacity = 4096, rtt_samples = 1000000;
    int repeat = 5, pcore = 0, ccore = 1, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--records")) records = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--batch")) batch = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--capacity")) capacity = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--rtt-samples")) rtt_samples = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--repeat")) repeat = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--cores")) {
            if (sscanf(argv[++i], "%d,%d", &pcore, &ccore) != 2) return 2;
        } else {
            fprintf(stderr, "usage: %s [--records N] [--batch B] [--capacity C] [--rtt-samples S] [--repeat R] "
                            "[--cores P,C] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (repeat < 1 || repeat > 99 || batch < 1 || capacity < 2 || (capacity & (capacity - 1)) || rtt_samples < 100) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    calibrate_tsc();
    uint64_t per_record_n = records / 4; /* per-record publishing is slower: keep the run short */

    const char *impl[2] = {"fh", "plain"};
    summary batched[2], single[2], lat[2][3];
    int failed = 0;
    static double b[2][99], s[2][99], l[2][3][99];
    /* interleave rings and cases run by run, so that a noisy neighbour hits both rings alike */
    for (int r = 0; r < repeat; r++) {
        for (int plain = 0; plain < 2; plain++) {
            b[plain][r] = run_throughput(plain, capacity, records, batch, pcore, ccore);
            s[plain][r] = run_throughput(plain, capacity, per_record_n, 1, pcore, ccore);
            double p[3];
            if (run_latency(plain, rtt_samples, pcore, ccore, p) != 0) failed = 1;
            for (int k = 0; k < 3; k++) l[plain][k][r] = p[k];
            if (b[plain][r] < 0 || s[plain][r] < 0) failed = 1;
        }
    }
    for (int plain = 0; plain < 2; plain++) {
        batched[plain] = summarize(b[plain], repeat, 1);
        single[plain] = summarize(s[plain], repeat, 1);
        for (int k = 0; k < 3; k++) lat[plain][k] = summarize(l[plain][k], repeat, 0);
    }
    if (failed) {
        fprintf(stderr, "ring_bench: a consumer saw wrong data\n");
        return 1;
    }
    if (json) {
        printf("{\"records\": %llu, \"batch\": %llu, \"capacity\": %llu, \"rtt_samples\": %llu, \"repeat\": %d, "
               "\"cores\": [%d, %d], \"tsc_ns_per_tick\": %.6f, \"results\": {",
               (unsigned long long)records, (unsigned long long)batch, (unsigned long long)capacity,
               (unsigned long long)rtt_samples, repeat, pcore, ccore, tsc_ns_per_tick);
        for (int i = 0; i < 2; i++) {
            printf("%s\"%s\": {\"batched_rps\": {\"median\": %.0f, \"best\": %.0f}, "
                   "\"per_record_rps\": {\"median\": %.0f, \"best\": %.0f}, "
                   "\"handoff_ns\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"best_p50\": %.1f}}",
                   i ? ", " : "", impl[i], batched[i].median, batched[i].best, single[i].median, single[i].best,
                   lat[i][0].median, lat[i][1].median, lat[i][2].median, lat[i][0].best);
        }
        printf("}, \"ratio_fh_over_plain\": {\"batched_rps\": %.3f, \"per_record_rps\": %.3f, \"handoff_p50\": %.3f}}\n",
               batched[0].median / batched[1].median, single[0].median / single[1].median,
               lat[0][0].median / lat[1][0].median);
        return 0;
    }
    printf("ring_bench: %llu records, batch %llu, capacity %llu slots, %d runs (median / best), cores %d,%d\n",
           (unsigned long long)records, (unsigned long long)batch, (unsigned long long)capacity, repeat, pcore, ccore);
    printf("%-6s %26s %26s %34s\n", "ring", "batched (M rec/s)", "per-record (M rec/s)", "one-way handoff p50/p90/p99 (ns)");
    for (int i = 0; i < 2; i++)
        printf("%-6s %16.1f / %7.1f %16.1f / %7.1f %20.0f / %4.0f / %5.0f\n", impl[i], batched[i].median / 1e6,
               batched[i].best / 1e6, single[i].median / 1e6, single[i].best / 1e6, lat[i][0].median,
               lat[i][1].median, lat[i][2].median);
    printf("fh/plain: batched %.2fx, per-record %.2fx, handoff p50 %.2fx (lower is better)\n",
           batched[0].median / batched[1].median, single[0].median / single[1].median,
           lat[0][0].median / lat[1][0].median);
    return 0;
}
