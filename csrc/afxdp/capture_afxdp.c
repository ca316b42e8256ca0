/* capture_afxdp.c - AF_XDP receive shim over libxdp's xsk API (contract: fh/capture_afxdp.h).
 *
 * Per queue: one UMEM (frames x frame_size bytes, page aligned), its fill and completion rings, one
 * socket with an rx ring (no tx). Fill policy: every frame not in the kernel's hands sits on a free
 * stack, and the fill ring is topped up from it as far as it has room at every call, so the fill ring
 * is full (ring_size frames posted) whenever the receive thread leaves, however many frames still
 * wait in the rx ring (frames >= 2 x ring_size: up to ring_size posted + ring_size waiting). Before,
 * only the frames handed out came back, ring_size frames circulated in all, and frames waiting in the
 * rx ring shrank what the kernel could take while the thread was away (tests/test_live_capture.py
 * test_afxdp_fill_ring_topped_up_while_frames_wait).
 * The receive thread, per fh_xsk_next():
 *   1. puts the frames handed out by the previous call on the free stack and tops the fill ring up
 *      (one reserve/submit),
 *   2. peeks up to cap rx descriptors over the queues, copies (addr, len) into fh_pkt, releases them,
 *   3. when nothing is ready: kicks the kernel if the fill ring needs a wakeup, then poll()s.
 * libxdp's ring accessors are static inline: that is why this is C (called from cffi in API mode) and
 * not ABI-mode Python.
 */
#define _GNU_SOURCE
#include "fh/capture_afxdp.h"

#include <errno.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include "fh/msg.h"
#include "fh/net.h"
#include "fh/xdp_meta.h"

#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif
#ifndef SO_INCOMING_NAPI_ID
#define SO_INCOMING_NAPI_ID 56
#endif

#define FH_XSK_BUSY_POLL_BUDGET 64      /* packets per busy-poll round */

typedef struct fh_xsk_queue {
    struct xsk_umem *umem;
    struct xsk_socket *xsk;
    struct xsk_ring_prod fill;
    struct xsk_ring_cons comp;
    struct xsk_ring_cons rx;
    struct xsk_ring_prod tx_unused;
    uint8_t *area;
    size_t area_len;
    uint64_t *held;             /* frame addresses handed out by the previous call */
    uint32_t n_held;
    uint64_t *free;             /* frame addresses owned by us and not handed out (stack) */
    uint32_t n_free;
    int fd;
} fh_xsk_queue;

struct fh_xsk {
    int ifindex;
    int wake_fd;
    uint32_t nq;
    uint32_t ring_size;
    uint32_t next_q;            /* round robin start */
    int busy_poll;
    int zerocopy;
    int mode;
    struct xdp_program *prog;
    enum xdp_attach_mode attach_mode;
    int stats_map_fd;
    int rx_ts;                  /* the receive-timestamp program runs: read fh_xdp_meta in front of frames */
    char rx_ts_reason[256];     /* why rx_timestamp = 1 fell back */
    fh_xsk_queue q[FH_XSK_MAX_QUEUES];
    fh_xsk_stats own;           /* receive thread */
    fh_xsk_stats pub;           /* published (relaxed atomics) */
};

