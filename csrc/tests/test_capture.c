/* test_capture.c - file sources + framing + MoldUDP64 sequencing, run optimized and under ASan/UBSan.
 *
 * 1. a deterministic scenario (reorder inside the window, a lost hole, a duplicate) with exact results;
 * 2. a fuzz loop: random, semi-valid and mutated pcap / pcapng / BinaryFILE files (some gzipped) through
 *    fh_filesrc + fh_framer to the end, checking that every frame is accounted for by one counter.
 * FH_TEST_SCALE=small shortens the fuzz loop (sanitized runs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fh/endian.h"
#include "fh/moldudp64.h"
#include "fh/pcap.h"

/* scratch file: on tmpfs when there is one (the fuzz loop writes thousands of small files) */
static const char *scratch_path(void) {
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof(path), "%s/fh_test_capture_%d.bin", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
                 (int)getpid());
    return path;
}

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);  \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        CHECK(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_le32(buf *b, uint32_t v) { uint8_t t[4]; fh_store_le32(t, v); put(b, t, 4); }

/* Ethernet/IPv4/UDP frame around a MoldUDP64 packet of `count` messages of 5 bytes ("Xnnnn"). */
static size_t mold_frame(uint8_t *f, uint64_t seq, uint16_t count, uint16_t wire_count) {
    uint8_t *pl = f + 42;
    memcpy(pl, "SESSION001", 10);
    fh_store_be64(pl + 10, seq);
    fh_store_be16(pl + 18, wire_count);
    size_t off = 20;
    for (uint16_t i = 0; i < count; i++) {
        fh_store_be16(pl + off, 5);
        pl[off + 2] = 'X';
        fh_store_be32(pl + off + 3, (uint32_t)(seq + i));
        off += 7;
    }
    memset(f, 0, 42);
    f[12] = 0x08;
    f[14] = 0x45;
    fh_store_be16(f + 16, (uint16_t)(20 + 8 + off));
    f[23] = 17;
    fh_store_be16(f + 34, 5000);
    fh_store_be16(f + 36, 26477);
    fh_store_be16(f + 38, (uint16_t)(8 + off));
    return 42 + off;
}

static void pcap_header(buf *b, int be, int ns) {
    uint8_t h[24];
    uint32_t magic = ns ? 0xA1B23C4Du : 0xA1B2C3D4u;
    if (be) { fh_store_be32(h, magic); fh_store_be16(h + 4, 2); fh_store_be16(h + 6, 4); }
    else { fh_store_le32(h, magic); fh_store_le16(h + 4, 2); fh_store_le16(h + 6, 4); }
    memset(h + 8, 0, 8);
    if (be) { fh_store_be32(h + 16, 65535); fh_store_be32(h + 20, 1); }
    else { fh_store_le32(h + 16, 65535); fh_store_le32(h + 20, 1); }
    put(b, h, 24);
}

static void pcap_record(buf *b, int be, uint32_t sec, const uint8_t *f, uint32_t len) {
    uint8_t h[16];
    if (be) { fh_store_be32(h, sec); fh_store_be32(h + 4, 0); fh_store_be32(h + 8, len); fh_store_be32(h + 12, len); }
    else { fh_store_le32(h, sec); fh_store_le32(h + 4, 0); fh_store_le32(h + 8, len); fh_store_le32(h + 12, len); }
    put(b, h, 16);
    put(b, f, len);
}

static void pcapng_header(buf *b) {
    put_le32(b, 0x0A0D0D0A); put_le32(b, 28); put_le32(b, 0x1A2B3C4D);
    put_le32(b, 1); put_le32(b, 0xFFFFFFFF); put_le32(b, 0xFFFFFFFF); put_le32(b, 28);
    put_le32(b, 1); put_le32(b, 20); put_le32(b, 1); put_le32(b, 0); put_le32(b, 20);
}

static void pcapng_epb(buf *b, const uint8_t *f, uint32_t len) {
    uint32_t pad = (4 - (len & 3)) & 3, blen = 32 + len + pad;
    put_le32(b, 6); put_le32(b, blen); put_le32(b, 0); put_le32(b, 0); put_le32(b, 1000);
    put_le32(b, len); put_le32(b, len);
    put(b, f, len);
    static const uint8_t zero[4];
    put(b, zero, pad);
    put_le32(b, blen);
}

static const char *write_file(const buf *b, int gz) {
    const char *path = scratch_path();
    if (gz) {
        gzFile g = gzopen(path, "wb");
        CHECK(g);
        if (b->n) CHECK(gzwrite(g, b->p, (unsigned)b->n) == (int)b->n);
        gzclose(g);
    } else {
        FILE *fp = fopen(path, "wb");
        CHECK(fp);
        if (b->n) CHECK(fwrite(b->p, 1, b->n, fp) == b->n);
        fclose(fp);
    }
    return path;
}

typedef struct result {
    uint64_t seqs[4096];
    size_t n_seqs;
    uint8_t gap_kinds[256];
    uint64_t gap_first[256], gap_count[256];
    size_t n_gaps;
    fh_framer_stats fst;
    fh_filesrc_stats sst;
    int open_rc;
} result;

static void run_file(const char *path, uint32_t window, result *r) {
    memset(r, 0, sizeof(*r));
    fh_filesrc *src = NULL;
    char err[256];
    r->open_rc = fh_filesrc_open(&src, path, err, sizeof(err));
    if (r->open_rc != 0) {
        CHECK(src == NULL);
        return;
    }
    fh_framer_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.reorder_window = window;
    fh_framer *fr = fh_framer_new(&cfg);
    CHECK(fr);
    static fh_pkt pkts[64];
    const fh_msg *msgs;
    int eof = 0;
    for (;;) {
        size_t n = fh_framer_input_done(fr) ? 0 : 1;
        if (n == 0 && !eof) {
            size_t k = fh_filesrc_next(src, pkts, 64);
            if (k == 0) eof = 1;
            else fh_framer_set_input(fr, pkts, k);
        }
        size_t m = eof ? fh_framer_finish(fr, &msgs) : fh_framer_run(fr, &msgs);
        for (size_t i = 0; i < m; i++) {
            if (msgs[i].flags & FH_MSG_RECORD) {
                const fh_gap *g = (const fh_gap *)msgs[i].data;
                if (r->n_gaps < 256) {
                    r->gap_kinds[r->n_gaps] = g->kind;
                    r->gap_first[r->n_gaps] = g->first_missing;
                    r->gap_count[r->n_gaps] = g->count;
                    r->n_gaps++;
                }
            } else {
                /* touch every byte the framer hands out (ASan checks the bounds) */
                volatile uint8_t x = 0;
                for (uint32_t j = 0; j < msgs[i].len; j++) x ^= msgs[i].data[j];
                (void)x;
                if (r->n_seqs < 4096) r->seqs[r->n_seqs++] = msgs[i].sequence;
            }
        }
        if (m == 0 && eof) break;
    }
    r->fst = *fh_framer_stats_get(fr);
    r->sst = *fh_filesrc_stats_get(src);
    fh_framer_free(fr);
    fh_filesrc_close(src);
}

static void scenario(void) {
    /* packets of 2 messages: 1-2 3-4 5-6 7-8 9-10 11-12; order 0 2 1 1 4 5 (3 lost) */
    buf b = {0};
    pcap_header(&b, 0, 1);
    static uint8_t f[2048];
    int order[] = {0, 2, 1, 1, 4, 5};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        size_t len = mold_frame(f, 1 + 2 * (uint64_t)order[i], 2, 2);
        pcap_record(&b, 0, (uint32_t)i, f, (uint32_t)len);
    }
    static result r;
    run_file(write_file(&b, 0), 8, &r);
    CHECK(r.open_rc == 0);
    uint64_t want[] = {1, 2, 3, 4, 5, 6, 9, 10, 11, 12};
    CHECK(r.n_seqs == 10);
    for (int i = 0; i < 10; i++) CHECK(r.seqs[i] == want[i]);
    CHECK(r.n_gaps == 4);
    CHECK(r.gap_kinds[0] == FH_GAP_OPENED && r.gap_first[0] == 3 && r.gap_count[0] == 2);
    CHECK(r.gap_kinds[1] == FH_GAP_FILLED && r.gap_first[1] == 3 && r.gap_count[1] == 2);
    CHECK(r.gap_kinds[2] == FH_GAP_OPENED && r.gap_first[2] == 7 && r.gap_count[2] == 2);
    CHECK(r.gap_kinds[3] == FH_GAP_LOST && r.gap_first[3] == 7 && r.gap_count[3] == 2);
    CHECK(r.fst.duplicate_packets == 1 && r.fst.lost_messages == 2);
    /* the same as pcapng, gzipped */
    buf c = {0};
    pcapng_header(&c);
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        size_t len = mold_frame(f, 1 + 2 * (uint64_t)order[i], 2, 2);
        pcapng_epb(&c, f, (uint32_t)len);
    }
    run_file(write_file(&c, 1), 8, &r);
    CHECK(r.open_rc == 0 && r.sst.format == FH_FORMAT_PCAPNG && r.sst.gzip == 1);
    CHECK(r.n_seqs == 10 && r.fst.lost_messages == 2);
    free(b.p);
    free(c.p);
}

