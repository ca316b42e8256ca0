/* capture_bare.c - bare packet-rate tools for bench/bench_capture.py --bare (no parsing, no ring):
 *
 *   capture_bare tx IFACE SECONDS CPU [FRAME_BYTES] [DST_PORT]
 *       Sends pre-built IPv4/UDP frames (default 64 bytes on the wire without FCS, port 26477) out of
 *       IFACE as fast as it can for SECONDS: AF_PACKET raw socket, PACKET_QDISC_BYPASS, sendmmsg with
 *       FH_TX_BATCH frames per call, all iovecs pointing at FH_TX_VARIANTS pre-built frames (the source
 *       port varies so the frames are not all identical). Pinned to CPU. Prints one JSON line.
 *   capture_bare gen IFACE SECONDS CPU GEN_BPF_OBJ FRAME [MOLD_SPEC] [MAX_PACKETS] [PPS]
 *       In-kernel generator (bench/xdp_gen.bpf.c run with BPF_PROG_RUN live frames): FRAME is a frame
 *       size in bytes (a UDP frame is built as for tx) or a file holding one raw Ethernet frame;
 *       MOLD_SPEC "SEQ_BASE,COUNT[,OFF:DELTA...]" makes every frame the next MoldUDP64 packet (see the
 *       BPF file). Redirects to IFACE (run it inside IFACE's namespace). Counts frames the program ran
 *       on; frames the veth could not take are the peer's drops (the bench reads ethtool -S). PPS > 0
 *       paces it (the program spins until each frame is due: see gen_pace in the BPF file).
 *   capture_bare rx-afxdp IFACE SECONDS CPU BPF_OBJ DST_PORT [BUSY_POLL_US] [BATCH] [skb|native]
 *       Our AF_XDP receiver (csrc/afxdp/capture_afxdp.c, fh_xsk_next) in a tight loop: reads the UDP
 *       destination port of every frame (so each frame is touched), nothing else. Pinned to CPU.
 *   capture_bare rx-afpacket IFACE SECONDS CPU [BATCH]
 *       Our TPACKET_V3 receiver (csrc/capture_afpacket.c, fh_afp_next) in the same loop.
 *
 * A receiver counts from its first packet to SECONDS after it, then prints one JSON line with packets,
 * the rate over that window and the source's drop counters. The bench starts the receiver first and
 * the sender inside the namespace; both sides are bare C so the figures bound what the full pipeline
 * can reach. Stats are read once at the end (no printing from the receive loop).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "fh/capture_afpacket.h"
#include "fh/capture_afxdp.h"
#include "fh/pcap.h"

#define FH_TX_BATCH 1024        /* frames per sendmmsg call */
#define FH_TX_VARIANTS 64       /* distinct pre-built frames (source port differs) */
#define FH_RX_MAX_BATCH 4096    /* frames per receive call, upper bound */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ns of CPU a task has run (first field of schedstat; includes softirq work done in its context, since
 * this kernel has no IRQ time accounting); pid 0: the calling thread. 0 when unreadable. */
static uint64_t task_cpu_ns(int pid) {
    char path[64];
    if (pid > 0) snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    else snprintf(path, sizeof path, "/proc/thread-self/schedstat");
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    unsigned long long v = 0;
    if (fscanf(f, "%llu", &v) != 1) v = 0;
    fclose(f);
    return v;
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set)) perror("sched_setaffinity");
}

static uint16_t ip_csum(const uint8_t *h, size_t n) {
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)h[i] << 8 | h[i + 1];
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* Ethernet (broadcast dst) + IPv4 10.213.0.2 -> 10.213.0.1 + UDP, payload zeros; frame_bytes >= 42 */
static void build_frame(uint8_t *f, size_t frame_bytes, uint16_t sport, uint16_t dport) {
    memset(f, 0, frame_bytes);
    memset(f, 0xff, 6);
    const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x02};
    memcpy(f + 6, src, 6);
    f[12] = 0x08; f[13] = 0x00;
    uint8_t *ip = f + 14;
    uint16_t ip_len = (uint16_t)(frame_bytes - 14), udp_len = (uint16_t)(frame_bytes - 34);
    ip[0] = 0x45; ip[2] = ip_len >> 8; ip[3] = ip_len & 0xff; ip[8] = 64; ip[9] = 17;
    ip[12] = 10; ip[13] = 213; ip[14] = 0; ip[15] = 2;
    ip[16] = 10; ip[17] = 213; ip[18] = 0; ip[19] = 1;
    uint16_t c = ip_csum(ip, 20);
    ip[10] = c >> 8; ip[11] = c & 0xff;
    uint8_t *udp = ip + 20;
    udp[0] = sport >> 8; udp[1] = sport & 0xff; udp[2] = dport >> 8; udp[3] = dport & 0xff;
    udp[4] = udp_len >> 8; udp[5] = udp_len & 0xff;   /* checksum 0: none (IPv4) */
}

