/* fh/xdp_meta.h - the XDP RX metadata our XDP program puts in front of every frame it redirects to an
 * AF_XDP socket when it is loaded as the receive-timestamp variant (xdp_feed_rxts.bpf.o, built from
 * csrc/bpf/xdp_feed.bpf.c with -DFH_XDP_RX_TIMESTAMP), and how the receive loop reads it back.
 *
 * The program is loaded device-bound (BPF_F_XDP_DEV_BOUND_ONLY) so that the kfunc
 * bpf_xdp_metadata_rx_timestamp() is the driver's own (Linux >= 6.3; drivers that expose the NIC's
 * hardware receive stamp: mlx5, ice, igc, stmmac, veth for skbs, ...). It calls the kfunc, grows the
 * metadata area in front of the packet by sizeof(struct fh_xdp_meta) (bpf_xdp_adjust_meta) and fills it:
 * the kernel copies the metadata into the UMEM together with the frame, right before the packet data,
 * in zero-copy and in copy mode.
 *
 * One definition for both sides: the BPF program (compiled with clang -target bpf) and
 * csrc/afxdp/capture_afxdp.c include this header.
 */
#ifndef FH_XDP_META_H
#define FH_XDP_META_H

#include <linux/types.h>

#define FH_XDP_META_MAGIC 0x31546866u   /* "fhT1" little endian: the area was written by our program */

struct fh_xdp_meta {
    __u64 rx_timestamp;     /* what the kfunc returned: ns, NIC (PHC) clock; 0 = none */
    __s32 status;           /* the kfunc's return value: 0, -ENODATA (no stamp for this frame),
                               -EOPNOTSUPP (driver without the kfunc, or program not device-bound) */
    __u32 magic;            /* FH_XDP_META_MAGIC; the receive loop clears it after reading */
};

#ifndef __bpf__
/* fh_xdp_meta_take() that also stores the kfunc's status in *status (when status is not NULL and the
 * metadata is ours). */
static inline int fh_xdp_meta_take_status(unsigned char *data, __u64 *ts_ns, __s32 *status) {
    struct fh_xdp_meta *m = (struct fh_xdp_meta *)(void *)(data - sizeof(struct fh_xdp_meta));
    if (m->magic != FH_XDP_META_MAGIC) return -1;
    m->magic = 0;
    if (status) *status = m->status;
    if (m->status != 0 || m->rx_timestamp == 0) return 0;
    *ts_ns = m->rx_timestamp;
    return 1;
}

/* What the receive loop makes of the metadata in front of `data` (a frame it owns):
 *   1: a hardware receive stamp, stored in *ts_ns;  0: our metadata, but no stamp for this frame;
 *  -1: no metadata of ours (program without the timestamp variant, or the kernel did not copy it).
 * The magic is cleared so that a later frame reusing the same UMEM chunk cannot read a stale stamp. */
static inline int fh_xdp_meta_take(unsigned char *data, __u64 *ts_ns) {
    return fh_xdp_meta_take_status(data, ts_ns, (__s32 *)0);
}
#endif

#endif
