/* feed_frontend.c - the feed's front end alone: the capture file source (csrc/pcap.c) and the MoldUDP64 /
 * BinaryFILE framer (csrc/moldudp64.c), no decoder, no book. CPU time of the thread per run, and a digest
 * of the messages handed out (length, type byte, sequence, channel) so that two builds can be compared.
 *
 *   gcc -O3 -Icsrc/include -o /tmp/feed_frontend bench/feed_frontend.c csrc/pcap.c csrc/moldudp64.c \
 *       csrc/net.c -lz
 *   /tmp/feed_frontend bench/out/itch_10000000_300_7.bin 3
 *
 * Usage: feed_frontend CAPTURE [RUNS] (pcap, pcapng, NASDAQ BinaryFILE, optionally gzip-compressed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "fh/pcap.h"
#include "fh/moldudp64.h"
static double cpu(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    int runs = argc > 2 ? atoi(argv[2]) : 1;
    for (int r = 0; r < runs; r++) {
        fh_filesrc *src = NULL; char err[256];
        if (fh_filesrc_open(&src, argv[1], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
        fh_framer_config cfg; memset(&cfg, 0, sizeof cfg);
        fh_framer *fr = fh_framer_new(&cfg);
        static fh_pkt pkts[4096];
        const fh_msg *msgs; int eof = 0;
        uint64_t nm = 0, h = 1469598103934665603ull, nrec = 0;
        double t = cpu();
        for (;;) {
            if (fh_framer_input_done(fr) && !eof) {
                size_t k = fh_filesrc_next(src, pkts, 4096);
                if (k == 0) eof = 1; else fh_framer_set_input(fr, pkts, k);
            }
            size_t m = eof ? fh_framer_finish(fr, &msgs) : fh_framer_run(fr, &msgs);
            for (size_t i = 0; i < m; i++) {
                if (msgs[i].flags & FH_MSG_RECORD) { nrec++; continue; }
                h = (h ^ (msgs[i].len * 131 + msgs[i].data[0] + msgs[i].sequence * 7 + msgs[i].channel)) * 1099511628211ull;
                nm++;
            }
            if (eof && m == 0) break;
        }
        t = cpu() - t;
        fh_filesrc_stats st = *fh_filesrc_stats_get(src);
        printf("%.3f s  %lu msgs %lu recs digest %016lx packets %lu data_bytes %lu\n", t, nm, nrec, h,
               (unsigned long)st.packets, (unsigned long)st.data_bytes);
        fh_framer_free(fr); fh_filesrc_close(src);
    }
    return 0;
}
