/* book_apply.c - fh_bookset_apply alone over a file of pre-decoded 64-byte records, CPU time of the
 * applying thread (steadier than wall time on a shared machine). Build it against any book.c, e.g.
 * the flat-array book of an older commit next to the current price ladder:
 *
 *   gcc -O3 -Icsrc/include -o /tmp/book_new bench/book_apply.c csrc/book.c
 *   git show 1035cae:csrc/book.c > /tmp/book_flat.c
 *   gcc -O3 -Icsrc/include -o /tmp/book_flat bench/book_apply.c /tmp/book_flat.c
 *   .venv/bin/python -c "from feedhandler.pipeline import Feed; Feed('DAY.bin').read_all().tofile('/tmp/day.rec')"
 *   /tmp/book_flat /tmp/day.rec 5; /tmp/book_new /tmp/day.rec 5
 *
 * Usage: book_apply RECORDS [RUNS]; each run applies a fresh copy to a fresh bookset in batches of
 * 65536 records (as replay does) and prints CPU seconds and records/s; the last line is the best,
 * followed by a digest of the final state (every book's summary and all its levels, the counters
 * and the enriched records): two builds of book.c that agree print the same digest. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fh/book.h"

/* FNV-1a over bytes */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}

/* Digest of the final state: summaries (BBO, live orders), every level of every side and its queue
 * (order ids and sizes in order), the counters. */
static uint64_t state_digest(fh_bookset *bs, uint64_t *nlevels) {
    uint64_t h = 0xcbf29ce484222325ull;
    size_t nb = fh_bookset_instrument_count(bs);
    fh_book_summary *sm = calloc(nb ? nb : 1, sizeof *sm);
    size_t cap = 1 << 20;
    fh_book_depth_level *lv = malloc(cap * sizeof *lv);
    size_t qcap = 1 << 20;
    uint64_t *ids = malloc(qcap * sizeof *ids);
    uint32_t *sizes = malloc(qcap * sizeof *sizes);
    if (!sm || !lv || !ids || !sizes) exit(2);
    nb = fh_bookset_summaries(bs, sm, nb);
    *nlevels = 0;
    for (size_t i = 0; i < nb; i++) {
        h = fnv(h, &sm[i], sizeof sm[i]);
        for (int side = 0; side < 2; side++) {
            size_t k = fh_bookset_depth(bs, sm[i].instrument_id, side, lv, cap);
            h = fnv(h, lv, k * sizeof *lv);
            *nlevels += k;
            for (size_t j = 0; j < k; j++) {   /* each level's queue, in order */
                size_t q = fh_bookset_level_orders(bs, sm[i].instrument_id, side, lv[j].price, ids, sizes, qcap);
                if (q > qcap) q = qcap;
                h = fnv(h, ids, q * sizeof *ids);
                h = fnv(h, sizes, q * sizeof *sizes);
            }
        }
    }
    h = fnv(h, fh_bookset_counters(bs), FH_BOOK_NCOUNTERS * sizeof(uint64_t));
    free(sm);
    free(lv);
    free(ids);
    free(sizes);
    return h;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s RECORDS [RUNS]\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size % (off_t)sizeof(fh_tick)) {
        fprintf(stderr, "%s: not a file of %zu-byte records\n", argv[1], sizeof(fh_tick));
        return 2;
    }
    size_t n = (size_t)st.st_size / sizeof(fh_tick);
    const fh_tick *src = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    fh_tick *work = malloc((size_t)st.st_size);
    if (src == MAP_FAILED || !work) return 2;
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    double best = 1e30;
    for (int r = 0; r < runs; r++) {
        memcpy(work, src, (size_t)st.st_size);   /* apply enriches in place: a fresh copy per run */
        fh_bookset *bs = fh_bookset_new(65536, 16, 0);
        if (!bs) return 2;
        double t = cpu_now();
        for (size_t i = 0; i < n; i += 65536) fh_bookset_apply(bs, work + i, n - i < 65536 ? n - i : 65536);
        t = cpu_now() - t;
        if (t < best) best = t;
        printf("%.3f s  %.2f M records/s  live %llu  %zu bytes\n", t, (double)n / t / 1e6,
               (unsigned long long)fh_bookset_live_orders(bs), fh_bookset_memory(bs));
        if (r == runs - 1) {
            uint64_t nlevels;
            uint64_t d = state_digest(bs, &nlevels);
            printf("state digest %016llx (%llu levels), records digest %016llx, check %d\n",
                   (unsigned long long)d, (unsigned long long)nlevels,
                   (unsigned long long)fnv(0xcbf29ce484222325ull, work, (size_t)st.st_size), fh_bookset_check(bs));
        }
        fh_bookset_free(bs);
    }
    printf("best %.3f s  %.2f M records/s\n", best, (double)n / best / 1e6);
    munmap((void *)src, (size_t)st.st_size);
    close(fd);
    free(work);
    return 0;
}
