/* fh/ring.h - lock-free single-producer / single-consumer ring of 64-byte tick slots.
 *
 * Threading and ownership contract
 * - Exactly ONE producer thread and ONE consumer thread per ring, for the ring's whole life. They may
 *   be in different processes when the ring lives in shared memory (fh_ring_create_shm in one process,
 *   fh_ring_attach_shm in the other). Either handle can play either role; each handle may be used by
 *   only the threads that play its roles. Calling a producer function from two threads at once, or a
 *   consumer function from two threads at once, is undefined behaviour (no locks protect it).
 * - Producer functions: fh_ring_claim, fh_ring_publish, fh_ring_push, fh_ring_push_for, fh_ring_close.
 *   Consumer functions: fh_ring_peek, fh_ring_wait, fh_ring_wait_for, fh_ring_release,
 *   fh_ring_readable. Any thread, any process, at any time: fh_ring_get_stats, fh_ring_is_closed,
 *   fh_ring_is_finished and the geometry accessors (they only read, with atomic loads).
 * - The producer owns the slots it claimed until it publishes them; after fh_ring_publish it must not
 *   touch them again. The consumer owns the slots returned by peek/wait from the moment it reads them
 *   until it releases them; pointers into released slots are dangling (the producer reuses them).
 * - fh_ring_claim/fh_ring_peek return CONTIGUOUS runs: a run never crosses the end of the slot array,
 *   so one call may return fewer slots than are free/ready; call again for the rest.
 * - End of stream: the producer calls fh_ring_close after its last publish; the consumer sees the
 *   stream end when the ring is closed AND empty (fh_ring_wait returns 0, fh_ring_is_finished is 1).
 *   Pushing after close is a contract violation; such records are counted as dropped, never lost
 *   silently.
 * - Overflow policy (chosen at creation, stored in the ring): FH_RING_BLOCK makes fh_ring_push wait
 *   (spin, then sched_yield, then short sleeps) until the consumer frees room; FH_RING_DROP makes it
 *   drop what does not fit and count it in `dropped`. fh_ring_claim never blocks under either policy.
 * - Counters live in the ring (shared memory included), each written by one side only and read with
 *   relaxed atomic loads by anybody: published, consumed, dropped, producer_waits (times the producer
 *   found the ring full: a claim that returned 0, or one wait episode inside push), and
 *   consumer_empty_polls (a peek that found nothing, or one wait episode inside wait).
 * - Lifetime: fh_ring_destroy unmaps the ring for the calling process; the creator of a shm ring also
 *   unlinks its name (a process already attached keeps its mapping). Nothing here allocates, locks or
 *   makes a system call on the fast path (claim/publish/peek/release); push and wait make system calls
 *   only while waiting.
 *
 * Design (after rigtorp/SPSCQueue, with Disruptor-style batching)
 * - Producer index `head` and consumer index `tail` are free-running uint64 sequence numbers (slot =
 *   seq & mask), each on its own cache-line pair; each side keeps a cached copy of the other side's
 *   index on a private line and re-reads the shared one (acquire) only when the cache says there is
 *   not enough room / data. publish and release are single release stores of the own index.
 * - The data-path functions are static inline here so that any C or Cython code that includes this
 *   header (`from feedhandler.includes.ring cimport ...`) can drive a ring made elsewhere without
 *   linking to csrc/ring.c. Creation, attachment and destruction live in csrc/ring.c.
 */
#ifndef FH_RING_H
#define FH_RING_H

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "fh/record.h"

#define FH_RING_MAGIC UINT64_C(0x31474E4952484621) /* "!FHRING1" read as little-endian bytes */
#define FH_RING_VERSION 1u                         /* layout version of fh_ring_shared */
#define FH_RING_LINE 64                            /* cache line, bytes */
/* Distance between the groups of fields written by different sides, bytes: two lines, because the
 * adjacent-line prefetcher of x86 cores pulls lines in 128-byte pairs and would otherwise make the
 * producer's and the consumer's lines share traffic. */