static int run_tx(const char *iface, double seconds, int core, size_t frame_bytes, uint16_t dport) {
    pin(core);
    if (frame_bytes < 42 || frame_bytes > 1514) { fprintf(stderr, "frame bytes 42..1514\n"); return 2; }
    static uint8_t frames[FH_TX_VARIANTS][1514];
    for (int v = 0; v < FH_TX_VARIANTS; v++) build_frame(frames[v], frame_bytes, (uint16_t)(40000 + v), dport);
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) { perror("socket(AF_PACKET)"); return 1; }
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one)) perror("PACKET_QDISC_BYPASS");
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(iface),
                              .sll_protocol = htons(ETH_P_ALL)};
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof sll)) { perror("bind"); return 1; }
    static struct iovec iov[FH_TX_BATCH];
    static struct mmsghdr mh[FH_TX_BATCH];
    for (int i = 0; i < FH_TX_BATCH; i++) {
        iov[i].iov_base = frames[i % FH_TX_VARIANTS];
        iov[i].iov_len = frame_bytes;
        mh[i].msg_hdr.msg_iov = &iov[i];
        mh[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t c0 = task_cpu_ns(0);
    uint64_t t0 = mono_ns(), end = t0 + (uint64_t)(seconds * 1e9), now = t0;
    uint64_t sent = 0, calls = 0, errors = 0;
    while ((now = mono_ns()) < end) {
        int r = sendmmsg(fd, mh, FH_TX_BATCH, 0);
        calls++;
        if (r > 0) sent += (uint64_t)r;
        else errors++;
    }
    double dt = (now - t0) * 1e-9;
    uint64_t cpu_ns = task_cpu_ns(0) - c0;
    printf("{\"role\": \"tx\", \"packets\": %llu, \"seconds\": %.6f, \"pps\": %.0f, \"calls\": %llu, "
           "\"errors\": %llu, \"frame_bytes\": %zu, \"cpu_s\": %.6f, \"pps_per_cpu_s\": %.0f}\n",
           (unsigned long long)sent, dt, sent / dt, (unsigned long long)calls, (unsigned long long)errors,
           frame_bytes, cpu_ns * 1e-9, cpu_ns ? sent / (cpu_ns * 1e-9) : 0.0);
    return 0;
}

#define FH_GEN_REPEAT 65536     /* frames per BPF_PROG_RUN call (the time check between calls) */
#define FH_GEN_MAX_REFS 16

struct gen_cfg {                /* = struct gen_cfg in xdp_gen.bpf.c */
    uint32_t ifindex, mold;
    uint64_t seq_base;
    uint32_t count, n_refs;
    uint32_t ref_off[FH_GEN_MAX_REFS], ref_delta[FH_GEN_MAX_REFS];
    uint64_t gap_ns;
};

static int run_gen(const char *iface, double seconds, int core, const char *obj_path, const char *frame_arg,
                   const char *mold_spec, uint64_t max_packets, double pps) {
    pin(core);
    static uint8_t frame[2048];
    size_t flen = 0;
    char *endp = NULL;
    long fb = strtol(frame_arg, &endp, 10);
    if (endp && *endp == 0) {
        if (fb < 42 || fb > 1514) { fprintf(stderr, "frame bytes 42..1514\n"); return 2; }
        flen = (size_t)fb;
        build_frame(frame, flen, 40000, 26477);
    } else {
        FILE *f = fopen(frame_arg, "rb");
        if (!f) { perror(frame_arg); return 2; }
        flen = fread(frame, 1, sizeof frame, f);
        fclose(f);
        if (flen < 42) { fprintf(stderr, "frame file too short\n"); return 2; }
    }
    struct gen_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.ifindex = if_nametoindex(iface);
    if (!cfg.ifindex) { perror(iface); return 1; }
    if (mold_spec && *mold_spec) {
        cfg.mold = 1;
        char *spec = strdup(mold_spec), *save = NULL;
        char *tok = strtok_r(spec, ",", &save);
        cfg.seq_base = tok ? strtoull(tok, NULL, 10) : 1;
        tok = strtok_r(NULL, ",", &save);
        cfg.count = tok ? (uint32_t)atoi(tok) : 1;
        while ((tok = strtok_r(NULL, ",", &save)) && cfg.n_refs < FH_GEN_MAX_REFS) {
            char *colon = strchr(tok, ':');
            if (!colon) continue;
            cfg.ref_off[cfg.n_refs] = (uint32_t)atoi(tok);
            cfg.ref_delta[cfg.n_refs] = (uint32_t)atoi(colon + 1);
            cfg.n_refs++;
        }
        free(spec);
    }
    struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
    if (libbpf_get_error(obj)) { fprintf(stderr, "open %s failed\n", obj_path); return 1; }
    if (bpf_object__load(obj)) { fprintf(stderr, "load %s: %s\n", obj_path, strerror(errno)); return 1; }
    struct bpf_program *prog = bpf_object__find_program_by_name(obj, "xdp_gen");
    int cfg_fd = bpf_object__find_map_fd_by_name(obj, "gen_cfg");
    int stats_fd = bpf_object__find_map_fd_by_name(obj, "gen_stats");
    if (!prog || cfg_fd < 0 || stats_fd < 0) { fprintf(stderr, "xdp_gen program/maps missing\n"); return 1; }
    uint32_t k0 = 0;
    if (pps > 0) cfg.gap_ns = (uint64_t)(1e9 / pps);
    if (bpf_map_update_elem(cfg_fd, &k0, &cfg, BPF_ANY)) { perror("gen_cfg update"); return 1; }
    int prog_fd = bpf_program__fd(prog);
    uint64_t c0 = task_cpu_ns(0);
    uint64_t t0 = mono_ns(), end = t0 + (uint64_t)(seconds * 1e9), now = t0;
    uint64_t runs = 0, calls = 0;
    int err = 0;
    while ((now = mono_ns()) < end && (!max_packets || runs < max_packets)) {
        uint32_t rep = FH_GEN_REPEAT;
        if (max_packets && max_packets - runs < rep) rep = (uint32_t)(max_packets - runs);
        LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame, .data_size_in = (uint32_t)flen, .repeat = rep,
                    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
        if (bpf_prog_test_run_opts(prog_fd, &o)) { err = errno; break; }
        runs += rep;
        calls++;
    }
    now = mono_ns();
    double dt = (now - t0) * 1e-9;
    uint64_t cpu_ns = task_cpu_ns(0) - c0;
    int ncpu = libbpf_num_possible_cpus();
    static uint64_t vals[1024];
    uint64_t ran = 0;
    if (ncpu > 0 && ncpu <= 1024 && bpf_map_lookup_elem(stats_fd, &k0, vals) == 0)
        for (int c = 0; c < ncpu; c++) ran += vals[c];
    printf("{\"role\": \"gen\", \"packets\": %llu, \"seconds\": %.6f, \"pps\": %.0f, \"calls\": %llu, "
           "\"error\": \"%s\", \"frame_bytes\": %zu, \"cpu_s\": %.6f, \"pps_per_cpu_s\": %.0f, \"mold\": %u}\n",
           (unsigned long long)ran, dt, ran / dt, (unsigned long long)calls, err ? strerror(err) : "", flen,
           cpu_ns * 1e-9, cpu_ns ? ran / (cpu_ns * 1e-9) : 0.0, cfg.mold);
    bpf_object__close(obj);
    return err ? 1 : 0;
}

typedef size_t (*next_fn)(void *src, fh_pkt *pkts, size_t cap, int timeout_ms);

static size_t afp_next(void *s, fh_pkt *p, size_t cap, int t) { return fh_afp_next((fh_afp *)s, p, cap, t); }

/* The loop shared by both receivers: wait up to 10 s for the first frame, then count for `seconds`. */
/* pid of the threaded-NAPI kthread "napi/IFACE-ID" (0: none, i.e. NAPI runs in softirq) */
static int find_napi_pid(const char *iface) {
    char want[64];
    snprintf(want, sizeof want, "napi/%s-", iface);
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        int pid = atoi(e->d_name);
        if (pid <= 0) continue;
        char path[64], comm[64] = "";
        snprintf(path, sizeof path, "/proc/%d/comm", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(comm, sizeof comm, f) && !strncmp(comm, want, strlen(want))) found = pid;
        fclose(f);
    }
    closedir(d);
    return found;
}

