/* fh/itch50.h - state and counters of the NASDAQ TotalView-ITCH 5.0 decoder.
 *
 * The decoder itself is src/feedhandler/protocols/itch50.pyx (an fh_decode_fn, see fh/decoder.h);
 * wire layouts are in the generated fh/itch50_wire.h. This header declares what a pipeline stage
 * needs to own one decoder: its configuration and its counters, in one struct (the decoder's ctx).
 *
 * Threading: one fh_itch50_ctx belongs to the one thread that calls the decode function. The hot loop
 * only increments plain uint64 counters; a monitor thread may read them racily (values are monotonic
 * and each is a single aligned word, so a torn read cannot happen on x86-64/aarch64), or the owner
 * copies them out between batches.
 *
 * Accounting invariant, checked by the tests: every message handed to the decoder is counted exactly
 * once, in messages[type] (decoded), unknown[type], bad_length[type] or empty.
 */
#ifndef FH_ITCH50_H
#define FH_ITCH50_H

#include <stdint.h>

#include "fh/itch50_wire.h"

#define FH_ITCH50_MAX_RECORDS_PER_MSG 2  /* records: U, I and O write two, every other message one */

typedef struct fh_itch50_counters {
    uint64_t messages[256];    /* decoded, by type byte */
    uint64_t unknown[256];     /* skipped: type byte is not an ITCH 5.0 message, by type byte */
    uint64_t bad_length[256];  /* skipped: known type but length != FH_ITCH50_<NAME>_LEN, by type byte */
    uint64_t empty;            /* skipped: zero-length message (no type byte) */
    uint64_t records;          /* records written */
    uint64_t cross_shares_saturated; /* Q messages whose u64 shares exceeded UINT32_MAX: size saturated */
    uint64_t price_overflow;   /* price8 values too large for int64 1e-9 units: written as FH_UNDEF_PRICE */
} fh_itch50_counters;

typedef struct fh_itch50_ctx {
    uint64_t midnight_ns;      /* ns since UNIX epoch of midnight (exchange local time) of the session day;
                                  ts_event = midnight_ns + the message's 48-bit timestamp */
    uint16_t publisher_id;     /* written to every record's hd.publisher_id */
    uint8_t channel_id;        /* written to fh_mbo.channel_id */
    uint8_t _reserved[5];
    fh_itch50_counters counters;
} fh_itch50_ctx;

#endif