#define FH_RING_PAD 128
#define FH_RING_MAX_CAPACITY (UINT64_C(1) << 36)   /* slots (4 TiB of slots; a sanity bound) */
#define FH_RING_NAME_MAX 255                       /* bytes of a shm name including the leading '/' */

/* Waiting (fh_ring_push under FH_RING_BLOCK, fh_ring_wait): poll with a CPU pause this many times,
 * then call sched_yield this many times, then sleep this long between polls. */
#define FH_RING_SPIN_POLLS 1024       /* busy polls (a pause each, about 10-40 ns) */
#define FH_RING_YIELD_POLLS 64        /* sched_yield() calls */
#define FH_RING_SLEEP_NS 50000        /* nanoseconds slept per poll after that */
#define FH_RING_FOREVER UINT64_MAX    /* timeout_ns meaning "no deadline" */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free (address-free in shm)");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free (address-free in shm)");

typedef enum { FH_RING_BLOCK = 0, FH_RING_DROP = 1 } fh_ring_overflow;

/* The ring's state as laid out at the start of its memory (heap or shared). Slots follow at
 * header_size. Each group is written by one side only. */
typedef struct fh_ring_shared {
    /* written once by the creator; `magic` is stored last (release) so an attacher that sees it sees
     * the rest */
    _Alignas(FH_RING_PAD) _Atomic uint64_t magic;
    uint32_t version;
    uint32_t slot_size;       /* bytes, FH_TICK_SIZE */
    uint64_t capacity;        /* slots, a power of two */
    uint32_t policy;          /* fh_ring_overflow */
    uint32_t header_size;     /* bytes from the start of the ring to slot 0 */
    uint64_t creator_pid;
    /* producer, shared: read by the consumer */
    _Alignas(FH_RING_PAD) _Atomic uint64_t head;   /* sequences < head are published */
    _Atomic uint32_t closed;                       /* 1 after fh_ring_close */
    /* producer, private (plus counters that monitors read) */
    _Alignas(FH_RING_PAD) uint64_t tail_cache;     /* last tail the producer saw */
    _Atomic uint64_t dropped;                      /* records */
    _Atomic uint64_t producer_waits;               /* times the ring was found full */
    /* consumer, shared: read by the producer */
    _Alignas(FH_RING_PAD) _Atomic uint64_t tail;   /* sequences < tail are released */
    /* consumer, private (plus counters) */
    _Alignas(FH_RING_PAD) uint64_t head_cache;     /* last head the consumer saw */
    _Atomic uint64_t consumer_empty_polls;         /* times the ring was found empty */
} fh_ring_shared;

/* A process-local handle (read-only after creation). Fields are public only for the inline paths. */
typedef struct fh_ring {
    fh_ring_shared *sh;
    fh_tick *slots;
    uint64_t mask;            /* capacity - 1 */
    uint64_t capacity;        /* slots */
    fh_ring_overflow policy;
    int is_shm;               /* lives in POSIX shared memory */
    int owner;                /* this handle created the shm object and unlinks it on destroy */
    size_t map_len;           /* bytes mapped */
    char name[FH_RING_NAME_MAX + 1]; /* shm name with its leading '/', "" for a heap ring */
} fh_ring;

typedef struct {
    uint64_t capacity, published, consumed, dropped, producer_waits, consumer_empty_polls;
} fh_ring_stats;

/* ---- lifecycle (csrc/ring.c): 0 on success or -errno, *out set only on success -------------- */
/* capacity: slots, a power of two in [2, FH_RING_MAX_CAPACITY] (else -EINVAL). */
int fh_ring_create(fh_ring **out, uint64_t capacity, fh_ring_overflow policy);
/* name: "/x" or "x" (a '/' is prepended), no other '/', at most FH_RING_NAME_MAX bytes with it
 * (-EINVAL); -EEXIST when the name is taken; -ENOSPC when /dev/shm cannot hold the ring. */
