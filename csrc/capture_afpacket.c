/* capture_afpacket.c - AF_PACKET TPACKET_V3 receive ring (see fh/capture_afpacket.h for the contract).
 *
 * Threading: one receive thread calls fh_afp_next(); counters it owns are plain fields, published once
 * per call into `pub` with relaxed atomic stores so that a monitor thread can snapshot them.
 * Ownership: blocks [rel_first, rel_first + rel_count) were handed out by the previous call and go back
 * to the kernel at the start of the next call (status store with release order, after our last read of
 * their frames). A block handed out in pieces (cap too small) stays ours until its last frame is out.
 */
#define _GNU_SOURCE
#include "fh/capture_afpacket.h"

#include <errno.h>
#include <linux/if_packet.h>
#include <linux/net_tstamp.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "fh/msg.h"
#include "fh/net.h"

struct fh_afp {
    int fd;
    int wake_fd;                /* eventfd: fh_afp_wake() makes poll() return */
    int ifindex;
    int hw_enabled;
    uint16_t linktype;
    uint8_t *map;
    size_t map_len;
    uint32_t block_size;
    uint32_t block_count;
    uint32_t snaplen;
    int version;                /* TPACKET_V2 or TPACKET_V3 */
    uint32_t frame_size;        /* V2: bytes per frame slot */
    uint32_t frames_per_block;  /* V2 */
    uint32_t frame_count;       /* V2: frame slots in the ring */
    /* receive-thread state (V3: blocks; V2: frame slots) */
    uint32_t cur;               /* next block to look at */
    uint32_t rel_first;         /* blocks handed out by the previous call (returned at the next) */
    uint32_t rel_count;
    uint32_t in_block_left;     /* frames of block `cur` not yet handed out (0: none in progress) */
    uint8_t *in_block_next;     /* next frame header in block `cur` */
    uint32_t blocks_since_stats;
    fh_afp_stats own;           /* receive thread's counters */
    fh_afp_stats pub;           /* published snapshot (relaxed atomics) */
};

