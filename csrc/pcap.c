/* pcap.c - capture file sources (see fh/pcap.h for the contract).
 *
 * One chunk buffer of FH_FILESRC_CHUNK bytes holds decompressed file bytes [pos, end). Records are
 * parsed in place and handed out as pointers into it; the buffer is compacted and refilled only at the
 * start of fh_filesrc_next() or when nothing has been handed out yet in the current call, so pointers
 * handed out by one call stay valid until the next. Every field is loaded with memcpy-based helpers
 * after a length check. `base` is the stream offset of buf[0], so base + pos is the stream offset of
 * the next byte to parse (damage events report it).
 *
 * Bytes come from read(2) on plain files and through zlib's inflate() on gzip files (not gzread:
 * gzread drops what it decompressed in a call that ends in a data error, and cannot tell where the
 * error was). Resynchronisation after damage only ever happens with nothing handed out in the
 * current call (it may refill, which moves the buffer).
 */
#include "fh/pcap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fh/endian.h"

#define PCAPNG_SHB 0x0A0D0D0Au
#define PCAPNG_IDB 0x00000001u
#define PCAPNG_OPB 0x00000002u  /* obsolete Packet Block */
#define PCAPNG_SPB 0x00000003u
#define PCAPNG_EPB 0x00000006u
#define PCAPNG_BOM 0x1A2B3C4Du

typedef struct iface {
    uint16_t linktype;
    uint8_t tsresol;        /* pcapng if_tsresol byte (default 6) */
    uint32_t snaplen;
    int64_t tsoffset_s;     /* if_tsoffset, seconds */
} iface;

#define ZIN_BYTES (128u << 10)   /* bytes: compressed input buffer (gzip files) */

struct fh_filesrc {
    int fd;
    /* gzip input */
    z_stream zs;
    int z_init;             /* zs initialised */
    int z_member_done;      /* the last member ended cleanly (Z_STREAM_END) and no new one started */
    uint8_t *zin;
    size_t zin_pos, zin_end;
    uint64_t zin_off;       /* file offset of zin[0] */
    int file_eof;           /* read(2) returned 0 */
    uint64_t file_read;     /* file bytes read so far */
    /* decompressed bytes */
    uint8_t *buf;
    size_t pos, end;
    uint64_t base;          /* stream offset of buf[0] */
    uint64_t gap_at;        /* stream offset where bytes resume after skipped gzip damage (0: none) */
    int eof;                /* no more bytes will come from the file */
    int done;               /* parsing stopped (end or unrecoverable damage) */
    int be;                 /* file byte order is big-endian */
    int ns;                 /* pcap: nanosecond stamps */
    uint16_t linktype;      /* pcap */
    uint32_t snaplen;       /* pcap: the global header's snaplen */
    uint32_t caplimit;      /* pcap: largest caplen believed (FH_FILESRC_MAX_RECORD) */
    int have_last;          /* pcap: a good record was read (last_sec is set) */
    uint32_t last_sec;      /* pcap: seconds of the last good record */
    uint32_t jump_run;      /* pcap: records in a row outside the window around last_sec */
    int lax_origlen;        /* pcap: this writer puts caplen > origlen in good records (origlen 0, ...):
                               resynchronisation does not insist on caplen <= origlen */
    uint32_t n_ifaces;      /* pcapng: interfaces of the current section */
    int have_shb;
    iface ifaces[FH_FILESRC_MAX_IFACES];
    fh_filesrc_stats st;
};

static const char *const DAMAGE_NAMES[FH_SRC_N_DAMAGE] = {
    "truncated_header", "truncated_record", "bad_caplen", "caplen_gt_origlen", "bad_block_length",
    "bad_block", "no_interface", "bad_section", "bad_timestamp", "gzip_truncated", "gzip_corrupt",
    "io_error",
};

const char *fh_filesrc_damage_name(int reason) {
    return (reason >= 0 && reason < FH_SRC_N_DAMAGE) ? DAMAGE_NAMES[reason] : "?";
}

const char *fh_file_format_name(int format) {
    switch (format) {
    case FH_FORMAT_PCAP: return "pcap";
    case FH_FORMAT_PCAP_NS: return "pcap-ns";
    case FH_FORMAT_PCAPNG: return "pcapng";
    case FH_FORMAT_BINARYFILE: return "binaryfile";
    default: return "unknown";
    }
}

/* Logs one occurrence of damage (and counts it by reason). */
static void log_damage(fh_filesrc *s, int reason, uint64_t offset, uint64_t skipped, uint32_t flags) {
    s->st.damage[reason]++;
    s->st.bytes_skipped += skipped;
    if (flags & FH_SRC_EVENT_RESUMED) s->st.resyncs++;
    if (s->st.events_total < FH_FILESRC_MAX_EVENTS) {
        fh_filesrc_event *e = &s->st.events[s->st.events_total];
        e->offset = offset;
        e->skipped = skipped;
        e->reason = (uint32_t)reason;
        e->flags = flags;
    }
    s->st.events_total++;
}

