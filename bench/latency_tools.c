/* latency_tools.c - the paced, self-stamping ITCH sender and the bare C latency floor of
 * bench/bench_latency.py (also used by tests/test_latency_live.py).
 *
 *   latency_tools send IFACE PPS PACKETS MSGS_PER_PACKET MIDNIGHT_NS DST_PORT CPU [PCAP_OUT]
 *       Sends PACKETS MoldUDP64 packets of MSGS_PER_PACKET ITCH 5.0 messages (Add Order / Order Delete:
 *       books of 8 instruments with about 32 live orders each, so every message changes a book) out of
 *       IFACE through an AF_PACKET raw socket, one packet per send() (PACKET_QDISC_BYPASS), paced at
 *       PPS (absolute sleeps on CLOCK_MONOTONIC, 1 ns timer slack; 0: as fast as it can). Right before each send() it reads
 *       CLOCK_REALTIME and writes (that - MIDNIGHT_NS) into the 6-byte timestamp of every message of
 *       the packet: "wire" time is the sender's clock at send(), carried in the packet, so the receiver's
 *       ts_event is it (the decoder adds the same midnight). PCAP_OUT: the frames exactly as sent.
 *       Prints one JSON line {"sent", "seconds", "pps"}.
 *   latency_tools rx-afxdp IFACE PACKETS SECONDS CPU BPF_OBJ DST_PORT MIDNIGHT_NS [SPIN_US [skb|native]]
 *   latency_tools rx-afpacket IFACE PACKETS SECONDS CPU MIDNIGHT_NS [SPIN_US [2|3]]
 *       The floor: our capture sources (csrc/afxdp/capture_afxdp.c, csrc/capture_afpacket.c) busy-polled
 *       (timeout 0) by a bare loop that, for every packet, reads the first message's timestamp and adds
 *       now - (MIDNIGHT_NS + timestamp) to a histogram (fh/latency.h buckets, the feed's own; "now" is
 *       CLOCK_REALTIME read once per receive call, as the feed does after applying a batch). No framing,
 *       no decoding, no books. SPIN_US > 0: once idle that long, wait in the source (poll, woken by the
 *       next packet) instead of spinning, as the feed's latency mode with a spin budget does; 0 (default):
 *       spin always. Stops after PACKETS packets or SECONDS seconds; prints one JSON line with the count
 *       and p50/p90/p99/p99.9 (bucket lower bounds, ns).
 *   latency_tools gaps SECONDS CPU
 *       How much of its core a spinning thread gets here: spins on CPU for SECONDS reading CLOCK_MONOTONIC
 *       and reports the time lost in gaps over 100 us (the thread was not running), the count of gaps
 *       over 1 ms and the longest. On a shared or virtual machine this, not our code, bounds a busy-poll
 *       receiver's latency. One JSON line.
 *
 * Both ends read the one system clock (same host, two network namespaces over a veth pair).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fh/capture_afpacket.h"
#include "fh/capture_afxdp.h"
#include "fh/latency.h"
#include "fh/pcap.h"

#define SESSION "LATBENCH00"
#define N_INSTRUMENTS 8
#define LIVE_PER_BOOK 32
#define MAX_FRAME 1514
#define RX_BATCH 64

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set)) perror("sched_setaffinity");
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i)); }
static void put48(uint8_t *p, uint64_t v) { for (int i = 0; i < 6; i++) p[i] = (uint8_t)(v >> (40 - 8 * i)); }
static uint64_t get48(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 6; i++) v = (v << 8) | p[i];
    return v;
}

/* ---- sender ---------------------------------------------------------------------------------------- */

typedef struct {
    uint64_t next_add, next_del, seq;
} gen_state;

/* Builds packet payload messages into msg area; returns the MoldUDP64 payload length. ts_offs gets the
 * offsets (within the frame) of each message's timestamp. */
