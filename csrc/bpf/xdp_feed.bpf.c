/* xdp_feed.bpf.c - XDP program: redirect only the feed's UDP datagrams to the AF_XDP socket of the
 * receiving queue; everything else (ARP, IGMP, SSH, other UDP) goes on to the kernel stack (XDP_PASS).
 *
 * The feed is: IPv4 UDP to a destination port in `fh_ports`, and, unless cfg.any_group is set, to a
 * destination address in `fh_groups`. Up to 2 VLAN tags are walked. Fragments pass (the feed never
 * fragments; the kernel reassembles anything else). Counters per CPU in `fh_stats`.
 * Built by src/feedhandler/capture/live/_afxdp_build.py with:
 *     clang -O2 -g -target bpf -I/usr/include/$(gcc -print-multiarch) -c xdp_feed.bpf.c -o xdp_feed.bpf.o
 * Every header field is read after a bounds check against data_end (the verifier insists anyway).
 *
 * With -DFH_XDP_RX_TIMESTAMP (object xdp_feed_rxts.bpf.o, loaded device-bound by the AF_XDP source) every
 * redirected frame also carries a struct fh_xdp_meta (fh/xdp_meta.h) in its metadata area: the driver's
 * hardware receive stamp from the bpf_xdp_metadata_rx_timestamp() kfunc and the kfunc's status.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifdef FH_XDP_RX_TIMESTAMP
#include "fh/xdp_meta.h"
/* the driver's implementation when the program is device-bound (else a stub returning -EOPNOTSUPP) */
extern int bpf_xdp_metadata_rx_timestamp(const struct xdp_md *ctx, __u64 *timestamp) __ksym;
#endif

#define FH_XDP_MAX_QUEUES 64
#define FH_XDP_MAX_PORTS 16
#define FH_XDP_MAX_GROUPS 16

struct fh_xdp_cfg {
    __u32 any_group;        /* 1: any destination address */
};

enum { FH_XDP_SEEN = 0, FH_XDP_REDIRECTED, FH_XDP_PASSED, FH_XDP_NO_SOCKET, FH_XDP_META_FAILED, FH_XDP_N_STATS };

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, FH_XDP_MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} xsks_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FH_XDP_MAX_PORTS);
    __type(key, __u16);     /* host order */
    __type(value, __u8);
} fh_ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FH_XDP_MAX_GROUPS);
    __type(key, __u32);     /* network order */
    __type(value, __u8);
} fh_groups SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fh_xdp_cfg);
} fh_cfg SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FH_XDP_N_STATS);
    __type(key, __u32);
    __type(value, __u64);
} fh_stats SEC(".maps");

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

static __always_inline void count(__u32 k) {
    __u64 *v = bpf_map_lookup_elem(&fh_stats, &k);
    if (v) *v += 1;
}

static __always_inline int pass(void) {
    count(FH_XDP_PASSED);
    return XDP_PASS;
}

SEC("xdp")
int xdp_feed(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    count(FH_XDP_SEEN);
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return pass();
    __u16 proto = eth->h_proto;
    void *cur = eth + 1;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD)) break;
        struct vlan_hdr *vh = cur;
        if ((void *)(vh + 1) > end) return pass();
        proto = vh->proto;
        cur = vh + 1;
    }
    if (proto != bpf_htons(ETH_P_IP)) return pass();
    struct iphdr *ip = cur;
    if ((void *)(ip + 1) > end) return pass();
    if (ip->ihl < 5 || ip->protocol != IPPROTO_UDP) return pass();
    if (ip->frag_off & bpf_htons(0x3FFF)) return pass();      /* MF or offset: a fragment */
    struct udphdr *udp = (void *)ip + ip->ihl * 4;
    if ((void *)(udp + 1) > end) return pass();
    __u16 port = bpf_ntohs(udp->dest);
    if (!bpf_map_lookup_elem(&fh_ports, &port)) return pass();
    __u32 k0 = 0;
    struct fh_xdp_cfg *cfg = bpf_map_lookup_elem(&fh_cfg, &k0);
    if (!cfg) return pass();
    if (!cfg->any_group) {
        __u32 dst = ip->daddr;
        if (!bpf_map_lookup_elem(&fh_groups, &dst)) return pass();
    }
    __u32 q = ctx->rx_queue_index;
    if (!bpf_map_lookup_elem(&xsks_map, &q)) {
        count(FH_XDP_NO_SOCKET);
        return XDP_PASS;
    }
    count(FH_XDP_REDIRECTED);
#ifdef FH_XDP_RX_TIMESTAMP
    /* after the last header read: adjust_meta invalidates the packet pointers */
    if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct fh_xdp_meta)) == 0) {
        struct fh_xdp_meta *m = (void *)(long)ctx->data_meta;
        if ((void *)(m + 1) <= (void *)(long)ctx->data) {
            __u64 ts = 0;
            int rc = bpf_xdp_metadata_rx_timestamp(ctx, &ts);
            m->rx_timestamp = rc == 0 ? ts : 0;
            m->status = rc;
            m->magic = FH_XDP_META_MAGIC;
        } else {
            count(FH_XDP_META_FAILED);
        }
    } else {
        count(FH_XDP_META_FAILED);     /* no room for metadata (driver without data_meta support) */
    }
#endif
    return bpf_redirect_map(&xsks_map, q, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
