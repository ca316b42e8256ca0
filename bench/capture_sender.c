/* capture_sender.c - blast the frames of a pcap file out of an interface as fast as possible (or at
 * --pps), through an AF_PACKET raw socket with sendmmsg in batches. For bench/bench_capture.py, which
 * runs it inside a network namespace on one end of a veth pair. Prints "sent N packets in S s" on exit.
 *
 *   capture_sender IFACE FILE.pcap [pps]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 256           /* frames per sendmmsg */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s IFACE FILE.pcap [pps]\n", argv[0]); return 2; }
    double pps = argc > 3 ? atof(argv[3]) : 0;
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 2; }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)sz);
    if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) { perror("read"); return 2; }
    fclose(f);
    uint32_t magic;
    memcpy(&magic, buf, 4);
    if (magic != 0xA1B2C3D4u && magic != 0xA1B23C4Du) { fprintf(stderr, "little-endian pcap expected\n"); return 2; }
    size_t cap = 1 << 16, n = 0;
    struct iovec *iov = malloc(cap * sizeof *iov);
    for (long off = 24; off + 16 <= sz;) {
        uint32_t incl;
        memcpy(&incl, buf + off + 8, 4);
        if (off + 16 + incl > (unsigned long)sz) break;
        if (n == cap) { cap *= 2; iov = realloc(iov, cap * sizeof *iov); }
        iov[n].iov_base = buf + off + 16;
        iov[n].iov_len = incl;
        n++;
        off += 16 + incl;
    }
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(argv[1]),
                              .sll_protocol = htons(ETH_P_ALL)};
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof sll)) { perror("bind"); return 1; }
    struct mmsghdr *mh = calloc(BATCH, sizeof *mh);
    double t0 = now_s();
    size_t sent = 0, retries = 0;
    while (sent < n) {
        size_t k = n - sent < BATCH ? n - sent : BATCH;
        for (size_t i = 0; i < k; i++) {
            mh[i].msg_hdr.msg_iov = &iov[sent + i];
            mh[i].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(fd, mh, (unsigned)k, 0);
        if (r <= 0) { retries++; usleep(10); continue; }
        sent += (size_t)r;
        if (pps > 0) {
            double due = t0 + sent / pps;
            while (now_s() < due) {}
        }
    }
    double dt = now_s() - t0;
    printf("sent %zu packets in %.6f s (%.0f pps, %zu retries)\n", sent, dt, sent / dt, retries);
    return 0;
}
