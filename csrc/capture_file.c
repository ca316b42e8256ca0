/* capture_file.c - a capture file replayed as a live source (contract in fh/capture_file.h). */
#include "fh/capture_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fh/msg.h"

struct fh_filelive {
    fh_filesrc *src;
    double speed;
    fh_pkt *buf;                /* the current refill: frames [pos, n) not handed out yet */
    size_t n, pos;
    int started;
    uint64_t ts_first;          /* capture stamp of the first stamped frame */
    uint64_t mono_first;        /* CLOCK_MONOTONIC when it was due */
    int64_t real_minus_mono;    /* CLOCK_REALTIME - CLOCK_MONOTONIC at the start (ns) */
    int wake;                   /* set by fh_filelive_wake (atomic) */
    fh_filelive_stats own;      /* receive thread */
    fh_filelive_stats pub;      /* published (relaxed atomics) */
};

static uint64_t clock_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void publish(fh_filelive *s) {
    const uint64_t *src = (const uint64_t *)&s->own;
    uint64_t *dst = (uint64_t *)&s->pub;
    for (size_t i = 0; i < sizeof(fh_filelive_stats) / sizeof(uint64_t); i++)
        __atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
}

int fh_filelive_open(fh_filelive **out, const char *path, double speed, char *err, size_t errlen) {
    *out = NULL;
    if (!(speed >= 0.0)) {
        if (err && errlen) snprintf(err, errlen, "speed must be >= 0 (0: as fast as possible), not %g", speed);
        return -EINVAL;
    }
    fh_filelive *s = calloc(1, sizeof *s);
    if (!s) {
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->buf = calloc(FH_FILELIVE_BATCH, sizeof(fh_pkt));
    if (!s->buf) {
        free(s);
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = fh_filesrc_open(&s->src, path, err, errlen);
    if (rc != 0) {
        free(s->buf);
        free(s);
        return rc;
    }
    s->speed = speed;
    *out = s;
    return 0;
}

/* Waits until CLOCK_MONOTONIC reaches `until` or `limit`, whichever is first, in steps of at most 1 ms so
 * that a wake request is seen promptly. */
static void wait_until(fh_filelive *s, uint64_t until, uint64_t limit) {
    uint64_t end = until < limit ? until : limit;
    for (;;) {
        uint64_t now = clock_ns(CLOCK_MONOTONIC);
        if (now >= end || __atomic_exchange_n(&s->wake, 0, __ATOMIC_ACQ_REL)) return;
        uint64_t d = end - now;
        if (d > 1000000u) d = 1000000u;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)d};
        nanosleep(&ts, NULL);
    }
}

size_t fh_filelive_next(void *ctx, fh_pkt *pkts, size_t cap, int timeout_ms) {
    fh_filelive *s = ctx;
    if (s->pos == s->n) {
        /* every frame of the last refill was handed out (and is done with: this is the next call) */
        s->n = s->own.eof ? 0 : fh_filesrc_next(s->src, s->buf, FH_FILELIVE_BATCH);
        s->pos = 0;
        if (s->n == 0) {
            s->own.eof = 1;
            publish(s);
            if (timeout_ms > 0) wait_until(s, UINT64_MAX, clock_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000u);
            return 0;
        }
    }
    size_t avail = s->n - s->pos;
    size_t m = avail < cap ? avail : cap;
    if (s->speed > 0.0) {
        uint64_t now = clock_ns(CLOCK_MONOTONIC);
        size_t k = 0;
        for (; k < m; k++) {
            const fh_pkt *p = &s->buf[s->pos + k];
            if (p->flags == FH_PKT_TS_NONE) continue;      /* no stamp: cannot be paced, goes at once */
            if (!s->started) {
                s->started = 1;
                s->ts_first = p->ts_ns;
                s->mono_first = now;
                s->real_minus_mono = (int64_t)(clock_ns(CLOCK_REALTIME) - now);
            }
            int64_t rel = (int64_t)(p->ts_ns - s->ts_first);       /* may be < 0: unsorted capture */
            uint64_t due = rel <= 0 ? s->mono_first : s->mono_first + (uint64_t)((double)rel / s->speed);
            if (due > now) break;
            if (now - due > s->own.behind_ns) s->own.behind_ns = now - due;
        }
        if (k == 0) {
            /* the next frame is not due yet: wait for it (at most timeout_ms), then hand out what is due */
            const fh_pkt *p = &s->buf[s->pos];
            int64_t rel = (int64_t)(p->ts_ns - s->ts_first);
            uint64_t due = rel <= 0 ? s->mono_first : s->mono_first + (uint64_t)((double)rel / s->speed);
            s->own.waits++;
            publish(s);
            if (timeout_ms <= 0) return 0;
            wait_until(s, due, now + (uint64_t)timeout_ms * 1000000u);
            if (clock_ns(CLOCK_MONOTONIC) < due) return 0;
            k = 1;
        }
        m = k;
    }
    for (size_t i = 0; i < m; i++) {
        pkts[i] = s->buf[s->pos + i];
        if (pkts[i].flags == FH_PKT_TS_NONE) s->own.unstamped++;
        if (s->speed > 0.0 && pkts[i].flags != FH_PKT_TS_NONE) {
            /* the schedule's wire time, on the realtime clock */
            int64_t rel = (int64_t)(pkts[i].ts_ns - s->ts_first);
            uint64_t due = rel <= 0 ? s->mono_first : s->mono_first + (uint64_t)((double)rel / s->speed);
            pkts[i].ts_ns = (uint64_t)((int64_t)due + s->real_minus_mono);
            pkts[i].flags = FH_MSG_TS_USER;
        }
        s->own.bytes += pkts[i].caplen;
    }
    s->pos += m;
    s->own.packets += m;
    s->own.batches++;
    publish(s);
    return m;
}

void fh_filelive_wake(void *ctx) {
    fh_filelive *s = ctx;
    __atomic_store_n(&s->wake, 1, __ATOMIC_RELEASE);
}

void fh_filelive_stats_get(fh_filelive *s, fh_filelive_stats *out) {
    const uint64_t *src = (const uint64_t *)&s->pub;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(fh_filelive_stats) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

const fh_filesrc *fh_filelive_file(const fh_filelive *s) {
    return s->src;
}

void fh_filelive_close(fh_filelive *s) {
    if (!s) return;
    fh_filesrc_close(s->src);
    free(s->buf);
    free(s);
}