/* Heavy loss in one big input batch (a flooded live link: 5 packets arrive, 3 are lost, 4096 packets a
 * source call): almost every packet waits behind a hole, so one run holds more packets than the slot
 * pool had. Every packet that arrived must be delivered (none taken for a duplicate or dropped) and
 * every message accounted for: delivered or lost. */
static void heavy_loss(void) {
    enum { N = 6000, PER = 2 };
    static uint8_t frames[N][128];
    static fh_pkt pkts[N];
    size_t k = 0;
    uint64_t last_end = 0;
    for (uint32_t i = 0; i < N; i++) {
        if (i % 8 >= 5) continue;                  /* lost on the link */
        size_t len = mold_frame(frames[k], 1 + (uint64_t)PER * i, PER, PER);
        pkts[k] = (fh_pkt){.data = frames[k], .caplen = (uint32_t)len, .origlen = (uint32_t)len,
                           .ts_ns = 1, .linktype = FH_LINKTYPE_ETHERNET, .flags = FH_PKT_TS_SW};
        last_end = 1 + (uint64_t)PER * i + PER;
        k++;
    }
    fh_framer_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.reorder_window = 64;
    fh_framer *fr = fh_framer_new(&cfg);
    CHECK(fr);
    uint64_t initial_slots = fh_framer_stats_get(fr)->held_slots;
    const fh_msg *msgs;
    uint64_t delivered = 0, prev = 0;
    int ordered = 1;
    size_t pos = 0;
    for (int finishing = 0; finishing < 2;) {
        if (!finishing && fh_framer_input_done(fr)) {
            if (pos == k) {
                finishing = 1;
            } else {
                size_t n = k - pos < 4096 ? k - pos : 4096;
                fh_framer_set_input(fr, pkts + pos, n);
                pos += n;
            }
        }
        size_t m = finishing ? fh_framer_finish(fr, &msgs) : fh_framer_run(fr, &msgs);
        for (size_t i = 0; i < m; i++) {
            if (msgs[i].flags & FH_MSG_RECORD) continue;
            /* the bytes are the packet's own (a reused buffer would show another sequence) */
            if (fh_load_be32(msgs[i].data + 1) != (uint32_t)msgs[i].sequence) ordered = 0;
            if (msgs[i].sequence <= prev) ordered = 0;
            prev = msgs[i].sequence;
            delivered++;
        }
        if (finishing && m == 0) finishing = 2;
    }
    const fh_framer_stats *st = fh_framer_stats_get(fr);
    CHECK(ordered);
    CHECK(st->duplicate_packets == 0 && st->hold_failed == 0);
    CHECK(st->messages == (uint64_t)PER * k && delivered == st->messages);
    CHECK(st->messages + st->lost_messages == last_end - 1);
    CHECK(st->held_slots > initial_slots);         /* the pool grew instead of dropping packets */
    fh_framer_free(fr);
}

