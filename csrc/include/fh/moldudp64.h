/* fh/moldudp64.h - MoldUDP64 downstream packets, per-session sequencing, and the framer that turns a
 * batch of captured frames (fh_pkt from any capture source) into a batch of fh_msg for a decoder.
 *
 * MoldUDP64 downstream packet (all big-endian):
 *   session[10] | sequence u64 (of the first message) | count u16 | count x (length u16, message)
 *   count 0 = heartbeat (sequence = next expected), count 0xFFFF = end of session.
 *
 * Sequencing, per session (each session gets a channel index in order of first appearance):
 *   - the first packet of a session sets the expected sequence (nothing before it is reported);
 *   - packets entirely below the expected sequence are duplicates (dropped, counted); packets that
 *     overlap it deliver only their new messages;
 *   - a packet beyond the expected sequence opens a gap (an FH_GAP_OPENED record for the newly missing
 *     range) and is HELD (copied) in a reorder window of `reorder_window` packets; when the hole fills,
 *     the late messages (FH_GAP_FILLED record) and then the held packets are applied strictly in order;
 *   - when the window overflows, or at end of input, the front hole is given up: an FH_GAP_LOST record,
 *     the range is added to the missing list (for retransmission requests), the stream continues and
 *     the next delivered message carries FH_MSG_AFTER_GAP;
 *   - end of session, once applied in order, emits FH_GAP_RESET; a new session after another emits
 *     FH_GAP_RESET too.
 * With `no_sequencing` set, none of this happens: every message of every packet is delivered in
 * arrival order, numbered consecutively per session from the first packet's sequence number (for
 * streams whose sequence numbers carry no information, e.g. all 0: sequenced, 4 of 5 such packets
 * would be dropped as duplicates; `zero_sequence_packets` counts data packets with sequence 0 so
 * that the caller can say so).
 * NASDAQ BinaryFILE packets (linktype FH_LINKTYPE_MESSAGE) bypass all of it: message i (1-based) gets
 * sequence i, ts_recv 0 and FH_MSG_TS_NONE.
 *
 * Output: gap records travel in the message stream at their position as marker messages with
 * FH_MSG_RECORD in flags, len 0 and data pointing at a ready 64-byte fh_tick (the gap record); the
 * driver copies them into the record stream between decoder calls.
 *
 * Ownership and threading: an fh_framer belongs to one thread. fh_framer_run() returns messages that
 * point into the current input batch or into the framer's held-packet copies; they are valid until the
 * next fh_framer_run()/fh_framer_finish()/fh_framer_free(). The caller keeps the input batch alive until
 * fh_framer_input_done() says it is consumed AND the messages of the last run are decoded. The hot path
 * allocates nothing except when a held-packet slot first grows to a larger packet.
 */
#ifndef FH_MOLDUDP64_H
#define FH_MOLDUDP64_H

#include <stddef.h>
#include <stdint.h>

#include "fh/msg.h"
#include "fh/net.h"
#include "fh/pcap.h"
#include "fh/record.h"

#define FH_MSG_RECORD 0x8000          /* fh_msg.flags: marker, data points at a ready fh_tick */

#define FH_MOLD_HEADER 20             /* bytes: session 10 + sequence 8 + count 2 */
#define FH_MOLD_HEARTBEAT 0
#define FH_MOLD_END_OF_SESSION 0xFFFF
#define FH_MOLD_SESSION_LEN 10

#define FH_MOLD_MAX_SESSIONS 16       /* sessions tracked per framer; more are counted and dropped */
#define FH_MOLD_MAX_WINDOW 4096       /* packets: upper bound of reorder_window */
#define FH_MOLD_MAX_FILTER 8          /* session names in a filter */
#define FH_FRAMER_MSG_CAP (1u << 16)  /* messages per run (> the 32743 a 64 KiB datagram can hold) */
#define FH_FRAMER_REC_CAP (1u << 13)  /* gap records per run (> FH_MOLD_MAX_WINDOW + a few) */

enum {
    FH_MOLD_SHORT_HEADER = 0,     /* payload < 20 bytes: dropped */
    FH_MOLD_TRUNCATED_MESSAGE,    /* count promises more messages than the payload holds: the complete
                                     ones are kept, the rest become a hole */
    FH_MOLD_TRAILING_BYTES,       /* bytes after the last message: ignored */
    FH_MOLD_TOO_MANY_SESSIONS,    /* dropped */
    FH_MOLD_SEQUENCE_OVERFLOW,    /* sequence + count wraps 2^64: dropped */
    FH_MOLD_N_MALFORMED
};

