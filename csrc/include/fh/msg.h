/* fh/msg.h - the batch that crosses from framing/sequencing into a protocol decoder.
 *
 * A framing stage (MoldUDP64, BinaryFILE, SoupBinTCP, CME packet header) turns packets into an array
 * of fh_msg, in sequence order, each pointing at one protocol message. Ownership: `data` points into
 * the framing stage's buffers and stays valid until that stage is asked for its next batch; the
 * decoder copies what it needs into records and keeps no pointer.
 */
#ifndef FH_MSG_H
#define FH_MSG_H

#include <stdint.h>

#define FH_MSG_TS_NONE 0    /* no capture clock (BinaryFILE): ts_recv is 0, records get FH_F_BAD_TS_RECV */
#define FH_MSG_TS_USER 1    /* user-space clock read per batch */
#define FH_MSG_TS_SW 2      /* kernel software receive stamp (pcap files: the capture's stamp) */
#define FH_MSG_TS_HW 3      /* NIC hardware stamp */
#define FH_MSG_TS_MASK 3
#define FH_MSG_AFTER_GAP 4  /* first message after an unrecovered gap in its channel */

typedef struct fh_msg {
    const uint8_t *data;    /* first byte of the protocol message (ITCH: the message type) */
    uint32_t len;           /* bytes at data */
    uint16_t channel;       /* sequencing channel (MoldUDP64 session index, A/B line, ...) */
    uint16_t flags;         /* FH_MSG_* */
    uint64_t ts_recv;       /* capture clock, ns since UNIX epoch (0 when FH_MSG_TS_NONE) */
    uint64_t sequence;      /* message sequence number within its channel */
} fh_msg;

_Static_assert(sizeof(fh_msg) == 32, "fh_msg is 32 bytes");

#endif