static int fail(char *err, size_t errlen, int e, const char *fmt, ...) {
    if (err && errlen) {
        char what[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        const char *hint = "";
        if (e == EPERM || e == EACCES) hint = " (needs root or CAP_NET_RAW)";
        else if (e == ENODEV || e == ENXIO) hint = " (no such interface)";
        snprintf(err, errlen, "%s: %s%s", what, strerror(e), hint);
    }
    return -e;
}

static void read_kernel_stats(fh_afp *s) {
    struct tpacket_stats_v3 st;
    socklen_t len = sizeof st;
    memset(&st, 0, sizeof st);
    /* reading resets the kernel's counters: accumulate */
    if (getsockopt(s->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
        s->own.kernel_packets += st.tp_packets;
        s->own.kernel_drops += st.tp_drops;
        s->own.kernel_freezes += st.tp_freeze_q_cnt;
    }
    s->blocks_since_stats = 0;
}

static void publish(fh_afp *s) {
    const uint64_t *src = (const uint64_t *)&s->own;
    uint64_t *dst = (uint64_t *)&s->pub;
    for (size_t i = 0; i < sizeof(fh_afp_stats) / sizeof(uint64_t); i++)
        __atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
}

static int try_hw_timestamps(int fd, const char *iface) {
    struct hwtstamp_config hc;
    struct ifreq ifr;
    memset(&hc, 0, sizeof hc);
    memset(&ifr, 0, sizeof ifr);
    hc.tx_type = HWTSTAMP_TX_OFF;
    hc.rx_filter = HWTSTAMP_FILTER_ALL;
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", iface);
    ifr.ifr_data = (void *)&hc;
    if (ioctl(fd, SIOCSHWTSTAMP, &ifr) != 0) return 0;
    return hc.rx_filter != HWTSTAMP_FILTER_NONE;
}

int fh_afp_open(fh_afp **out, const fh_afp_config *cfg, char *err, size_t errlen) {
    *out = NULL;
    if (!cfg || !cfg->iface || !cfg->iface[0]) return fail(err, errlen, EINVAL, "no interface given");
    if (strlen(cfg->iface) >= IFNAMSIZ) return fail(err, errlen, EINVAL, "interface name too long");
    fh_afp *s = calloc(1, sizeof *s);
    if (!s) return fail(err, errlen, ENOMEM, "calloc");
    s->fd = -1;
    s->wake_fd = -1;
    s->block_size = cfg->block_size ? cfg->block_size : FH_AFP_DEFAULT_BLOCK_SIZE;
    s->block_count = cfg->block_count ? cfg->block_count : FH_AFP_DEFAULT_BLOCK_COUNT;
    uint32_t frame_size = cfg->frame_size ? cfg->frame_size : FH_AFP_DEFAULT_FRAME_SIZE;
    uint32_t retire = cfg->retire_ms ? cfg->retire_ms : FH_AFP_DEFAULT_RETIRE_MS;
    long page = sysconf(_SC_PAGESIZE);
    int rc;
    if ((s->block_size & (s->block_size - 1)) || s->block_size < (uint32_t)page || frame_size > s->block_size
        || (frame_size % TPACKET_ALIGNMENT)) {
        rc = fail(err, errlen, EINVAL, "block_size %u must be a power of two >= page size and >= frame_size %u "
                  "(a multiple of %d)", s->block_size, frame_size, TPACKET_ALIGNMENT);
        goto bad;
    }
    s->snaplen = cfg->snaplen;
    s->ifindex = (int)if_nametoindex(cfg->iface);
    if (!s->ifindex) { rc = fail(err, errlen, errno ? errno : ENODEV, "interface %s", cfg->iface); goto bad; }

    /* protocol 0: the socket receives nothing until bind() names the interface and ETH_P_ALL */
    s->fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (s->fd < 0) { rc = fail(err, errlen, errno, "socket(AF_PACKET)"); goto bad; }

    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", cfg->iface);
    if (ioctl(s->fd, SIOCGIFHWADDR, &ifr) != 0) { rc = fail(err, errlen, errno, "SIOCGIFHWADDR %s", cfg->iface); goto bad; }
    switch (ifr.ifr_hwaddr.sa_family) {
    case ARPHRD_ETHER: case ARPHRD_LOOPBACK: s->linktype = FH_LINKTYPE_ETHERNET; break;
    case ARPHRD_NONE:
#ifdef ARPHRD_RAWIP
    case ARPHRD_RAWIP:
#endif
        s->linktype = FH_LINKTYPE_RAW; break;
    default:
        rc = fail(err, errlen, EPROTONOSUPPORT, "interface %s has link type ARPHRD %d", cfg->iface,
                  ifr.ifr_hwaddr.sa_family);
        goto bad;
    }

    if (cfg->tpacket_version != 0 && cfg->tpacket_version != 2 && cfg->tpacket_version != 3) {
        rc = fail(err, errlen, EINVAL, "tpacket_version %d: expected 2 (per-frame, latency) or 3 (blocks)",
                  cfg->tpacket_version);
        goto bad;
    }
    s->version = cfg->tpacket_version == 2 ? TPACKET_V2 : TPACKET_V3;
    int v = s->version;
    if (setsockopt(s->fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) != 0) {
        rc = fail(err, errlen, errno, "PACKET_VERSION TPACKET_V%d", s->version == TPACKET_V2 ? 2 : 3); goto bad;
    }
    if (cfg->hw_timestamps) {
        s->hw_enabled = try_hw_timestamps(s->fd, cfg->iface);
        int req = SOF_TIMESTAMPING_RAW_HARDWARE;
        /* not fatal: without it the kernel stamps in software and tp_status says so */
        (void)setsockopt(s->fd, SOL_PACKET, PACKET_TIMESTAMP, &req, sizeof req);
    }
    if (cfg->ignore_outgoing) {
        int one = 1;
        (void)setsockopt(s->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    }
    struct tpacket_req3 req;
    memset(&req, 0, sizeof req);
    req.tp_block_size = s->block_size;
    req.tp_block_nr = s->block_count;
    req.tp_frame_size = frame_size;
    req.tp_frame_nr = (uint32_t)(((uint64_t)s->block_size / frame_size) * s->block_count);
    req.tp_retire_blk_tov = retire;
    req.tp_feature_req_word = 0;
    s->frame_size = frame_size;
    s->frames_per_block = s->block_size / frame_size;
    s->frame_count = req.tp_frame_nr;
    /* V2 takes the first four fields (struct tpacket_req is the head of struct tpacket_req3) */
    if (setsockopt(s->fd, SOL_PACKET, PACKET_RX_RING, &req,
                   s->version == TPACKET_V2 ? sizeof(struct tpacket_req) : sizeof req) != 0) {
        rc = fail(err, errlen, errno, "PACKET_RX_RING %u x %u bytes", s->block_count, s->block_size); goto bad;
    }
    s->map_len = (size_t)s->block_size * s->block_count;
    s->map = mmap(NULL, s->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED | MAP_POPULATE, s->fd, 0);
    if (s->map == MAP_FAILED) {
        /* MAP_LOCKED fails under a small RLIMIT_MEMLOCK: map unlocked instead */
        s->map = mmap(NULL, s->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, s->fd, 0);
    }
    if (s->map == MAP_FAILED) { s->map = NULL; rc = fail(err, errlen, errno, "mmap of the ring"); goto bad; }

    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = s->ifindex;
    if (bind(s->fd, (struct sockaddr *)&sll, sizeof sll) != 0) {
        rc = fail(err, errlen, errno, "bind to %s", cfg->iface); goto bad;
    }
    if (cfg->promisc) {
        struct packet_mreq mr;
        memset(&mr, 0, sizeof mr);
        mr.mr_ifindex = s->ifindex;
        mr.mr_type = PACKET_MR_PROMISC;
        if (setsockopt(s->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) != 0) {
            rc = fail(err, errlen, errno, "PACKET_MR_PROMISC on %s", cfg->iface); goto bad;
        }
    }
    if (cfg->fanout_id > 0) {
        int arg = (cfg->fanout_id & 0xffff) | (PACKET_FANOUT_HASH << 16);
        if (setsockopt(s->fd, SOL_PACKET, PACKET_FANOUT, &arg, sizeof arg) != 0) {
            rc = fail(err, errlen, errno, "PACKET_FANOUT %d", cfg->fanout_id); goto bad;
        }
    }
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0) { rc = fail(err, errlen, errno, "eventfd"); goto bad; }
    *out = s;
    return 0;
bad:
    fh_afp_close(s);
    return rc;
}

static inline struct tpacket_block_desc *block_at(const fh_afp *s, uint32_t i) {
    return (struct tpacket_block_desc *)(s->map + (size_t)i * s->block_size);
}

static inline uint64_t realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Hands out frames of block `cur` (started or in progress) into pkts[n..cap); returns the new n. */
static size_t take_frames(fh_afp *s, fh_pkt *pkts, size_t n, size_t cap) {
    uint8_t *blk_end = s->map + (size_t)(s->cur + 1) * s->block_size;
    uint64_t user_ns = 0;
    while (s->in_block_left && n < cap) {
        const struct tpacket3_hdr *h = (const struct tpacket3_hdr *)s->in_block_next;
        const uint8_t *data = (const uint8_t *)h + h->tp_mac;
        uint32_t caplen = h->tp_snaplen;
        /* the kernel wrote these; still never trust an offset to leave the block */
        if ((const uint8_t *)h + h->tp_mac > blk_end || data + caplen > blk_end) {
            s->in_block_left = 0;
            break;
        }
        if (s->snaplen && caplen > s->snaplen) caplen = s->snaplen;
        fh_pkt *p = &pkts[n++];
        p->data = data;
        p->caplen = caplen;
        p->origlen = h->tp_len;
        p->linktype = s->linktype;
        p->_reserved = 0;
        if (caplen < h->tp_len) s->own.truncated++;
        if (h->tp_status & TP_STATUS_TS_RAW_HARDWARE) {
            p->flags = FH_MSG_TS_HW;
            s->own.ts_hw++;
            p->ts_ns = (uint64_t)h->tp_sec * 1000000000ull + h->tp_nsec;
        } else if (h->tp_sec || h->tp_nsec) {
            p->flags = FH_MSG_TS_SW;
            s->own.ts_sw++;
            p->ts_ns = (uint64_t)h->tp_sec * 1000000000ull + h->tp_nsec;
        } else {
            if (!user_ns) user_ns = realtime_ns();
            p->flags = FH_MSG_TS_USER;
            s->own.ts_none++;
            p->ts_ns = user_ns;
        }
        s->own.packets++;
        s->own.bytes += caplen;
        s->in_block_left--;
        if (s->in_block_left) {
            if (!h->tp_next_offset) { s->in_block_left = 0; break; }
            s->in_block_next += h->tp_next_offset;
            if (s->in_block_next >= blk_end) { s->in_block_left = 0; break; }
        }
    }
    if (!s->in_block_left) {
        /* block fully handed out: return it at the next call, move on */
        if (!s->rel_count) s->rel_first = s->cur;
        s->rel_count++;
        s->own.blocks++;
        s->blocks_since_stats++;
        s->cur = (s->cur + 1) % s->block_count;
    }
    return n;
}

/* 1 when block `cur` is ready and its frames are now being handed out */
static int start_block(fh_afp *s) {
    struct tpacket_block_desc *b = block_at(s, s->cur);
    uint32_t st = __atomic_load_n(&b->hdr.bh1.block_status, __ATOMIC_ACQUIRE);
    if (!(st & TP_STATUS_USER)) return 0;
    s->in_block_left = b->hdr.bh1.num_pkts;
    s->in_block_next = (uint8_t *)b + b->hdr.bh1.offset_to_first_pkt;
    if (b->hdr.bh1.offset_to_first_pkt >= s->block_size) s->in_block_left = 0;
    return 1;
}

static inline struct tpacket2_hdr *frame_at(const fh_afp *s, uint32_t i) {
    return (struct tpacket2_hdr *)(s->map + (size_t)(i / s->frames_per_block) * s->block_size
                                   + (size_t)(i % s->frames_per_block) * s->frame_size);
}

/* wait for the socket (or a wake) up to timeout_ms */
static void wait_ready(fh_afp *s, int timeout_ms) {
    struct pollfd pf[2] = {{.fd = s->fd, .events = POLLIN | POLLERR}, {.fd = s->wake_fd, .events = POLLIN}};
    s->own.polls++;
    int r = poll(pf, 2, timeout_ms);
    if (r > 0 && (pf[1].revents & POLLIN)) {
        uint64_t v;
        ssize_t rr = read(s->wake_fd, &v, sizeof v);
        (void)rr;
    }
    if (r <= 0) read_kernel_stats(s);     /* idle: a good moment for the syscall */
}

/* TPACKET_V2: every frame slot the kernel has filled (TP_STATUS_USER), in ring order, up to cap. */
static size_t next_v2(fh_afp *s, fh_pkt *pkts, size_t cap, int timeout_ms) {
    for (uint32_t i = 0; i < s->rel_count; i++)
        __atomic_store_n(&frame_at(s, (s->rel_first + i) % s->frame_count)->tp_status, TP_STATUS_KERNEL,
                         __ATOMIC_RELEASE);
    s->rel_count = 0;
    s->rel_first = s->cur;
    size_t n = 0;
    int waited = 0;
    uint64_t user_ns = 0;
    while (n < cap) {
        struct tpacket2_hdr *h = frame_at(s, s->cur);
        uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
        if (!(st & TP_STATUS_USER)) {
            if (n || waited || timeout_ms == 0) break;
            wait_ready(s, timeout_ms);
            waited = 1;
            continue;
        }
        const uint8_t *slot_end = (const uint8_t *)h + s->frame_size;
        const uint8_t *data = (const uint8_t *)h + h->tp_mac;
        uint32_t caplen = h->tp_snaplen;
        s->cur = (s->cur + 1) % s->frame_count;
        s->rel_count++;
        s->own.blocks++;
        if (data > slot_end || data + caplen > slot_end) continue;    /* never trust an offset */
        if (s->snaplen && caplen > s->snaplen) caplen = s->snaplen;
        fh_pkt *p = &pkts[n++];
        p->data = data;
        p->caplen = caplen;
        p->origlen = h->tp_len;
        p->linktype = s->linktype;
        p->_reserved = 0;
        if (caplen < h->tp_len) s->own.truncated++;
        if (st & TP_STATUS_TS_RAW_HARDWARE) {
            p->flags = FH_MSG_TS_HW;
            s->own.ts_hw++;
            p->ts_ns = (uint64_t)h->tp_sec * 1000000000ull + h->tp_nsec;
        } else if (h->tp_sec || h->tp_nsec) {
            p->flags = FH_MSG_TS_SW;
            s->own.ts_sw++;
            p->ts_ns = (uint64_t)h->tp_sec * 1000000000ull + h->tp_nsec;
        } else {
            if (!user_ns) user_ns = realtime_ns();
            p->flags = FH_MSG_TS_USER;
            s->own.ts_none++;
            p->ts_ns = user_ns;
        }
        s->own.packets++;
        s->own.bytes += caplen;
        if (s->rel_count >= s->frame_count) break;
    }
    s->blocks_since_stats += (uint32_t)n;
    if (s->blocks_since_stats >= 4096) read_kernel_stats(s);
    if (!n) s->own.idle++;
    publish(s);
    return n;
}

size_t fh_afp_next(fh_afp *s, fh_pkt *pkts, size_t cap, int timeout_ms) {
    if (s->version == TPACKET_V2) return next_v2(s, pkts, cap, timeout_ms);
    /* give back what the previous call handed out */
    for (uint32_t i = 0; i < s->rel_count; i++) {
        struct tpacket_block_desc *b = block_at(s, (s->rel_first + i) % s->block_count);
        __atomic_store_n(&b->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    }
    s->rel_count = 0;
    size_t n = 0;
    int waited = 0;
    while (n < cap) {
        if (s->in_block_left) {
            n = take_frames(s, pkts, n, cap);
            continue;
        }
        /* never hand out the block that the previous-call release list would wrap onto */
        if (s->rel_count >= s->block_count) break;
        if (start_block(s)) {
            if (s->in_block_left == 0) {      /* empty block (retired by timeout with no frame) */
                n = take_frames(s, pkts, n, cap);
                continue;
            }
            n = take_frames(s, pkts, n, cap);
            continue;
        }
        if (n || waited || timeout_ms == 0) break;
        wait_ready(s, timeout_ms);
        waited = 1;
    }
    if (s->blocks_since_stats >= FH_AFP_STATS_EVERY_BLOCKS) read_kernel_stats(s);
    if (!n) s->own.idle++;
    publish(s);
    return n;
}

void fh_afp_wake(fh_afp *s) {
    uint64_t one = 1;
    ssize_t r = write(s->wake_fd, &one, sizeof one);
    (void)r;
}

void fh_afp_stats_get(fh_afp *s, fh_afp_stats *out) {
    const uint64_t *src = (const uint64_t *)&s->pub;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(fh_afp_stats) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

int fh_afp_ifindex(const fh_afp *s) { return s->ifindex; }
int fh_afp_hw_enabled(const fh_afp *s) { return s->hw_enabled; }
int fh_afp_tpacket_version(const fh_afp *s) { return s->version == TPACKET_V2 ? 2 : 3; }

void fh_afp_close(fh_afp *s) {
    if (!s) return;
    if (s->fd >= 0 && s->map) read_kernel_stats(s), publish(s);
    if (s->map) munmap(s->map, s->map_len);
    if (s->fd >= 0) close(s->fd);
    if (s->wake_fd >= 0) close(s->wake_fd);
    free(s);
}