typedef struct rx_cpu {
    const char *iface;
    int napi_pid;           /* threaded-NAPI kthread of the receive veth, found at the first packet */
    uint64_t self_ns, napi_ns;
} rx_cpu;

static uint64_t rx_loop(next_fn next, void *src, size_t batch, double seconds, uint16_t port, double *dt_out,
                        uint64_t *port_hits, uint64_t *calls_out, rx_cpu *cpu) {
    uint64_t s0 = 0, n0 = 0;
    static fh_pkt pkts[FH_RX_MAX_BATCH];
    uint64_t n = 0, hits = 0, calls = 0, t0 = 0, deadline = mono_ns() + 10000000000ull, end = 0, now = 0;
    for (;;) {
        size_t got = next(src, pkts, batch, 1);
        calls++;
        now = mono_ns();
        if (got) {
            if (!t0) {
                t0 = now;
                end = t0 + (uint64_t)(seconds * 1e9);
                cpu->napi_pid = find_napi_pid(cpu->iface);
                s0 = task_cpu_ns(0);
                n0 = cpu->napi_pid ? task_cpu_ns(cpu->napi_pid) : 0;
            }
            for (size_t i = 0; i < got; i++) {
                /* touch the frame: UDP destination port (Ethernet + 20-byte IPv4 header assumed) */
                if (pkts[i].caplen >= 38) {
                    uint16_t dp;
                    memcpy(&dp, pkts[i].data + 36, 2);
                    hits += ntohs(dp) == port;
                }
            }
            n += got;
        }
        if (t0 ? now >= end : now >= deadline) break;
    }
    if (t0) {
        cpu->self_ns = task_cpu_ns(0) - s0;
        cpu->napi_ns = cpu->napi_pid ? task_cpu_ns(cpu->napi_pid) - n0 : 0;
    }
    *dt_out = t0 ? (now - t0) * 1e-9 : 0;
    *port_hits = hits;
    *calls_out = calls;
    return n;
}

