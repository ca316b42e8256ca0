/* fh/capture_afxdp.h - AF_XDP capture: UMEM + fill/completion/rx rings per queue, an XDP program that
 * redirects only the feed's UDP traffic to the sockets (csrc/bpf/xdp_feed.bpf.c; the rest goes on to the
 * kernel), batched receive. Built only with libxdp/libbpf (cffi module feedhandler.capture.live._afxdp
 * from csrc/afxdp/capture_afxdp.c; it is NOT part of the plain C library because it needs -lxdp -lbpf).
 *
 * Copy mode everywhere the driver lacks zero-copy (veth, virtio); zero-copy is tried first when asked.
 * Time: AF_XDP frames carry no kernel receive stamp. With rx_timestamp on, the receive-timestamp variant
 * of the program (bpf_object_rxts, loaded device-bound in native mode) puts the driver's hardware stamp
 * from the XDP RX metadata kfunc in front of every frame (fh/xdp_meta.h); frames that have one get it as
 * ts_ns with FH_MSG_TS_HW. Every other frame gets CLOCK_REALTIME, read once per batch, FH_MSG_TS_USER.
 *
 * Ownership and threading: an fh_xsk belongs to one receive thread. fh_xsk_next() returns fh_pkt whose
 * data point into the UMEM; those frames stay ours until the NEXT fh_xsk_next() (or close), which puts
 * them back on the fill ring (through a free stack holding every frame we own: the fill ring is topped
 * up to full at every call, so frames waiting in the rx ring do not shrink what the kernel can take). The rx descriptors themselves are released at once (their contents are
 * copied). fh_xsk_stats_get() may be called from any thread (relaxed atomic snapshot);
 * fh_xsk_wake() from any thread makes a waiting fh_xsk_next() return.
 */
#ifndef FH_CAPTURE_AFXDP_H
#define FH_CAPTURE_AFXDP_H

#include <stddef.h>
#include <stdint.h>

#include "fh/pcap.h"

#define FH_XSK_MAX_QUEUES 16
#define FH_XSK_DEFAULT_FRAMES 32768u    /* UMEM frames per queue (64 MiB at 2 KiB) */
#define FH_XSK_DEFAULT_FRAME_SIZE 2048u /* bytes per UMEM frame (>= MTU + XDP headroom; copy mode) */
#define FH_XSK_DEFAULT_RING 16384u      /* descriptors in the rx and fill rings: the kernel can take this many
                                           frames (~33 ms at 500k pkt/s) while the receiver is away */
#define FH_XSK_MAX_PORTS 16

enum { FH_XSK_MODE_AUTO = 0, FH_XSK_MODE_NATIVE = 1, FH_XSK_MODE_SKB = 2 };

typedef struct fh_xsk_config {
    const char *iface;
    uint32_t first_queue;       /* queues first_queue .. first_queue + n_queues - 1 */
    uint32_t n_queues;          /* 0 = 1 */
    uint32_t frames;            /* UMEM frames per queue; 0 = default */
    uint32_t frame_size;        /* 0 = default */
    uint32_t ring_size;         /* 0 = default */
    int xdp_mode;               /* FH_XSK_MODE_* */
    int zerocopy;               /* 1: require zero-copy, 0: try zero-copy then copy, -1: copy only */
    int busy_poll_us;           /* > 0: SO_PREFER_BUSY_POLL + SO_BUSY_POLL(us) + busy-poll budget; effective
                                   only where the socket has a NAPI id (stats.busy_poll_napi_id) */
    const char *bpf_object;     /* path of xdp_feed.bpf.o; NULL: libxdp's default program (all traffic of
                                   the queue goes to the socket) */
    const char *bpf_object_rxts;/* path of xdp_feed_rxts.bpf.o (the same filter + XDP RX metadata stamps) */
    int rx_timestamp;           /* 0: off; 1: use bpf_object_rxts when it loads device-bound in native mode,
                                   else the plain filter (reason: fh_xsk_rx_timestamp_reason); 2: required */
    uint16_t ports[FH_XSK_MAX_PORTS];   /* UDP destination ports of the feed (host order) */
    uint32_t n_ports;
    uint32_t groups[FH_XSK_MAX_PORTS];  /* IPv4 destinations, host order; n_groups 0 = any */
    uint32_t n_groups;
} fh_xsk_config;

typedef struct fh_xsk_stats {
    uint64_t packets;           /* frames handed out */
    uint64_t bytes;
    uint64_t batches;           /* fh_xsk_next() calls that returned frames */
    uint64_t idle;              /* calls that returned 0 */
    uint64_t polls;
    uint64_t wakeups;           /* fill-ring need_wakeup kicks */
    uint64_t fill_short;        /* fill-ring reserves that failed after room was measured (0 unless a bug) */
    uint64_t rx_dropped;        /* XDP_STATISTICS rx_dropped: no room in the UMEM / dropped by the kernel */
    uint64_t rx_invalid_descs;
    uint64_t rx_ring_full;      /* rx ring full: frames dropped */
    uint64_t rx_fill_ring_empty;/* fill ring was empty when a frame arrived */
    uint64_t xdp_seen;          /* XDP program counters (summed over CPUs) */
    uint64_t xdp_redirected;
    uint64_t xdp_passed;
    uint64_t xdp_no_socket;
    uint64_t zerocopy;          /* 1 when the sockets run zero-copy */
    uint64_t xdp_mode;          /* FH_XSK_MODE_NATIVE or FH_XSK_MODE_SKB as attached */
    uint64_t busy_poll_napi_id; /* busy_poll_us > 0: the NAPI id the first socket busy-polls. 0 means
                                   busy polling polls nothing: since Linux 6.13 an XSK socket gets a NAPI
                                   id only when bound in zero-copy mode (veth, virtio copy mode: never) */
    uint64_t rx_timestamp;      /* 1 when the receive-timestamp program runs */
    uint64_t ts_hw;             /* frames stamped with the driver's hardware receive stamp */
    uint64_t meta_no_stamp;     /* frames with our metadata but no stamp (kfunc error, or 0) */
    uint64_t meta_missing;      /* frames without our metadata while the timestamp program runs */
    uint64_t xdp_meta_failed;   /* program counter: no room for the metadata (bpf_xdp_adjust_meta) */
    uint64_t meta_last_errno;   /* errno of the kfunc for the last frame with metadata (0: it answered;
                                   ENODATA: no stamp for that frame; EOPNOTSUPP: not the driver's kfunc) */
} fh_xsk_stats;

typedef struct fh_xsk fh_xsk;

/* 0 on success, else -errno with a sentence in err. Attaches the XDP program (detached at close). */
int fh_xsk_open(fh_xsk **out, const fh_xsk_config *cfg, char *err, size_t errlen);
/* The same signature as every live source (void * ctx): see capture/live/_live.pyx. */
size_t fh_xsk_next(void *xsk, fh_pkt *pkts, size_t cap, int timeout_ms);
void fh_xsk_wake(void *xsk);
/* Snapshot; also reads XDP_STATISTICS and the program's per-CPU counters (syscalls: monitor thread). */
void fh_xsk_stats_get(fh_xsk *s, fh_xsk_stats *out);
void fh_xsk_close(fh_xsk *s);
/* Why rx_timestamp = 1 fell back to the plain filter ("" when it did not). */
const char *fh_xsk_rx_timestamp_reason(fh_xsk *s);

#endif