int fh_ring_create_shm(fh_ring **out, const char *name, uint64_t capacity, fh_ring_overflow policy);
/* -ENOENT: no such shm object; -EAGAIN: its creator is still initialising it; -EPROTO: not a
 * feedhandler ring (bad magic/geometry); -EPROTONOSUPPORT: another layout version. */
int fh_ring_attach_shm(fh_ring **out, const char *name);
void fh_ring_destroy(fh_ring *r); /* NULL is a no-op */
/* Human-readable text for an error code returned above (static storage). */
const char *fh_ring_strerror(int err);

/* ---- geometry (any thread) --------------------------------------------------------------- */
static inline uint64_t fh_ring_capacity(const fh_ring *r) { return r->capacity; }
static inline fh_ring_overflow fh_ring_policy(const fh_ring *r) { return r->policy; }
static inline const char *fh_ring_name(const fh_ring *r) { return r->name; }
static inline const fh_tick *fh_ring_slots(const fh_ring *r) { return r->slots; }

/* ---- waiting ------------------------------------------------------------------------------ */
static inline void fh_ring__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline uint64_t fh_ring__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One step of the spin -> yield -> sleep back-off; *step counts the polls of this wait episode.
 * Returns 0 when the deadline (monotonic ns, FH_RING_FOREVER: none) has passed. */
static inline int fh_ring__backoff(uint32_t *step, uint64_t deadline) {
    uint32_t s = (*step)++;
    if (s < FH_RING_SPIN_POLLS) {
        fh_ring__cpu_relax();
        /* a deadline is checked every 64 spins only: clock_gettime costs about 20 ns */
        if (deadline != FH_RING_FOREVER && (s & 63) == 63 && fh_ring__now_ns() >= deadline) return 0;
        return 1;
    }
    if (deadline != FH_RING_FOREVER && fh_ring__now_ns() >= deadline) return 0;
    if (s < FH_RING_SPIN_POLLS + FH_RING_YIELD_POLLS) {
        sched_yield();
    } else {
        struct timespec ts = {0, FH_RING_SLEEP_NS};
        nanosleep(&ts, NULL);
    }
    return 1;
}

static inline uint64_t fh_ring__deadline(uint64_t timeout_ns) {
    if (timeout_ns == FH_RING_FOREVER) return FH_RING_FOREVER;
    uint64_t now = fh_ring__now_ns();
    return timeout_ns > FH_RING_FOREVER - now ? FH_RING_FOREVER - 1 : now + timeout_ns;
}

/* Single-writer counter bump: a relaxed load + store, not a locked read-modify-write. */
static inline void fh_ring__bump(_Atomic uint64_t *c, uint64_t by) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by, memory_order_relaxed);
}

/* ---- producer ----------------------------------------------------------------------------- */
/* Contiguous free slots at the producer's position, at most `want`, without counting. */
static inline uint64_t fh_ring__writable(fh_ring *r, uint64_t want, fh_tick **first) {
    fh_ring_shared *sh = r->sh;
    uint64_t head = atomic_load_explicit(&sh->head, memory_order_relaxed); /* own index */
    uint64_t idx = head & r->mask;
    uint64_t to_end = r->capacity - idx;
    if (want > to_end) want = to_end;
    uint64_t room = r->capacity - (head - sh->tail_cache);
    if (room < want) {
        /* acquire: the consumer's reads of the slots it released happen before we overwrite them */
        sh->tail_cache = atomic_load_explicit(&sh->tail, memory_order_acquire);
        room = r->capacity - (head - sh->tail_cache);
    }
    *first = &r->slots[idx];
    return want < room ? want : room;
}