static size_t build_packet(gen_state *g, uint8_t *frame, size_t l4, int msgs, size_t *ts_offs) {
    uint8_t *mold = frame + l4;
    memcpy(mold, SESSION, 10);
    put64(mold + 10, g->seq);
    put16(mold + 18, (uint16_t)msgs);
    size_t off = 20;
    for (int i = 0; i < msgs; i++) {
        uint8_t *m = mold + off + 2;
        if (g->next_add - g->next_del > (uint64_t)N_INSTRUMENTS * LIVE_PER_BOOK) {
            uint64_t ref = ++g->next_del;
            put16(mold + off, 19);
            m[0] = 'D';
            put16(m + 1, (uint16_t)(1 + ref % N_INSTRUMENTS));
            put16(m + 3, 0);
            put64(m + 11, ref);
            off += 2 + 19;
        } else {
            uint64_t ref = ++g->next_add;
            int bid = (ref / N_INSTRUMENTS) % 2 == 0;
            uint32_t lvl = (uint32_t)((ref / (2 * N_INSTRUMENTS)) % 16);
            put16(mold + off, 36);
            m[0] = 'A';
            put16(m + 1, (uint16_t)(1 + ref % N_INSTRUMENTS));
            put16(m + 3, 0);
            put64(m + 11, ref);
            m[19] = bid ? 'B' : 'S';
            put32(m + 20, 100 + (uint32_t)(ref % 7) * 100);
            memcpy(m + 24, "LATB    ", 8);
            put32(m + 32, bid ? 1000000 - lvl * 100 : 1000100 + lvl * 100);
            off += 2 + 36;
        }
        ts_offs[i] = l4 + (size_t)(m - mold) + 5;
    }
    g->seq += (uint64_t)msgs;
    return off;
}

static uint16_t ip_checksum(const uint8_t *h) {
    uint32_t c = 0;
    for (int i = 0; i < 20; i += 2) c += (uint32_t)(h[i] << 8 | h[i + 1]);
    while (c >> 16) c = (c & 0xffff) + (c >> 16);
    return (uint16_t)~c;
}

static int cmd_send(int argc, char **argv) {
    if (argc < 9) {
        fprintf(stderr, "usage: send IFACE PPS PACKETS MSGS_PER_PACKET MIDNIGHT_NS DST_PORT CPU [PCAP_OUT]\n");
        return 2;
    }
    const char *iface = argv[2];
    double pps = atof(argv[3]);
    uint64_t packets = strtoull(argv[4], NULL, 10);
    int msgs = atoi(argv[5]);
    uint64_t midnight = strtoull(argv[6], NULL, 10);
    int port = atoi(argv[7]);
    pin(atoi(argv[8]));
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);     /* pacing sleeps end on time */
    if (msgs < 1 || msgs > 38) { fprintf(stderr, "MSGS_PER_PACKET must be 1..38 (one 1500-byte packet)\n"); return 2; }
    FILE *pc = NULL;
    if (argc > 9) {
        pc = fopen(argv[9], "wb");
        if (!pc) { perror(argv[9]); return 2; }
        uint32_t hdr[6] = {0xA1B23C4Du, 0x00040002u, 0, 0, 65535, 1};  /* ns pcap, Ethernet */
        fwrite(hdr, 4, 6, pc);
    }
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(iface),
                              .sll_protocol = htons(ETH_P_ALL)};
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof sll)) { perror("bind"); return 1; }
    uint8_t frame[MAX_FRAME];
    size_t ts_offs[64];
    gen_state g = {0, 0, 1};
    const size_t l4 = 14 + 20 + 8;
    uint64_t t0 = mono_ns(), sent = 0;
    for (uint64_t i = 0; i < packets; i++) {
        memset(frame, 0, sizeof frame);
        /* multicast 233.54.12.111 -> 01:00:5e:36:0c:6f */
        static const uint8_t dst[6] = {0x01, 0x00, 0x5e, 0x36, 0x0c, 0x6f}, src[6] = {0x02, 0, 0, 0, 0, 0x02};
        memcpy(frame, dst, 6);
        memcpy(frame + 6, src, 6);
        put16(frame + 12, 0x0800);
        size_t pay = build_packet(&g, frame, l4, msgs, ts_offs);
        uint8_t *ip = frame + 14;
        ip[0] = 0x45; ip[8] = 64; ip[9] = 17;
        put16(ip + 2, (uint16_t)(20 + 8 + pay));
        put32(ip + 12, 0x0ad5fe02u);
        put32(ip + 16, 0xe9360c6fu);
        put16(ip + 10, ip_checksum(ip));
        uint8_t *udp = frame + 34;
        put16(udp, 40001);
        put16(udp + 2, (uint16_t)port);
        put16(udp + 4, (uint16_t)(8 + pay));
        size_t len = l4 + pay;
        if (pps > 0) {
            /* sleep (not spin) until the packet is due: on a veth the receive side's kernel work runs
             * in this CPU's softirq (ksoftirqd when deferred), which a spinning sender would starve */
            uint64_t due = t0 + (uint64_t)(i * 1e9 / pps);
            if (mono_ns() < due) {
                struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull), .tv_nsec = (long)(due % 1000000000ull)};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
            }
        }
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t rt = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
        for (int k = 0; k < msgs; k++) put48(frame + ts_offs[k], rt - midnight);
        while (send(fd, frame, len, 0) < 0) {
            if (errno != ENOBUFS && errno != EAGAIN) { perror("send"); return 1; }
        }
        sent++;
        if (pc) {
            uint32_t rec[4] = {(uint32_t)now.tv_sec, (uint32_t)now.tv_nsec, (uint32_t)len, (uint32_t)len};
            fwrite(rec, 4, 4, pc);
            fwrite(frame, 1, len, pc);
        }
    }
    double dt = (mono_ns() - t0) * 1e-9;
    if (pc) fclose(pc);
    printf("{\"sent\": %llu, \"seconds\": %.6f, \"pps\": %.1f}\n", (unsigned long long)sent, dt, dt > 0 ? sent / dt : 0.0);
    return 0;
}

