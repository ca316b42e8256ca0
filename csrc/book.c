/* book.c - per-instrument L3 order books (see fh/book.h for the contract and the semantics).
 *
 * Data structures (all indices are uint32, 0 = none, so every pool wastes its slot 0):
 * - order nodes: 32 bytes (order_id, price, size, level, prev, next) in one array of pages of
 *   FH_REF_PAGE nodes. Most orders live in REF PAGES: ITCH assigns order reference numbers densely
 *   and increasingly over a day, so the node of order id r is slot r % FH_REF_PAGE of the page that a
 *   small directory (refdir, indexed by r / FH_REF_PAGE) names: finding an order reads the directory
 *   (hot: recent orders share its lines) and the node, one miss instead of a hash slot and a node.
 *   A ref page node is live when its level is not 0; a page whose orders are all gone goes back to
 *   a free list. Orders whose id is beyond the directory (ids of 2^32 and up), or whose page would
 *   make the ref pages too sparse (ids far apart: fewer than FH_REF_MIN_FILL live orders, of either
 *   kind, a ref page beyond FH_REF_MIN_PAGES pages), fall back to HEAP PAGES (nodes on a free list
 *   through `next`) found through the order table below. A lookup reads the table only when it is not
 *   empty. Long-lived orders would pin a page each: an old page (FH_REF_EVICT_AGE pages below the
 *   newest) down to FH_REF_EVICT_LIVE live orders moves them to heap nodes and is freed, so the ref
 *   pages hold the young orders (most events) and the table the few old ones.
 * - order table (fallback only): open addressing, linear probing, backward-shift deletion (no tombstones), 8-byte
 *   slots (tag = order_id folded to 32 bits, node index). The home slot depends on the tag only, so a
 *   deletion can shift entries without touching the pool. Identity hashing (tag & mask) first: venue
 *   order ids are mostly sequential, which makes recent orders share cache lines; a probe longer than
 *   FH_BOOK_MAX_PROBE switches the table to multiplicative hashing once (adversarial or strided ids).
 *   Grows at load 1/2.
 * - level pool: 32-byte levels (price, total shares, orders, FIFO head/tail, owner = book<<1|side).
 * - per book and side: a price ladder (see "price ladder" below): the levels' keys (bid: price, ask:
 *   ~price, so both sides ascend and the best level is at the END) in blocks of FH_LADDER_B keys
 *   with their level indices, and a directory of the side's blocks. An insert or a removal moves at
 *   most one block's entries, however far from the top the level is (a flat sorted array moved every
 *   level between it and the top: deep books paid for it on every event far from the top). The side
 *   keeps its best level and top block, so BBO queries and the crossed check read no block.
 * - books: a dense array; instrument ids below max_instruments map through a direct table of dense
 *   index + 1, larger ids through a small open-addressing map.
 * Allocation happens only when a pool or table must grow; a failure is counted (no_memory) and the
 * event is skipped, never a crash.
 */
#include "fh/book.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define FH_BOOK_SCAN 8            /* levels scanned linearly from the top before a binary search */
#define FH_BOOK_MAX_PROBE 64      /* slots probed before the order table switches to mixed hashing */
#define FH_REF_BITS 10            /* nodes per page: 1024 (32 KiB) */
#define FH_REF_PAGE (1u << FH_REF_BITS)
_Static_assert(FH_REF_PAGE == FH_BOOK_REF_PAGE, "book.h names the page size");
#define FH_REF_DIR_MAX (1u << 22) /* ref pages the directory can name: order ids below 2^32 */
#define FH_REF_MAX_PAGES (1u << 22)   /* node pages in all: node indices below 2^32 */
#define FH_REF_MIN_PAGES 256      /* ref pages always allowed (8 MiB of nodes) */
#define FH_REF_MIN_FILL 32        /* beyond them, live orders a ref page on average */
#define FH_REF_EVICT_LIVE 64      /* an old ref page down to this many live orders moves them to the table */
#define FH_REF_EVICT_AGE 64       /* old: this many pages (ids) below the newest ref page */
#define FH_BOOK_MIN_TABLE 4096    /* initial order table capacity (slots, power of two) */

#if defined(__GNUC__)
#define FH_LIKELY(x) __builtin_expect(!!(x), 1)
#define FH_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define FH_LIKELY(x) (x)
#define FH_UNLIKELY(x) (x)
#endif

/* ---------------------------------------------------------------------------------------------- */
/* memory for the order pool, the order table and the level pool
 *
 * These are accessed at random (an order event touches one slot, one node and one level anywhere in
 * them), so from FH_BOOK_HUGE up they are 2 MiB aligned anonymous mappings with MADV_HUGEPAGE: one
 * TLB entry covers 2 MiB instead of 4 KiB, and growing faults in 2 MiB at a time. Memory comes zeroed.
 * Under AddressSanitizer they are plain calloc blocks, so that ASan still sees every overflow. */
#define FH_BOOK_HUGE ((size_t)2 << 20)   /* bytes */

#if defined(__SANITIZE_ADDRESS__)
static void *fh_big_alloc(size_t bytes) { return calloc(1, bytes ? bytes : 1); }
static void fh_big_free(void *p, size_t bytes) { (void)bytes; free(p); }
#else
static size_t fh_big_size(size_t bytes) {
    size_t unit = bytes >= FH_BOOK_HUGE ? FH_BOOK_HUGE : 4096;
    return (bytes + unit - 1) / unit * unit + (bytes ? 0 : unit);
}

static void *fh_big_alloc(size_t bytes) {
    size_t sz = fh_big_size(bytes);
    if (sz < FH_BOOK_HUGE) {
        void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    size_t span = sz + FH_BOOK_HUGE;
    void *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    uintptr_t p = (uintptr_t)m, a = (p + FH_BOOK_HUGE - 1) & ~(uintptr_t)(FH_BOOK_HUGE - 1);
    if (a > p) munmap(m, a - p);
    if (p + span > a + sz) munmap((void *)(a + sz), p + span - (a + sz));
    (void)madvise((void *)a, sz, MADV_HUGEPAGE);   /* a hint: without THP it is just slower */
    return (void *)a;
}

static void fh_big_free(void *p, size_t bytes) {
    if (p) munmap(p, fh_big_size(bytes));
}
#endif

/* A bigger block with the old contents (and zeroes after them); the old block is freed on success. */
static void *fh_big_grow(void *p, size_t old_bytes, size_t new_bytes) {
    void *q = fh_big_alloc(new_bytes);
    if (!q) return NULL;
    if (p) {
        memcpy(q, p, old_bytes);
        fh_big_free(p, old_bytes);
    }
    return q;
}

const char *const fh_book_counter_names[FH_BOOK_NCOUNTERS] = {
#define FH_BOOK_X_NAME(id, name) name,
    FH_BOOK_COUNTERS(FH_BOOK_X_NAME)
#undef FH_BOOK_X_NAME
};

typedef struct fh_book_node {
    uint64_t order_id;
    int64_t price;
    uint32_t size;
    uint32_t level;
    uint32_t prev, next;
} fh_book_node;
_Static_assert(sizeof(fh_book_node) == 32, "order nodes are 32 bytes");

typedef struct fh_book_level {
    int64_t price;
    uint64_t total;     /* shares */
    uint32_t count;     /* orders */
    uint32_t head, tail;
    uint32_t owner;     /* book index << 1 | side */
} fh_book_level;
_Static_assert(sizeof(fh_book_level) == 32, "levels are 32 bytes");

typedef struct fh_book_slot {
    uint32_t tag;
    uint32_t node;
} fh_book_slot;

/* A block of a side's price ladder: up to FH_LADDER_B keys (bid: price, ask: ~price) ascending, with
 * their level indices; free blocks are chained through n. */
#ifndef FH_LADDER_B
#define FH_LADDER_B 32
#endif
_Static_assert(FH_LADDER_B >= 8 && FH_LADDER_B % 4 == 0, "ladder blocks split in halves and merge at quarters");
typedef struct fh_ladder_block {
    uint32_t n;
    uint32_t side_nb;   /* in a side's top block: the side's block count (no directory read) */
    int64_t key[FH_LADDER_B];
    uint32_t lvl[FH_LADDER_B];
} fh_ladder_block;

/* A side's directory entry: a block and its first (lowest) key (not kept up to date for the top
 * block, whose first key is read from the block itself). */
typedef struct fh_ladder_dir {
    int64_t min;
    uint32_t blk;
    uint32_t _reserved;
} fh_ladder_dir;

/* A side's directory: its blocks in ascending key order (the best level is at the end of the last). */
typedef struct fh_ladder_dirs {
    uint32_t nb, cap;   /* blocks in use, capacity */
    fh_ladder_dir e[];
} fh_ladder_dirs;
static fh_ladder_dirs fh_no_dirs;   /* the directory of a side that never had a level (never written) */

typedef struct fh_book_side {
    fh_ladder_dirs *d;  /* never NULL: &fh_no_dirs until the first level */
    int64_t top_key;    /* key of the best level (valid when top != 0) */
    uint32_t top_blk;   /* the block holding the best level (0 when empty): most events land there */
    uint32_t top;       /* the best level (0 when empty) */
} fh_book_side;
_Static_assert(sizeof(fh_book_side) == 24, "two sides, the live count and the id share the book's first line");

typedef struct fh_book {
    /* first cache line: what every event touches */
    _Alignas(64) fh_book_side side[2];
    uint64_t live;
    uint32_t instrument_id;
    uint8_t stale;
    /* second line: last BBO reported as an event (track_bbo_events only) */
    int64_t ev_bid_px, ev_ask_px;
    uint64_t ev_bid_sz, ev_ask_sz;
} fh_book;

typedef struct fh_inst_slot {
    uint32_t id;
    uint32_t idx1;      /* dense index + 1; 0 = empty */
} fh_inst_slot;

struct fh_bookset {
    uint64_t counters[FH_BOOK_NCOUNTERS];
    /* orders */
    fh_book_node *nodes;        /* pages_cap * FH_REF_PAGE nodes */
    uint32_t node_free;         /* heap nodes: free list through next */
    uint32_t heap_next, heap_end;   /* unused nodes of the newest heap page */
    uint32_t *page_ref;         /* [pages_cap] ref page index + 1 of a ref page; 0: a heap or free page */
    uint32_t *page_live;        /* [pages_cap] live orders of a ref page; a free page: next free page */
    uint32_t pages_cap, pages_used, page_free;   /* page_free: a free page + 1, 0 = none */
    uint32_t *refdir;           /* [refdir_cap] page + 1 of ref page i (order ids i * FH_REF_PAGE ...) */
    uint32_t refdir_cap;
    uint32_t ref_pages;         /* ref pages in use */
    uint32_t ref_frontier;      /* the highest ref page index created so far */
    uint64_t ref_live;          /* orders in ref pages */
    fh_book_slot *table;
    uint32_t table_mask, table_used;
    uint64_t table_max_id;      /* no order id in the table is above it (0 when the table is empty) */
    int table_mixed;
    uint32_t table_mul, table_shift;   /* fh_home: (1, 32) identity, (0x9E3779B1, 16) mixed */
    uint64_t live;
    /* levels */
    fh_book_level *levels;
    uint32_t levels_cap, levels_used, level_free;
    /* price ladder blocks (all sides) */
    fh_ladder_block *blocks;
    uint32_t blocks_cap, blocks_used, block_free, blocks_live;
    /* books */
    fh_book *books;
    uint32_t nbooks, books_cap;
    uint32_t *direct;   /* [max_instruments] dense index + 1 */
    uint32_t max_instruments;
    fh_inst_slot *imap; /* ids >= max_instruments */
    uint32_t imap_mask, imap_used;
    uint32_t dir_hint;  /* initial directory entries (blocks) of a side */
    int all_stale;      /* a gap lost events: books created from now on start stale */
    /* replace: the side and book of the order removed by the previous record (whole-order cancel) */
    int pending_side;   /* -1: none */
    uint32_t pending_book;
    /* BBO events */
    int track_bbo;
    uint32_t defer_book;                /* UINT32_MAX, or the book of a batch-final whole-order cancel */
    uint64_t defer_ts_event, defer_ts_recv;   /* that cancel's times */
    fh_bbo_event *events;
    size_t nevents, events_cap;
};

/* ---------------------------------------------------------------------------------------------- */
/* order table */

static inline uint32_t fh_tag(uint64_t order_id) { return (uint32_t)order_id ^ (uint32_t)(order_id >> 32); }

static inline uint32_t fh_home(const fh_bookset *bs, uint32_t tag) {
    /* branch-free: identity (mul 1, shift 32: x >> 32 is 0) or Fibonacci hashing folded (mul
     * 0x9E3779B1, shift 16: the high bits are the good ones) */
    uint64_t x = (uint32_t)(tag * bs->table_mul);
    return (uint32_t)(x ^ (x >> bs->table_shift)) & bs->table_mask;
}

/* Slot index of order_id, or UINT32_MAX. */
static inline uint32_t fh_table_find(const fh_bookset *bs, uint64_t order_id) {
    uint32_t tag = fh_tag(order_id);
    uint32_t i = fh_home(bs, tag);
    for (;;) {
        const fh_book_slot *s = &bs->table[i];
        if (s->node == 0) return UINT32_MAX;
        if (s->tag == tag && bs->nodes[s->node].order_id == order_id) return i;
        i = (i + 1) & bs->table_mask;
    }
}

/* Insert without growing; returns the probe distance. */
static uint32_t fh_table_put(fh_bookset *bs, uint32_t tag, uint32_t node) {
    uint32_t i = fh_home(bs, tag), d = 0;
    while (bs->table[i].node != 0) {
        i = (i + 1) & bs->table_mask;
        d++;
    }
    bs->table[i].tag = tag;
    bs->table[i].node = node;
    return d;
}

static int fh_table_rehash(fh_bookset *bs, uint32_t new_cap, int mixed) {
    fh_book_slot *old = bs->table;
    uint32_t old_cap = bs->table_mask + 1;
    fh_book_slot *t = fh_big_alloc((size_t)new_cap * sizeof *t);
    if (!t) return -1;
    bs->table = t;
    bs->table_mask = new_cap - 1;
    bs->table_mixed = mixed;
    bs->table_mul = mixed ? 0x9E3779B1u : 1u;
    bs->table_shift = mixed ? 16 : 32;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].node) fh_table_put(bs, old[i].tag, old[i].node);
    fh_big_free(old, (size_t)old_cap * sizeof *old);
    return 0;
}

