/* test_xdp_meta.c - the receive loop's reading of the XDP RX metadata (fh/xdp_meta.h) that the
 * receive-timestamp XDP program writes in front of a frame: a stamp is taken once, errors and zero stamps
 * fall back, foreign or stale bytes are never taken for a stamp. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "fh/xdp_meta.h"

static int failures;
#define CHECK(c) do { if (!(c)) { printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)

int main(void) {
    /* a UMEM chunk: 256 bytes of XDP headroom, then the frame */
    unsigned char chunk[2048];
    unsigned char *data = chunk + 256;
    struct fh_xdp_meta *m = (struct fh_xdp_meta *)(void *)(data - sizeof *m);
    __u64 ts = 42;

    memset(chunk, 0, sizeof chunk);
    CHECK(fh_xdp_meta_take(data, &ts) == -1 && ts == 42);          /* nothing written: no metadata */

    m->rx_timestamp = 1700000000123456789ull; m->status = 0; m->magic = FH_XDP_META_MAGIC;
    CHECK(fh_xdp_meta_take(data, &ts) == 1 && ts == 1700000000123456789ull);
    CHECK(m->magic == 0);                                             /* consumed */
    ts = 42;
    CHECK(fh_xdp_meta_take(data, &ts) == -1 && ts == 42);            /* a stale stamp is not read twice */

    m->rx_timestamp = 0; m->status = 0; m->magic = FH_XDP_META_MAGIC;  /* driver answered, no stamp (veth skb) */
    CHECK(fh_xdp_meta_take(data, &ts) == 0 && ts == 42);
    m->rx_timestamp = 99; m->status = -ENODATA; m->magic = FH_XDP_META_MAGIC;
    CHECK(fh_xdp_meta_take(data, &ts) == 0 && ts == 42);
    m->rx_timestamp = 99; m->status = -EOPNOTSUPP; m->magic = FH_XDP_META_MAGIC;
    CHECK(fh_xdp_meta_take(data, &ts) == 0 && ts == 42);
    m->rx_timestamp = 99; m->status = 0; m->magic = FH_XDP_META_MAGIC ^ 1u;  /* not ours */
    CHECK(fh_xdp_meta_take(data, &ts) == -1 && ts == 42);
    CHECK(sizeof(struct fh_xdp_meta) == 16);                         /* a multiple of 4: adjust_meta's rule */

    printf("test_xdp_meta: %d failures\n", failures);
    return failures != 0;
}