/* Sequencing properties over random valid streams: loss (single packets and bursts), exact duplicates,
 * and (mode 1) local reordering; random windows and input batches of 1..4096 packets (a live source
 * hands over what the NIC had). Always: messages come out in strictly increasing sequence, each with its
 * own bytes, and delivered + lost = every sequence up to the highest seen, with nothing dropped for
 * want of memory. Loss and duplicates only (mode 0): every message that arrived is delivered. */
static void sequencing_fuzz(int iters) {
    enum { MAXP = 8192 };
    static uint8_t frames[MAXP][128];
    static fh_pkt pkts[MAXP];
    static uint64_t seqs[MAXP];
    static uint16_t counts[MAXP];
    for (int it = 0; it < iters; it++) {
        int mode = (int)(rnd() % 2);
        uint32_t total = 1 + (uint32_t)(rnd() % 6000);
        uint32_t loss_pct = (uint32_t)(rnd() % 70);
        uint32_t burst = 1 + (uint32_t)(rnd() % 200);
        size_t k = 0;
        uint64_t seq = 1, max_end = 1, arrived_msgs = 0;
        for (uint32_t i = 0; i < total && k < MAXP - 2; i++) {
            uint16_t cnt = (uint16_t)(1 + rnd() % 4);
            if ((uint32_t)(rnd() % 100) < loss_pct) {
                uint32_t run = 1 + (uint32_t)(rnd() % burst);    /* a burst of lost packets */
                for (uint32_t j = 0; j < run; j++) seq += 1 + rnd() % 4;
                continue;
            }
            seqs[k] = seq;
            counts[k] = cnt;
            k++;
            arrived_msgs += cnt;
            if (rnd() % 50 == 0 && k < MAXP - 2) {                /* an exact duplicate right after */
                seqs[k] = seq;
                counts[k] = cnt;
                k++;
            }
            seq += cnt;
            if (seq > max_end) max_end = seq;
        }
        if (mode == 1)
            for (size_t i = 1; i < k; i++)
                if (rnd() % 10 == 0) {                             /* swap with a near predecessor */
                    size_t j = i - 1 - (size_t)(rnd() % (i < 8 ? i : 8));
                    uint64_t ts = seqs[i]; seqs[i] = seqs[j]; seqs[j] = ts;
                    uint16_t tc = counts[i]; counts[i] = counts[j]; counts[j] = tc;
                }
        for (size_t i = 0; i < k; i++) {
            size_t len = mold_frame(frames[i], seqs[i], counts[i], counts[i]);
            pkts[i] = (fh_pkt){.data = frames[i], .caplen = (uint32_t)len, .origlen = (uint32_t)len,
                               .ts_ns = 1, .linktype = FH_LINKTYPE_ETHERNET, .flags = FH_PKT_TS_SW};
        }
        fh_framer_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.reorder_window = (uint32_t)(rnd() % 3 == 0 ? rnd() % 4 : rnd() % 65);
        fh_framer *fr = fh_framer_new(&cfg);
        CHECK(fr);
        const fh_msg *msgs;
        uint64_t delivered = 0, prev = 0;
        int ok = 1;
        size_t pos = 0;
        for (int finishing = 0; finishing < 2;) {
            if (!finishing && fh_framer_input_done(fr)) {
                if (pos == k) {
                    finishing = 1;
                } else {
                    size_t want = 1 + (size_t)(rnd() % 4096), n = k - pos < want ? k - pos : want;
                    fh_framer_set_input(fr, pkts + pos, n);
                    pos += n;
                }
            }
            size_t m = finishing ? fh_framer_finish(fr, &msgs) : fh_framer_run(fr, &msgs);
            for (size_t i = 0; i < m; i++) {
                if (msgs[i].flags & FH_MSG_RECORD) continue;
                if (msgs[i].sequence <= prev) ok = 0;
                if (fh_load_be32(msgs[i].data + 1) != (uint32_t)msgs[i].sequence) ok = 0;
                prev = msgs[i].sequence;
                delivered++;
            }
            if (finishing && m == 0) finishing = 2;
        }
        const fh_framer_stats *st = fh_framer_stats_get(fr);
        CHECK(ok);
        CHECK(st->hold_failed == 0);
        CHECK(delivered == st->messages);
        /* the first packet to arrive starts the session: nothing before it is known, late or lost */
        uint64_t first = k ? seqs[0] : 1;
        if (k) CHECK(st->messages + st->lost_messages == max_end - first);
        if (mode == 0) CHECK(st->messages == arrived_msgs);
        if (!ok || st->hold_failed || delivered != st->messages ||
            (k && st->messages + st->lost_messages != max_end - first) || (mode == 0 && st->messages != arrived_msgs)) {
            printf("  sequencing_fuzz iteration %d: mode %d, %zu packets, window %u, loss %u%% bursts %u\n",
                   it, mode, k, cfg.reorder_window, loss_pct, burst);
            fh_framer_free(fr);
            return;
        }
        fh_framer_free(fr);
    }
}