/* ---- bare receivers (the floor) ---------------------------------------------------------------------- */

static uint64_t hist[FH_LAT_BUCKETS];

/* the first ITCH message's timestamp of a MoldUDP64-in-UDP/IPv4/Ethernet frame (0: not one) */
static uint64_t first_ts(const uint8_t *f, uint32_t len, int port) {
    if (len < 14 + 20 + 8 + 20 + 2 + 11) return 0;
    if (f[12] != 0x08 || f[13] != 0x00) return 0;
    size_t ihl = (size_t)(f[14] & 0x0f) * 4;
    const uint8_t *udp = f + 14 + ihl;
    if (f[14 + 9] != 17 || (size_t)(udp - f) + 8 + 22 + 11 > len) return 0;
    if (((udp[2] << 8) | udp[3]) != port) return 0;
    const uint8_t *m = udp + 8 + 20 + 2;
    return get48(m + 5);
}

static void report(const char *rx, uint64_t packets, uint64_t missing) {
    uint64_t total = 0;
    for (size_t b = 0; b < FH_LAT_BUCKETS; b++) total += hist[b];
    printf("{\"receiver\": \"%s\", \"packets\": %llu, \"unstamped\": %llu, \"count\": %llu", rx,
           (unsigned long long)packets, (unsigned long long)missing, (unsigned long long)total);
    static const double qs[] = {50, 90, 99, 99.9};
    static const char *names[] = {"p50", "p90", "p99", "p99.9"};
    for (int q = 0; q < 4 && total; q++) {
        uint64_t cum = 0, want = (uint64_t)(total * qs[q] / 100.0);
        if (want == 0) want = 1;
        size_t b = 0;
        for (; b < FH_LAT_BUCKETS; b++) {
            cum += hist[b];
            if (cum >= want) break;
        }
        printf(", \"%s\": %llu", names[q], (unsigned long long)fh_lat_bucket_lower_ns(b));
    }
    printf("}\n");
}

typedef size_t (*next_fn)(void *s, fh_pkt *pkts, size_t cap, int timeout_ms);

static void rx_loop(next_fn next, void *s, uint64_t want, double seconds, uint64_t midnight, int port,
                    uint64_t spin_ns, uint64_t *packets, uint64_t *missing) {
    fh_pkt pkts[RX_BATCH];
    uint64_t end = mono_ns() + (uint64_t)(seconds * 1e9);
    uint64_t n_all = 0, miss = 0, idle_since = 0;
    uint32_t spins = 0;
    while (n_all < want) {
        int timeout = 0;
        if (spin_ns) {
            uint64_t t = mono_ns();
            if (!idle_since) idle_since = t;
            else if (t - idle_since >= spin_ns) timeout = 50;
        }
        size_t n = next(s, pkts, RX_BATCH, timeout);
        if (!n) {
            if (++spins >= 4096 || timeout) {
                spins = 0;
                if (mono_ns() >= end) break;
            }
            continue;
        }
        idle_since = 0;
        uint64_t now = fh_now_realtime_ns();
        for (size_t i = 0; i < n; i++) {
            uint64_t ts = first_ts(pkts[i].data, pkts[i].caplen, port);
            if (!ts) { miss++; continue; }
            uint64_t wire = midnight + ts;
            if (wire <= now) hist[fh_lat_bucket(now - wire)]++;
            n_all++;
        }
    }
    *packets = n_all;
    *missing = miss;
}