/* Slot of order_id, or UINT32_MAX with *empty = the empty slot that ends its probe sequence (where
 * an insert without growth puts it) and *dist = that slot's distance from the home slot. */
static inline uint32_t fh_table_find_or_empty(const fh_bookset *bs, uint64_t order_id, uint32_t *empty,
                                              uint32_t *dist) {
    uint32_t tag = fh_tag(order_id);
    uint32_t i = fh_home(bs, tag), d = 0;
    for (;; d++) {
        const fh_book_slot *s = &bs->table[i];
        if (s->node == 0) { *empty = i; *dist = d; return UINT32_MAX; }
        if (s->tag == tag && bs->nodes[s->node].order_id == order_id) return i;
        i = (i + 1) & bs->table_mask;
    }
}

/* Insert an order known to be absent; `empty`/`dist` from fh_table_find_or_empty with no table change
 * since (they are ignored when the table must grow first). */
static int fh_table_insert_at(fh_bookset *bs, uint64_t order_id, uint32_t node, uint32_t empty, uint32_t dist) {
    if (FH_UNLIKELY((uint64_t)(bs->table_used + 1) * 2 > (uint64_t)bs->table_mask + 1)) {
        if (bs->table_mask >= 0x7FFFFFFFu || fh_table_rehash(bs, (bs->table_mask + 1) * 2, bs->table_mixed))
            return -1;
        dist = fh_table_put(bs, fh_tag(order_id), node);
    } else {
        bs->table[empty].tag = fh_tag(order_id);
        bs->table[empty].node = node;
    }
    bs->table_used++;
    if (order_id > bs->table_max_id) bs->table_max_id = order_id;
    if (FH_UNLIKELY(dist > FH_BOOK_MAX_PROBE && !bs->table_mixed))
        (void)fh_table_rehash(bs, bs->table_mask + 1, 1);   /* on failure the table stays valid */
    return 0;
}

/* Backward-shift deletion of slot i. */
static void fh_table_erase(fh_bookset *bs, uint32_t i) {
    uint32_t mask = bs->table_mask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (bs->table[j].node == 0) break;
        uint32_t h = fh_home(bs, bs->table[j].tag);
        /* move j into the hole i unless its home lies cyclically in (i, j] */
        if (((j - h) & mask) >= ((j - i) & mask)) {
            bs->table[i] = bs->table[j];
            i = j;
        }
    }
    bs->table[i].node = 0;
    bs->table[i].tag = 0;
    if (--bs->table_used == 0) bs->table_max_id = 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* pools */

/* A page of FH_REF_PAGE nodes (the nodes array grows by doubling; its indices stay valid), or
 * UINT32_MAX when out of memory. Its page_ref is 0. */
static uint32_t fh_page_alloc(fh_bookset *bs) {
    if (bs->page_free) {
        uint32_t k = bs->page_free - 1;
        bs->page_free = bs->page_live[k];
        bs->page_live[k] = 0;
        return k;
    }
    if (FH_UNLIKELY(bs->pages_used == bs->pages_cap)) {
        if (bs->pages_cap >= FH_REF_MAX_PAGES) return UINT32_MAX;
        uint32_t cap = bs->pages_cap * 2;
        /* the page arrays first: bigger arrays are harmless if the nodes cannot grow */
        uint32_t *r = realloc(bs->page_ref, (size_t)cap * sizeof *r);
        if (!r) return UINT32_MAX;
        bs->page_ref = r;
        memset(&r[bs->pages_cap], 0, (size_t)(cap - bs->pages_cap) * sizeof *r);
        uint32_t *l = realloc(bs->page_live, (size_t)cap * sizeof *l);
        if (!l) return UINT32_MAX;
        bs->page_live = l;
        memset(&l[bs->pages_cap], 0, (size_t)(cap - bs->pages_cap) * sizeof *l);
        size_t old_n = (size_t)bs->pages_cap * FH_REF_PAGE, new_n = (size_t)cap * FH_REF_PAGE;
        fh_book_node *p = fh_big_grow(bs->nodes, old_n * sizeof *p, new_n * sizeof *p);
        if (!p) return UINT32_MAX;
        bs->nodes = p;
        bs->pages_cap = cap;
    }
    return bs->pages_used++;
}

/* A heap node (for an order found through the order table), 0 when out of memory. */
static uint32_t fh_node_alloc(fh_bookset *bs) {
    if (bs->node_free) {
        uint32_t n = bs->node_free;
        bs->node_free = bs->nodes[n].next;
        __builtin_prefetch(&bs->nodes[bs->node_free]);   /* the next add's node (0: harmless) */
        return n;
    }
    if (FH_UNLIKELY(bs->heap_next == bs->heap_end)) {
        uint32_t k = fh_page_alloc(bs);
        if (k == UINT32_MAX) return 0;
        bs->heap_next = k << FH_REF_BITS;
        bs->heap_end = bs->heap_next + FH_REF_PAGE;
    }
    return bs->heap_next++;
}

static inline void fh_node_free(fh_bookset *bs, uint32_t n) {
    bs->nodes[n].next = bs->node_free;
    bs->nodes[n].order_id = 0;
    bs->nodes[n].level = 0;
    bs->node_free = n;
}

/* The live ref page node of order_id, or 0. */
static inline uint32_t fh_ref_find(const fh_bookset *bs, uint64_t order_id) {
    uint64_t pi = order_id >> FH_REF_BITS;
    if (FH_UNLIKELY(pi >= bs->refdir_cap)) return 0;
    uint32_t p = bs->refdir[pi];
    if (!p) return 0;
    uint32_t n = (p - 1) << FH_REF_BITS | (uint32_t)(order_id & (FH_REF_PAGE - 1));
    return bs->nodes[n].level ? n : 0;
}

/* The ref page node order_id goes to (its page created when needed), or 0 when the order must go to
 * a heap node: an id beyond the directory, a page that would make the ref pages too sparse, or no
 * memory for the page (the heap then tries too). */
static uint32_t fh_ref_slot(fh_bookset *bs, uint64_t order_id) {
    uint64_t pi = order_id >> FH_REF_BITS;
    if (FH_UNLIKELY(pi >= FH_REF_DIR_MAX)) return 0;
    if (FH_LIKELY(pi < bs->refdir_cap && bs->refdir[pi]))
        return (bs->refdir[pi] - 1) << FH_REF_BITS | (uint32_t)(order_id & (FH_REF_PAGE - 1));
    if (bs->ref_pages >= FH_REF_MIN_PAGES && (uint64_t)bs->ref_pages * FH_REF_MIN_FILL > bs->live) return 0;
    if (pi >= bs->refdir_cap) {
        uint64_t cap = bs->refdir_cap ? bs->refdir_cap : 1024;
        while (cap <= pi) cap *= 2;
        if (cap > FH_REF_DIR_MAX) cap = FH_REF_DIR_MAX;
        uint32_t *d = fh_big_grow(bs->refdir, (size_t)bs->refdir_cap * sizeof *d, (size_t)cap * sizeof *d);
        if (!d) return 0;
        bs->refdir = d;
        bs->refdir_cap = (uint32_t)cap;
    }
    uint32_t k = fh_page_alloc(bs);
    if (k == UINT32_MAX) return 0;
    /* a new page is zeroed and a freed one held only dead nodes (level 0): every slot is free */
    bs->page_ref[k] = (uint32_t)pi + 1;
    bs->refdir[pi] = k + 1;
    bs->ref_pages++;
    if (pi > bs->ref_frontier) bs->ref_frontier = (uint32_t)pi;
    return k << FH_REF_BITS | (uint32_t)(order_id & (FH_REF_PAGE - 1));
}

