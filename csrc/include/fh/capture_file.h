/* fh/capture_file.h - a capture file (pcap, pcapng, NASDAQ BinaryFILE, gzip: fh/pcap.h) replayed as a
 * live source: the `pcap` backend of `feedhandler run`, behind the same next/wake interface as AF_XDP,
 * DPDK and AF_PACKET, so the live framer, decoder, ring and books run exactly as they do on a NIC.
 *
 * Pace: speed 0 hands frames over as fast as the consumer takes them, with the capture's own stamps
 * (the records are byte for byte those of `feedhandler replay`). speed > 0 releases each frame when
 * its recorded time comes, scaled: due = start + (ts - ts_first) / speed (1.0 = the recorded pace);
 * its ts_ns is then that schedule on CLOCK_REALTIME (flag FH_MSG_TS_USER of fh/msg.h: a user-space
 * clock), so wire -> ring / book latencies are measured as on a live feed. Frames without a
 * stamp (BinaryFILE) cannot be paced and go at once (counted in `unstamped`).
 *
 * Ownership and threading: an fh_filelive belongs to one receive thread. Frames returned by
 * fh_filelive_next() stay valid until its NEXT call (the file source's chunk is kept until then).
 * fh_filelive_wake() (any thread) makes a waiting call return; fh_filelive_stats_get() reads a snapshot
 * from any thread. End of input: next() returns 0 and `eof` becomes 1 (damage is in the file stats).
 */
#ifndef FH_CAPTURE_FILE_H
#define FH_CAPTURE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "fh/pcap.h"

#define FH_FILELIVE_BATCH 4096u     /* frames read from the file per refill */

typedef struct fh_filelive_stats {
    uint64_t packets;               /* frames handed out */
    uint64_t bytes;
    uint64_t batches;               /* next() calls that returned frames */
    uint64_t waits;                 /* paced: waits for a frame's due time */
    uint64_t unstamped;             /* frames without a capture stamp (BinaryFILE): never paced, ts 0 */
    uint64_t behind_ns;             /* paced: most a frame was handed out after its due time */
    uint64_t eof;                   /* 1 once the file is exhausted */
} fh_filelive_stats;

typedef struct fh_filelive fh_filelive;

/* 0 or a negative errno / FH_SRC_E* code with a sentence in err. speed >= 0 (0: as fast as possible). */
int fh_filelive_open(fh_filelive **out, const char *path, double speed, char *err, size_t errlen);
size_t fh_filelive_next(void *src, fh_pkt *pkts, size_t cap, int timeout_ms);
void fh_filelive_wake(void *src);
void fh_filelive_stats_get(fh_filelive *s, fh_filelive_stats *out);
/* The file source itself (format, damage counters); valid until close. */
const fh_filesrc *fh_filelive_file(const fh_filelive *s);
void fh_filelive_close(fh_filelive *s);

#endif
