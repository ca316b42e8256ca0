/* fh/pcap.h - capture FILE sources: classic pcap, pcapng, NASDAQ BinaryFILE, each optionally gzipped.
 *
 * The format is detected from the bytes, never from the file name: zlib's gzread reads gzip members
 * and passes plain files through unchanged, and the first decompressed bytes pick the format
 * (pcap magics a1b2c3d4 / a1b23c4d in either byte order, the pcapng Section Header Block, or a
 * plausible run of BinaryFILE length-prefixed ITCH messages).
 *
 * Ownership and threading: an fh_filesrc belongs to one thread. fh_filesrc_next() fills an array of
 * fh_pkt whose `data` pointers point into the source's chunk buffer; they stay valid until the next
 * fh_filesrc_next() or fh_filesrc_close() on that source. The file is read in FH_FILESRC_CHUNK pieces,
 * never a call per packet (FH_FILESRC_READAHEAD bytes or more a read). It never crashes and never
 * reads past the bytes actually read.
 *
 * Damage (impossible lengths, truncated records, broken gzip streams) is counted by reason in
 * fh_filesrc_stats.damage, and each occurrence is logged as an fh_filesrc_event (the first
 * FH_FILESRC_MAX_EVENTS of them; `events_total` counts all) with its byte offset, how many bytes were
 * skipped and whether reading resumed. Where the format allows, the reader resynchronises instead of
 * stopping:
 * - classic pcap: a record header whose caplen is impossible (> FH_FILESRC_MAX_RECORD, or larger than
 *   both the snaplen and origlen, or larger than origlen with no plausible header after it) starts a
 *   byte-by-byte scan for the next plausible header: caplen 1..limit and <= origlen, fraction < 1 s,
 *   seconds within [-1 h, +1 day] of the last good record, and the header right after it plausible
 *   too (or the file ending exactly there);
 * - pcapng: a block with a bad length, a trailer that differs from it, or an unknown section byte
 *   order starts a scan for the next block of a known type whose length is sane, whose trailer
 *   repeats it and (EPB) whose interface and caplen fit;
 * - gzip: the decompressor is our own (inflate), so everything before a data error is delivered; the
 *   reader then looks for the next gzip member header (1f 8b 08) and resumes there when it finds one
 *   (a single-member file ends at the error);
 * - BinaryFILE has no framing to resynchronise on: damage ends input there.
 * Offsets are of the decompressed capture stream (for a plain file: the file offset); gzip events
 * carry the compressed file offset (flag FH_SRC_EVENT_COMPRESSED).
 */
#ifndef FH_PCAP_H
#define FH_PCAP_H

#include <stddef.h>
#include <stdint.h>

#define FH_FILESRC_CHUNK (4u << 20)        /* bytes: the chunk buffer (decompressed) */
/* bytes kept read ahead of the parser: small, so that bytes read() copies in are still in L2 when the
 * parser, the framer and the decoder read them (a 4 MiB read left them in L3 or memory) */
#define FH_FILESRC_READAHEAD (256u << 10)
#define FH_FILESRC_MAX_RECORD (1u << 20)   /* bytes: larger pcap records / pcapng blocks are garbage */
#define FH_FILESRC_MAX_IFACES 64           /* pcapng interfaces per section */

/* Private link types (not LINKTYPE_* values): how a source labels what a packet holds. */
#define FH_LINKTYPE_MESSAGE 0xFFFF         /* data is one protocol message (BinaryFILE) */

/* fh_pkt.flags: clock of ts_ns (same values as FH_MSG_TS_* in fh/msg.h) */
#define FH_PKT_TS_NONE 0
#define FH_PKT_TS_SW 2

/* One captured frame (or one BinaryFILE message). The batch element from any capture source. */
typedef struct fh_pkt {
    const uint8_t *data;    /* first captured byte */
    uint32_t caplen;        /* bytes at data */
    uint32_t origlen;       /* bytes on the wire (>= caplen when the capture cut the frame) */
    uint64_t ts_ns;         /* capture time, ns since UNIX epoch (0 when flags say TS_NONE) */
    uint16_t linktype;      /* LINKTYPE_* of the frame, or FH_LINKTYPE_MESSAGE */
    uint16_t flags;         /* FH_PKT_TS_* */
    uint32_t _reserved;
} fh_pkt;

_Static_assert(sizeof(fh_pkt) == 32, "fh_pkt is 32 bytes");

typedef enum fh_file_format {
    FH_FORMAT_UNKNOWN = 0,
    FH_FORMAT_PCAP = 1,         /* microsecond stamps */
    FH_FORMAT_PCAP_NS = 2,      /* nanosecond stamps */
    FH_FORMAT_PCAPNG = 3,
    FH_FORMAT_BINARYFILE = 4,
} fh_file_format;

