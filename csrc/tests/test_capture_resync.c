/* test_capture_resync.c - damaged capture files: the file source resynchronises and logs what it skipped.
 *
 * Each case writes a capture of numbered frames (the frame number is in the first 4 bytes of every
 * frame), damages it in one way, reads it back through fh_filesrc and checks exactly which frames came
 * out, the damage counter, and the logged event (offset, bytes skipped, resumed or not). Run optimized
 * and under ASan/UBSan by `make -C csrc test`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fh/endian.h"
#include "fh/pcap.h"

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);  \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

static const char *scratch_path(void) {
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof(path), "%s/fh_test_resync_%d.bin", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
                 (int)getpid());
    return path;
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
static void put_le16(buf *b, uint16_t v) { uint8_t t[2]; fh_store_le16(t, v); put(b, t, 2); }

/* frame i: a multicast MAC prefix (as an Ethernet frame starts), its number, then filler bytes (length
 * varies with i) */
static size_t frame_len(uint32_t i) { return 60 + (i * 37) % 200; }
static void put_frame(buf *b, uint32_t i) {
    uint8_t f[512];
    size_t n = frame_len(i);
    memset(f, (int)(0x40 + i % 26), n);
    memcpy(f, "\x01\x00\x5e\x7f", 4);
    fh_store_le32(f + 4, i);
    put(b, f, n);
}

/* A microsecond pcap of n frames, one per millisecond from 1,700,000,000 s; rec_off[i] = offset of
 * record i's header. */
static buf make_pcap(uint32_t n, size_t *rec_off) {
    buf b = {0};
    put_le32(&b, 0xA1B2C3D4u);
    put_le16(&b, 2);
    put_le16(&b, 4);
    put_le32(&b, 0);
    put_le32(&b, 0);
    put_le32(&b, 65535);
    put_le32(&b, 1);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t us = (uint64_t)i * 1000u;
        if (rec_off) rec_off[i] = b.n;
        put_le32(&b, 1700000000u + (uint32_t)(us / 1000000u));
        put_le32(&b, (uint32_t)(us % 1000000u));
        put_le32(&b, (uint32_t)frame_len(i));
        put_le32(&b, (uint32_t)frame_len(i));
        put_frame(&b, i);
    }
    return b;
}

/* A pcapng (SHB, IDB, n EPBs); blk_off[i] = offset of EPB i. */
static buf make_pcapng(uint32_t n, size_t *blk_off) {
    buf b = {0};
    put_le32(&b, 0x0A0D0D0Au);
    put_le32(&b, 28);
    put_le32(&b, 0x1A2B3C4Du);
    put_le16(&b, 1);
    put_le16(&b, 0);
    put_le32(&b, 0xFFFFFFFFu);
    put_le32(&b, 0xFFFFFFFFu);
    put_le32(&b, 28);
    put_le32(&b, 1);     /* IDB */
    put_le32(&b, 20);
    put_le16(&b, 1);
    put_le16(&b, 0);
    put_le32(&b, 0);
    put_le32(&b, 20);
    for (uint32_t i = 0; i < n; i++) {
        size_t fl = frame_len(i), pad = (4 - fl % 4) % 4;
        uint32_t blen = (uint32_t)(32 + fl + pad);
        uint64_t ts = 1700000000000000ull + (uint64_t)i * 1000u;
        if (blk_off) blk_off[i] = b.n;
        put_le32(&b, 6);
        put_le32(&b, blen);
        put_le32(&b, 0);
        put_le32(&b, (uint32_t)(ts >> 32));
        put_le32(&b, (uint32_t)ts);
        put_le32(&b, (uint32_t)fl);
        put_le32(&b, (uint32_t)fl);
        put_frame(&b, i);
        uint8_t z[4] = {0};
        put(&b, z, pad);
        put_le32(&b, blen);
    }
    return b;
}

static void write_file(const uint8_t *p, size_t n) {
    FILE *f = fopen(scratch_path(), "wb");
    CHECK(f);
    CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
}

/* gzip members of data split at the given offsets (nsplit of them), written to the scratch file;
 * returns the compressed bytes (caller frees) */
