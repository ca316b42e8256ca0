/* pcap.c - capture file sources (see fh/pcap.h for the contract).
 *
 * One chunk buffer of FH_FILESRC_CHUNK bytes holds decompressed file bytes [pos, end). Records are
 * parsed in place and handed out as pointers into it; the buffer is compacted and refilled only at the
 * start of fh_filesrc_next() or when nothing has been handed out yet in the current call, so pointers
 * handed out by one call stay valid until the next. Every field is loaded with memcpy-based helpers
 * after a length check.
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

struct fh_filesrc {
    gzFile gz;
    uint8_t *buf;
    size_t pos, end;
    int eof;                /* no more bytes will come from the file */
    int done;               /* parsing stopped (end or unrecoverable damage) */
    int be;                 /* file byte order is big-endian */
    int ns;                 /* pcap: nanosecond stamps */
    uint16_t linktype;      /* pcap */
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

static inline uint16_t ld16(const fh_filesrc *s, const uint8_t *p) { return s->be ? fh_load_be16(p) : fh_load_le16(p); }
static inline uint32_t ld32(const fh_filesrc *s, const uint8_t *p) { return s->be ? fh_load_be32(p) : fh_load_le32(p); }

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
        s->pos = 0;
    }
    while (!s->eof && s->end - s->pos < want) {
        /* read at least FH_FILESRC_READAHEAD: zlib reads straight into our buffer from 2x its own
         * buffer size up (gzbuffer below), smaller reads would go through its buffer */
        size_t ask = want - (s->end - s->pos);
        if (ask < FH_FILESRC_READAHEAD) ask = FH_FILESRC_READAHEAD;
        if (ask > FH_FILESRC_CHUNK - s->end) ask = FH_FILESRC_CHUNK - s->end;
        int r = gzread(s->gz, s->buf + s->end, (unsigned)ask);
        if (r > 0) {
            s->end += (size_t)r;
            continue;
        }
        s->eof = 1;
        /* zlib reports a cut gzip stream as Z_BUF_ERROR, with 0 or -1 from gzread depending on version */
        int errnum = Z_OK;
        gzerror(s->gz, &errnum);
        if (errnum == Z_BUF_ERROR) s->st.damage[FH_SRC_GZIP_TRUNCATED]++;
        else if (errnum == Z_DATA_ERROR || errnum == Z_STREAM_ERROR) s->st.damage[FH_SRC_GZIP_CORRUPT]++;
        else if (errnum != Z_OK || r < 0) s->st.damage[FH_SRC_IO_ERROR]++;
    }
    s->st.bytes_read = (uint64_t)gzoffset(s->gz);
    if (s->eof) s->st.bytes_read = s->st.total_bytes;
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
                s->st.damage[FH_SRC_TRUNCATED_HEADER]++;
                s->done = 1;
                s->pos = n;
                return 0;
            }
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
    s->gz = gzdopen(fd, "rb");
    if (!s->gz) {
        close(fd);
        free(buf);
        free(s);
        if (err) snprintf(err, errlen, "%s: cannot open (zlib)", path);
        return FH_SRC_ENOMEM;
    }
    gzbuffer(s->gz, FH_FILESRC_READAHEAD / 2);
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
    if (s->gz) gzclose(s->gz);
    free(s->buf);
    free(s);
}

const fh_filesrc_stats *fh_filesrc_stats_get(const fh_filesrc *s) { return &s->st; }

/* Marks the end of input; if bytes remain undecodable at the end, counts `reason`. */
static void stop_at(fh_filesrc *s, int reason) {
    if (reason >= 0) s->st.damage[reason]++;
    s->done = 1;
    s->pos = s->end;
}

/* ---- classic pcap -------------------------------------------------------------------------- */
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
        if (caplen > FH_FILESRC_MAX_RECORD) {
            if (n) break;  /* report after handing out what we have */
            stop_at(s, FH_SRC_BAD_CAPLEN);
            break;
        }
        if (!avail(s, 16 + (size_t)caplen, n)) {
            if (n) break;
            stop_at(s, FH_SRC_TRUNCATED_RECORD);
            break;
        }
        h = s->buf + s->pos;
        if (caplen > origlen) {
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
                stop_at(s, FH_SRC_BAD_SECTION);
                break;
            }
            s->have_shb = 1;
            s->n_ifaces = 0;
            s->st.sections++;
            if (s->st.sections == 1) s->st.big_endian = (uint32_t)s->be;
        } else if (!s->have_shb) {
            if (n) break;
            stop_at(s, FH_SRC_BAD_SECTION);
            break;
        }
        btype = ld32(s, b);
        uint32_t blen = ld32(s, b + 4);
        if (blen < 12 || (blen & 3) || blen > FH_FILESRC_MAX_RECORD || (btype == PCAPNG_SHB && blen < 28)) {
            if (n) break;
            stop_at(s, FH_SRC_BAD_BLOCK_LENGTH);
            break;
        }
        if (!avail(s, blen, n)) {
            if (n) break;
            stop_at(s, FH_SRC_TRUNCATED_RECORD);
            break;
        }
        b = s->buf + s->pos;
        if (ld32(s, b + blen - 4) != blen) {
            if (n) break;
            stop_at(s, FH_SRC_BAD_BLOCK_LENGTH);
            break;
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
