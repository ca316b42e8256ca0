/* test_capture_afpacket.c - the AF_PACKET source on loopback (root only; prints a skip otherwise), in
 * both ring layouts (TPACKET_V3 blocks, TPACKET_V2 per-frame slots of the latency mode): errors come back
 * as -errno with a sentence; datagrams sent to 127.0.0.1 come out as fh_pkt frames whose UDP payload
 * (parsed with fh_net_udp) is byte-identical, stamped by the kernel, in order; a partly handed-out block
 * survives small `cap` calls; the V2 ring (512 slots for 600 frames) wraps. Runs under ASan/UBSan too. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fh/capture_afpacket.h"
#include "fh/msg.h"
#include "fh/net.h"

#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

#define N_DGRAMS 300
#define PORT 47123

static int capture_on_lo(int version) {
    char err[256];
    fh_afp *s = NULL;
    fh_afp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.iface = "lo";
    cfg.block_size = 1u << 14;      /* small blocks: several of them for N_DGRAMS */
    cfg.block_count = version == 2 ? 2048 : 64;  /* V2: 16384 slots of 2 KiB (lo is busy: other tests) */
    cfg.ignore_outgoing = 0;        /* loopback frames are "outgoing" once and "host" once */
    cfg.tpacket_version = version;
    int rc = fh_afp_open(&s, &cfg, err, sizeof err);
    if (rc != 0) {
        printf("test_capture_afpacket: skipped, cannot open lo: %s\n", err);
        return 0;
    }
    CHECK(fh_afp_tpacket_version(s) == version);
    fh_pkt pkts[7];                 /* a tiny cap: blocks are handed out in pieces */
    uint64_t last_ts = 0;
    for (int round = 0; round < (version == 2 ? 2 : 1); round++) {
    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(tx >= 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(PORT)};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < N_DGRAMS; i++) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "fh-afp-test %d", i);
        CHECK(sendto(tx, msg, (size_t)n, 0, (struct sockaddr *)&dst, sizeof dst) == n);
    }
    close(tx);
    int next = 0, polls = 0;
    while (next < N_DGRAMS && polls < 200) {
        size_t n = fh_afp_next(s, pkts, 7, 20);
        if (!n) { polls++; continue; }
        for (size_t i = 0; i < n; i++) {
            fh_udp u;
            if (fh_net_udp(pkts[i].data, pkts[i].caplen, pkts[i].linktype, &u) != FH_NET_OK) continue;
            if (u.dst_port != PORT) continue;
            char want[64];
            int wn = snprintf(want, sizeof want, "fh-afp-test %d", next);
            if ((int)u.len == wn && memcmp(u.payload, want, (size_t)wn) == 0) {
                CHECK(pkts[i].flags == FH_MSG_TS_SW || pkts[i].flags == FH_MSG_TS_HW);
                CHECK(pkts[i].ts_ns >= last_ts && pkts[i].ts_ns > 1600000000ull * 1000000000ull);
                last_ts = pkts[i].ts_ns;
                next++;
            }
            /* (each datagram is seen twice on lo: outgoing and incoming; the second copy of i
               compares against i + 1 and is skipped) */
        }
    }
    if (next != N_DGRAMS) {
        fh_afp_stats dbg;
        fh_afp_stats_get(s, &dbg);
        fprintf(stderr, "V%d round %d: next %d packets %llu drops %llu polls %d\n", version, round, next,
                (unsigned long long)dbg.packets, (unsigned long long)dbg.kernel_drops, polls);
    }
    CHECK(next == N_DGRAMS);
    }
    fh_afp_stats st;
    fh_afp_stats_get(s, &st);
    CHECK(st.packets >= N_DGRAMS && st.blocks >= 1 && st.kernel_drops == 0);
    fh_afp_wake(s);
    CHECK(fh_afp_next(s, pkts, 7, -1) <= 7);     /* returns (woken) instead of blocking */
    fh_afp_close(s);
    printf("test_capture_afpacket: TPACKET_V%d: %d datagrams captured in order\n", version, N_DGRAMS);
    return 0;
}

int main(void) {
    char err[256];
    fh_afp *s = NULL;
    fh_afp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    CHECK(fh_afp_open(&s, &cfg, err, sizeof err) == -EINVAL && s == NULL && strstr(err, "interface"));
    cfg.iface = "fhnosuchif0";
    CHECK(fh_afp_open(&s, &cfg, err, sizeof err) < 0 && s == NULL && err[0]);
    cfg.iface = "lo";
    cfg.tpacket_version = 5;
    CHECK(fh_afp_open(&s, &cfg, err, sizeof err) == -EINVAL && s == NULL && strstr(err, "tpacket_version"));
    if (geteuid() != 0) {
        printf("test_capture_afpacket: skipped the capture part (needs root / CAP_NET_RAW)\n");
        return 0;
    }
    capture_on_lo(3);
    capture_on_lo(2);
    return 0;
}