static buf gzip_members(const buf *d, const size_t *splits, int nsplit, size_t *member_off) {
    buf out = {0};
    size_t from = 0;
    for (int m = 0; m <= nsplit; m++) {
        if (member_off) member_off[m] = out.n;
        size_t to = m < nsplit ? splits[m] : d->n;
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        CHECK(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
        size_t cap = deflateBound(&zs, to - from) + 64;
        uint8_t *tmp = malloc(cap);
        CHECK(tmp);
        zs.next_in = d->p + from;
        zs.avail_in = (uInt)(to - from);
        zs.next_out = tmp;
        zs.avail_out = (uInt)cap;
        CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
        put(&out, tmp, cap - zs.avail_out);
        deflateEnd(&zs);
        free(tmp);
        from = to;
    }
    return out;
}

#define BAD_FRAME 0xFFFFFFFFu

typedef struct result {
    uint32_t *ids;      /* frame numbers delivered, in order */
    size_t n;
    fh_filesrc_stats st;
} result;

static result read_all(void) {
    result r = {0};
    fh_filesrc *src = NULL;
    char err[256];
    CHECK(fh_filesrc_open(&src, scratch_path(), err, sizeof err) == 0);
    fh_pkt pkts[64];
    size_t cap = 1024;
    r.ids = malloc(cap * sizeof(uint32_t));
    CHECK(r.ids);
    for (;;) {
        size_t k = fh_filesrc_next(src, pkts, 64);
        if (k == 0) break;
        for (size_t i = 0; i < k; i++) {
            uint32_t id = pkts[i].caplen >= 8 && !memcmp(pkts[i].data, "\x01\x00\x5e\x7f", 4)
                              ? fh_load_le32(pkts[i].data + 4) : BAD_FRAME;
            if (id >= (1u << 24) || pkts[i].caplen < 8 || pkts[i].caplen != frame_len(id)) {
                /* not one of ours: only inflate can make such a frame (a corrupt deflate stream decodes
                 * to wrong bytes for a while before zlib detects the error; the CRC comes at the end) */
                CHECK(r.st.gzip || fh_filesrc_stats_get(src)->gzip);
                id = BAD_FRAME;
            }
            if (r.n == cap) {
                cap *= 2;
                r.ids = realloc(r.ids, cap * sizeof(uint32_t));
                CHECK(r.ids);
            }
            r.ids[r.n++] = id;
        }
    }
    r.st = *fh_filesrc_stats_get(src);
    fh_filesrc_close(src);
    return r;
}

/* every frame 0..n-1 except those in [skip_lo, skip_hi] came out, in order */
static void check_all_but(const result *r, uint32_t n, uint32_t skip_lo, uint32_t skip_hi) {
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i >= skip_lo && i <= skip_hi) continue;
        CHECK(k < r->n);
        if (r->ids[k] != i) fprintf(stderr, "expected frame %u, got %u at %zu\n", i, r->ids[k], k);
        CHECK(r->ids[k] == i);
        k++;
    }
    CHECK(k == r->n);
}

static int total_damage(const fh_filesrc_stats *st) {
    uint64_t t = 0;
    for (int i = 0; i < FH_SRC_N_DAMAGE; i++) t += st->damage[i];
    return (int)t;
}

/* pcap: a caplen of 2^31 in record 100 (the "stops after 100 packets") */
static void test_pcap_huge_caplen(void) {
    uint32_t n = 3000;
    size_t *off = malloc(n * sizeof(size_t));
    buf b = make_pcap(n, off);
    fh_store_le32(b.p + off[100] + 8, 0x80000000u);
    write_file(b.p, b.n);
    result r = read_all();
    check_all_but(&r, n, 100, 100);
    CHECK(r.st.damage[FH_SRC_BAD_CAPLEN] == 1 && total_damage(&r.st) == 1);
    CHECK(r.st.events_total == 1 && r.st.resyncs == 1);
    CHECK(r.st.events[0].reason == FH_SRC_BAD_CAPLEN);
    CHECK(r.st.events[0].offset == off[100]);
    CHECK(r.st.events[0].skipped == off[101] - off[100]);
    CHECK(r.st.events[0].flags == FH_SRC_EVENT_RESUMED);
    CHECK(r.st.bytes_skipped == off[101] - off[100]);
    free(r.ids);
    free(b.p);
    free(off);
}

/* pcap: a caplen that is wrong but small (bigger than origlen, below the snaplen): the next header is
 * garbage, so the record is not believed */