typedef struct fh_framer_config {
    uint32_t reorder_window;      /* packets held waiting for a hole to fill (0: a hole is lost at once) */
    uint32_t reorder_window_msgs; /* messages held; 0 = no message bound */
    uint32_t dst_ip;              /* host order; 0 = any (filter on multicast group) */
    uint16_t dst_port;            /* 0 = any */
    uint16_t publisher_id;        /* written into gap records */
    uint64_t channel_mask;        /* bit c keeps channel c (c < 64); 0 = keep all */
    uint32_t n_session_filter;    /* > 0: only these sessions are sequenced */
    char session_filter[FH_MOLD_MAX_FILTER][FH_MOLD_SESSION_LEN];
    uint32_t no_sequencing;       /* 1: deliver every message in arrival order (see above) */
} fh_framer_config;

typedef struct fh_framer_stats {
    uint64_t packets;             /* frames seen */
    uint64_t udp_datagrams;
    uint64_t net_reject[FH_NET_N_REASONS];   /* by fh_net reason (index 0 unused) */
    uint64_t filtered;            /* UDP datagrams not for dst_ip/dst_port */
    uint64_t mold_packets;        /* MoldUDP64 packets parsed (including heartbeats / end of session) */
    uint64_t heartbeats;
    uint64_t end_of_session;      /* end-of-session packets seen (repeats included) */
    uint64_t malformed[FH_MOLD_N_MALFORMED];
    uint64_t sessions;
    uint64_t filtered_sessions;   /* packets of sessions or channels excluded by the filter */
    uint64_t messages;            /* messages delivered to the decoder */
    uint64_t duplicate_packets;   /* packets with no new message */
    uint64_t duplicate_messages;  /* messages dropped as already delivered */
    uint64_t out_of_order;        /* packets held in the reorder window */
    uint64_t reordered;           /* held packets later applied in order */
    uint64_t gaps;                /* FH_GAP_OPENED records */
    uint64_t gaps_filled;         /* FH_GAP_FILLED records */
    uint64_t gaps_lost;           /* FH_GAP_LOST records */
    uint64_t filled_messages;     /* messages that arrived late and were applied */
    uint64_t lost_messages;       /* messages given up on */
    uint64_t after_end_of_session;/* packets for a session that had ended: dropped */
    uint64_t resets;              /* FH_GAP_RESET records */
    uint64_t records;             /* gap records emitted */
    uint64_t held_max;            /* most packets held at once */
    uint64_t missing_dropped;     /* missing ranges not stored (list full) */
    uint64_t hold_failed;         /* packets beyond a hole that could not be held (out of memory): their
                                     messages are reported lost when the hole is given up */
    uint64_t held_slots;          /* held-packet buffers allocated (grows under heavy loss) */
    uint64_t zero_sequence_packets; /* packets with messages whose sequence number is 0 (never valid:
                                       MoldUDP64 numbers messages from 1) */
} fh_framer_stats;

typedef struct fh_missing_range {
    char session[FH_MOLD_SESSION_LEN];
    uint16_t channel;
    uint64_t first;
    uint64_t last;                /* inclusive */
} fh_missing_range;

typedef struct fh_framer fh_framer;

/* NULL on allocation failure or a window above FH_MOLD_MAX_WINDOW. */
fh_framer *fh_framer_new(const fh_framer_config *cfg);
void fh_framer_free(fh_framer *f);
/* Hands the framer a new batch (the previous one must be consumed: fh_framer_input_done()). */
void fh_framer_set_input(fh_framer *f, const fh_pkt *pkts, size_t n);
int fh_framer_input_done(const fh_framer *f);
/* Frames input into at most FH_FRAMER_MSG_CAP messages; *msgs receives the array. Returns the count
 * (0 when the input is consumed and nothing is pending). */
size_t fh_framer_run(fh_framer *f, const fh_msg **msgs);
/* End of input: gives up every remaining hole (LOST) and applies what was held. Call repeatedly until
 * it returns 0, decoding the messages of each call. */
size_t fh_framer_finish(fh_framer *f, const fh_msg **msgs);
const fh_framer_stats *fh_framer_stats_get(const fh_framer *f);
/* Copies up to max missing ranges (oldest first) into out and returns how many exist; safe from a
 * monitor thread while the owning thread runs the framer (a mutex guards the list). */
size_t fh_framer_missing_copy(fh_framer *f, fh_missing_range *out, size_t max);
/* Channel index -> session name (10 bytes, not NUL terminated); NULL when unknown. */
const char *fh_framer_session(const fh_framer *f, uint16_t channel);
size_t fh_framer_n_sessions(const fh_framer *f);
/* The first frame's capture time seen (0 until then / for BinaryFILE). */
uint64_t fh_framer_first_ts(const fh_framer *f);
const char *fh_mold_malformed_name(int reason);

#endif
