/* fh/capture_dpdk.h - DPDK capture: EAL (arguments passed through), one port, rx queues polled in bursts,
 * frames handed out as fh_pkt pointing into mbufs. Built only with libdpdk (cffi module
 * feedhandler.capture.live._dpdk from csrc/dpdk/capture_dpdk.c; not part of the plain C library).
 *
 * The EAL can be initialised once per process and pins the calling thread to its main lcore: run DPDK
 * capture in a process of its own (the CLI does; tests use a subprocess).
 * Time: rx_burst gives no stamp here (virtual devices): CLOCK_REALTIME once per burst, FH_MSG_TS_USER.
 *
 * Ownership and threading: one receive thread calls fh_dpdk_next(); the mbufs behind the returned
 * fh_pkt stay ours until the next call (or close), which frees them back to the pool. Stats any thread.
 */
#ifndef FH_CAPTURE_DPDK_H
#define FH_CAPTURE_DPDK_H

#include <stddef.h>
#include <stdint.h>

#include "fh/pcap.h"

#define FH_DPDK_BURST 64u              /* mbufs per rte_eth_rx_burst */
#define FH_DPDK_MAX_HELD 4096u         /* mbufs handed out per call at most */
#define FH_DPDK_DEFAULT_MBUFS 16383u   /* pool size (2^n - 1 is optimal for the ring-backed pool) */
#define FH_DPDK_DEFAULT_RXD 1024u      /* rx descriptors per queue */
#define FH_DPDK_IDLE_SLEEP_US 20u      /* us slept between empty polls while waiting */

typedef struct fh_dpdk_config {
    int argc;                   /* EAL arguments (argv[0] is the program name) */
    char **argv;
    uint16_t port_id;           /* ethdev port (a vdev counts) */
    uint16_t n_queues;          /* rx queues (0 = 1) */
    uint32_t mbufs;             /* 0 = default */
    uint32_t rx_desc;           /* 0 = default */
    int promisc;
} fh_dpdk_config;

typedef struct fh_dpdk_stats {
    uint64_t packets;           /* frames handed out */
    uint64_t bytes;
    uint64_t bursts;            /* non-empty rx bursts */
    uint64_t idle;              /* fh_dpdk_next() calls that returned 0 */
    uint64_t ipackets;          /* rte_eth_stats (read by fh_dpdk_stats_get) */
    uint64_t imissed;           /* frames the device dropped: no rx descriptor */
    uint64_t ierrors;
    uint64_t rx_nombuf;         /* mbuf allocation failures */
} fh_dpdk_stats;

typedef struct fh_dpdk fh_dpdk;

int fh_dpdk_open(fh_dpdk **out, const fh_dpdk_config *cfg, char *err, size_t errlen);
size_t fh_dpdk_next(void *ctx, fh_pkt *pkts, size_t cap, int timeout_ms);
void fh_dpdk_wake(void *ctx);
void fh_dpdk_stats_get(fh_dpdk *s, fh_dpdk_stats *out);
void fh_dpdk_close(fh_dpdk *s);

#endif