/* Reasons a source counts damage (index into fh_filesrc_stats.damage). */
enum {
    FH_SRC_TRUNCATED_HEADER = 0,    /* file ends inside a file header (pcap global / pcapng SHB) */
    FH_SRC_TRUNCATED_RECORD,        /* file ends inside a record / block */
    FH_SRC_BAD_CAPLEN,              /* pcap record caplen impossible: resynchronised (see above) */
    FH_SRC_CAPLEN_GT_ORIGLEN,       /* record kept, origlen raised to caplen */
    FH_SRC_BAD_BLOCK_LENGTH,        /* pcapng block length < 12, not a multiple of 4, too large, or trailer
                                       differs: resynchronised on the next valid block */
    FH_SRC_BAD_BLOCK,               /* pcapng block body too short for its fields: block skipped */
    FH_SRC_NO_INTERFACE,            /* pcapng packet for an undeclared interface: skipped */
    FH_SRC_BAD_SECTION,             /* pcapng SHB with an unknown byte-order magic, or blocks before any SHB:
                                       resynchronised on the next valid block */
    FH_SRC_BAD_TIMESTAMP,           /* pcap fraction >= 1 s: kept */
    FH_SRC_GZIP_TRUNCATED,          /* gzip stream ends early */
    FH_SRC_GZIP_CORRUPT,            /* gzip data error (or a bad header / trailer): resumes at the next
                                       gzip member if there is one */
    FH_SRC_IO_ERROR,                /* read(2) failed */
    FH_SRC_N_DAMAGE
};

#define FH_FILESRC_MAX_EVENTS 32          /* damage events kept (the first ones) */
#define FH_SRC_EVENT_RESUMED 0x1           /* reading resumed after the skipped bytes */
#define FH_SRC_EVENT_COMPRESSED 0x2        /* offset is in the compressed (gzip) file */
#define FH_SRC_EVENT_CHECKSUM 0x4          /* gzip: the member's CRC-32 or length did not match at its end: the
                                              damage is somewhere in the member's data before (deflate
                                              decodes corrupt input to wrong bytes until it cannot go on) */

/* One occurrence of damage. */
typedef struct fh_filesrc_event {
    uint64_t offset;                /* bytes: where it was found (decompressed stream unless COMPRESSED) */
    uint64_t skipped;               /* bytes skipped (to the next good record, or to the end of input) */
    uint32_t reason;                /* FH_SRC_* */
    uint32_t flags;                 /* FH_SRC_EVENT_* */
} fh_filesrc_event;

_Static_assert(sizeof(fh_filesrc_event) == 24, "fh_filesrc_event is 24 bytes");

typedef struct fh_filesrc_stats {
    uint64_t bytes_read;            /* file bytes consumed so far (compressed bytes for gzip) */
    uint64_t total_bytes;           /* file size */
    uint64_t data_bytes;            /* decompressed bytes parsed */
    uint64_t packets;               /* packets (or BinaryFILE messages) delivered */
    uint64_t blocks_skipped;        /* pcapng blocks of other types (NRB, ISB, custom, ...) */
    uint64_t sections;              /* pcapng sections */
    uint64_t damage[FH_SRC_N_DAMAGE];
    uint32_t format;                /* fh_file_format */
    uint32_t gzip;                  /* 1 when the file is gzip-compressed */
    uint32_t linktype;              /* pcap: the file's link type; pcapng: the first interface's */
    uint32_t big_endian;            /* pcap/pcapng: the file was written big-endian */
    uint64_t bytes_skipped;         /* bytes of damage skipped, resynchronising or at the end */
    uint64_t resyncs;               /* times reading resumed after damage */
    uint64_t events_total;          /* damage events (events[] keeps the first FH_FILESRC_MAX_EVENTS) */
    fh_filesrc_event events[FH_FILESRC_MAX_EVENTS];
} fh_filesrc_stats;

typedef struct fh_filesrc fh_filesrc;

/* Errors of fh_filesrc_open (negative returns; other negatives are -errno). */
#define FH_SRC_EFORMAT (-10000)     /* bytes are no known capture format */
#define FH_SRC_EEMPTY (-10001)      /* the file is empty */
#define FH_SRC_ENOMEM (-10002)

/* Opens and detects the format. 0 on success (*out set), else a negative code and *out = NULL.
 * `err` (may be NULL) receives a human-readable reason. */
int fh_filesrc_open(fh_filesrc **out, const char *path, char *err, size_t errlen);
/* Fills pkts[0..cap) with the next packets; returns how many (0: end of input, check stats damage). */
size_t fh_filesrc_next(fh_filesrc *src, fh_pkt *pkts, size_t cap);
const fh_filesrc_stats *fh_filesrc_stats_get(const fh_filesrc *src);
void fh_filesrc_close(fh_filesrc *src);
const char *fh_filesrc_damage_name(int reason);
const char *fh_file_format_name(int format);

#endif