static void test_pcap_small_wrong_caplen(void) {
    uint32_t n = 500;
    size_t *off = malloc(n * sizeof(size_t));
    buf b = make_pcap(n, off);
    fh_store_le32(b.p + off[250] + 8, (uint32_t)frame_len(250) + 7);
    write_file(b.p, b.n);
    result r = read_all();
    check_all_but(&r, n, 250, 250);
    CHECK(r.st.damage[FH_SRC_BAD_CAPLEN] == 1 && r.st.damage[FH_SRC_CAPLEN_GT_ORIGLEN] == 0);
    CHECK(r.st.events_total == 1 && r.st.events[0].offset == off[250]);
    CHECK(r.st.events[0].skipped == off[251] - off[250]);
    free(r.ids);
    free(b.p);
    free(off);
}

/* pcap: garbage overwrites records 1000..1002 of a file bigger than the chunk buffer; the resync scan
 * crosses refills */
static void test_pcap_garbage_run_big_file(void) {
    uint32_t n = 40000;   /* about 7.6 MB: more than the 4 MiB chunk */
    size_t *off = malloc(n * sizeof(size_t));
    buf b = make_pcap(n, off);
    uint64_t x = 0x12345;
    for (size_t i = off[1000]; i < off[1003]; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        b.p[i] = (uint8_t)(x >> 56) | 0x80;     /* no plausible header can be made of these */
    }
    /* and a second damage right where the first refill ends */
    size_t k = 0;
    while (off[k] < FH_FILESRC_CHUNK - FH_FILESRC_READAHEAD - 100) k++;
    fh_store_le32(b.p + off[k] + 8, 0xFFFFFFF0u);
    write_file(b.p, b.n);
    result r = read_all();
    CHECK(r.n == n - 4);
    CHECK(r.st.damage[FH_SRC_BAD_CAPLEN] == 2 && r.st.resyncs == 2 && r.st.events_total == 2);
    CHECK(r.st.events[0].offset == off[1000] && r.st.events[0].skipped == off[1003] - off[1000]);
    CHECK(r.st.events[1].offset == off[k] && r.st.events[1].skipped == off[k + 1] - off[k]);
    for (size_t i = 0, j = 0; i < n; i++) {
        if ((i >= 1000 && i <= 1002) || i == k) continue;
        CHECK(r.ids[j++] == i);
    }
    free(r.ids);
    free(b.p);
    free(off);
}

/* pcap: the last record's caplen is damaged: nothing to resume on, input ends there (logged) */
static void test_pcap_damage_at_end(void) {
    uint32_t n = 50;
    size_t *off = malloc(n * sizeof(size_t));
    buf b = make_pcap(n, off);
    fh_store_le32(b.p + off[49] + 8, 0x00400000u);
    write_file(b.p, b.n);
    result r = read_all();
    check_all_but(&r, n, 49, 49);
    CHECK(r.st.events_total == 1 && r.st.events[0].flags == 0 && r.st.events[0].offset == off[49]);
    CHECK(r.st.events[0].skipped == b.n - off[49]);
    CHECK(r.st.resyncs == 0);
    free(r.ids);
    free(b.p);
    free(off);
}

/* pcapng: one EPB's length word damaged, two ways (too big; plausible but the trailer differs) */
static void test_pcapng_bad_block_length(void) {
    uint32_t n = 4000;
    size_t *off = malloc(n * sizeof(size_t));
    for (int variant = 0; variant < 3; variant++) {
        buf b = make_pcapng(n, off);
        uint32_t victim = 2078;
        uint32_t blen = fh_load_le32(b.p + off[victim] + 4);
        uint32_t bad = variant == 0 ? 0x7FFFFFF0u : variant == 1 ? blen + 8 : 13;
        fh_store_le32(b.p + off[victim] + 4, bad);
        write_file(b.p, b.n);
        result r = read_all();
        check_all_but(&r, n, victim, victim);
        CHECK(r.st.damage[FH_SRC_BAD_BLOCK_LENGTH] == 1 && total_damage(&r.st) == 1);
        CHECK(r.st.events_total == 1 && r.st.events[0].offset == off[victim]);
        CHECK(r.st.events[0].skipped == off[victim + 1] - off[victim]);
        CHECK(r.st.events[0].flags == FH_SRC_EVENT_RESUMED);
        free(r.ids);
        free(b.p);
    }
    free(off);
}

