/* fh/decoder.h - the one shape every protocol decoder has, so the pipeline can drive any of them.
 *
 * A decoder turns a batch of framed messages into records. It decodes messages msgs[0..n) in order
 * while at least FH_DECODE_MAX_RECORDS_PER_MSG free slots remain in out[0..cap), writes *n_out
 * records, and returns the number of messages it consumed (the caller passes the rest again with a
 * fresh output buffer). It never fails: malformed and unknown messages are counted in its own
 * counters (in ctx) and skipped. Called from one thread at a time; ctx belongs to that thread.
 */
#ifndef FH_DECODER_H
#define FH_DECODER_H

#include <stddef.h>
#include "fh/msg.h"
#include "fh/record.h"

#define FH_DECODE_MAX_RECORDS_PER_MSG 64  /* upper bound for any protocol (MDP3 groups); ITCH uses 2 */

typedef size_t (*fh_decode_fn)(void *ctx, const fh_msg *msgs, size_t n, fh_tick *out, size_t cap,
                               size_t *n_out);

#endif