static int run_rx_afxdp(const char *iface, double seconds, int core, const char *bpf, uint16_t port, int busy_us,
                        size_t batch, const char *mode) {
    pin(core);
    fh_xsk_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.iface = iface;
    cfg.n_queues = 1;
    cfg.xdp_mode = (mode && !strcmp(mode, "skb")) ? FH_XSK_MODE_SKB : FH_XSK_MODE_NATIVE;
    cfg.zerocopy = 0;
    cfg.busy_poll_us = busy_us;
    cfg.bpf_object = bpf;
    cfg.ports[0] = port;
    cfg.n_ports = 1;
    char err[512];
    fh_xsk *s = NULL;
    int rc = fh_xsk_open(&s, &cfg, err, sizeof err);
    if (rc) { fprintf(stderr, "fh_xsk_open: %s\n", err); return 1; }
    fprintf(stderr, "rx-afxdp ready\n");
    double dt;
    uint64_t hits, calls;
    rx_cpu cpu = {.iface = iface};
    uint64_t n = rx_loop(fh_xsk_next, s, batch, seconds, port, &dt, &hits, &calls, &cpu);
    fh_xsk_stats st;
    fh_xsk_stats_get(s, &st);
    printf("{\"role\": \"rx-afxdp\", \"packets\": %llu, \"seconds\": %.6f, \"pps\": %.0f, \"port_hits\": %llu, "
           "\"calls\": %llu, \"busy_poll_us\": %d, \"batch\": %zu, \"xdp_mode\": %llu, \"rx_dropped\": %llu, "
           "\"rx_ring_full\": %llu, \"rx_fill_ring_empty\": %llu, \"xdp_seen\": %llu, \"xdp_redirected\": %llu, "
           "\"wakeups\": %llu, \"idle\": %llu, \"cpu_s\": %.6f, \"napi_cpu_s\": %.6f, \"busy_poll_napi_id\": %llu}\n",
           (unsigned long long)n, dt, dt > 0 ? n / dt : 0.0, (unsigned long long)hits, (unsigned long long)calls,
           busy_us, batch, (unsigned long long)st.xdp_mode, (unsigned long long)st.rx_dropped,
           (unsigned long long)st.rx_ring_full, (unsigned long long)st.rx_fill_ring_empty,
           (unsigned long long)st.xdp_seen, (unsigned long long)st.xdp_redirected,
           (unsigned long long)st.wakeups, (unsigned long long)st.idle, cpu.self_ns * 1e-9, cpu.napi_ns * 1e-9,
           (unsigned long long)st.busy_poll_napi_id);
    fh_xsk_close(s);
    return 0;
}