/* A node becomes live in its ref page. */
static inline void fh_ref_live(fh_bookset *bs, uint32_t n) {
    bs->page_live[n >> FH_REF_BITS]++;
    bs->ref_live++;
}

/* Free ref page k (no live node left). */
static inline void fh_ref_page_free(fh_bookset *bs, uint32_t k) {
    bs->refdir[bs->page_ref[k] - 1] = 0;
    bs->page_ref[k] = 0;
    bs->page_live[k] = bs->page_free;
    bs->page_free = k + 1;
    bs->ref_pages--;
}

/* Move the live orders of ref page k, an old page that few orders keep, to heap nodes found through
 * the order table, and free the page: long-lived orders would otherwise pin a page of FH_REF_PAGE
 * nodes each (their queue neighbours and level are relinked to the new node). Stops, consistent,
 * when memory runs out (the page then stays). */
static void fh_ref_page_evict(fh_bookset *bs, uint32_t k) {
    uint32_t base = k << FH_REF_BITS;
    for (uint32_t j = 0; j < FH_REF_PAGE && bs->page_live[k]; j++) {
        uint32_t n = base + j;
        if (!bs->nodes[n].level) continue;
        uint32_t empty = 0, dist = 0;
        (void)fh_table_find_or_empty(bs, bs->nodes[n].order_id, &empty, &dist);   /* absent: in its page */
        uint32_t h = fh_node_alloc(bs);   /* may move the nodes array: indices only below */
        if (!h) return;
        if (fh_table_insert_at(bs, bs->nodes[n].order_id, h, empty, dist)) { fh_node_free(bs, h); return; }
        bs->nodes[h] = bs->nodes[n];
        fh_book_node *o = &bs->nodes[h];
        fh_book_level *lv = &bs->levels[o->level];
        if (o->prev) bs->nodes[o->prev].next = h;
        else lv->head = h;
        if (o->next) bs->nodes[o->next].prev = h;
        else lv->tail = h;
        bs->nodes[n].level = 0;
        bs->ref_live--;
        bs->page_live[k]--;
    }
    if (bs->page_live[k] == 0) fh_ref_page_free(bs, k);
}

/* A ref page node dies; its page is freed when it was the last, or evicted when it is old and kept
 * by only a few orders (evict = 0: no other node may move, e.g. while a queue is being walked). */
static inline void fh_ref_dead(fh_bookset *bs, uint32_t n, int evict) {
    uint32_t k = n >> FH_REF_BITS;
    bs->nodes[n].level = 0;
    bs->ref_live--;
    uint32_t left = --bs->page_live[k];
    if (left == 0) {
        fh_ref_page_free(bs, k);
    } else if (FH_UNLIKELY(left <= FH_REF_EVICT_LIVE) && evict &&
               bs->page_ref[k] - 1 + FH_REF_EVICT_AGE <= bs->ref_frontier) {
        fh_ref_page_evict(bs, k);
    }
}

/* Is node n in a ref page? */
static inline int fh_is_ref_node(const fh_bookset *bs, uint32_t n) { return bs->page_ref[n >> FH_REF_BITS] != 0; }

/* The live node of order_id, or 0; *slot = its order table slot, or FH_SLOT_REF for a ref page node. */
#define FH_SLOT_REF (UINT32_MAX - 1)
static inline uint32_t fh_order_find(const fh_bookset *bs, uint64_t order_id, uint32_t *slot) {
    uint32_t n = fh_ref_find(bs, order_id);
    if (FH_LIKELY(n)) { *slot = FH_SLOT_REF; return n; }
    /* ITCH ids grow: an add's id is above every id the table holds (old orders moved there, orders
     * that found no page), so neither it nor an event of a young order reads the table */
    if (FH_LIKELY(order_id > bs->table_max_id)) return 0;
    uint32_t s = fh_table_find(bs, order_id);
    if (s == UINT32_MAX) return 0;
    *slot = s;
    return bs->table[s].node;
}

/* Forget a live order's node (slot from fh_order_find): its ref page slot, or its table entry and
 * heap node. */
static inline void fh_order_forget(fh_bookset *bs, uint32_t slot, uint32_t n) {
    if (FH_LIKELY(slot == FH_SLOT_REF)) {
        fh_ref_dead(bs, n, 1);
    } else {
        fh_table_erase(bs, slot);
        fh_node_free(bs, n);
    }
}

static uint32_t fh_level_alloc(fh_bookset *bs) {
    if (bs->level_free) {
        uint32_t l = bs->level_free;
        bs->level_free = bs->levels[l].head;
        return l;
    }
    if (FH_UNLIKELY(bs->levels_used == bs->levels_cap)) {
        if (bs->levels_cap >= 0x7FFFFFFFu) return 0;
        uint32_t cap = bs->levels_cap * 2;
        fh_book_level *p = fh_big_grow(bs->levels, (size_t)bs->levels_cap * sizeof *p, (size_t)cap * sizeof *p);
        if (!p) return 0;
        bs->levels = p;
        bs->levels_cap = cap;
    }
    return bs->levels_used++;
}

static inline void fh_level_free(fh_bookset *bs, uint32_t l) {
    bs->levels[l].head = bs->level_free;
    bs->levels[l].count = 0;
    bs->level_free = l;
}

/* ---------------------------------------------------------------------------------------------- */
/* books */

static inline int64_t fh_key(int side, int64_t price) { return side == FH_BOOK_BID ? price : ~price; }

static uint32_t fh_book_create(fh_bookset *bs, uint32_t instrument_id) {
    if (bs->nbooks == bs->books_cap) {
        uint32_t cap = bs->books_cap ? bs->books_cap * 2 : 64;
        fh_book *p = aligned_alloc(_Alignof(fh_book), (size_t)cap * sizeof *p);   /* realloc: 16 only */
        if (!p) return UINT32_MAX;
        if (bs->books) memcpy(p, bs->books, (size_t)bs->nbooks * sizeof *p);
        free(bs->books);
        bs->books = p;
        bs->books_cap = cap;
    }
    fh_book *b = &bs->books[bs->nbooks];
    memset(b, 0, sizeof *b);
    b->side[0].d = b->side[1].d = &fh_no_dirs;
    b->instrument_id = instrument_id;
    b->stale = (uint8_t)bs->all_stale;
    b->ev_bid_px = b->ev_ask_px = FH_UNDEF_PRICE;
    return bs->nbooks++;
}

static int fh_imap_grow(fh_bookset *bs) {
    uint32_t old_cap = bs->imap ? bs->imap_mask + 1 : 0;
    uint32_t cap = old_cap ? old_cap * 2 : 64;
    fh_inst_slot *m = calloc(cap, sizeof *m);
    if (!m) return -1;
    for (uint32_t i = 0; i < old_cap; i++) {
        if (!bs->imap[i].idx1) continue;
        uint32_t j = (bs->imap[i].id * 0x9E3779B1u) & (cap - 1);
        while (m[j].idx1) j = (j + 1) & (cap - 1);
        m[j] = bs->imap[i];
    }
    free(bs->imap);
    bs->imap = m;
    bs->imap_mask = cap - 1;
    return 0;
}

/* Dense index of the instrument's book, or UINT32_MAX. */
static inline uint32_t fh_book_find(const fh_bookset *bs, uint32_t id) {
    if (FH_LIKELY(id < bs->max_instruments)) return bs->direct[id] - 1;   /* 0 - 1 = UINT32_MAX */
    if (!bs->imap) return UINT32_MAX;
    uint32_t j = (id * 0x9E3779B1u) & bs->imap_mask;
    while (bs->imap[j].idx1) {
        if (bs->imap[j].id == id) return bs->imap[j].idx1 - 1;
        j = (j + 1) & bs->imap_mask;
    }
    return UINT32_MAX;
}

/* Dense index of the instrument's book, created when missing; UINT32_MAX when out of memory. */
static inline uint32_t fh_book_get(fh_bookset *bs, uint32_t id) {
    uint32_t b = fh_book_find(bs, id);
    if (FH_LIKELY(b != UINT32_MAX)) return b;
    if (id >= bs->max_instruments && (!bs->imap || (bs->imap_used + 1) * 2 > bs->imap_mask + 1))
        if (fh_imap_grow(bs)) return UINT32_MAX;
    b = fh_book_create(bs, id);
    if (b == UINT32_MAX) return b;
    if (id < bs->max_instruments) {
        bs->direct[id] = b + 1;
    } else {
        uint32_t j = (id * 0x9E3779B1u) & bs->imap_mask;
        while (bs->imap[j].idx1) j = (j + 1) & bs->imap_mask;
        bs->imap[j].id = id;
        bs->imap[j].idx1 = b + 1;
        bs->imap_used++;
    }
    return b;
}

/* ---------------------------------------------------------------------------------------------- */
/* price ladder: one per book side
 *
 * A side's levels, in ascending key order (bid: price, ask: ~price, so the best level is the LAST
 * key of the LAST block), are spread over fixed blocks of up to FH_LADDER_B keys; the side's
 * directory lists its blocks in order with each block's first key. Finding a key reads the top
 * block's first key (most activity is in the top block), otherwise binary-searches the directory;
 * an insert or a removal moves at most FH_LADDER_B entries inside one block, wherever the level is,
 * instead of every level between it and the top. A full block splits in two (a directory insert,
 * once per FH_LADDER_B / 2 inserts into it at most); a block that drops under FH_LADDER_B / 4 keys
 * merges with a neighbour when both fit in 3/4 of a block, so a side of L levels has at most about
 * 4 L / FH_LADDER_B blocks and the directory moves stay rare and short. */