/* pcapng: a damaged section header byte-order magic: the reader skips the SHB and goes on with the
 * blocks after it (as part of the section before, whose byte order they share) */
static void test_pcapng_bad_second_section(void) {
    uint32_t n = 200;
    size_t *off = malloc(n * sizeof(size_t));
    buf a = make_pcapng(n, off);
    buf b = make_pcapng(n, NULL);
    size_t second = a.n;
    put(&a, b.p, b.n);                  /* two sections */
    buf c = make_pcapng(n, NULL);
    size_t third = a.n;
    put(&a, c.p, c.n);                  /* three */
    fh_store_le32(a.p + second + 8, 0xDEADBEEFu);
    write_file(a.p, a.n);
    result r = read_all();
    CHECK(r.n == 3 * n);
    for (uint32_t i = 0; i < 3 * n; i++) CHECK(r.ids[i] == i % n);
    CHECK(r.st.damage[FH_SRC_BAD_SECTION] == 1 && total_damage(&r.st) == 1);
    CHECK(r.st.events_total == 1 && r.st.events[0].offset == second && r.st.events[0].skipped == 28);
    CHECK(r.st.sections == 2 && third > second);
    free(r.ids);
    free(a.p);
    free(b.p);
    free(c.p);
    free(off);
}

/* gzip, one member, corrupted in the middle: everything before the error is delivered, the event
 * gives the compressed offset, input ends */
static void test_gzip_corrupt_single_member(void) {
    uint32_t n = 20000;
    buf d = make_pcap(n, NULL);
    buf z = gzip_members(&d, NULL, 0, NULL);
    size_t at = z.n / 2;
    for (size_t i = at; i < at + 64; i++) z.p[i] ^= 0x5A;
    write_file(z.p, z.n);
    result r = read_all();
    CHECK(r.st.gzip == 1);
    CHECK(r.st.damage[FH_SRC_GZIP_CORRUPT] == 1);
    /* everything up to the corruption came out in order (far more than one read's worth: gzread
     * would have dropped the whole read the error ended); after it, inflate may have made garbage for
     * a while before it saw the error (the CRC is at the end), which the pcap layer skips or, where it
     * looks like records, delivers; it never delivers past the error */
    size_t good = 0;
    while (good < r.n && r.ids[good] == good) good++;
    CHECK(good > n / 3);
    CHECK(good < n);
    int found = 0;
    for (uint64_t e = 0; e < r.st.events_total && e < FH_FILESRC_MAX_EVENTS; e++) {
        const fh_filesrc_event *ev = &r.st.events[e];
        if (ev->reason == FH_SRC_GZIP_CORRUPT) {
            found = 1;
            CHECK((ev->flags & ~(uint32_t)FH_SRC_EVENT_CHECKSUM) == FH_SRC_EVENT_COMPRESSED);
            CHECK(ev->offset >= at && ev->offset <= z.n);
        }
    }
    CHECK(found);
    free(r.ids);
    free(z.p);
    free(d.p);
}

/* gzip, three members, the middle one corrupted: the reader resumes at the third member; the pcap
 * layer then resynchronises on the next whole record */
static void test_gzip_corrupt_multi_member(void) {
    uint32_t n = 30000;
    size_t *off = malloc(n * sizeof(size_t));
    buf d = make_pcap(n, off);
    size_t splits[2] = {off[10000], off[20000] + 5};   /* the third member starts inside a record */
    size_t member[3];
    buf z = gzip_members(&d, splits, 2, member);
    size_t second_start = member[1], third = member[2];
    size_t mid = second_start + (third - second_start) / 2;
    for (size_t i = mid; i < mid + 32; i++) z.p[i] ^= 0xA5;
    write_file(z.p, z.n);
    result r = read_all();
    CHECK(r.st.damage[FH_SRC_GZIP_CORRUPT] == 1);
    CHECK(r.st.resyncs >= 2);                        /* gzip resumed, then pcap resynchronised */
    CHECK(r.st.damage[FH_SRC_BAD_CAPLEN] + r.st.damage[FH_SRC_TRUNCATED_RECORD] >= 1);
    /* frames 0..9999 all there, then a prefix of the second member, then 20001..29999 */
    for (uint32_t i = 0; i < 10000; i++) CHECK(r.ids[i] == i);
    CHECK(r.n > 20000);
    for (uint32_t i = 0; i < 9999; i++) CHECK(r.ids[r.n - 9999 + i] == 20001 + i);
    CHECK(r.ids[r.n - 10000] < 20000 || r.ids[r.n - 10000] == BAD_FRAME);
    free(r.ids);
    free(z.p);
    free(d.p);
    free(off);
}