static inline uint16_t ld16(const fh_filesrc *s, const uint8_t *p) { return s->be ? fh_load_be16(p) : fh_load_le16(p); }
static inline uint32_t ld32(const fh_filesrc *s, const uint8_t *p) { return s->be ? fh_load_be32(p) : fh_load_le32(p); }

/* read(2) into dst, retrying EINTR; 0 at end of file or on an error (counted). */
static size_t file_read(fh_filesrc *s, uint8_t *dst, size_t cap) {
    if (s->file_eof) return 0;
    for (;;) {
        ssize_t r = read(s->fd, dst, cap);
        if (r > 0) {
            s->file_read += (uint64_t)r;
            return (size_t)r;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) log_damage(s, FH_SRC_IO_ERROR, s->file_read, 0, 0);
        s->file_eof = 1;
        return 0;
    }
}

/* Makes compressed input available; 0 when the file is exhausted. */
static int zin_fill(fh_filesrc *s) {
    if (s->zin_pos < s->zin_end) return 1;
    s->zin_off += s->zin_end;
    s->zin_pos = s->zin_end = 0;
    s->zin_end = file_read(s, s->zin, ZIN_BYTES);
    return s->zin_end > 0;
}

/* After a gzip data error at compressed offset `at`: look for the next member header (1f 8b 08) and
 * restart inflate there. Returns 1 when one was found (the skipped bytes are logged). */
static int gz_resync(fh_filesrc *s, uint64_t at, uint64_t stream_at, uint32_t flags) {
    uint64_t skipped = 0;
    uint8_t prev1 = 0, prev2 = 0;   /* the two bytes before zin_pos (across refills) */
    int have = 0;
    for (;;) {
        if (!zin_fill(s)) break;
        while (s->zin_pos < s->zin_end) {
            uint8_t c = s->zin[s->zin_pos++];
            skipped++;
            if (have >= 2 && prev2 == 0x1f && prev1 == 0x8b && c == 0x08) {
                /* the member starts 2 bytes back: give those bytes back to inflate */
                skipped -= 3;
                if (s->zin_pos >= 3) {
                    s->zin_pos -= 3;
                } else {
                    /* the magic straddles a refill: rebuild it in front of the buffer */
                    size_t rest = s->zin_end - s->zin_pos;
                    memmove(s->zin + 3, s->zin + s->zin_pos, rest);
                    s->zin[0] = 0x1f; s->zin[1] = 0x8b; s->zin[2] = 0x08;
                    s->zin_off += s->zin_pos;
                    s->zin_off -= 3;
                    s->zin_pos = 0;
                    s->zin_end = rest + 3;
                }
                inflateReset(&s->zs);
                s->z_member_done = 0;
                s->gap_at = stream_at;
                log_damage(s, FH_SRC_GZIP_CORRUPT, at, skipped, flags | FH_SRC_EVENT_RESUMED | FH_SRC_EVENT_COMPRESSED);
                return 1;
            }
            prev2 = prev1;
            prev1 = c;
            if (have < 2) have++;
        }
    }
    log_damage(s, FH_SRC_GZIP_CORRUPT, at, skipped, flags | FH_SRC_EVENT_COMPRESSED);
    return 0;
}

/* Decompresses into dst (at most cap bytes); 0 when no more bytes will come (end or unrecoverable). */
static size_t gz_read(fh_filesrc *s, uint8_t *dst, size_t cap) {
    s->zs.next_out = dst;
    s->zs.avail_out = (uInt)cap;
    while (s->zs.avail_out > 0) {
        if (s->zin_pos >= s->zin_end && !zin_fill(s)) {
            if (!s->z_member_done) {
                /* the file ends inside a member */
                log_damage(s, FH_SRC_GZIP_TRUNCATED, s->file_read, 0, FH_SRC_EVENT_COMPRESSED);
                s->z_member_done = 1;
            }
            break;
        }
        if (s->z_member_done) {
            /* after a complete member: another member, or trailing bytes (ignored, as gzip does, when
             * they are zeros; otherwise damage) */
            if (s->zin[s->zin_pos] != 0x1f) {
                uint64_t at = s->zin_off + s->zin_pos;
                int zeros = 1;
                for (;;) {
                    for (; s->zin_pos < s->zin_end; s->zin_pos++) zeros &= s->zin[s->zin_pos] == 0;
                    if (!zin_fill(s)) break;
                }
                if (!zeros) log_damage(s, FH_SRC_GZIP_CORRUPT, at, s->file_read - at, FH_SRC_EVENT_COMPRESSED);
                break;
            }
            inflateReset(&s->zs);
            s->z_member_done = 0;
        }
        s->zs.next_in = s->zin + s->zin_pos;
        s->zs.avail_in = (uInt)(s->zin_end - s->zin_pos);
        int rc = inflate(&s->zs, Z_NO_FLUSH);
        s->zin_pos = s->zin_end - s->zs.avail_in;
        if (rc == Z_STREAM_END) {
            s->z_member_done = 1;
            continue;
        }
        if (rc == Z_OK || rc == Z_BUF_ERROR) continue;   /* Z_BUF_ERROR: needs more input */
        /* Z_DATA_ERROR (or Z_NEED_DICT / Z_MEM_ERROR / Z_STREAM_ERROR): what was inflated stays */
        uint64_t at = s->zin_off + s->zin_pos;
        uint64_t stream_at = s->base + (uint64_t)(dst - s->buf) + (cap - s->zs.avail_out);
        /* zlib's messages for the trailer checks: the data before was wrong, not the data after */
        uint32_t fl = (s->zs.msg && (strstr(s->zs.msg, "data check") || strstr(s->zs.msg, "length check")))
                          ? FH_SRC_EVENT_CHECKSUM : 0;
        if (!gz_resync(s, at, stream_at, fl)) {
            s->z_member_done = 1;
            s->file_eof = 1;
            s->zin_pos = s->zin_end;
            break;
        }
    }
    return cap - s->zs.avail_out;
}

