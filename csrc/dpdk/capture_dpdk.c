/* capture_dpdk.c - DPDK receive shim (contract: fh/capture_dpdk.h).
 * rte_eth_rx_burst() is static inline in rte_ethdev.h: one more reason this is C called through cffi's
 * API mode rather than Python per burst. */
#include "fh/capture_dpdk.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "fh/msg.h"
#include "fh/net.h"

struct fh_dpdk {
    uint16_t port;
    uint16_t nq;
    uint16_t next_q;
    int started;
    int wake;                   /* set by fh_dpdk_wake (atomic) */
    struct rte_mempool *pool;
    struct rte_mbuf *held[FH_DPDK_MAX_HELD];
    uint32_t n_held;
    fh_dpdk_stats own;
    fh_dpdk_stats pub;
};

static int eal_done;

static int fail(char *err, size_t errlen, int e, const char *what) {
    if (e < 0) e = -e;
    if (err && errlen) snprintf(err, errlen, "%s: %s", what, rte_strerror(e));
    return -e;
}

int fh_dpdk_open(fh_dpdk **out, const fh_dpdk_config *cfg, char *err, size_t errlen) {
    *out = NULL;
    if (eal_done) return fail(err, errlen, EALREADY, "the DPDK EAL runs once per process");
    int rc = rte_eal_init(cfg->argc, cfg->argv);
    if (rc < 0) return fail(err, errlen, rte_errno, "rte_eal_init");
    eal_done = 1;
    fh_dpdk *s = rte_zmalloc("fh_dpdk", sizeof *s, 64);
    if (!s) return fail(err, errlen, ENOMEM, "rte_zmalloc");
    s->port = cfg->port_id;
    s->nq = cfg->n_queues ? cfg->n_queues : 1;
    if (!rte_eth_dev_is_valid_port(s->port)) {
        rc = fail(err, errlen, ENODEV, "no such DPDK port (is the --vdev given?)");
        goto bad;
    }
    uint32_t mbufs = cfg->mbufs ? cfg->mbufs : FH_DPDK_DEFAULT_MBUFS;
    s->pool = rte_pktmbuf_pool_create("fh_rx", mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
    if (!s->pool) { rc = fail(err, errlen, rte_errno, "rte_pktmbuf_pool_create"); goto bad; }
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof conf);
    rc = rte_eth_dev_configure(s->port, s->nq, 0, &conf);
    if (rc < 0) { rc = fail(err, errlen, rc, "rte_eth_dev_configure"); goto bad; }
    uint16_t rxd = (uint16_t)(cfg->rx_desc ? cfg->rx_desc : FH_DPDK_DEFAULT_RXD), txd = 0;
    rte_eth_dev_adjust_nb_rx_tx_desc(s->port, &rxd, &txd);
    for (uint16_t q = 0; q < s->nq; q++) {
        rc = rte_eth_rx_queue_setup(s->port, q, rxd, rte_eth_dev_socket_id(s->port), NULL, s->pool);
        if (rc < 0) { rc = fail(err, errlen, rc, "rte_eth_rx_queue_setup"); goto bad; }
    }
    rc = rte_eth_dev_start(s->port);
    if (rc < 0) { rc = fail(err, errlen, rc, "rte_eth_dev_start"); goto bad; }
    s->started = 1;
    if (cfg->promisc) rte_eth_promiscuous_enable(s->port);
    *out = s;
    return 0;
bad:
    fh_dpdk_close(s);
    return rc;
}

static inline uint64_t realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void publish(fh_dpdk *s) {
    const uint64_t *src = (const uint64_t *)&s->own;
    uint64_t *dst = (uint64_t *)&s->pub;
    for (size_t i = 0; i < 4; i++) __atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
}

size_t fh_dpdk_next(void *ctx, fh_pkt *pkts, size_t cap, int timeout_ms) {
    fh_dpdk *s = ctx;
    if (s->n_held) {
        rte_pktmbuf_free_bulk(s->held, s->n_held);
        s->n_held = 0;
    }
    if (cap > FH_DPDK_MAX_HELD) cap = FH_DPDK_MAX_HELD;
    size_t n = 0;
    uint64_t deadline = 0;
    for (;;) {
        uint64_t now = 0;
        for (uint16_t k = 0; k < s->nq && n < cap; k++) {
            uint16_t q = (uint16_t)((s->next_q + k) % s->nq);
            while (n < cap) {
                uint16_t want = (uint16_t)(cap - n < FH_DPDK_BURST ? cap - n : FH_DPDK_BURST);
                uint16_t got = rte_eth_rx_burst(s->port, q, s->held + s->n_held, want);
                if (!got) break;
                if (!now) now = realtime_ns();
                s->own.bursts++;
                for (uint16_t i = 0; i < got; i++) {
                    struct rte_mbuf *m = s->held[s->n_held + i];
                    fh_pkt *p = &pkts[n + i];
                    /* chained mbufs (jumbo frames) expose their first segment only */
                    p->data = rte_pktmbuf_mtod(m, const uint8_t *);
                    p->caplen = rte_pktmbuf_data_len(m);
                    p->origlen = rte_pktmbuf_pkt_len(m);
                    p->ts_ns = now;
                    p->linktype = FH_LINKTYPE_ETHERNET;
                    p->flags = FH_MSG_TS_USER;
                    p->_reserved = 0;
                    s->own.bytes += p->caplen;
                }
                s->n_held += got;
                n += got;
            }
        }
        s->next_q = (uint16_t)((s->next_q + 1) % s->nq);
        if (n || timeout_ms == 0) break;
        if (__atomic_exchange_n(&s->wake, 0, __ATOMIC_ACQ_REL)) break;
        uint64_t t = realtime_ns();
        if (!deadline) deadline = t + (uint64_t)(timeout_ms < 0 ? 1000 : timeout_ms) * 1000000ull;
        if (t >= deadline) break;
        usleep(FH_DPDK_IDLE_SLEEP_US);
    }
    s->own.packets += n;
    if (!n) s->own.idle++;
    publish(s);
    return n;
}

void fh_dpdk_wake(void *ctx) {
    fh_dpdk *s = ctx;
    __atomic_store_n(&s->wake, 1, __ATOMIC_RELEASE);
}

void fh_dpdk_stats_get(fh_dpdk *s, fh_dpdk_stats *out) {
    memset(out, 0, sizeof *out);
    const uint64_t *src = (const uint64_t *)&s->pub;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < 4; i++) dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    struct rte_eth_stats st;
    if (rte_eth_stats_get(s->port, &st) == 0) {
        out->ipackets = st.ipackets;
        out->imissed = st.imissed;
        out->ierrors = st.ierrors;
        out->rx_nombuf = st.rx_nombuf;
    }
}

void fh_dpdk_close(fh_dpdk *s) {
    if (!s) return;
    if (s->n_held) rte_pktmbuf_free_bulk(s->held, s->n_held);
    if (s->started) {
        rte_eth_dev_stop(s->port);
        rte_eth_dev_close(s->port);
    }
    if (s->pool) rte_mempool_free(s->pool);
    rte_free(s);
    rte_eal_cleanup();
}