static void fuzz(int iters) {
    static uint8_t f[4096];
    static result r;
    for (int it = 0; it < iters; it++) {
        buf b = {0};
        int kind = (int)(rnd() % 4), be = (int)(rnd() & 1);
        if (kind == 0 || kind == 1) pcap_header(&b, be, kind);
        else if (kind == 2) pcapng_header(&b);
        int npk = (int)(rnd() % 40);
        for (int i = 0; i < npk; i++) {
            uint16_t cnt = (uint16_t)(rnd() % 6);
            uint16_t wire = (rnd() % 8) ? cnt : (uint16_t)(rnd() % 3 ? rnd() : 0xFFFF);
            size_t len = mold_frame(f, 1 + rnd() % 60, cnt, wire);
            int muts = (int)(rnd() % 4);
            for (int k = 0; k < muts; k++) f[rnd() % len] = (uint8_t)rnd();
            if (rnd() % 5 == 0) len = rnd() % (len + 1);
            if (kind == 3) {
                uint8_t l[2];
                fh_store_be16(l, (uint16_t)len);
                f[0] = 'A';
                put(&b, l, 2);
                put(&b, f, len);
            } else if (kind == 2) {
                pcapng_epb(&b, f, (uint32_t)len);
            } else {
                pcap_record(&b, be, (uint32_t)i, f, (uint32_t)len);
            }
        }
        /* damage the file itself: flip bytes, cut it, append garbage */
        int fm = (int)(rnd() % 4);
        for (int k = 0; k < fm && b.n; k++) b.p[rnd() % b.n] = (uint8_t)rnd();
        if (rnd() % 4 == 0 && b.n) b.n = rnd() % b.n;
        if (rnd() % 6 == 0) {
            uint8_t g[32];
            for (int k = 0; k < 32; k++) g[k] = (uint8_t)rnd();
            put(&b, g, rnd() % 32);
        }
        run_file(write_file(&b, (int)(rnd() % 3 == 0)), (uint32_t)(rnd() % 5), &r);
        if (r.open_rc == 0 && r.sst.format != FH_FORMAT_BINARYFILE) {
            uint64_t rej = 0;
            for (int k = 0; k < FH_NET_N_REASONS; k++) rej += r.fst.net_reject[k];
            CHECK(r.fst.packets == r.fst.udp_datagrams + rej);
            CHECK(r.fst.udp_datagrams ==
                  r.fst.filtered + r.fst.malformed[FH_MOLD_SHORT_HEADER] + r.fst.mold_packets);
            CHECK(r.fst.packets == r.sst.packets);
        } else if (r.open_rc == 0) {
            CHECK(r.fst.messages == r.sst.packets);
        } else {
            CHECK(r.open_rc == FH_SRC_EFORMAT || r.open_rc == FH_SRC_EEMPTY);
        }
        free(b.p);
    }
}

int main(void) {
    const char *scale = getenv("FH_TEST_SCALE");
    int small = scale && strcmp(scale, "small") == 0;
    scenario();
    heavy_loss();
    sequencing_fuzz(small ? 20 : 200);
    fuzz(small ? 500 : 5000);
    unlink(scratch_path());
    printf("test_capture: ok\n");
    return 0;
}