static int fail(char *err, size_t errlen, int e, const char *fmt, ...) {
    if (e < 0) e = -e;
    if (err && errlen) {
        char what[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        const char *hint = (e == EPERM || e == EACCES) ? " (needs root: CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW)" : "";
        snprintf(err, errlen, "%s: %s%s", what, strerror(e), hint);
    }
    return -e;
}

static void publish(fh_xsk *s) {
    const uint64_t *src = (const uint64_t *)&s->own;
    uint64_t *dst = (uint64_t *)&s->pub;
    for (size_t i = 0; i < sizeof(fh_xsk_stats) / sizeof(uint64_t); i++)
        __atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
}

/* Moves frames from the free stack into the fill ring, as many as it has room for; returns how many. */
static uint32_t top_up(fh_xsk *s, fh_xsk_queue *q) {
    if (!q->n_free) return 0;
    uint32_t room = xsk_prod_nb_free(&q->fill, q->n_free);
    uint32_t want = room < q->n_free ? room : q->n_free;
    uint32_t idx = 0;
    if (!want) return 0;                        /* the fill ring is full: the kernel has all it can take */
    if (xsk_ring_prod__reserve(&q->fill, want, &idx) != want) {
        s->own.fill_short++;                    /* cannot happen: room was just measured */
        return 0;
    }
    for (uint32_t i = 0; i < want; i++) *xsk_ring_prod__fill_addr(&q->fill, idx + i) = q->free[q->n_free - 1 - i];
    xsk_ring_prod__submit(&q->fill, want);
    q->n_free -= want;
    return want;
}

static int setup_queue(fh_xsk *s, fh_xsk_queue *q, const fh_xsk_config *cfg, uint32_t qid, uint32_t frames,
                       uint32_t frame_size, char *err, size_t errlen) {
    q->area_len = (size_t)frames * frame_size;
    q->area = mmap(NULL, q->area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (q->area == MAP_FAILED) { q->area = NULL; return fail(err, errlen, errno, "mmap UMEM %zu bytes", q->area_len); }
    q->held = calloc(frames, sizeof(uint64_t));
    q->free = calloc(frames, sizeof(uint64_t));
    if (!q->held || !q->free) return fail(err, errlen, ENOMEM, "calloc");
    struct xsk_umem_config uc = {
        .fill_size = s->ring_size, .comp_size = s->ring_size, .frame_size = frame_size,
        .frame_headroom = 0, .flags = 0,
    };
    int rc = xsk_umem__create(&q->umem, q->area, q->area_len, &q->fill, &q->comp, &uc);
    if (rc) return fail(err, errlen, rc, "xsk_umem__create (queue %u)", qid);
    struct xsk_socket_config sc;
    memset(&sc, 0, sizeof sc);
    sc.rx_size = s->ring_size;
    sc.tx_size = 0;
    sc.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;   /* we attach our own program */
    sc.xdp_flags = 0;
    /* zero-copy first unless told copy; fall back to copy mode when the driver refuses */
    int tries[2] = {cfg->zerocopy >= 0 ? XDP_ZEROCOPY : XDP_COPY, XDP_COPY};
    int ntries = (cfg->zerocopy == 0) ? 2 : 1;
    rc = -EINVAL;
    for (int t = 0; t < ntries; t++) {
        sc.bind_flags = (uint16_t)(tries[t] | XDP_USE_NEED_WAKEUP);
        rc = xsk_socket__create(&q->xsk, cfg->iface, qid, q->umem, &q->rx, NULL, &sc);
        if (rc == 0) {
            s->zerocopy = tries[t] == XDP_ZEROCOPY;
            break;
        }
        q->xsk = NULL;
    }
    if (rc) return fail(err, errlen, rc, "xsk_socket__create on %s queue %u", cfg->iface, qid);
    q->fd = xsk_socket__fd(q->xsk);
    if (cfg->busy_poll_us > 0) {
        int one = 1, us = cfg->busy_poll_us, budget = FH_XSK_BUSY_POLL_BUDGET;
        if (setsockopt(q->fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof one) ||
            setsockopt(q->fd, SOL_SOCKET, SO_BUSY_POLL, &us, sizeof us) ||
            setsockopt(q->fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget, sizeof budget))
            return fail(err, errlen, errno, "busy polling socket options");
        s->busy_poll = 1;
        /* the NAPI instance busy polling will drive; 0 when there is none (copy mode on Linux >= 6.13) */
        unsigned napi_id = 0;
        socklen_t nl = sizeof napi_id;
        if (qid == cfg->first_queue && getsockopt(q->fd, SOL_SOCKET, SO_INCOMING_NAPI_ID, &napi_id, &nl) == 0)
            s->own.busy_poll_napi_id = napi_id;
    }
    /* every frame starts on the free stack; the fill ring takes what it has room for */
    for (uint32_t i = 0; i < frames; i++) q->free[i] = (uint64_t)(frames - 1 - i) * frame_size;
    q->n_free = frames;
    if (!top_up(s, q)) return fail(err, errlen, ENOSPC, "fill ring reserve");
    return 0;
}

#ifndef BPF_F_XDP_DEV_BOUND_ONLY
#define BPF_F_XDP_DEV_BOUND_ONLY (1U << 6)     /* Linux 6.3 uapi; older headers lack it */
#endif

/* The receive-timestamp variant, device-bound (its metadata kfunc is then the driver's), native mode only
 * (the kernel refuses device-bound programs in generic mode). 0 or -errno with the reason in s. */
static int attach_rxts(fh_xsk *s, const fh_xsk_config *cfg) {
    if (cfg->xdp_mode == FH_XSK_MODE_SKB) {
        snprintf(s->rx_ts_reason, sizeof s->rx_ts_reason, "generic (skb) XDP mode: XDP RX metadata needs native mode");
        return -EOPNOTSUPP;
    }
    if (!cfg->bpf_object_rxts) {
        snprintf(s->rx_ts_reason, sizeof s->rx_ts_reason, "the receive-timestamp XDP program was not built");
        return -ENOENT;
    }
    struct xdp_program *p = xdp_program__open_file(cfg->bpf_object_rxts, "xdp", NULL);
    long perr = libxdp_get_error(p);
    if (perr) {
        snprintf(s->rx_ts_reason, sizeof s->rx_ts_reason, "open %s: %s", cfg->bpf_object_rxts, strerror((int)-perr));
        return (int)perr;
    }
    struct bpf_program *bp = bpf_object__find_program_by_name(xdp_program__bpf_obj(p), "xdp_feed");
    if (!bp) {
        xdp_program__close(p);
        snprintf(s->rx_ts_reason, sizeof s->rx_ts_reason, "no xdp_feed program in %s", cfg->bpf_object_rxts);
        return -ENOENT;
    }
    bpf_program__set_ifindex(bp, (__u32)s->ifindex);
    bpf_program__set_flags(bp, bpf_program__flags(bp) | BPF_F_XDP_DEV_BOUND_ONLY);
    int rc = xdp_program__attach(p, s->ifindex, XDP_MODE_NATIVE, 0);
    if (rc) {
        xdp_program__close(p);
        snprintf(s->rx_ts_reason, sizeof s->rx_ts_reason,
                 "device-bound XDP program with the RX timestamp kfunc not accepted in native mode on %s: %s "
                 "(needs Linux >= 6.3 and a driver with native XDP)", cfg->iface, strerror(rc < 0 ? -rc : rc));
        return rc;
    }
    s->prog = p;
    s->attach_mode = XDP_MODE_NATIVE;
    s->rx_ts = 1;
    return 0;
}

static int load_program(fh_xsk *s, const fh_xsk_config *cfg, char *err, size_t errlen) {
    s->stats_map_fd = -1;
    if (!cfg->bpf_object) {
        /* libxdp's default program: redirect everything on the queue (filtering left to the framer) */
        if (cfg->rx_timestamp == 2) return fail(err, errlen, EINVAL, "XDP RX timestamps need the feed filter program");
        if (cfg->rx_timestamp) snprintf(s->rx_ts_reason, sizeof s->rx_ts_reason, "no feed filter program");
        return 0;
    }
    int rc = -EINVAL;
    if (cfg->rx_timestamp) {
        rc = attach_rxts(s, cfg);
        if (rc && cfg->rx_timestamp == 2) return fail(err, errlen, rc, "XDP RX timestamps: %s", s->rx_ts_reason);
    }
    if (!s->rx_ts) {
        struct xdp_program *p = xdp_program__open_file(cfg->bpf_object, "xdp", NULL);
        long perr = libxdp_get_error(p);
        if (perr) return fail(err, errlen, (int)perr, "open XDP program %s", cfg->bpf_object);
        s->prog = p;
        enum xdp_attach_mode modes[2];
        int nm = 0;
        if (cfg->xdp_mode == FH_XSK_MODE_SKB) modes[nm++] = XDP_MODE_SKB;
        else if (cfg->xdp_mode == FH_XSK_MODE_NATIVE) modes[nm++] = XDP_MODE_NATIVE;
        else { modes[nm++] = XDP_MODE_NATIVE; modes[nm++] = XDP_MODE_SKB; }
        for (int i = 0; i < nm; i++) {
            rc = xdp_program__attach(p, s->ifindex, modes[i], 0);
            if (rc == 0) { s->attach_mode = modes[i]; break; }
        }
        if (rc) return fail(err, errlen, rc, "attach XDP program to %s", cfg->iface);
    }
    struct xdp_program *p = s->prog;
    s->mode = s->attach_mode == XDP_MODE_NATIVE ? FH_XSK_MODE_NATIVE : FH_XSK_MODE_SKB;
    struct bpf_object *obj = xdp_program__bpf_obj(p);
    int ports = bpf_object__find_map_fd_by_name(obj, "fh_ports");
    int groups = bpf_object__find_map_fd_by_name(obj, "fh_groups");
    int cfgm = bpf_object__find_map_fd_by_name(obj, "fh_cfg");
    s->stats_map_fd = bpf_object__find_map_fd_by_name(obj, "fh_stats");
    if (ports < 0 || groups < 0 || cfgm < 0) return fail(err, errlen, ENOENT, "XDP program maps");
    uint8_t one = 1;
    for (uint32_t i = 0; i < cfg->n_ports && i < FH_XSK_MAX_PORTS; i++) {
        uint16_t port = cfg->ports[i];
        if (bpf_map_update_elem(ports, &port, &one, BPF_ANY)) return fail(err, errlen, errno, "fh_ports update");
    }
    for (uint32_t i = 0; i < cfg->n_groups && i < FH_XSK_MAX_PORTS; i++) {
        uint32_t g = htonl(cfg->groups[i]);
        if (bpf_map_update_elem(groups, &g, &one, BPF_ANY)) return fail(err, errlen, errno, "fh_groups update");
    }
    uint32_t k0 = 0, any = cfg->n_groups == 0;
    if (bpf_map_update_elem(cfgm, &k0, &any, BPF_ANY)) return fail(err, errlen, errno, "fh_cfg update");
    return 0;
}

int fh_xsk_open(fh_xsk **out, const fh_xsk_config *cfg, char *err, size_t errlen) {
    *out = NULL;
    if (!cfg || !cfg->iface) return fail(err, errlen, EINVAL, "no interface given");
    uint32_t nq = cfg->n_queues ? cfg->n_queues : 1;
    if (nq > FH_XSK_MAX_QUEUES) return fail(err, errlen, EINVAL, "at most %d queues", FH_XSK_MAX_QUEUES);
    if (cfg->bpf_object && cfg->n_ports == 0) return fail(err, errlen, EINVAL, "the XDP filter needs a UDP port");
    fh_xsk *s = calloc(1, sizeof *s);
    if (!s) return fail(err, errlen, ENOMEM, "calloc");
    s->wake_fd = -1;
    s->stats_map_fd = -1;
    for (uint32_t i = 0; i < FH_XSK_MAX_QUEUES; i++) s->q[i].fd = -1;
    uint32_t frames = cfg->frames ? cfg->frames : FH_XSK_DEFAULT_FRAMES;
    uint32_t fsz = cfg->frame_size ? cfg->frame_size : FH_XSK_DEFAULT_FRAME_SIZE;
    s->ring_size = cfg->ring_size ? cfg->ring_size : FH_XSK_DEFAULT_RING;
    int rc;
    if ((s->ring_size & (s->ring_size - 1)) || frames < 2 * s->ring_size) {
        rc = fail(err, errlen, EINVAL, "ring_size %u must be a power of two and frames %u >= 2 x ring_size",
                  s->ring_size, frames);
        goto bad;
    }
    s->ifindex = (int)if_nametoindex(cfg->iface);
    if (!s->ifindex) { rc = fail(err, errlen, ENODEV, "interface %s", cfg->iface); goto bad; }
    rc = load_program(s, cfg, err, errlen);
    if (rc) goto bad;
    s->nq = nq;
    for (uint32_t i = 0; i < nq; i++) {
        rc = setup_queue(s, &s->q[i], cfg, cfg->first_queue + i, frames, fsz, err, errlen);
        if (rc) goto bad;
        if (s->prog) {
            int map = bpf_object__find_map_fd_by_name(xdp_program__bpf_obj(s->prog), "xsks_map");
            rc = xsk_socket__update_xskmap(s->q[i].xsk, map);
            if (rc) { rc = fail(err, errlen, rc, "xsks_map update (queue %u)", cfg->first_queue + i); goto bad; }
        }
    }
    if (!s->prog) {
        /* (INHIBIT_PROG_LOAD was set: load libxdp's default program ourselves for the sockets) */
        int map_fd = -1;
        rc = xsk_setup_xdp_prog(s->ifindex, &map_fd);
        if (rc) { rc = fail(err, errlen, rc, "libxdp default XDP program on %s", cfg->iface); goto bad; }
        for (uint32_t i = 0; i < nq; i++) {
            rc = xsk_socket__update_xskmap(s->q[i].xsk, map_fd);
            if (rc) { rc = fail(err, errlen, rc, "xsks_map update"); goto bad; }
        }
    }
    s->own.zerocopy = (uint64_t)s->zerocopy;
    s->own.rx_timestamp = (uint64_t)s->rx_ts;
    s->own.xdp_mode = (uint64_t)s->mode;
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0) { rc = fail(err, errlen, errno, "eventfd"); goto bad; }
    publish(s);
    *out = s;
    return 0;
bad:
    fh_xsk_close(s);
    return rc;
}

static inline uint64_t realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void refill(fh_xsk *s, fh_xsk_queue *q) {
    if (q->n_held) {
        /* frames total = n_free + n_held + kernel's, so the stack always has room */
        memcpy(q->free + q->n_free, q->held, q->n_held * sizeof(uint64_t));
        q->n_free += q->n_held;
        q->n_held = 0;
    }
    if (q->n_free) top_up(s, q);
}

size_t fh_xsk_next(void *ctx, fh_pkt *pkts, size_t cap, int timeout_ms) {
    fh_xsk *s = ctx;
    for (uint32_t i = 0; i < s->nq; i++) refill(s, &s->q[i]);
    size_t n = 0;
    int waited = 0;
    for (;;) {
        uint64_t now = 0;
        for (uint32_t k = 0; k < s->nq && n < cap; k++) {
            fh_xsk_queue *q = &s->q[(s->next_q + k) % s->nq];
            uint32_t idx = 0;
            uint32_t want = (uint32_t)(cap - n);
            uint32_t got = xsk_ring_cons__peek(&q->rx, want, &idx);
            if (!got) continue;
            if (!now) now = realtime_ns();
            for (uint32_t i = 0; i < got; i++) {
                const struct xdp_desc *d = xsk_ring_cons__rx_desc(&q->rx, idx + i);
                uint64_t addr = xsk_umem__add_offset_to_addr(d->addr);
                fh_pkt *p = &pkts[n++];
                unsigned char *data = xsk_umem__get_data(q->area, addr);
                p->data = data;
                p->caplen = d->len;
                p->origlen = d->len;
                p->ts_ns = now;
                p->linktype = FH_LINKTYPE_ETHERNET;
                p->flags = FH_MSG_TS_USER;
                if (s->rx_ts) {
                    __u64 hw = 0;
                    __s32 status = 0;
                    int m = fh_xdp_meta_take_status(data, &hw, &status);
                    if (m >= 0) s->own.meta_last_errno = (uint64_t)(status < 0 ? -status : status);
                    if (m > 0) {
                        p->ts_ns = hw;
                        p->flags = FH_MSG_TS_HW;
                        s->own.ts_hw++;
                    } else if (m == 0) {
                        s->own.meta_no_stamp++;
                    } else {
                        s->own.meta_missing++;
                    }
                }
                p->_reserved = 0;
                q->held[q->n_held++] = xsk_umem__extract_addr(d->addr);
                s->own.bytes += d->len;
            }
            xsk_ring_cons__release(&q->rx, got);
        }
        s->next_q = (s->next_q + 1) % (s->nq ? s->nq : 1);
        if (n || waited || timeout_ms == 0) break;
        /* nothing ready: kick the kernel when it asks, then wait */
        for (uint32_t k = 0; k < s->nq; k++) {
            if (s->busy_poll || xsk_ring_prod__needs_wakeup(&s->q[k].fill)) {
                s->own.wakeups++;
                recvfrom(s->q[k].fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
            }
        }
        if (s->busy_poll) {
            waited = 1;         /* one busy-poll round per call; the caller loops */
            continue;
        }
        struct pollfd pf[FH_XSK_MAX_QUEUES + 1];
        for (uint32_t k = 0; k < s->nq; k++) pf[k] = (struct pollfd){.fd = s->q[k].fd, .events = POLLIN};
        pf[s->nq] = (struct pollfd){.fd = s->wake_fd, .events = POLLIN};
        s->own.polls++;
        int r = poll(pf, s->nq + 1, timeout_ms);
        if (r > 0 && (pf[s->nq].revents & POLLIN)) {
            uint64_t v;
            ssize_t rr = read(s->wake_fd, &v, sizeof v);
            (void)rr;
        }
        waited = 1;
    }
    s->own.packets += n;
    if (n) s->own.batches++;
    else s->own.idle++;
    publish(s);
    return n;
}

void fh_xsk_wake(void *ctx) {
    fh_xsk *s = ctx;
    uint64_t one = 1;
    ssize_t r = write(s->wake_fd, &one, sizeof one);
    (void)r;
}

void fh_xsk_stats_get(fh_xsk *s, fh_xsk_stats *out) {
    const uint64_t *src = (const uint64_t *)&s->pub;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(fh_xsk_stats) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    for (uint32_t k = 0; k < s->nq; k++) {
        struct xdp_statistics xs;
        socklen_t len = sizeof xs;
        memset(&xs, 0, sizeof xs);
        if (getsockopt(s->q[k].fd, SOL_XDP, XDP_STATISTICS, &xs, &len) == 0) {
            out->rx_dropped += xs.rx_dropped;
            out->rx_invalid_descs += xs.rx_invalid_descs;
            out->rx_ring_full += xs.rx_ring_full;
            out->rx_fill_ring_empty += xs.rx_fill_ring_empty_descs;
        }
    }
    if (s->stats_map_fd >= 0) {
        int ncpu = libbpf_num_possible_cpus();
        if (ncpu > 0 && ncpu <= 1024) {
            uint64_t vals[1024];
            /* the order of the program's enum (csrc/bpf/xdp_feed.bpf.c) */
            uint64_t *fields[5] = {&out->xdp_seen, &out->xdp_redirected, &out->xdp_passed, &out->xdp_no_socket,
                                   &out->xdp_meta_failed};
            for (uint32_t key = 0; key < 5; key++) {
                if (bpf_map_lookup_elem(s->stats_map_fd, &key, vals) == 0) {
                    uint64_t sum = 0;
                    for (int c = 0; c < ncpu; c++) sum += vals[c];
                    *fields[key] = sum;
                }
            }
        }
    }
}

const char *fh_xsk_rx_timestamp_reason(fh_xsk *s) {
    return s ? s->rx_ts_reason : "";
}

void fh_xsk_close(fh_xsk *s) {
    if (!s) return;
    for (uint32_t i = 0; i < FH_XSK_MAX_QUEUES; i++) {
        fh_xsk_queue *q = &s->q[i];
        if (q->xsk) xsk_socket__delete(q->xsk);
        if (q->umem) xsk_umem__delete(q->umem);
        if (q->area) munmap(q->area, q->area_len);
        free(q->held);
        free(q->free);
    }
    if (s->prog) {
        xdp_program__detach(s->prog, s->ifindex, s->attach_mode, 0);
        xdp_program__close(s->prog);
    } else if (s->ifindex) {
        /* the default program loaded by xsk_setup_xdp_prog: detach whatever XDP program is there */
        struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(s->ifindex);
        if (!libxdp_get_error(mp) && mp) {
            xdp_multiprog__detach(mp);
            xdp_multiprog__close(mp);
        }
    }
    if (s->wake_fd >= 0) close(s->wake_fd);
    free(s);
}