/* gzip whose CRC-32 trailer is wrong: every frame is delivered and the event says the check sum failed */
static void test_gzip_bad_crc(void) {
    uint32_t n = 3000;
    buf d = make_pcap(n, NULL);
    buf z = gzip_members(&d, NULL, 0, NULL);
    z.p[z.n - 8] ^= 0xFF;                       /* first byte of the CRC-32 */
    write_file(z.p, z.n);
    result r = read_all();
    check_all_but(&r, n, 1u << 30, 1u << 30);
    CHECK(r.st.damage[FH_SRC_GZIP_CORRUPT] == 1 && r.st.events_total == 1);
    CHECK(r.st.events[0].flags == (FH_SRC_EVENT_COMPRESSED | FH_SRC_EVENT_CHECKSUM));
    free(r.ids);
    free(z.p);
    free(d.p);
}

/* gzip cut short: truncated event, everything up to the cut delivered */
static void test_gzip_truncated(void) {
    uint32_t n = 5000;
    buf d = make_pcap(n, NULL);
    buf z = gzip_members(&d, NULL, 0, NULL);
    write_file(z.p, z.n * 3 / 4);
    result r = read_all();
    CHECK(r.st.damage[FH_SRC_GZIP_TRUNCATED] == 1);
    CHECK(r.n > n / 2 && r.n < n);
    for (size_t i = 0; i < r.n; i++) CHECK(r.ids[i] == i);
    free(r.ids);
    free(z.p);
    free(d.p);
}

/* a writer that puts origlen 0 in every record (caplen > origlen everywhere) is read whole, and a
 * damaged caplen in it is still resynchronised */
static void test_pcap_origlen_zero_writer(void) {
    uint32_t n = 400;
    size_t *off = malloc(n * sizeof(size_t));
    buf b = make_pcap(n, off);
    for (uint32_t i = 0; i < n; i++) fh_store_le32(b.p + off[i] + 12, 0);
    write_file(b.p, b.n);
    result r = read_all();
    check_all_but(&r, n, 1u << 30, 1u << 30);
    CHECK(r.st.damage[FH_SRC_CAPLEN_GT_ORIGLEN] == n && r.st.events_total == 0);
    free(r.ids);
    fh_store_le32(b.p + off[200] + 8, 0x00200000u);
    write_file(b.p, b.n);
    r = read_all();
    check_all_but(&r, n, 200, 200);
    CHECK(r.st.damage[FH_SRC_BAD_CAPLEN] == 1 && r.st.events[0].offset == off[200]);
    free(r.ids);
    free(b.p);
    free(off);
}

/* an undamaged file logs nothing */
static void test_clean(void) {
    buf b = make_pcap(1000, NULL);
    write_file(b.p, b.n);
    result r = read_all();
    check_all_but(&r, 1000, 1u << 30, 1u << 30);
    CHECK(total_damage(&r.st) == 0 && r.st.events_total == 0 && r.st.bytes_skipped == 0);
    free(r.ids);
    free(b.p);
    b = make_pcapng(1000, NULL);
    write_file(b.p, b.n);
    r = read_all();
    check_all_but(&r, 1000, 1u << 30, 1u << 30);
    CHECK(total_damage(&r.st) == 0 && r.st.events_total == 0);
    free(r.ids);
    free(b.p);
}

int main(void) {
    test_clean();
    test_pcap_huge_caplen();
    test_pcap_small_wrong_caplen();
    test_pcap_garbage_run_big_file();
    test_pcap_damage_at_end();
    test_pcap_origlen_zero_writer();
    test_pcapng_bad_block_length();
    test_pcapng_bad_second_section();
    test_gzip_corrupt_single_member();
    test_gzip_corrupt_multi_member();
    test_gzip_truncated();
    test_gzip_bad_crc();
    unlink(scratch_path());
    printf("test_capture_resync: ok\n");
    return 0;
}