static int run_rx_afpacket(const char *iface, double seconds, int core, size_t batch) {
    pin(core);
    fh_afp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.iface = iface;
    char err[512];
    fh_afp *s = NULL;
    int rc = fh_afp_open(&s, &cfg, err, sizeof err);
    if (rc) { fprintf(stderr, "fh_afp_open: %s\n", err); return 1; }
    fprintf(stderr, "rx-afpacket ready\n");
    double dt;
    uint64_t hits, calls;
    rx_cpu cpu = {.iface = iface};
    uint64_t n = rx_loop(afp_next, s, batch, seconds, 26477, &dt, &hits, &calls, &cpu);
    fh_afp_stats st;
    fh_afp_stats_get(s, &st);
    printf("{\"role\": \"rx-afpacket\", \"packets\": %llu, \"seconds\": %.6f, \"pps\": %.0f, \"port_hits\": %llu, "
           "\"calls\": %llu, \"batch\": %zu, \"kernel_packets\": %llu, \"kernel_drops\": %llu, \"cpu_s\": %.6f, "
           "\"napi_cpu_s\": %.6f}\n",
           (unsigned long long)n, dt, dt > 0 ? n / dt : 0.0, (unsigned long long)hits, (unsigned long long)calls,
           batch, (unsigned long long)st.kernel_packets, (unsigned long long)st.kernel_drops, cpu.self_ns * 1e-9,
           cpu.napi_ns * 1e-9);
    fh_afp_close(s);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s tx IFACE SECONDS CPU [FRAME_BYTES] [DST_PORT]\n"
                        "       %s gen IFACE SECONDS CPU GEN_BPF_OBJ FRAME_BYTES|FRAME_FILE [MOLD_SPEC] [MAX_PACKETS] [PPS]\n"
                        "       %s rx-afxdp IFACE SECONDS CPU BPF_OBJ DST_PORT [BUSY_POLL_US] [BATCH] [skb|native]\n"
                        "       %s rx-afpacket IFACE SECONDS CPU [BATCH]\n", argv[0], argv[0], argv[0], argv[0]);
        return 2;
    }
    const char *iface = argv[2];
    double seconds = atof(argv[3]);
    int cpu = atoi(argv[4]);
    if (!strcmp(argv[1], "tx"))
        return run_tx(iface, seconds, cpu, argc > 5 ? (size_t)atoi(argv[5]) : 60,
                      argc > 6 ? (uint16_t)atoi(argv[6]) : 26477);
    if (!strcmp(argv[1], "gen") && argc > 6)
        return run_gen(iface, seconds, cpu, argv[5], argv[6], argc > 7 ? argv[7] : NULL,
                       argc > 8 ? strtoull(argv[8], NULL, 10) : 0, argc > 9 ? atof(argv[9]) : 0);
    if (!strcmp(argv[1], "rx-afxdp") && argc > 6) {
        size_t batch = argc > 8 ? (size_t)atoi(argv[8]) : 256;
        if (batch < 1 || batch > FH_RX_MAX_BATCH) batch = 256;
        return run_rx_afxdp(iface, seconds, cpu, argv[5], (uint16_t)atoi(argv[6]), argc > 7 ? atoi(argv[7]) : 0,
                            batch, argc > 9 ? argv[9] : "native");
    }
    if (!strcmp(argv[1], "rx-afpacket")) {
        size_t batch = argc > 5 ? (size_t)atoi(argv[5]) : 4096;
        if (batch < 1 || batch > FH_RX_MAX_BATCH) batch = 4096;
        return run_rx_afpacket(iface, seconds, cpu, batch);
    }
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