/* Reads until `want` bytes (at least FH_FILESRC_READAHEAD, at most the chunk) are available at pos
 * or the file ends, FH_FILESRC_READAHEAD bytes or more a read; moves the unread bytes to the front
 * first when the chunk has no room behind them. Only between batches: it invalidates handed-out
 * pointers. */
static void refill(fh_filesrc *s, size_t want) {
    if (want < FH_FILESRC_READAHEAD) want = FH_FILESRC_READAHEAD;
    if (want > FH_FILESRC_CHUNK - FH_FILESRC_READAHEAD) want = FH_FILESRC_CHUNK - FH_FILESRC_READAHEAD;
    if (s->pos > 0 && s->pos + want + FH_FILESRC_READAHEAD > FH_FILESRC_CHUNK) {
        memmove(s->buf, s->buf + s->pos, s->end - s->pos);
        s->end -= s->pos;
        s->base += s->pos;
        s->pos = 0;
    }
    while (!s->eof && s->end - s->pos < want) {
        size_t ask = want - (s->end - s->pos);
        if (ask < FH_FILESRC_READAHEAD) ask = FH_FILESRC_READAHEAD;
        if (ask > FH_FILESRC_CHUNK - s->end) ask = FH_FILESRC_CHUNK - s->end;
        size_t r = s->st.gzip ? gz_read(s, s->buf + s->end, ask) : file_read(s, s->buf + s->end, ask);
        if (r > 0) {
            s->end += r;
            continue;
        }
        s->eof = 1;
    }
    s->st.bytes_read = s->eof ? s->st.total_bytes : s->file_read;
}

/* Makes at least n bytes available at pos when possible (may refill: only when nothing was handed
 * out in this call, i.e. `handed` == 0). Returns 1 when available, 0 when not (yet). */
static int avail(fh_filesrc *s, size_t n, size_t handed) {
    if (s->end - s->pos >= n) return 1;
    if (handed || s->eof) return 0;
    refill(s, n);
    return s->end - s->pos >= n;
}

/* ---- format detection ---------------------------------------------------------------------- */
static int plausible_binaryfile(const uint8_t *p, size_t n) {
    /* Up to 8 consecutive records: length 1..4096, message type an ASCII letter. */
    size_t off = 0;
    int good = 0;
    while (good < 8 && off + 2 <= n) {
        uint16_t len = fh_load_be16(p + off);
        if (len == 0 || len > 4096) return 0;
        if (off + 2 + len > n) break;  /* last record in the sample may be cut by the sample size */
        uint8_t t = p[off + 2];
        if (!((t >= 'A' && t <= 'Z') || (t >= 'a' && t <= 'z'))) return 0;
        good++;
        off += 2 + (size_t)len;
    }
    return good >= 1;
}

static int detect(fh_filesrc *s, char *err, size_t errlen) {
    const uint8_t *p = s->buf;
    size_t n = s->end;
    if (n == 0) {
        if (err) snprintf(err, errlen, "the file is empty");
        return FH_SRC_EEMPTY;
    }
    if (n >= 4) {
        uint32_t le = fh_load_le32(p), be = fh_load_be32(p);
        if (le == 0xA1B2C3D4u || be == 0xA1B2C3D4u || le == 0xA1B23C4Du || be == 0xA1B23C4Du) {
            s->be = (be == 0xA1B2C3D4u || be == 0xA1B23C4Du);
            s->ns = (ld32(s, p) == 0xA1B23C4Du);
            s->st.format = s->ns ? FH_FORMAT_PCAP_NS : FH_FORMAT_PCAP;
            s->st.big_endian = (uint32_t)s->be;
            if (n < 24) {
                log_damage(s, FH_SRC_TRUNCATED_HEADER, 0, n, 0);
                s->done = 1;
                s->pos = n;
                return 0;
            }
            s->snaplen = ld32(s, p + 16);
            s->caplimit = FH_FILESRC_MAX_RECORD;
            s->linktype = (uint16_t)(ld32(s, p + 20) & 0xFFFF);
            s->st.linktype = s->linktype;
            s->pos = 24;
            return 0;
        }
        if (le == PCAPNG_SHB) {
            s->st.format = FH_FORMAT_PCAPNG;
            if (n >= 12) s->st.big_endian = fh_load_be32(p + 8) == PCAPNG_BOM;
            return 0;  /* the SHB is parsed as the first block */
        }
    }
    if (plausible_binaryfile(p, n)) {
        s->st.format = FH_FORMAT_BINARYFILE;
        return 0;
    }
    if (err) {
        snprintf(err, errlen,
                 "unknown capture format (first bytes %02x %02x %02x %02x): expected pcap, pcapng or "
                 "NASDAQ BinaryFILE, optionally gzip-compressed",
                 p[0], n > 1 ? p[1] : 0, n > 2 ? p[2] : 0, n > 3 ? p[3] : 0);
    }
    return FH_SRC_EFORMAT;
}