static size_t afp_next(void *s, fh_pkt *p, size_t cap, int t) { return fh_afp_next(s, p, cap, t); }

static int cmd_rx(int argc, char **argv) {
    int afxdp = strcmp(argv[1], "rx-afxdp") == 0;
    if ((afxdp && argc < 9) || (!afxdp && argc < 7)) {
        fprintf(stderr, "usage: rx-afxdp IFACE PACKETS SECONDS CPU BPF_OBJ DST_PORT MIDNIGHT_NS [SPIN_US [skb|native]]\n"
                        "       rx-afpacket IFACE PACKETS SECONDS CPU MIDNIGHT_NS [SPIN_US [2|3]]\n");
        return 2;
    }
    const char *iface = argv[2];
    uint64_t want = strtoull(argv[3], NULL, 10);
    double seconds = atof(argv[4]);
    pin(atoi(argv[5]));
    char err[512] = "";
    uint64_t packets = 0, missing = 0;
    if (afxdp) {
        int port = atoi(argv[7]);
        uint64_t midnight = strtoull(argv[8], NULL, 10);
        fh_xsk_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.iface = iface;
        cfg.n_queues = 1;
        cfg.bpf_object = argv[6];
        cfg.ports[0] = (uint16_t)port;
        cfg.n_ports = 1;
        cfg.zerocopy = -1;
        uint64_t spin_ns = argc > 9 ? (uint64_t)(atof(argv[9]) * 1000) : 0;
        cfg.xdp_mode = argc > 10 && strcmp(argv[10], "skb") == 0 ? FH_XSK_MODE_SKB
                       : argc > 10 && strcmp(argv[10], "native") == 0 ? FH_XSK_MODE_NATIVE : FH_XSK_MODE_AUTO;
        fh_xsk *s = NULL;
        int rc = fh_xsk_open(&s, &cfg, err, sizeof err);
        if (rc) { fprintf(stderr, "fh_xsk_open: %s\n", err); return 1; }
        printf("ready\n");
        fflush(stdout);
        rx_loop(fh_xsk_next, s, want, seconds, midnight, port, spin_ns, &packets, &missing);
        fh_xsk_close(s);
        report("afxdp", packets, missing);
    } else {
        uint64_t midnight = strtoull(argv[6], NULL, 10);
        fh_afp_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.iface = iface;
        uint64_t spin_ns = argc > 7 ? (uint64_t)(atof(argv[7]) * 1000) : 0;
        cfg.tpacket_version = argc > 8 ? atoi(argv[8]) : 2;
        fh_afp *s = NULL;
        int rc = fh_afp_open(&s, &cfg, err, sizeof err);
        if (rc) { fprintf(stderr, "fh_afp_open: %s\n", err); return 1; }
        printf("ready\n");
        fflush(stdout);
        rx_loop(afp_next, s, want, seconds, midnight, 26477, spin_ns, &packets, &missing);
        fh_afp_close(s);
        report(cfg.tpacket_version == 3 ? "afpacket-v3" : "afpacket", packets, missing);
    }
    return 0;
}

static int cmd_gaps(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: gaps SECONDS CPU\n"); return 2; }
    uint64_t dur = (uint64_t)(atof(argv[2]) * 1e9);
    pin(atoi(argv[3]));
    uint64_t t0 = mono_ns(), prev = t0, lost = 0, over_1ms = 0, max_gap = 0;
    while (prev - t0 < dur) {
        uint64_t t = mono_ns(), g = t - prev;
        if (g > 100000) lost += g;
        if (g > 1000000) over_1ms++;
        if (g > max_gap) max_gap = g;
        prev = t;
    }
    printf("{\"seconds\": %.3f, \"lost_ms\": %.1f, \"gaps_over_1ms\": %llu, \"max_gap_us\": %.1f}\n", dur * 1e-9,
           lost * 1e-6, (unsigned long long)over_1ms, max_gap * 1e-3);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "send") == 0) return cmd_send(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "gaps") == 0) return cmd_gaps(argc, argv);
    if (argc >= 2 && (strcmp(argv[1], "rx-afxdp") == 0 || strcmp(argv[1], "rx-afpacket") == 0)) return cmd_rx(argc, argv);
    fprintf(stderr, "usage: %s send|rx-afxdp|rx-afpacket|gaps ... (see the comment at the top of the file)\n", argv[0]);
    return 2;
}