/* Claim up to `want` contiguous free slots for writing; *first points at the first one. Never
 * blocks; returns 0 when the ring is full (counted in producer_waits). The slots are the caller's
 * until fh_ring_publish. Claiming again before publishing returns the same slots. */
static inline uint64_t fh_ring_claim(fh_ring *r, uint64_t want, fh_tick **first) {
    uint64_t n = fh_ring__writable(r, want, first);
    if (n == 0 && want != 0) fh_ring__bump(&r->sh->producer_waits, 1);
    return n;
}

/* Publish the first n slots of the last claim (n <= what the claim returned). */
static inline void fh_ring_publish(fh_ring *r, uint64_t n) {
    fh_ring_shared *sh = r->sh;
    uint64_t head = atomic_load_explicit(&sh->head, memory_order_relaxed);
    /* release: the slot contents written before are visible to a consumer that acquires head */
    atomic_store_explicit(&sh->head, head + n, memory_order_release);
}

/* Copy n records in and publish them, honouring the ring's policy, waiting at most timeout_ns
 * (FH_RING_FOREVER: no limit) in total under FH_RING_BLOCK. Returns the records written: n, or
 * fewer when DROP dropped the rest (counted in `dropped`) or BLOCK ran out of time (the rest is NOT
 * counted as dropped: the caller still holds it and may push it again). */
static inline uint64_t fh_ring_push_for(fh_ring *r, const fh_tick *src, uint64_t n, uint64_t timeout_ns) {
    fh_ring_shared *sh = r->sh;
    if (atomic_load_explicit(&sh->closed, memory_order_relaxed)) { /* own flag */
        fh_ring__bump(&sh->dropped, n);
        return 0;
    }
    uint64_t written = 0, deadline = 0;
    int have_deadline = 0;
    while (written < n) {
        fh_tick *dst;
        uint64_t k = fh_ring__writable(r, n - written, &dst);
        if (k == 0) {
            if (r->policy == FH_RING_DROP) {
                fh_ring__bump(&sh->dropped, n - written);
                break;
            }
            fh_ring__bump(&sh->producer_waits, 1);
            if (!have_deadline) { deadline = fh_ring__deadline(timeout_ns); have_deadline = 1; }
            uint32_t step = 0;
            while ((k = fh_ring__writable(r, n - written, &dst)) == 0)
                if (!fh_ring__backoff(&step, deadline)) return written; /* out of time */
        }
        memcpy(dst, src + written, (size_t)k * sizeof(fh_tick));
        fh_ring_publish(r, k);
        written += k;
    }
    return written;
}

/* fh_ring_push_for without a time limit: under FH_RING_BLOCK it returns n (it waits as long as it
 * takes, so it needs a live consumer); under FH_RING_DROP it returns what fitted. */
static inline uint64_t fh_ring_push(fh_ring *r, const fh_tick *src, uint64_t n) {
    return fh_ring_push_for(r, src, n, FH_RING_FOREVER);
}

/* End of stream: call after the last publish. */
static inline void fh_ring_close(fh_ring *r) {
    /* release: every publish before the close is visible to whoever acquires `closed` */
    atomic_store_explicit(&r->sh->closed, 1, memory_order_release);
}

/* ---- consumer ----------------------------------------------------------------------------- */
static inline uint64_t fh_ring__readable_run(fh_ring *r, uint64_t max, const fh_tick **first) {
    fh_ring_shared *sh = r->sh;
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed); /* own index */
    uint64_t idx = tail & r->mask;
    uint64_t to_end = r->capacity - idx;
    if (max > to_end) max = to_end;
    uint64_t ready = sh->head_cache - tail;
    if (ready < max) {
        /* acquire: the producer's writes to the slots happen before our reads of them */
        sh->head_cache = atomic_load_explicit(&sh->head, memory_order_acquire);
        ready = sh->head_cache - tail;
    }
    *first = &r->slots[idx];
    return max < ready ? max : ready;
}