int fh_filesrc_open(fh_filesrc **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (err) snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat stb;
    if (fstat(fd, &stb) != 0 || S_ISDIR(stb.st_mode)) {
        int e = S_ISDIR(stb.st_mode) ? EISDIR : errno;
        close(fd);
        if (err) snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    fh_filesrc *s = calloc(1, sizeof(*s));
    uint8_t *buf = malloc(FH_FILESRC_CHUNK);
    if (!s || !buf) {
        free(s);
        free(buf);
        close(fd);
        if (err) snprintf(err, errlen, "out of memory");
        return FH_SRC_ENOMEM;
    }
    uint8_t magic[2] = {0, 0};
    ssize_t got = pread(fd, magic, 2, 0);
    s->st.gzip = (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b);
    s->st.total_bytes = (uint64_t)stb.st_size;
    s->buf = buf;
    s->fd = fd;
    if (s->st.gzip) {
        s->zin = malloc(ZIN_BYTES + 8);   /* + slack: gz_resync may put a member magic back in front */
        /* 16 + MAX_WBITS: a gzip wrapper (header and CRC-32/size trailer are checked) */
        if (!s->zin || inflateInit2(&s->zs, 16 + MAX_WBITS) != Z_OK) {
            fh_filesrc_close(s);
            if (err) snprintf(err, errlen, "out of memory");
            return FH_SRC_ENOMEM;
        }
        s->z_init = 1;
    }
    refill(s, FH_FILESRC_READAHEAD);
    int rc = detect(s, err, errlen);
    if (rc != 0) {
        fh_filesrc_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void fh_filesrc_close(fh_filesrc *s) {
    if (!s) return;
    if (s->z_init) inflateEnd(&s->zs);
    if (s->fd >= 0) close(s->fd);
    free(s->zin);
    free(s->buf);
    free(s);
}

const fh_filesrc_stats *fh_filesrc_stats_get(const fh_filesrc *s) { return &s->st; }

/* Marks the end of input; if bytes remain undecodable at the end, logs `reason` for them. */
static void stop_at(fh_filesrc *s, int reason) {
    if (reason >= 0) log_damage(s, reason, s->base + s->pos, s->end - s->pos, 0);
    s->done = 1;
    s->pos = s->end;
}

/* ---- classic pcap -------------------------------------------------------------------------- */
#define PCAP_RESYNC_BACK_S 3600u      /* s: a resync candidate may be this much older than the last record */
#define PCAP_RESYNC_AHEAD_S 86400u    /* s: ... or this much newer */
#define PCAP_JUMP_RECORDS 8u          /* records in a row that make a time jump out of the window real */

/* Could h (16 bytes) be a record header as it stands? Lengths only: what the parser insists on. */
static int pcap_len_ok(const fh_filesrc *s, uint32_t caplen, uint32_t origlen) {
    if (caplen > s->caplimit) return 0;
    /* bigger than the snaplen AND than the wire length: no writer does that */
    if (s->snaplen >= 64 && caplen > s->snaplen && caplen > origlen) return 0;
    return 1;
}

/* Is h a plausible record header for resynchronisation (stricter than pcap_len_ok)? `sec_ref` is the
 * seconds of a neighbouring good record when have_ref. */
static int pcap_candidate(const fh_filesrc *s, const uint8_t *h, int have_ref, uint32_t sec_ref) {
    uint32_t sec = ld32(s, h), frac = ld32(s, h + 4), caplen = ld32(s, h + 8), origlen = ld32(s, h + 12);
    if (caplen == 0 || origlen > FH_FILESRC_MAX_RECORD || !pcap_len_ok(s, caplen, origlen)) return 0;
    if (caplen > origlen && !s->lax_origlen) return 0;
    if (s->snaplen >= 64 && s->snaplen < FH_FILESRC_MAX_RECORD && caplen > s->snaplen) return 0;
    if (frac >= (s->ns ? 1000000000u : 1000000u)) return 0;
    if (have_ref && ((uint64_t)sec + PCAP_RESYNC_BACK_S < sec_ref || sec > (uint64_t)sec_ref + PCAP_RESYNC_AHEAD_S))
        return 0;
    return 1;
}

/* Does a record of len bytes at pos run across the point where skipped gzip damage left a hole? */
static inline int crosses_gap(const fh_filesrc *s, size_t len) {
    uint64_t at = s->base + s->pos;
    return s->gap_at > at && s->gap_at < at + len;
}

/* The record header at pos is damaged: scan forward, byte by byte from scan_from, for the next
 * plausible header (not across a gzip hole) whose seconds are within [-1 h, +1 day] of the last good
 * record and which a plausible header right after it confirms (close in time to it); with no good
 * record yet, two confirming successors. A candidate whose successors run past the end of the file
 * is taken when it ends exactly there. Logs the damage with the bytes skipped; ends input
 * when nothing plausible follows. Only with nothing handed out (it refills). */
/* Do `need` plausible headers follow the candidate at pos, each close in time to the one before, with
 * no record across a gzip hole? (Or does the chain end exactly at the end of the file?) */
static int pcap_confirmed(fh_filesrc *s, int need) {
    size_t off = 0;
    for (int k = 0;; k++) {
        const uint8_t *h = s->buf + s->pos;
        size_t rec = 16 + (size_t)ld32(s, h + off + 8);
        if (crosses_gap(s, off + rec)) return 0;
        if (k == need) return 1;
        if (!avail(s, off + rec + 16, 0)) return s->eof && s->end - s->pos == off + rec;
        h = s->buf + s->pos;
        if (!pcap_candidate(s, h + off + rec, 1, ld32(s, h + off))) return 0;
        off += rec;
    }
}

static void pcap_resync_from(fh_filesrc *s, int reason, int reason_at_end, uint64_t scan_from) {
    uint64_t start = s->base + s->pos;
    s->pos = (size_t)(scan_from - s->base);
    for (;;) {
        if (!avail(s, 16, 0)) break;
        const uint8_t *h = s->buf + s->pos;
        if (pcap_candidate(s, h, s->have_last, s->last_sec) && pcap_confirmed(s, s->have_last ? 1 : 2)) break;
        s->pos++;
    }
    uint64_t here = s->base + s->pos;
    if (s->end - s->pos >= 16) {
        log_damage(s, reason, start, here - start, FH_SRC_EVENT_RESUMED);
        return;
    }
    /* nothing plausible up to the end of the file */
    log_damage(s, reason_at_end, start, s->base + s->end - start, 0);
    s->done = 1;
    s->pos = s->end;
}

static void pcap_resync(fh_filesrc *s, int reason, int reason_at_end) {
    pcap_resync_from(s, reason, reason_at_end, s->base + s->pos + 1);
}

static size_t next_pcap(fh_filesrc *s, fh_pkt *pkts, size_t cap) {
    size_t n = 0;
    while (n < cap && !s->done) {
        if (!avail(s, 16, n)) {
            if (n) break;
            if (s->end > s->pos) stop_at(s, FH_SRC_TRUNCATED_RECORD);
            else stop_at(s, -1);
            break;
        }
        const uint8_t *h = s->buf + s->pos;
        uint32_t sec = ld32(s, h), frac = ld32(s, h + 4), caplen = ld32(s, h + 8), origlen = ld32(s, h + 12);
        if (!pcap_len_ok(s, caplen, origlen)) {
            if (n) break;  /* hand out what we have first: resynchronising may move the buffer */
            pcap_resync(s, FH_SRC_BAD_CAPLEN, FH_SRC_BAD_CAPLEN);
            continue;
        }
        if (!avail(s, 16 + (size_t)caplen, n)) {
            if (n || !s->eof) break;
            /* the file ends inside this record; a damaged caplen would look the same: a plausible
             * record further on means it was damage, not a cut */
            if (s->eof) pcap_resync(s, FH_SRC_BAD_CAPLEN, FH_SRC_TRUNCATED_RECORD);
            continue;
        }
        if (crosses_gap(s, 16 + (size_t)caplen)) {
            /* its bytes are not one record: the gzip damage cut it; go on from the hole */
            if (n) break;
            pcap_resync_from(s, FH_SRC_TRUNCATED_RECORD, FH_SRC_TRUNCATED_RECORD, s->gap_at);
            continue;
        }
        h = s->buf + s->pos;
        if (caplen > origlen) {
            /* the first time: keep it only when a plausible header follows it (else caplen itself is the
             * damage); once such a record was good, this writer does it (origlen 0 in every record, ...)
             * and records are taken as before, their lengths checked like any other */
            size_t rec = 16 + (size_t)caplen;
            if (!s->lax_origlen && s->end - s->pos >= rec + 16) {
                int lax = s->lax_origlen;
                s->lax_origlen = 1;
                int ok = pcap_candidate(s, h + rec, 1, sec);
                s->lax_origlen = lax;
                if (!ok) {
                    if (n) break;
                    pcap_resync(s, FH_SRC_BAD_CAPLEN, FH_SRC_BAD_CAPLEN);
                    continue;
                }
            }
            s->lax_origlen = 1;
            s->st.damage[FH_SRC_CAPLEN_GT_ORIGLEN]++;
            origlen = caplen;
        }
        uint64_t div = s->ns ? 1000000000u : 1000000u;
        if (frac >= div) s->st.damage[FH_SRC_BAD_TIMESTAMP]++;
        fh_pkt *p = &pkts[n++];
        p->data = h + 16;
        p->caplen = caplen;
        p->origlen = origlen;
        p->ts_ns = (uint64_t)sec * 1000000000u + (s->ns ? (uint64_t)frac : (uint64_t)frac * 1000u);
        p->linktype = s->linktype;
        p->flags = FH_PKT_TS_SW;
        p->_reserved = 0;
        s->pos += 16 + (size_t)caplen;
        s->st.data_bytes += 16 + (uint64_t)caplen;
        /* the time reference of resynchronisation: follows the records, but a jump out of the window
         * is believed only after PCAP_JUMP_RECORDS records agree (a few records of garbage that
         * looked like records must not move it) */
        if (!s->have_last || ((uint64_t)sec + PCAP_RESYNC_BACK_S >= s->last_sec &&
                              sec <= (uint64_t)s->last_sec + PCAP_RESYNC_AHEAD_S)) {
            s->last_sec = sec;
            s->jump_run = 0;
        } else if (++s->jump_run >= PCAP_JUMP_RECORDS) {
            s->last_sec = sec;
            s->jump_run = 0;
        }
        s->have_last = 1;
    }
    s->st.packets += n;
    return n;
}

/* ---- pcapng -------------------------------------------------------------------------------- */
static uint64_t pcapng_ts_ns(const iface *f, uint64_t ts) {
    uint8_t r = f->tsresol;
    uint64_t ns;
    if (r & 0x80) {
        unsigned sh = r & 0x7F;
        if (sh >= 64) return 0;
        unsigned __int128 v = ((unsigned __int128)ts * 1000000000u) >> sh;
        ns = (uint64_t)v;
    } else if (r <= 9) {
        static const uint64_t mul[10] = {1000000000u, 100000000u, 10000000u, 1000000u, 100000u,
                                         10000u, 1000u, 100u, 10u, 1u};
        ns = ts * mul[r];
    } else {
        uint64_t d = 1;
        for (unsigned i = 9; i < r && i < 28; i++) d *= 10;
        if (r >= 28) return 0;
        ns = ts / d;
    }
    return ns + (uint64_t)(f->tsoffset_s * 1000000000LL);
}

static void parse_idb(fh_filesrc *s, const uint8_t *b, uint32_t blen) {
    /* b points at the block start; body is b[8 .. blen-4) */
    if (blen < 20) {
        s->st.damage[FH_SRC_BAD_BLOCK]++;
        return;
    }
    if (s->n_ifaces >= FH_FILESRC_MAX_IFACES) {
        s->st.damage[FH_SRC_BAD_BLOCK]++;
        return;
    }
    iface *f = &s->ifaces[s->n_ifaces++];
    f->linktype = ld16(s, b + 8);
    f->snaplen = ld32(s, b + 12);
    f->tsresol = 6;
    f->tsoffset_s = 0;
    if (s->n_ifaces == 1 && s->st.sections == 1) s->st.linktype = f->linktype;
    size_t off = 16, lim = blen - 4;
    while (off + 4 <= lim) {
        uint16_t code = ld16(s, b + off), olen = ld16(s, b + off + 2);
        if (code == 0) break;
        if (off + 4 + (size_t)olen > lim) {
            s->st.damage[FH_SRC_BAD_BLOCK]++;
            break;
        }
        if (code == 9 && olen >= 1) f->tsresol = b[off + 4];
        if (code == 14 && olen >= 8) {
            uint64_t v = s->be ? fh_load_be64(b + off + 4) : fh_load_le64(b + off + 4);
            f->tsoffset_s = (int64_t)v;
        }
        off += 4 + (((size_t)olen + 3) & ~(size_t)3);
    }
}

/* Is the type known to pcapng (so that a scan may stop on it)? */
static int pcapng_known_type(uint32_t t) {
    return t == PCAPNG_SHB || t == PCAPNG_IDB || t == PCAPNG_OPB || t == PCAPNG_SPB || t == PCAPNG_EPB ||
           t == 4 /* NRB */ || t == 5 /* ISB */ || t == 9 /* systemd journal */ || t == 10 /* DSB */ ||
           t == 0x00000BADu || t == 0x40000BADu /* custom */;
}

/* Type and length of the block at b (12 bytes available) in this section's byte order, 1 when the
 * header is sane (an SHB brings its own byte order). */
static int pcapng_head(const fh_filesrc *s, const uint8_t *b, uint32_t *type, uint32_t *blen) {
    if (fh_load_le32(b) == PCAPNG_SHB) {
        int be;
        if (fh_load_le32(b + 8) == PCAPNG_BOM) be = 0;
        else if (fh_load_be32(b + 8) == PCAPNG_BOM) be = 1;
        else return 0;
        *type = PCAPNG_SHB;
        *blen = be ? fh_load_be32(b + 4) : fh_load_le32(b + 4);
        return *blen >= 28 && !(*blen & 3) && *blen <= FH_FILESRC_MAX_RECORD;
    }
    if (!s->have_shb) return 0;
    *type = ld32(s, b);
    *blen = ld32(s, b + 4);
    return pcapng_known_type(*type) && *blen >= 12 && !(*blen & 3) && *blen <= FH_FILESRC_MAX_RECORD;
}

/* The block at pos is damaged: scan forward for a block of a known type with a sane length repeated
 * in its trailer (EPB: interface declared, caplen fits) and a sane block header after it (or the end
 * of the file). Logs the damage; ends input when there is none. Only with nothing handed out. */
static void pcapng_resync_from(fh_filesrc *s, int reason, int reason_at_end, uint64_t scan_from) {
    uint64_t start = s->base + s->pos;
    s->pos = (size_t)(scan_from - s->base);
    for (;;) {
        if (!avail(s, 12, 0)) break;
        uint32_t type, blen;
        if (pcapng_head(s, s->buf + s->pos, &type, &blen) && avail(s, blen, 0)) {
            const uint8_t *b = s->buf + s->pos;
            int be = s->be;
            if (type == PCAPNG_SHB) s->be = fh_load_be32(b + 8) == PCAPNG_BOM;   /* for ld32 of the trailer */
            int ok = ld32(s, b + blen - 4) == blen;
            if (ok && type == PCAPNG_EPB)
                ok = blen >= 32 && ld32(s, b + 8) < s->n_ifaces && ld32(s, b + 20) <= blen - 32;
            if (ok && type == PCAPNG_SPB) ok = s->n_ifaces > 0;
            if (ok) {
                uint32_t t2, l2;
                if (avail(s, (size_t)blen + 12, 0)) {
                    ok = pcapng_head(s, s->buf + s->pos + blen, &t2, &l2);
                } else {
                    ok = s->eof && s->end - s->pos == blen;
                }
            }
            s->be = be;
            if (ok) break;
        }
        s->pos++;
    }
    uint64_t here = s->base + s->pos;
    if (s->end - s->pos >= 12) {
        log_damage(s, reason, start, here - start, FH_SRC_EVENT_RESUMED);
        return;
    }
    log_damage(s, reason_at_end, start, s->base + s->end - start, 0);
    s->done = 1;
    s->pos = s->end;
}

static void pcapng_resync(fh_filesrc *s, int reason, int reason_at_end) {
    pcapng_resync_from(s, reason, reason_at_end, s->base + s->pos + 1);
}

static size_t next_pcapng(fh_filesrc *s, fh_pkt *pkts, size_t cap) {
    size_t n = 0;
    while (n < cap && !s->done) {
        if (!avail(s, 12, n)) {
            if (n) break;
            stop_at(s, s->end > s->pos ? FH_SRC_TRUNCATED_RECORD : -1);
            break;
        }
        const uint8_t *b = s->buf + s->pos;
        uint32_t btype = fh_load_le32(b);  /* SHB type is a palindrome; others are read below */
        if (btype == PCAPNG_SHB) {
            uint32_t bom_le = fh_load_le32(b + 8);
            if (bom_le == PCAPNG_BOM) s->be = 0;
            else if (fh_load_be32(b + 8) == PCAPNG_BOM) s->be = 1;
            else {
                if (n) break;
                pcapng_resync(s, FH_SRC_BAD_SECTION, FH_SRC_BAD_SECTION);
                continue;
            }
            s->have_shb = 1;
            s->n_ifaces = 0;
            s->st.sections++;
            if (s->st.sections == 1) s->st.big_endian = (uint32_t)s->be;
        } else if (!s->have_shb) {
            if (n) break;
            pcapng_resync(s, FH_SRC_BAD_SECTION, FH_SRC_BAD_SECTION);
            continue;
        }
        btype = ld32(s, b);
        uint32_t blen = ld32(s, b + 4);
        if (blen < 12 || (blen & 3) || blen > FH_FILESRC_MAX_RECORD || (btype == PCAPNG_SHB && blen < 28)) {
            if (n) break;
            pcapng_resync(s, FH_SRC_BAD_BLOCK_LENGTH, FH_SRC_BAD_BLOCK_LENGTH);
            continue;
        }
        if (!avail(s, blen, n)) {
            if (n || !s->eof) break;
            /* the file ends inside this block, or its length is damaged: a valid block further on tells */
            pcapng_resync(s, FH_SRC_BAD_BLOCK_LENGTH, FH_SRC_TRUNCATED_RECORD);
            continue;
        }
        if (crosses_gap(s, blen)) {
            if (n) break;
            pcapng_resync_from(s, FH_SRC_TRUNCATED_RECORD, FH_SRC_TRUNCATED_RECORD, s->gap_at);
            continue;
        }
        b = s->buf + s->pos;
        if (ld32(s, b + blen - 4) != blen) {
            if (n) break;
            pcapng_resync(s, FH_SRC_BAD_BLOCK_LENGTH, FH_SRC_BAD_BLOCK_LENGTH);
            continue;
        }
        s->pos += blen;
        s->st.data_bytes += blen;
        uint32_t ifid = 0, caplen = 0, origlen = 0;
        uint64_t ts = 0;
        const uint8_t *data = NULL;
        int has_ts = 1;
        switch (btype) {
        case PCAPNG_SHB:
            continue;
        case PCAPNG_IDB:
            parse_idb(s, b, blen);
            continue;
        case PCAPNG_EPB:
            if (blen < 32) { s->st.damage[FH_SRC_BAD_BLOCK]++; continue; }
            ifid = ld32(s, b + 8);
            ts = ((uint64_t)ld32(s, b + 12) << 32) | ld32(s, b + 16);
            caplen = ld32(s, b + 20);
            origlen = ld32(s, b + 24);
            if ((uint64_t)caplen > (uint64_t)blen - 32) { s->st.damage[FH_SRC_BAD_BLOCK]++; continue; }
            data = b + 28;
            break;
        case PCAPNG_OPB:
            if (blen < 32) { s->st.damage[FH_SRC_BAD_BLOCK]++; continue; }
            ifid = ld16(s, b + 8);
            ts = ((uint64_t)ld32(s, b + 12) << 32) | ld32(s, b + 16);
            caplen = ld32(s, b + 20);
            origlen = ld32(s, b + 24);
            if ((uint64_t)caplen > (uint64_t)blen - 32) { s->st.damage[FH_SRC_BAD_BLOCK]++; continue; }
            data = b + 28;
            break;
        case PCAPNG_SPB:
            if (blen < 16) { s->st.damage[FH_SRC_BAD_BLOCK]++; continue; }
            origlen = ld32(s, b + 8);
            caplen = blen - 16;
            if (origlen < caplen) caplen = origlen;
            if (s->n_ifaces > 0 && s->ifaces[0].snaplen && caplen > s->ifaces[0].snaplen)
                caplen = s->ifaces[0].snaplen;
            data = b + 12;
            has_ts = 0;
            break;
        default:
            s->st.blocks_skipped++;
            continue;
        }
        if (ifid >= s->n_ifaces) {
            s->st.damage[FH_SRC_NO_INTERFACE]++;
            continue;
        }
        if (caplen > origlen) {
            s->st.damage[FH_SRC_CAPLEN_GT_ORIGLEN]++;
            origlen = caplen;
        }
        fh_pkt *p = &pkts[n++];
        p->data = data;
        p->caplen = caplen;
        p->origlen = origlen;
        p->ts_ns = has_ts ? pcapng_ts_ns(&s->ifaces[ifid], ts) : 0;
        p->linktype = s->ifaces[ifid].linktype;
        p->flags = has_ts ? FH_PKT_TS_SW : FH_PKT_TS_NONE;
        p->_reserved = 0;
    }
    s->st.packets += n;
    return n;
}

/* ---- NASDAQ BinaryFILE ----------------------------------------------------------------------- */
static size_t next_binaryfile(fh_filesrc *s, fh_pkt *pkts, size_t cap) {
    size_t n = 0;
    while (n < cap && !s->done) {
        if (!avail(s, 2, n)) {
            if (n) break;
            stop_at(s, s->end > s->pos ? FH_SRC_TRUNCATED_RECORD : -1);
            break;
        }
        uint32_t len = fh_load_be16(s->buf + s->pos);
        if (!avail(s, 2 + (size_t)len, n)) {
            if (n) break;
            stop_at(s, FH_SRC_TRUNCATED_RECORD);
            break;
        }
        if (crosses_gap(s, 2 + (size_t)len)) {
            /* BinaryFILE has nothing to resynchronise on after a hole: input ends at the message it cut */
            if (n) break;
            stop_at(s, FH_SRC_TRUNCATED_RECORD);
            break;
        }
        fh_pkt *p = &pkts[n++];
        p->data = s->buf + s->pos + 2;
        p->caplen = len;
        p->origlen = len;
        p->ts_ns = 0;
        p->linktype = FH_LINKTYPE_MESSAGE;
        p->flags = FH_PKT_TS_NONE;
        p->_reserved = 0;
        s->pos += 2 + (size_t)len;
        s->st.data_bytes += 2 + (uint64_t)len;
    }
    s->st.packets += n;
    return n;
}

size_t fh_filesrc_next(fh_filesrc *s, fh_pkt *pkts, size_t cap) {
    if (s->done || cap == 0) return 0;
    /* The previous batch is released: top up the read-ahead now (avail() refills for a bigger record). */
    if (s->end - s->pos < FH_FILESRC_READAHEAD && !s->eof) refill(s, FH_FILESRC_READAHEAD);
    switch (s->st.format) {
    case FH_FORMAT_PCAP:
    case FH_FORMAT_PCAP_NS: return next_pcap(s, pkts, cap);
    case FH_FORMAT_PCAPNG: return next_pcapng(s, pkts, cap);
    case FH_FORMAT_BINARYFILE: return next_binaryfile(s, pkts, cap);
    default: return 0;
    }
}
