/* xdp_gen.bpf.c - in-kernel packet generator for bench/capture_bare.c `gen` (the mechanism of
 * xdp-trafficgen, whose Debian binary does not load on this kernel): user space runs this program with
 * BPF_PROG_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, repeat = N), the kernel builds each
 * frame from the template in a page-pool page, runs the program and performs its XDP_REDIRECT for
 * real: here to the namespace end of the benchmark veth, whose ndo_xdp_xmit hands the xdp_frame to the
 * peer (the capture end) without building an skb. No socket, no syscall and no skb per packet.
 *
 * cfg.mold == 1: the template is one MoldUDP64 packet (Ethernet/IPv4/UDP, no VLAN, 20-byte IPv4
 * header); every run writes the next sequence number (seq_base + k * count) into the MoldUDP64 header
 * and, for `n_refs` ITCH order references at the byte offsets `ref_off[]` of the frame, writes
 * ref = seq + ref_delta[i] (big endian), so that every add/delete pair refers to a fresh order.
 * Frames are counted per CPU in gen_stats[0].
 * Built by bench/capture_bare's caller with:
 *     clang -O2 -g -target bpf -I/usr/include/$(gcc -print-multiarch) -c xdp_gen.bpf.c -o xdp_gen.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define GEN_MAX_REFS 16
#define MOLD_SEQ_OFF 52         /* 14 Ethernet + 20 IPv4 + 8 UDP + 10 session */

struct gen_cfg {
    __u32 ifindex;              /* redirect target (the namespace end of the veth) */
    __u32 mold;                 /* 1: patch MoldUDP64 sequence numbers and order refs */
    __u64 seq_base;             /* sequence number of the first generated packet */
    __u32 count;                /* messages per packet */
    __u32 n_refs;
    __u32 ref_off[GEN_MAX_REFS];    /* byte offset of an 8-byte ITCH order reference in the frame */
    __u32 ref_delta[GEN_MAX_REFS];  /* ref = seq + delta */
    __u64 gap_ns;               /* > 0: pace, one frame every gap_ns (spins; see gen_pace) */
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct gen_cfg);
} gen_cfg SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);     /* [0] frames generated, [1] pacing: when the next frame is due (ns) */
    __type(key, __u32);
    __type(value, __u64);
} gen_stats SEC(".maps");

static long spin_until(__u32 i, void *due) {
    return bpf_ktime_get_ns() >= *(__u64 *)due ? 1 : 0;
}

/* Pacing inside the program: BPF_PROG_RUN has a fixed cost of ~25 ms per call here (page pool set up
 * and torn down), so user space cannot pace small bursts; the program spins (bpf_loop over
 * bpf_ktime_get_ns) until the frame is due. A schedule more than 1 ms behind restarts from now (no
 * catch-up burst). Frames still leave in the kernel's batches of batch_size (64). */
static __always_inline void gen_pace(__u64 gap_ns) {
    __u32 k1 = 1;
    __u64 *due = bpf_map_lookup_elem(&gen_stats, &k1);
    if (!due) return;
    __u64 now = bpf_ktime_get_ns();
    if (*due == 0 || now > *due + 1000000) *due = now;
    __u64 when = *due;          /* bpf_loop's context must live on the stack */
    bpf_loop(1 << 22, spin_until, &when, 0);
    *due = when + gap_ns;
}

static __always_inline int put_be64(void *data, void *end, __u32 off, __u64 v) {
    if (off > 2048) return -1;
    __u8 *p = (__u8 *)data + off;
    if ((void *)(p + 8) > end) return -1;
    __u64 be = bpf_cpu_to_be64(v);
    __builtin_memcpy(p, &be, 8);
    return 0;
}

SEC("xdp")
int xdp_gen(struct xdp_md *ctx) {
    __u32 k0 = 0;
    struct gen_cfg *c = bpf_map_lookup_elem(&gen_cfg, &k0);
    __u64 *n = bpf_map_lookup_elem(&gen_stats, &k0);
    if (!c || !n) return XDP_ABORTED;
    if (c->gap_ns) gen_pace(c->gap_ns);
    if (c->mold) {
        void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
        __u64 seq = c->seq_base + *n * c->count;
        if (put_be64(data, end, MOLD_SEQ_OFF, seq)) return XDP_ABORTED;
        for (int i = 0; i < GEN_MAX_REFS; i++) {
            if (i >= c->n_refs) break;
            if (put_be64(data, end, c->ref_off[i], seq + c->ref_delta[i])) return XDP_ABORTED;
        }
    }
    *n += 1;
    return bpf_redirect(c->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