static uint32_t fh_block_alloc(fh_bookset *bs) {
    if (bs->block_free) {
        uint32_t k = bs->block_free;
        bs->block_free = bs->blocks[k].n;   /* free list through n */
        bs->blocks[k].n = 0;
        bs->blocks_live++;
        return k;
    }
    if (FH_UNLIKELY(bs->blocks_used == bs->blocks_cap)) {
        if (bs->blocks_cap >= 0x7FFFFFFFu / 2) return 0;
        uint32_t cap = bs->blocks_cap * 2;
        fh_ladder_block *p = fh_big_grow(bs->blocks, (size_t)bs->blocks_cap * sizeof *p, (size_t)cap * sizeof *p);
        if (!p) return 0;
        bs->blocks = p;
        bs->blocks_cap = cap;
    }
    bs->blocks_live++;
    return bs->blocks_used++;
}

static inline void fh_block_free(fh_bookset *bs, uint32_t k) {
    bs->blocks[k].n = bs->block_free;
    bs->block_free = k;
    bs->blocks_live--;
}

/* Room for one more directory entry. */
static int fh_dir_reserve(fh_book_side *s, uint32_t hint) {
    fh_ladder_dirs *d = s->d;
    if (d->nb < d->cap) return 0;
    uint32_t cap = d->cap ? d->cap * 2 : (hint ? hint : 4);
    if (cap > 0x3FFFFFFFu) return -1;
    fh_ladder_dirs *nd = realloc(d == &fh_no_dirs ? NULL : d, sizeof *nd + (size_t)cap * sizeof nd->e[0]);
    if (!nd) return -1;
    if (d == &fh_no_dirs) nd->nb = 0;
    nd->cap = cap;
    s->d = nd;
    return 0;
}

/* Directory index of the block where key is or belongs (side not empty), or FH_LADDER_TOP for the top
 * block (found without reading the directory). */
#define FH_LADDER_TOP UINT32_MAX
static inline uint32_t fh_side_block(const fh_bookset *bs, const fh_book_side *s, int64_t key) {
    if (FH_LIKELY(key >= bs->blocks[s->top_blk].key[0])) return FH_LADDER_TOP;
    /* the last block whose first key is <= key, or block 0 */
    uint32_t lo = 0, hi = bs->blocks[s->top_blk].side_nb - 1;   /* the line just read */
    if (hi == 0) return FH_LADDER_TOP;   /* the only block: below its first key, still in it */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->d->e[mid].min <= key) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* Position of key in a block: *found = 1 and its index, or the insertion index. Scans a few keys
 * down from the end (the top of the book is at the end of the top block), then binary search. */
