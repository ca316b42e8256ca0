/* fh/latency.h - the one latency histogram bucketing shared by every wire->ring / wire->book
 * histogram (live capture, book consumer): log-linear, FH_LAT_SUB sub-buckets per power of two
 * (12.5 % resolution), FH_LAT_BUCKETS buckets cover every uint64 nanosecond value.
 * Pure functions; safe from any thread.
 */
#ifndef FH_LATENCY_H
#define FH_LATENCY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FH_LAT_SUB 8                    /* sub-buckets per power of two */
#define FH_LAT_BUCKETS (64 * FH_LAT_SUB) /* buckets for the whole uint64 ns range */

/* Bucket of a latency in ns: 0..7 are exact, then 8 buckets per power of two. */
static inline size_t fh_lat_bucket(uint64_t ns) {
    if (ns < FH_LAT_SUB)
        return (size_t)ns;
    int msb = 63 - __builtin_clzll(ns);
    return (size_t)((msb - 2) * FH_LAT_SUB + (int)((ns >> (msb - 3)) & (FH_LAT_SUB - 1)));
}

/* Lower bound (ns) of bucket b. */
static inline uint64_t fh_lat_bucket_lower_ns(size_t b) {
    if (b < FH_LAT_SUB)
        return (uint64_t)b;
    int msb = (int)(b / FH_LAT_SUB) + 2;
    return (1ULL << msb) | ((uint64_t)(b % FH_LAT_SUB) << (msb - 3));
}

/* CLOCK_REALTIME in ns since the UNIX epoch (the clock ts_recv is compared with). */
static inline uint64_t fh_now_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

#endif