/* Up to `max` contiguous ready slots; *first points at the first. Never blocks; returns 0 when the
 * ring is empty (counted in consumer_empty_polls). Peeking again without releasing returns the same
 * slots (and maybe more). */
static inline uint64_t fh_ring_peek(fh_ring *r, uint64_t max, const fh_tick **first) {
    uint64_t n = fh_ring__readable_run(r, max, first);
    if (n == 0 && max != 0) fh_ring__bump(&r->sh->consumer_empty_polls, 1);
    return n;
}

/* Like fh_ring_peek, but waits (spin, yield, sleep) at most timeout_ns for at least one slot.
 * Returns 0 when the time ran out or the stream ended (closed and empty): fh_ring_is_finished tells
 * which. */
static inline uint64_t fh_ring_wait_for(fh_ring *r, uint64_t max, const fh_tick **first, uint64_t timeout_ns) {
    uint64_t n = fh_ring__readable_run(r, max, first);
    if (n != 0 || max == 0) return n;
    fh_ring__bump(&r->sh->consumer_empty_polls, 1);
    uint64_t deadline = fh_ring__deadline(timeout_ns);
    uint32_t step = 0;
    for (;;) {
        n = fh_ring__readable_run(r, max, first);
        if (n != 0) return n;
        /* acquire: pairs with the release in fh_ring_close, so every publish before the close is
         * visible to the re-check below */
        if (atomic_load_explicit(&r->sh->closed, memory_order_acquire))
            return fh_ring__readable_run(r, max, first);
        if (!fh_ring__backoff(&step, deadline)) return 0;
    }
}

/* Blocks until at least one slot is ready (returns how many, <= max, contiguous) or the stream has
 * ended (closed and empty: returns 0). */
static inline uint64_t fh_ring_wait(fh_ring *r, uint64_t max, const fh_tick **first) {
    return fh_ring_wait_for(r, max, first, FH_RING_FOREVER);
}

/* Hand the first n slots of the last peek/wait back to the producer (n <= what it returned). */
static inline void fh_ring_release(fh_ring *r, uint64_t n) {
    fh_ring_shared *sh = r->sh;
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    /* release: our reads of the slots happen before the producer reuses them */
    atomic_store_explicit(&sh->tail, tail + n, memory_order_release);
}

/* Ready slots in total (not only the contiguous run); consumer side. Releasing up to this many
 * (without peeking first) is allowed: it refreshes the consumer's cached head. */
static inline uint64_t fh_ring_readable(fh_ring *r) {
    fh_ring_shared *sh = r->sh;
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    /* acquire: as in a peek, the slots counted here are then safe to read */
    sh->head_cache = atomic_load_explicit(&sh->head, memory_order_acquire);
    return sh->head_cache - tail;
}

/* ---- any thread ---------------------------------------------------------------------------- */
static inline int fh_ring_is_closed(const fh_ring *r) {
    return atomic_load_explicit(&r->sh->closed, memory_order_acquire) != 0;
}

/* Closed and every published record released: the consumer has seen the whole stream. */
static inline int fh_ring_is_finished(const fh_ring *r) {
    if (!fh_ring_is_closed(r)) return 0;
    return atomic_load_explicit(&r->sh->head, memory_order_acquire) ==
           atomic_load_explicit(&r->sh->tail, memory_order_acquire);
}

static inline void fh_ring_get_stats(const fh_ring *r, fh_ring_stats *out) {
    const fh_ring_shared *sh = r->sh;
    out->capacity = r->capacity;
    /* relaxed throughout: counters are monotonic and read for monitoring only */
    out->consumed = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    out->published = atomic_load_explicit(&sh->head, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&sh->dropped, memory_order_relaxed);
    out->producer_waits = atomic_load_explicit(&sh->producer_waits, memory_order_relaxed);
    out->consumer_empty_polls = atomic_load_explicit(&sh->consumer_empty_polls, memory_order_relaxed);
}

#endif