static inline uint32_t fh_block_find(const fh_ladder_block *k, int64_t key, int *found) {
    uint32_t n = k->n;
    uint32_t stop = n > FH_BOOK_SCAN ? n - FH_BOOK_SCAN : 0;
    for (uint32_t j = n; j > stop; j--) {
        int64_t x = k->key[j - 1];
        if (x == key) { *found = 1; return j - 1; }
        if (x < key) { *found = 0; return j; }
    }
    uint32_t lo = 0, hi = stop;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (k->key[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    *found = lo < stop && k->key[lo] == key;
    return lo;
}

/* The side's best level after its top block (still the top block) changed. */
static inline void fh_side_retop_block(fh_bookset *bs, fh_book_side *s) {
    const fh_ladder_block *k = &bs->blocks[s->top_blk];
    s->top = k->lvl[k->n - 1];
    s->top_key = k->key[k->n - 1];
}

/* The side's top block and best level after its directory changed. */
static inline void fh_side_retop(fh_bookset *bs, fh_book_side *s) {
    if (s->d->nb == 0) {
        s->top_blk = 0;
        s->top = 0;
        s->top_key = 0;
        return;
    }
    s->top_blk = s->d->e[s->d->nb - 1].blk;
    bs->blocks[s->top_blk].side_nb = s->d->nb;
    fh_side_retop_block(bs, s);
}

/* Insert (key, l) at position pos of the block at directory index i (FH_LADDER_TOP: the top block,
 * whose index is then read only when needed). Returns 0, or -1 when a block or the directory cannot
 * grow (nothing changed then). */
static int fh_ladder_insert(fh_bookset *bs, fh_book_side *s, uint32_t i, uint32_t pos, int64_t key, uint32_t l) {
    uint32_t k = i == FH_LADDER_TOP ? s->top_blk : s->d->e[i].blk;
    uint32_t split = FH_LADDER_TOP;   /* directory index of the block split in two */
    if (FH_UNLIKELY(bs->blocks[k].n == FH_LADDER_B)) {
        /* split: the upper half moves to a new block right after this one */
        if (fh_dir_reserve(s, bs->dir_hint)) return -1;
        uint32_t k2 = fh_block_alloc(bs);
        if (!k2) return -1;
        fh_ladder_dirs *d = s->d;
        if (i == FH_LADDER_TOP) i = d->nb - 1;
        split = i;
        fh_ladder_block *a = &bs->blocks[k], *b = &bs->blocks[k2];
        const uint32_t h = FH_LADDER_B / 2;
        memcpy(b->key, a->key + h, (FH_LADDER_B - h) * sizeof *a->key);
        memcpy(b->lvl, a->lvl + h, (FH_LADDER_B - h) * sizeof *a->lvl);
        b->n = FH_LADDER_B - h;
        a->n = h;
        memmove(&d->e[i + 2], &d->e[i + 1], (size_t)(d->nb - i - 1) * sizeof d->e[0]);
        d->e[i + 1].min = b->key[0];
        d->e[i + 1].blk = k2;
        d->nb++;
        if (pos > h) {
            i++;
            pos -= h;
            k = k2;
        }
    }
    fh_ladder_block *a = &bs->blocks[k];
    memmove(&a->key[pos + 1], &a->key[pos], (size_t)(a->n - pos) * sizeof *a->key);
    memmove(&a->lvl[pos + 1], &a->lvl[pos], (size_t)(a->n - pos) * sizeof *a->lvl);
    a->key[pos] = key;
    a->lvl[pos] = l;
    a->n++;
    if (FH_UNLIKELY(split != FH_LADDER_TOP)) {
        fh_ladder_dirs *d = s->d;
        d->e[split].min = bs->blocks[d->e[split].blk].key[0];
        d->e[split + 1].min = bs->blocks[d->e[split + 1].blk].key[0];
        fh_side_retop(bs, s);
    } else if (k == s->top_blk) {
        fh_side_retop_block(bs, s);   /* the top block's min is not kept: fh_side_block reads key[0] */
    } else if (pos == 0) {
        s->d->e[i].min = key;
    }
    return 0;
}

/* Remove the entry at position pos of the block at directory index i (FH_LADDER_TOP: the top
 * block). */
static void fh_ladder_remove(fh_bookset *bs, fh_book_side *s, uint32_t i, uint32_t pos) {
    uint32_t k = i == FH_LADDER_TOP ? s->top_blk : s->d->e[i].blk;
    fh_ladder_block *a = &bs->blocks[k];
    memmove(&a->key[pos], &a->key[pos + 1], (size_t)(a->n - pos - 1) * sizeof *a->key);
    memmove(&a->lvl[pos], &a->lvl[pos + 1], (size_t)(a->n - pos - 1) * sizeof *a->lvl);
    a->n--;
    /* the common case: the top block (never merged into another while it is the top), or a block
     * that keeps a quarter of its keys */
    if (FH_LIKELY(a->n && (k == s->top_blk || a->n >= FH_LADDER_B / 4))) {
        if (k == s->top_blk) fh_side_retop_block(bs, s);
        else if (pos == 0) s->d->e[i].min = a->key[0];
        return;
    }
    fh_ladder_dirs *d = s->d;
    if (i == FH_LADDER_TOP) i = d->nb - 1;
    if (a->n == 0) {
        fh_block_free(bs, k);
        memmove(&d->e[i], &d->e[i + 1], (size_t)(d->nb - i - 1) * sizeof d->e[0]);
        d->nb--;
    } else {
        if (pos == 0) d->e[i].min = a->key[0];
        /* merge with a neighbour when both fit in 3/4 of a block: the right one into the left */
        uint32_t j = i + 1 < d->nb ? i + 1 : i - 1;
        uint32_t lft = j < i ? j : i, rgt = j < i ? i : j;
        fh_ladder_block *L = &bs->blocks[d->e[lft].blk], *R = &bs->blocks[d->e[rgt].blk];
        if (L->n + R->n <= FH_LADDER_B * 3 / 4) {
            memcpy(&L->key[L->n], R->key, (size_t)R->n * sizeof *R->key);
            memcpy(&L->lvl[L->n], R->lvl, (size_t)R->n * sizeof *R->lvl);
            L->n += R->n;
            fh_block_free(bs, d->e[rgt].blk);
            memmove(&d->e[rgt], &d->e[rgt + 1], (size_t)(d->nb - rgt - 1) * sizeof d->e[0]);
            d->nb--;
        }
    }
    fh_side_retop(bs, s);
}

static inline uint32_t fh_side_blk(const fh_book_side *s, uint32_t i) {
    return i == FH_LADDER_TOP ? s->top_blk : s->d->e[i].blk;
}

/* Level for (book, side, price), created when missing; 0 when out of memory. */
static inline uint32_t fh_level_get(fh_bookset *bs, uint32_t b, int side, int64_t price) {
    fh_book_side *s = &bs->books[b].side[side];
    int64_t key = fh_key(side, price);
    uint32_t i = FH_LADDER_TOP, pos;
    if (FH_LIKELY(s->top)) {
        /* the best level, or a new best level: no search, no block read (the book's line) */
        if (key == s->top_key) return s->top;
        if (key > s->top_key) {
            pos = bs->blocks[s->top_blk].n;
        } else {
            int found;
            i = fh_side_block(bs, s, key);
            const fh_ladder_block *k = &bs->blocks[fh_side_blk(s, i)];
            pos = fh_block_find(k, key, &found);
            if (found) return k->lvl[pos];
        }
    } else {
        /* the side's first block */
        if (fh_dir_reserve(s, bs->dir_hint)) return 0;
        uint32_t k = fh_block_alloc(bs);
        if (!k) return 0;
        s->d->e[0].min = key;
        s->d->e[0].blk = k;
        s->d->nb = 1;
        s->top_blk = k;
        bs->blocks[k].side_nb = 1;
        i = 0;
        pos = 0;
    }
    uint32_t l = fh_level_alloc(bs);
    if (!l || fh_ladder_insert(bs, s, i, pos, key, l)) {
        if (l) fh_level_free(bs, l);
        if (s->d->nb == 1 && bs->blocks[s->d->e[0].blk].n == 0) {   /* the empty first block */
            fh_block_free(bs, s->d->e[0].blk);
            s->d->nb = 0;
            fh_side_retop(bs, s);
        }
        return 0;
    }
    fh_book_level *lv = &bs->levels[l];
    lv->price = price;
    lv->total = 0;
    lv->count = 0;
    lv->head = lv->tail = 0;
    lv->owner = b << 1 | (uint32_t)side;
    return l;
}

static void fh_level_remove(fh_bookset *bs, uint32_t l) {
    fh_book_level *lv = &bs->levels[l];
    int side = (int)(lv->owner & 1);
    fh_book_side *s = &bs->books[lv->owner >> 1].side[side];
    int64_t key = fh_key(side, lv->price);
    if (FH_LIKELY(s->top == l)) {   /* the best level: the end of the top block */
        fh_ladder_remove(bs, s, FH_LADDER_TOP, bs->blocks[s->top_blk].n - 1);
    } else if (s->top) {
        int found;
        uint32_t i = fh_side_block(bs, s, key);
        uint32_t pos = fh_block_find(&bs->blocks[fh_side_blk(s, i)], key, &found);
        if (found) fh_ladder_remove(bs, s, i, pos);   /* always: the level is in its side */
    }
    fh_level_free(bs, l);
}

/* Append node n to level l's FIFO. */
static inline void fh_level_push(fh_bookset *bs, uint32_t l, uint32_t n) {
    fh_book_level *lv = &bs->levels[l];
    fh_book_node *o = &bs->nodes[n];
    uint32_t tail = lv->tail;
    o->level = l;
    o->next = 0;
    o->prev = tail;
    *(tail ? &bs->nodes[tail].next : &lv->head) = n;   /* a select, not a branch */
    lv->tail = n;
    lv->count++;
    lv->total += o->size;
}

/* Unlink node n from its level (removing the level when it empties). */
static inline void fh_level_unlink(fh_bookset *bs, uint32_t n) {
    fh_book_node *o = &bs->nodes[n];
    uint32_t l = o->level;
    fh_book_level *lv = &bs->levels[l];
    uint32_t prev = o->prev, next = o->next;
    /* selects, not branches: whether an order has queue neighbours is random */
    *(prev ? &bs->nodes[prev].next : &lv->head) = next;
    *(next ? &bs->nodes[next].prev : &lv->tail) = prev;
    lv->total -= o->size;
    if (--lv->count == 0) fh_level_remove(bs, l);
}

/* Remove a live order entirely (slot = its table slot). */
static inline void fh_order_remove(fh_bookset *bs, uint32_t slot, uint32_t n) {
    uint32_t b = bs->levels[bs->nodes[n].level].owner >> 1;
    fh_level_unlink(bs, n);
    fh_order_forget(bs, slot, n);
    bs->books[b].live--;
    bs->live--;
}

static inline void fh_book_top(const fh_bookset *bs, const fh_book *bk, fh_bbo *o) {
    uint32_t l = bk->side[FH_BOOK_BID].top;
    if (l) {
        const fh_book_level *lv = &bs->levels[l];
        o->bid_px = lv->price; o->bid_sz = lv->total; o->bid_count = lv->count;
    } else {
        o->bid_px = FH_UNDEF_PRICE; o->bid_sz = 0; o->bid_count = 0;
    }
    l = bk->side[FH_BOOK_ASK].top;
    if (l) {
        const fh_book_level *lv = &bs->levels[l];
        o->ask_px = lv->price; o->ask_sz = lv->total; o->ask_count = lv->count;
    } else {
        o->ask_px = FH_UNDEF_PRICE; o->ask_sz = 0; o->ask_count = 0;
    }
}

static inline void fh_check_crossed(fh_bookset *bs, uint32_t b) {
    const fh_book *bk = &bs->books[b];
    /* the best keys (bid price, ~ask price) live in the book's line: no level is read */
    if (bk->side[0].top && bk->side[1].top && bk->side[0].top_key >= ~bk->side[1].top_key)
        bs->counters[FH_BOOK_C_CROSSED]++;
}

static void fh_book_clear(fh_bookset *bs, uint32_t b) {
    for (int side = 0; side < 2; side++) {
        fh_book_side *s = &bs->books[b].side[side];
        for (uint32_t i = 0; i < s->d->nb; i++) {
            const fh_ladder_block *k = &bs->blocks[s->d->e[i].blk];
            for (uint32_t j = 0; j < k->n; j++) {
                uint32_t l = k->lvl[j];
                for (uint32_t n = bs->levels[l].head; n;) {
                    uint32_t next = bs->nodes[n].next;
                    if (fh_is_ref_node(bs, n)) {
                        fh_ref_dead(bs, n, 0);
                    } else {
                        uint32_t slot = fh_table_find(bs, bs->nodes[n].order_id);
                        if (slot != UINT32_MAX) fh_table_erase(bs, slot);
                        fh_node_free(bs, n);
                    }
                    bs->live--;
                    n = next;
                }
                fh_level_free(bs, l);
            }
            fh_block_free(bs, s->d->e[i].blk);
        }
        if (s->d != &fh_no_dirs) s->d->nb = 0;
        fh_side_retop(bs, s);
    }
    bs->books[b].live = 0;
}

static void fh_bbo_event_emit_ts(fh_bookset *bs, uint32_t b, uint64_t ts_event, uint64_t ts_recv) {
    fh_book *bk = &bs->books[b];
    fh_bbo t;
    fh_book_top(bs, bk, &t);
    if (t.bid_px == bk->ev_bid_px && t.bid_sz == bk->ev_bid_sz && t.ask_px == bk->ev_ask_px &&
        t.ask_sz == bk->ev_ask_sz)
        return;
    if (bs->nevents == bs->events_cap) {
        size_t cap = bs->events_cap ? bs->events_cap * 2 : 4096;
        fh_bbo_event *p = realloc(bs->events, cap * sizeof *p);
        if (!p) { bs->counters[FH_BOOK_C_BBO_EVENTS_DROPPED]++; return; }
        bs->events = p;
        bs->events_cap = cap;
    }
    bk->ev_bid_px = t.bid_px; bk->ev_bid_sz = t.bid_sz;
    bk->ev_ask_px = t.ask_px; bk->ev_ask_sz = t.ask_sz;
    fh_bbo_event *e = &bs->events[bs->nevents++];
    e->instrument_id = bk->instrument_id;
    e->_reserved = 0;
    e->ts_event = ts_event;
    e->ts_recv = ts_recv;
    e->bid_px = t.bid_px; e->bid_sz = t.bid_sz;
    e->ask_px = t.ask_px; e->ask_sz = t.ask_sz;
    bs->counters[FH_BOOK_C_BBO_EVENTS]++;
}

static inline void fh_bbo_event_emit(fh_bookset *bs, uint32_t b, const fh_mbo *m) {
    fh_bbo_event_emit_ts(bs, b, m->hd.ts_event, m->ts_recv);
}

/* A whole-order cancel ended the last batch: its BBO report waits for the next record (the add half
 * of a replace may start the next batch), or for a query of the events (bbo_events counts it then). */
static void fh_bbo_flush_pending(fh_bookset *bs) {
    if (bs->defer_book == UINT32_MAX) return;
    uint32_t b = bs->defer_book;
    bs->defer_book = UINT32_MAX;
    fh_bbo_event_emit_ts(bs, b, bs->defer_ts_event, bs->defer_ts_recv);
}

static inline void fh_mark_stale(fh_bookset *bs, uint32_t instrument_id) {
    bs->counters[FH_BOOK_C_MAYBE_BAD_BOOK]++;
    uint32_t b = fh_book_get(bs, instrument_id);
    if (b == UINT32_MAX) { bs->counters[FH_BOOK_C_NO_MEMORY]++; return; }
    bs->books[b].stale = 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* apply */

/* Add; returns the book index changed or UINT32_MAX. */
static inline uint32_t fh_apply_add(fh_bookset *bs, fh_mbo *m, int pending_side, uint32_t pending_book) {
    int side = m->side == FH_SIDE_ASK, replace = 0;   /* bid or ask: random, so no branch on which */
    if (FH_LIKELY(side | (m->side == FH_SIDE_BID))) {
        /* side is FH_BOOK_BID (0) or FH_BOOK_ASK (1) */
    } else if (m->side == FH_SIDE_NONE) {
        uint32_t b = fh_book_find(bs, m->hd.instrument_id);
        if (pending_side < 0 || b != pending_book) {
            bs->counters[FH_BOOK_C_REPLACE_WITHOUT_DELETE]++;
            return UINT32_MAX;
        }
        side = pending_side;
        m->side = side == FH_BOOK_BID ? FH_SIDE_BID : FH_SIDE_ASK;   /* filled in even if rejected below */
        replace = 1;
    } else {
        bs->counters[FH_BOOK_C_BAD_SIDE]++;
        return UINT32_MAX;
    }
    if (FH_UNLIKELY(m->size == 0)) { bs->counters[FH_BOOK_C_ZERO_SIZE_ADD]++; return UINT32_MAX; }
    if (FH_UNLIKELY(m->price == FH_UNDEF_PRICE)) { bs->counters[FH_BOOK_C_BAD_PRICE]++; return UINT32_MAX; }
    uint32_t slot;
    if (FH_UNLIKELY(fh_order_find(bs, m->order_id, &slot))) {
        bs->counters[FH_BOOK_C_DUPLICATE_ADD]++;
        return UINT32_MAX;
    }
    uint32_t b = fh_book_get(bs, m->hd.instrument_id);
    if (FH_UNLIKELY(b == UINT32_MAX)) goto oom;
    uint32_t n = fh_ref_slot(bs, m->order_id);
    int ref = n != 0;
    if (FH_UNLIKELY(!ref)) {   /* the fallback: a heap node found through the order table */
        uint32_t empty = 0, dist = 0;
        (void)fh_table_find_or_empty(bs, m->order_id, &empty, &dist);   /* absent: checked above */
        n = fh_node_alloc(bs);
        if (FH_UNLIKELY(!n)) goto oom;
        if (FH_UNLIKELY(fh_table_insert_at(bs, m->order_id, n, empty, dist))) { fh_node_free(bs, n); goto oom; }
    }
    uint32_t l = fh_level_get(bs, b, side, m->price);
    if (FH_UNLIKELY(!l)) {
        /* a ref page slot is still free (its page may stay empty until another order takes it) */
        if (!ref) {
            fh_table_erase(bs, fh_table_find(bs, m->order_id));
            fh_node_free(bs, n);
        }
        goto oom;
    }
    fh_book_node *o = &bs->nodes[n];
    o->order_id = m->order_id;
    o->price = m->price;
    o->size = m->size;
    fh_level_push(bs, l, n);
    if (FH_LIKELY(ref)) fh_ref_live(bs, n);
    bs->books[b].live++;
    bs->live++;
    bs->counters[FH_BOOK_C_ADDS]++;
    bs->counters[FH_BOOK_C_REPLACES] += (uint64_t)replace;
    fh_check_crossed(bs, b);
    return b;
oom:
    bs->counters[FH_BOOK_C_NO_MEMORY]++;
    return UINT32_MAX;
}

/* Look up the order an F/C/M record names; fills in slot and node and returns its book, or UINT32_MAX. */
static inline uint32_t fh_lookup(fh_bookset *bs, const fh_mbo *m, uint32_t *slot, uint32_t *node) {
    uint32_t s = 0;
    uint32_t n = fh_order_find(bs, m->order_id, &s);
    if (FH_UNLIKELY(!n)) { bs->counters[FH_BOOK_C_UNKNOWN_ORDER]++; return UINT32_MAX; }
    uint32_t b = bs->levels[bs->nodes[n].level].owner >> 1;
    if (FH_UNLIKELY(bs->books[b].instrument_id != m->hd.instrument_id)) {
        bs->counters[FH_BOOK_C_INSTRUMENT_MISMATCH]++;
        return UINT32_MAX;
    }
    *slot = s;
    *node = n;
    return b;
}

/* Reduce an order by `size` shares (fill or partial cancel): removed at 0, over-reduction counted. */
static inline void fh_reduce(fh_bookset *bs, uint32_t slot, uint32_t n, uint32_t size) {
    fh_book_node *o = &bs->nodes[n];
    if (size >= o->size) {
        if (size > o->size) bs->counters[FH_BOOK_C_SIZE_UNDERFLOW]++;
        fh_order_remove(bs, slot, n);
    } else {
        o->size -= size;
        bs->levels[o->level].total -= size;
    }
}

static inline char fh_side_char(const fh_bookset *bs, uint32_t n) {
    return (bs->levels[bs->nodes[n].level].owner & 1) ? FH_SIDE_ASK : FH_SIDE_BID;
}

static uint32_t fh_apply_modify(fh_bookset *bs, fh_mbo *m) {
    uint32_t slot, n;
    uint32_t b = fh_lookup(bs, m, &slot, &n);
    if (b == UINT32_MAX) return b;
    if (m->price == FH_UNDEF_PRICE) { bs->counters[FH_BOOK_C_BAD_PRICE]++; return UINT32_MAX; }
    fh_book_node *o = &bs->nodes[n];
    int side = (int)(bs->levels[o->level].owner & 1);
    m->side = fh_side_char(bs, n);
    bs->counters[FH_BOOK_C_MODIFIES]++;
    if (m->size == 0) {
        fh_order_remove(bs, slot, n);
        return b;
    }
    if (m->price == o->price && m->size <= o->size) {   /* size down in place: keeps priority */
        bs->levels[o->level].total -= o->size - m->size;
        o->size = m->size;
        return b;
    }
    /* price change or size up: to the tail of the (new) level. Get the new level first so an
     * allocation failure leaves the order where it was. */
    fh_level_unlink(bs, n);
    uint32_t l = fh_level_get(bs, b, side, m->price);
    if (!l) {
        /* the old level may be gone too: the order cannot be kept consistently, drop it */
        fh_order_forget(bs, slot, n);
        bs->books[b].live--;
        bs->live--;
        bs->counters[FH_BOOK_C_NO_MEMORY]++;
        return b;
    }
    o = &bs->nodes[n];
    o->price = m->price;
    o->size = m->size;
    fh_level_push(bs, l, n);
    fh_check_crossed(bs, b);
    return b;
}

/* Software pipeline over the batch: most of the time of an apply is spent waiting for dependent
 * cache misses (order node -> price level -> the neighbours in its queue) of orders far apart in
 * memory. Records ahead of the one being applied are looked at in stages so that each miss is in
 * flight while earlier records are applied. These are hints only: they read current state (always
 * valid indices) and never change it, so a record applied in between only makes a hint useless. */
#ifndef FH_BOOK_PF_SLOT
#define FH_BOOK_PF_SLOT 20   /* records ahead: order node (ref page) or order table slot; book line */
#endif
#ifndef FH_BOOK_PF_NODE
#define FH_BOOK_PF_NODE 12   /* records ahead: price level (or table node; the side's top for adds) */
#endif
#ifndef FH_BOOK_PF_LEVEL
#define FH_BOOK_PF_LEVEL 5   /* records ahead: queue neighbours (or table node's level; top block keys) */
#endif
#ifndef FH_BOOK_PF_TICK
#define FH_BOOK_PF_TICK 32   /* records ahead: the record itself (it may sit in another core's cache) */
#endif
#define FH_BOOK_PF_RING 64   /* nodes/slots remembered between stages (power of two > FH_BOOK_PF_SLOT) */
_Static_assert(FH_BOOK_PF_SLOT < FH_BOOK_PF_RING && (FH_BOOK_PF_RING & (FH_BOOK_PF_RING - 1)) == 0,
               "the prefetch ring must hold every record between the first and the last stage");

/* What stage 1 found for a record: its order's ref page node (the slot an add will take, or the live
 * order), and its home slot in the order table when the ref page has no node for it and the id may be
 * in the table. (Remembering the book's side here too, instead of looking it up in stages 2 and 3,
 * measured 20-30 % slower on an 8000-symbol day.) */
typedef struct fh_pf {
    uint32_t node;   /* 0: none (node 0 and level 0 are never used: harmless to prefetch) */
    uint32_t home;   /* table slot, valid when node is 0 (0 otherwise: a valid slot) */
} fh_pf;

/* The node order_id has or would take in its ref page (0 when its page does not exist). */
static inline uint32_t fh_ref_hint(const fh_bookset *bs, uint64_t order_id) {
    uint64_t pi = order_id >> FH_REF_BITS;
    uint32_t p = FH_LIKELY(pi < bs->refdir_cap) ? bs->refdir[pi] : 0;
    return p ? (p - 1) << FH_REF_BITS | (uint32_t)(order_id & (FH_REF_PAGE - 1)) : 0;
}

/* Stage 1: the order's node (ref page) or home slot (table), remembered in *pf for the later stages
 * (a grown table, node or book array leaves them valid indices: none ever shrinks), and the book's
 * hot line (sides, live count, id), read by stages 2-3 and written by every event. */
static inline void fh_prefetch_slot(const fh_bookset *bs, const fh_tick *t, fh_pf *pf) {
    if (t->hd.rtype != FH_RTYPE_MBO) return;
    uint32_t n = fh_ref_hint(bs, t->mbo.order_id);
    pf->node = n;
    pf->home = 0;
    __builtin_prefetch(&bs->nodes[n], 1);   /* an add writes it */
    if (FH_UNLIKELY(!n && t->mbo.order_id <= bs->table_max_id)) {
        uint32_t home = fh_home(bs, fh_tag(t->mbo.order_id));
        pf->home = home;
        __builtin_prefetch(&bs->table[home]);
    }
    uint32_t id = t->hd.instrument_id;
    if (FH_LIKELY(id < bs->max_instruments)) {
        uint32_t b = bs->direct[id] - 1;
        if (FH_LIKELY(b != UINT32_MAX)) __builtin_prefetch(&bs->books[b], 1);
    }
}

/* Stages 2 and 3 are branch-free on the action and on empty sides: an add and an order event want
 * different lines, and a branch on which one this record is mispredicts about once per record
 * (cachegrind --branch-sim: ~1.5 of the ~5.7 mispredicts per record were these tests). So both
 * kinds of hint are issued for every MBO record: for an add the node is free (level 0: the never-used
 * level 0, one cached line), for an order event the top of its book's side is what removing a level
 * touches anyway. */
static const fh_book_side fh_empty_side;   /* top_blk 0, top 0: the never-used block 0 and level 0 */

/* The side of its book an add goes to (bid unless side 'A'), or an empty side when the book is
 * missing. */
static inline const fh_book_side *fh_prefetch_side(const fh_bookset *bs, const fh_tick *t) {
    uint32_t id = t->hd.instrument_id;
    uint32_t b = id < bs->max_instruments ? bs->direct[id] - 1 : fh_book_find(bs, id);
    if (FH_UNLIKELY(b == UINT32_MAX)) return &fh_empty_side;
    return &bs->books[b].side[t->mbo.side == FH_SIDE_ASK];
}

/* Stage 2: the price level of the order's node; the add side's top block (its count and first keys)
 * and best level (both named by the book's line, fetched in stage 1); the table's node. */
static inline void fh_prefetch_node(const fh_bookset *bs, const fh_tick *t, const fh_pf *pf) {
    if (t->hd.rtype != FH_RTYPE_MBO) return;
    const fh_book_side *s = fh_prefetch_side(bs, t);
    __builtin_prefetch(&bs->blocks[s->top_blk]);
    __builtin_prefetch(&bs->levels[s->top]);
    __builtin_prefetch(&bs->levels[bs->nodes[pf->node].level], 1);
    if (FH_UNLIKELY(!pf->node)) __builtin_prefetch(&bs->nodes[bs->table[pf->home].node]);
}

/* Stage 3: the order's neighbours in its queue (unlinking it writes them) and the tail of the add
 * side's best level (an add there links after it); the top block's last keys and level indices; the
 * table node's level. An occupied slot names a live node, whose level is live: valid indices even
 * when the slot holds another order. */
static inline void fh_prefetch_level(const fh_bookset *bs, const fh_tick *t, const fh_pf *pf) {
    if (t->hd.rtype != FH_RTYPE_MBO) return;
    const fh_book_side *s = fh_prefetch_side(bs, t);
    const fh_ladder_block *k = &bs->blocks[s->top_blk];
    uint32_t last = k->n ? k->n - 1 : 0;   /* a select (cmov), not a branch */
    __builtin_prefetch(&k->key[last]);
    __builtin_prefetch(&k->lvl[last]);
    __builtin_prefetch(&bs->nodes[bs->levels[s->top].tail], 1);
    const fh_book_node *o = &bs->nodes[pf->node];
    __builtin_prefetch(&bs->nodes[o->prev], 1);
    __builtin_prefetch(&bs->nodes[o->next], 1);
    if (FH_UNLIKELY(!pf->node)) __builtin_prefetch(&bs->levels[bs->nodes[bs->table[pf->home].node].level]);
}

size_t fh_bookset_apply(fh_bookset *bs, fh_tick *ticks, size_t n) {
    bs->counters[FH_BOOK_C_RECORDS] += n;
    uint32_t deferred = UINT32_MAX;   /* book whose BBO report waits for the add half of a replace */
    if (FH_UNLIKELY(bs->defer_book != UINT32_MAX) && n) {
        /* the previous batch ended with a whole-order cancel: is this the add half of a replace? */
        const fh_tick *t = &ticks[0];
        if (t->hd.rtype == FH_RTYPE_MBO && t->mbo.action == FH_ACTION_ADD && t->mbo.side == FH_SIDE_NONE &&
            t->hd.instrument_id == bs->books[bs->defer_book].instrument_id) {
            deferred = bs->defer_book;
            bs->defer_book = UINT32_MAX;
        } else {
            fh_bbo_flush_pending(bs);
        }
    }
    /* per record ahead (index: record & mask). Not initialized: stage 1 writes a record's entry before
     * stages 2-3 read it, and all three skip the same (non-MBO) records; a batch of a few records
     * (the latency mode's packets) then pays for no 512-byte clear. */
    fh_pf pf[FH_BOOK_PF_RING];
    for (size_t j = 0; j < n && j < FH_BOOK_PF_SLOT; j++)
        fh_prefetch_slot(bs, &ticks[j], &pf[j & (FH_BOOK_PF_RING - 1)]);
    for (size_t i = 0; i < n; i++) {
        if (FH_LIKELY(i + FH_BOOK_PF_TICK < n)) __builtin_prefetch(&ticks[i + FH_BOOK_PF_TICK]);
        if (FH_LIKELY(i + FH_BOOK_PF_SLOT < n))
            fh_prefetch_slot(bs, &ticks[i + FH_BOOK_PF_SLOT], &pf[(i + FH_BOOK_PF_SLOT) & (FH_BOOK_PF_RING - 1)]);
        if (FH_LIKELY(i + FH_BOOK_PF_NODE < n))
            fh_prefetch_node(bs, &ticks[i + FH_BOOK_PF_NODE], &pf[(i + FH_BOOK_PF_NODE) & (FH_BOOK_PF_RING - 1)]);
        if (FH_LIKELY(i + FH_BOOK_PF_LEVEL < n))
            fh_prefetch_level(bs, &ticks[i + FH_BOOK_PF_LEVEL], &pf[(i + FH_BOOK_PF_LEVEL) & (FH_BOOK_PF_RING - 1)]);
        fh_tick *t = &ticks[i];
        int pending_side = bs->pending_side;
        uint32_t pending_book = bs->pending_book;
        bs->pending_side = -1;
        if (FH_UNLIKELY(t->hd.rtype != FH_RTYPE_MBO)) {
            if (t->hd.rtype == FH_RTYPE_TRADE) {
                bs->counters[FH_BOOK_C_TRADE_RECORDS]++;
                if (t->trade.flags & FH_F_MAYBE_BAD_BOOK) fh_mark_stale(bs, t->hd.instrument_id);
            } else if (t->hd.rtype == FH_RTYPE_GAP && t->gap.kind == FH_GAP_LOST) {
                bs->counters[FH_BOOK_C_GAPS_LOST]++;
                bs->all_stale = 1;
                for (uint32_t b = 0; b < bs->nbooks; b++) bs->books[b].stale = 1;
            } else {
                bs->counters[FH_BOOK_C_IGNORED]++;
            }
            continue;
        }
        fh_mbo *m = &t->mbo;
        if (FH_UNLIKELY(m->flags & FH_F_MAYBE_BAD_BOOK)) fh_mark_stale(bs, m->hd.instrument_id);
        uint32_t changed = UINT32_MAX, slot, node;
        switch (m->action) {
        case FH_ACTION_ADD:
            changed = fh_apply_add(bs, m, pending_side, pending_book);
            break;
        case FH_ACTION_FILL:
            changed = fh_lookup(bs, m, &slot, &node);
            if (changed == UINT32_MAX) break;
            if (m->price == FH_UNDEF_PRICE) m->price = bs->nodes[node].price;
            m->side = fh_side_char(bs, node);
            bs->counters[FH_BOOK_C_FILLS]++;
            fh_reduce(bs, slot, node, m->size);
            break;
        case FH_ACTION_CANCEL:
            changed = fh_lookup(bs, m, &slot, &node);
            if (changed == UINT32_MAX) break;
            m->price = bs->nodes[node].price;
            m->side = fh_side_char(bs, node);
            if (m->flags & FH_F_WHOLE_ORDER) {
                m->size = bs->nodes[node].size;
                bs->pending_side = m->side == FH_SIDE_BID ? FH_BOOK_BID : FH_BOOK_ASK;
                bs->pending_book = changed;
                bs->counters[FH_BOOK_C_DELETES]++;
                fh_order_remove(bs, slot, node);
                /* the delete half of a replace: report the BBO after the add half */
                if (bs->track_bbo && i + 1 < n && ticks[i + 1].hd.rtype == FH_RTYPE_MBO &&
                    ticks[i + 1].mbo.action == FH_ACTION_ADD && ticks[i + 1].mbo.side == FH_SIDE_NONE &&
                    ticks[i + 1].hd.instrument_id == m->hd.instrument_id) {
                    deferred = changed;
                    continue;
                }
                /* the last record of the batch: the add half may open the next one (the events must
                 * not depend on where batches split, e.g. by a ring) */
                if (bs->track_bbo && i + 1 == n) {
                    bs->defer_book = changed;
                    bs->defer_ts_event = m->hd.ts_event;
                    bs->defer_ts_recv = m->ts_recv;
                    continue;
                }
            } else {
                bs->counters[FH_BOOK_C_CANCELS]++;
                fh_reduce(bs, slot, node, m->size);
            }
            break;
        case FH_ACTION_MODIFY:
            changed = fh_apply_modify(bs, m);
            break;
        case FH_ACTION_CLEAR: {
            bs->counters[FH_BOOK_C_CLEARS]++;
            uint32_t b = fh_book_find(bs, m->hd.instrument_id);
            if (b != UINT32_MAX) {
                fh_book_clear(bs, b);
                bs->books[b].stale = 0;
                changed = b;
            }
            break;
        }
        case FH_ACTION_TRADE:
            bs->counters[FH_BOOK_C_TRADES]++;
            break;
        case FH_ACTION_NONE:
            bs->counters[FH_BOOK_C_NONES]++;
            break;
        default:
            bs->counters[FH_BOOK_C_BAD_ACTION]++;
            break;
        }
        if (FH_UNLIKELY(deferred != UINT32_MAX)) {   /* this record is the add half (it may have failed) */
            if (changed == UINT32_MAX) changed = deferred;
            else if (changed != deferred) fh_bbo_event_emit(bs, deferred, m);
            deferred = UINT32_MAX;
        }
        if (bs->track_bbo && changed != UINT32_MAX) fh_bbo_event_emit(bs, changed, m);
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* lifetime */

fh_bookset *fh_bookset_new(uint32_t max_instruments, uint32_t depth_hint, int track_bbo_events) {
    fh_bookset *bs = calloc(1, sizeof *bs);
    if (!bs) return NULL;
    bs->max_instruments = max_instruments;
    /* a side of depth_hint levels fills its blocks about half (splits leave halves) */
    uint32_t half = FH_LADDER_B / 2;
    bs->dir_hint = depth_hint > 2 * half ? (depth_hint + half - 1) / half : 2;
    bs->track_bbo = track_bbo_events != 0;
    bs->pending_side = -1;
    bs->defer_book = UINT32_MAX;
    bs->pages_cap = 1;   /* page 0: the first heap page; its node 0 = none */
    bs->pages_used = 1;
    bs->nodes = fh_big_alloc((size_t)FH_REF_PAGE * sizeof *bs->nodes);
    bs->page_ref = calloc(1, sizeof *bs->page_ref);
    bs->page_live = calloc(1, sizeof *bs->page_live);
    bs->heap_next = 1;
    bs->heap_end = FH_REF_PAGE;
    bs->table = fh_big_alloc((size_t)FH_BOOK_MIN_TABLE * sizeof *bs->table);
    bs->table_mask = FH_BOOK_MIN_TABLE - 1;
    bs->table_mul = 1;
    bs->table_shift = 32;
    bs->levels_cap = 256;
    bs->levels = fh_big_alloc((size_t)bs->levels_cap * sizeof *bs->levels);
    bs->levels_used = 1;  /* level 0 = none */
    bs->blocks_cap = 64;
    bs->blocks = fh_big_alloc((size_t)bs->blocks_cap * sizeof *bs->blocks);
    bs->blocks_used = 1;  /* block 0 = none (n 0: what the prefetch of an empty side reads) */
    bs->direct = max_instruments ? calloc(max_instruments, sizeof *bs->direct) : NULL;
    if (!bs->nodes || !bs->page_ref || !bs->page_live || !bs->table || !bs->levels || !bs->blocks || (max_instruments && !bs->direct)) {
        fh_bookset_free(bs);
        return NULL;
    }
    return bs;
}

void fh_bookset_free(fh_bookset *bs) {
    if (!bs) return;
    for (uint32_t b = 0; b < bs->nbooks; b++) {
        for (int side = 0; side < 2; side++)
            if (bs->books[b].side[side].d != &fh_no_dirs) free(bs->books[b].side[side].d);
    }
    free(bs->books);
    fh_big_free(bs->nodes, (size_t)bs->pages_cap * FH_REF_PAGE * sizeof *bs->nodes);
    free(bs->page_ref);
    free(bs->page_live);
    if (bs->refdir) fh_big_free(bs->refdir, (size_t)bs->refdir_cap * sizeof *bs->refdir);
    if (bs->table) fh_big_free(bs->table, ((size_t)bs->table_mask + 1) * sizeof *bs->table);
    fh_big_free(bs->levels, (size_t)bs->levels_cap * sizeof *bs->levels);
    fh_big_free(bs->blocks, (size_t)bs->blocks_cap * sizeof *bs->blocks);
    free(bs->direct);
    free(bs->imap);
    free(bs->events);
    free(bs);
}

/* ---------------------------------------------------------------------------------------------- */
/* queries */

const uint64_t *fh_bookset_counters(const fh_bookset *bs) { return bs->counters; }
uint64_t fh_bookset_live_orders(const fh_bookset *bs) { return bs->live; }
size_t fh_bookset_instrument_count(const fh_bookset *bs) { return bs->nbooks; }

int fh_bookset_bbo(const fh_bookset *bs, uint32_t instrument_id, fh_bbo *out) {
    uint32_t b = fh_book_find(bs, instrument_id);
    if (b == UINT32_MAX) {
        out->bid_px = out->ask_px = FH_UNDEF_PRICE;
        out->bid_sz = out->ask_sz = 0;
        out->bid_count = out->ask_count = 0;
        return 0;
    }
    fh_book_top(bs, &bs->books[b], out);
    return 1;
}

int fh_bookset_stale(const fh_bookset *bs, uint32_t instrument_id) {
    uint32_t b = fh_book_find(bs, instrument_id);
    return b == UINT32_MAX ? bs->all_stale : bs->books[b].stale;
}

size_t fh_bookset_summaries(const fh_bookset *bs, fh_book_summary *out, size_t cap) {
    size_t k = 0;
    for (uint32_t b = 0; b < bs->nbooks && k < cap; b++, k++) {
        fh_bbo t;
        fh_book_top(bs, &bs->books[b], &t);
        memset(&out[k], 0, sizeof out[k]);
        out[k].instrument_id = bs->books[b].instrument_id;
        out[k].stale = bs->books[b].stale;
        out[k].bid_px = t.bid_px; out[k].bid_sz = t.bid_sz;
        out[k].ask_px = t.ask_px; out[k].ask_sz = t.ask_sz;
        out[k].live_orders = bs->books[b].live;
    }
    return k;
}

size_t fh_bookset_depth(const fh_bookset *bs, uint32_t instrument_id, int side, fh_book_depth_level *out,
                        size_t n) {
    uint32_t b = fh_book_find(bs, instrument_id);
    if (b == UINT32_MAX || (side != FH_BOOK_BID && side != FH_BOOK_ASK)) return 0;
    const fh_book_side *s = &bs->books[b].side[side];
    size_t k = 0;
    for (uint32_t i = s->d->nb; i > 0 && k < n; i--) {
        const fh_ladder_block *blk = &bs->blocks[s->d->e[i - 1].blk];
        for (uint32_t j = blk->n; j > 0 && k < n; j--, k++) {
            const fh_book_level *lv = &bs->levels[blk->lvl[j - 1]];
            out[k].price = lv->price;
            out[k].size = lv->total;
            out[k].count = lv->count;
        }
    }
    return k;
}

size_t fh_bookset_level_orders(const fh_bookset *bs, uint32_t instrument_id, int side, int64_t price,
                               uint64_t *order_ids, uint32_t *sizes, size_t cap) {
    uint32_t b = fh_book_find(bs, instrument_id);
    if (b == UINT32_MAX || (side != FH_BOOK_BID && side != FH_BOOK_ASK)) return 0;
    const fh_book_side *s = &bs->books[b].side[side];
    if (!s->top) return 0;
    int64_t key = fh_key(side, price);
    int found;
    const fh_ladder_block *blk = &bs->blocks[fh_side_blk(s, fh_side_block(bs, s, key))];
    uint32_t pos = fh_block_find(blk, key, &found);
    if (!found) return 0;
    const fh_book_level *lv = &bs->levels[blk->lvl[pos]];
    size_t k = 0;
    for (uint32_t n = lv->head; n; n = bs->nodes[n].next, k++) {
        if (k < cap) {
            order_ids[k] = bs->nodes[n].order_id;
            sizes[k] = bs->nodes[n].size;
        }
    }
    return k;
}

int fh_bookset_queue_position(const fh_bookset *bs, uint64_t order_id, uint64_t *shares_ahead,
                              uint64_t *orders_ahead) {
    uint32_t s;
    uint32_t target = fh_order_find(bs, order_id, &s);
    if (!target) return -1;
    uint64_t sh = 0, od = 0;
    for (uint32_t n = bs->levels[bs->nodes[target].level].head; n && n != target; n = bs->nodes[n].next) {
        sh += bs->nodes[n].size;
        od++;
    }
    *shares_ahead = sh;
    *orders_ahead = od;
    return 0;
}

int fh_bookset_order(const fh_bookset *bs, uint64_t order_id, uint32_t *instrument_id, int *side,
                     int64_t *price, uint32_t *size) {
    uint32_t s;
    uint32_t n = fh_order_find(bs, order_id, &s);
    if (!n) return -1;
    const fh_book_node *o = &bs->nodes[n];
    uint32_t owner = bs->levels[o->level].owner;
    *instrument_id = bs->books[owner >> 1].instrument_id;
    *side = (int)(owner & 1);
    *price = o->price;
    *size = o->size;
    return 0;
}

const fh_bbo_event *fh_bookset_bbo_events(fh_bookset *bs, size_t *n) {
    fh_bbo_flush_pending(bs);
    *n = bs->nevents;
    return bs->events;
}

void fh_bookset_bbo_events_drain(fh_bookset *bs) {
    fh_bbo_flush_pending(bs);
    bs->nevents = 0;
}

size_t fh_bookset_memory(const fh_bookset *bs) {
    size_t m = sizeof *bs;
    m += (size_t)bs->pages_cap * FH_REF_PAGE * sizeof *bs->nodes;
    m += (size_t)bs->pages_cap * (sizeof *bs->page_ref + sizeof *bs->page_live);
    m += (size_t)bs->refdir_cap * sizeof *bs->refdir;
    m += ((size_t)bs->table_mask + 1) * sizeof *bs->table;
    m += (size_t)bs->levels_cap * sizeof *bs->levels;
    m += (size_t)bs->books_cap * sizeof *bs->books;
    m += (size_t)bs->blocks_cap * sizeof *bs->blocks;
    for (uint32_t b = 0; b < bs->nbooks; b++)
        for (int side = 0; side < 2; side++)
            if (bs->books[b].side[side].d != &fh_no_dirs)
                m += sizeof(fh_ladder_dirs) + (size_t)bs->books[b].side[side].d->cap * sizeof(fh_ladder_dir);
    m += (size_t)bs->max_instruments * sizeof *bs->direct;
    if (bs->imap) m += ((size_t)bs->imap_mask + 1) * sizeof *bs->imap;
    m += bs->events_cap * sizeof *bs->events;
    return m;
}

void fh_bookset_store_stats(const fh_bookset *bs, fh_book_store_stats *out) {
    out->ref_orders = bs->ref_live;
    out->table_orders = bs->table_used;
    out->ref_pages = bs->ref_pages;
    out->pages = bs->pages_used;
}

int fh_bookset_check(const fh_bookset *bs) {
    uint64_t live = 0, nlevels = 0, nblocks = 0;
    for (uint32_t b = 0; b < bs->nbooks; b++) {
        const fh_book *bk = &bs->books[b];
        if (fh_book_find(bs, bk->instrument_id) != b) return 1;
        uint64_t blive = 0;
        for (int side = 0; side < 2; side++) {
            const fh_book_side *s = &bk->side[side];
            int have_prev = 0;
            int64_t prev_key = 0;
            uint32_t last_lvl = 0;
            const fh_ladder_dirs *d = s->d;
            if (!d) return 23;
            for (uint32_t i = 0; i < d->nb; i++) {
                uint32_t kb = d->e[i].blk;
                if (kb == 0 || kb >= bs->blocks_used) return 16;
                const fh_ladder_block *blk = &bs->blocks[kb];
                if (blk->n == 0 || blk->n > FH_LADDER_B) return 17;
                if (i + 1 < d->nb && d->e[i].min != blk->key[0]) return 18;   /* the top block's is not kept */
                nblocks++;
                for (uint32_t j = 0; j < blk->n; j++) {
                    if (have_prev && prev_key >= blk->key[j]) return 2;   /* strictly ascending */
                    have_prev = 1;
                    prev_key = blk->key[j];
                    uint32_t l = blk->lvl[j];
                    if (l == 0 || l >= bs->levels_used) return 3;
                    const fh_book_level *lv = &bs->levels[l];
                    if (lv->owner != (b << 1 | (uint32_t)side)) return 4;
                    if (fh_key(side, lv->price) != blk->key[j]) return 5;
                    if (lv->count == 0) return 6;
                    uint64_t total = 0, count = 0;
                    uint32_t prev = 0;
                    for (uint32_t n = lv->head; n; n = bs->nodes[n].next) {
                        const fh_book_node *o = &bs->nodes[n];
                        if (o->prev != prev || o->level != l || o->price != lv->price || o->size == 0) return 7;
                        uint32_t slot;
                        if (fh_order_find(bs, o->order_id, &slot) != n) return 8;
                        if ((slot == FH_SLOT_REF) != fh_is_ref_node(bs, n)) return 26;
                        total += o->size;
                        count++;
                        prev = n;
                        if (count > (uint64_t)bs->pages_used * FH_REF_PAGE) return 9;   /* a cycle */
                    }
                    if (prev != lv->tail || total != lv->total || count != lv->count) return 10;
                    blive += count;
                    nlevels++;
                    last_lvl = l;
                }
            }
            if (d->nb > d->cap || (d == &fh_no_dirs && d->nb)) return 19;
            if (s->top != last_lvl || s->top_blk != (d->nb ? d->e[d->nb - 1].blk : 0)) return 20;
            if (s->top && s->top_key != fh_key(side, bs->levels[s->top].price)) return 22;
            if (d->nb && bs->blocks[s->top_blk].side_nb != d->nb) return 25;
        }
        if (blive != bk->live) return 11;
        live += blive;
    }
    if (live != bs->live || live != bs->table_used + bs->ref_live) return 12;
    /* ref pages: the directory and the pages name each other, live counts match the live nodes */
    uint64_t ref_live = 0;
    uint32_t ref_pages = 0;
    for (uint32_t k = 0; k < bs->pages_used; k++) {
        if (!bs->page_ref[k]) continue;
        ref_pages++;
        uint32_t pi = bs->page_ref[k] - 1;
        if (pi >= bs->refdir_cap || bs->refdir[pi] != k + 1) return 27;
        uint32_t nl = 0;
        for (uint32_t j = 0; j < FH_REF_PAGE; j++) {
            const fh_book_node *o = &bs->nodes[(size_t)k * FH_REF_PAGE + j];
            if (!o->level) continue;
            nl++;
            if ((o->order_id >> FH_REF_BITS) != pi || (o->order_id & (FH_REF_PAGE - 1)) != j) return 28;
        }
        if (nl != bs->page_live[k]) return 29;
        ref_live += nl;
    }
    if (ref_pages != bs->ref_pages || ref_live != bs->ref_live) return 30;
    for (uint32_t pi = 0; pi < bs->refdir_cap; pi++)
        if (bs->refdir[pi] && (bs->refdir[pi] > bs->pages_used || bs->page_ref[bs->refdir[pi] - 1] != pi + 1)) return 31;
    uint64_t used = 0;
    for (uint32_t i = 0; i <= bs->table_mask; i++) {
        if (!bs->table[i].node) continue;
        used++;
        /* every entry is reachable from its home: no empty slot in between */
        for (uint32_t j = fh_home(bs, bs->table[i].tag); j != i; j = (j + 1) & bs->table_mask)
            if (!bs->table[j].node) return 13;
        if (bs->table[i].tag != fh_tag(bs->nodes[bs->table[i].node].order_id)) return 14;
    }
    if (used != bs->table_used) return 15;
    for (uint32_t i = 0; i <= bs->table_mask; i++)
        if (bs->table[i].node && bs->nodes[bs->table[i].node].order_id > bs->table_max_id) return 32;
    if (nblocks != bs->blocks_live) return 21;
    (void)nlevels;
    return 0;
}
