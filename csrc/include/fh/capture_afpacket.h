/* fh/capture_afpacket.h - live capture from a Linux interface through an AF_PACKET memory-mapped ring.
 *
 * Two ring layouts (fh_afp_config.tpacket_version):
 * - TPACKET_V3 (default, throughput): the kernel fills fixed-size blocks with frames; a block is handed
 *   to user space when it is full or when its retire timeout (tp_retire_blk_tov, in jiffies after
 *   rounding up: 1 ms asks for one jiffy, 4 ms at HZ=250) expires. At a low packet rate every frame
 *   waits for that timer: the latency is the timer's, not the kernel's.
 * - TPACKET_V2 (latency mode): one frame per ring slot, handed to user space as soon as the kernel has
 *   written it (tp_status TP_STATUS_USER on the frame itself): no timer, the latency is the kernel's
 *   receive path. Costs one status word per frame and a fixed frame size (frame_size bytes a slot). fh_afp_next() waits (poll, bounded) for
 * ready blocks, turns every frame of as many blocks as fit into fh_pkt entries (same element as the file
 * sources, so the same framer/decoder path runs behind it) and returns them.
 *
 * Time stamps: PACKET_TIMESTAMP asks for raw hardware stamps; where the NIC gives none the kernel stamps
 * in software (SO_TIMESTAMPING semantics). Each frame's tp_status says which clock stamped it and the
 * fh_pkt flags carry it (FH_MSG_TS_HW / FH_MSG_TS_SW); `ts_ns` is the stamp in ns since the UNIX epoch.
 *
 * Ownership and threading: an fh_afp belongs to one receive thread. The fh_pkt `data` pointers point
 * into ring blocks that stay owned by user space until the NEXT fh_afp_next() (or fh_afp_close()) on
 * that source, which returns them to the kernel: the caller must be done with the frames (the framer
 * copies what it holds) before asking for more. fh_afp_stats_get() may be called from any thread: the
 * counters are written by the receive thread only (relaxed atomics) and read as a snapshot.
 * fh_afp_wake() may be called from any thread to make a blocked fh_afp_next() return early.
 * The receive path allocates nothing, logs nothing and makes one poll() per empty wait.
 */
#ifndef FH_CAPTURE_AFPACKET_H
#define FH_CAPTURE_AFPACKET_H

#include <stddef.h>
#include <stdint.h>

#include "fh/pcap.h"

#define FH_AFP_DEFAULT_BLOCK_SIZE (1u << 16)   /* bytes per ring block (a power of two, >= page): small
                                                  blocks are handed over sooner (latency under load) */
#define FH_AFP_DEFAULT_BLOCK_COUNT 1024u        /* blocks: 64 MiB of ring by default */
#define FH_AFP_DEFAULT_FRAME_SIZE 2048u         /* bytes: tp_frame_size (a hint for TPACKET_V3) */
#define FH_AFP_DEFAULT_RETIRE_MS 1u             /* ms: a partly filled block is handed over after this */
#define FH_AFP_STATS_EVERY_BLOCKS 64u           /* blocks between two PACKET_STATISTICS reads */

typedef struct fh_afp_config {
    const char *iface;          /* interface name (required) */
    uint32_t block_size;        /* bytes; 0 = default */
    uint32_t block_count;       /* 0 = default */
    uint32_t frame_size;        /* bytes; 0 = default */
    uint32_t retire_ms;         /* ms; 0 = default */
    uint32_t snaplen;           /* bytes kept per frame; 0 = whole frame */
    int promisc;                /* 1: PACKET_MR_PROMISC on the interface for the socket's lifetime */
    int hw_timestamps;          /* 1: try SIOCSHWTSTAMP (rx all) and ask for raw hardware stamps */
    int fanout_id;              /* > 0: join PACKET_FANOUT group (hash) with this id */
    int ignore_outgoing;        /* 1: PACKET_IGNORE_OUTGOING (frames this host sends are not seen) */
    int tpacket_version;        /* 0 or 3: TPACKET_V3 blocks; 2: TPACKET_V2 per-frame slots (latency) */
} fh_afp_config;

typedef struct fh_afp_stats {
    uint64_t packets;           /* frames handed out */
    uint64_t bytes;             /* captured bytes handed out */
    uint64_t blocks;            /* ring blocks consumed (TPACKET_V2: frame slots) */
    uint64_t polls;             /* poll() calls (waits) */
    uint64_t idle;              /* fh_afp_next() calls that returned 0 */
    uint64_t kernel_packets;    /* PACKET_STATISTICS tp_packets (accumulated) */
    uint64_t kernel_drops;      /* PACKET_STATISTICS tp_drops: frames the ring had no room for */
    uint64_t kernel_freezes;    /* tp_freeze_q_cnt: times the queue froze because the ring was full */
    uint64_t truncated;         /* frames cut by snaplen or block room (tp_snaplen < tp_len) */
    uint64_t ts_hw;             /* frames stamped by the NIC */
    uint64_t ts_sw;             /* frames stamped by the kernel */
    uint64_t ts_none;           /* frames without a stamp (user-space time used) */
} fh_afp_stats;

typedef struct fh_afp fh_afp;

/* Opens the socket, binds it to cfg->iface, maps the ring. 0 on success; otherwise -errno (err, when
 * not NULL, receives a sentence naming the failing step, e.g. "socket(AF_PACKET): Operation not
 * permitted (needs CAP_NET_RAW)"). */
int fh_afp_open(fh_afp **out, const fh_afp_config *cfg, char *err, size_t errlen);
/* Returns the blocks handed out by the previous call to the kernel, then waits up to timeout_ms
 * (0: do not wait, < 0: until a block or fh_afp_wake()) and fills pkts[0..cap) with the frames of as
 * many ready blocks as fit (a block is never split; cap must be at least the frames of one block, else
 * the block is handed out in pieces across calls). Returns the number of frames (0: nothing ready). */
size_t fh_afp_next(fh_afp *s, fh_pkt *pkts, size_t cap, int timeout_ms);
void fh_afp_wake(fh_afp *s);
void fh_afp_stats_get(fh_afp *s, fh_afp_stats *out);
/* Interface index and the clock the last frame was stamped with (FH_MSG_TS_*). */
int fh_afp_ifindex(const fh_afp *s);
/* The ring layout in use: 2 (TPACKET_V2) or 3 (TPACKET_V3). */
int fh_afp_tpacket_version(const fh_afp *s);
/* 1 when SIOCSHWTSTAMP was accepted by the driver. */
int fh_afp_hw_enabled(const fh_afp *s);
void fh_afp_close(fh_afp *s);

#endif
