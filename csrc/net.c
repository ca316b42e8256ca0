/* net.c - frame to UDP payload (see fh/net.h). Every field is loaded after the cursor checked that
 * its bytes were captured; nothing is read past caplen. Pure, any thread. */
#include "fh/net.h"

#include <stddef.h>

#include "fh/endian.h"

static const char *const NAMES[FH_NET_N_REASONS] = {
    "ok", "unsupported_linktype", "truncated_link", "too_many_vlans", "not_ipv4", "bad_ipv4_header",
    "truncated_ipv4", "ipv4_fragment", "not_udp", "bad_udp_length", "truncated_udp",
};

const char *fh_net_reason_name(int reason) {
    return (reason >= 0 && reason < FH_NET_N_REASONS) ? NAMES[reason] : "?";
}

int fh_net_udp(const uint8_t *p, uint32_t caplen, uint16_t linktype, fh_udp *out) {
    uint32_t off = 0;
    uint16_t ethertype;
    uint16_t vlan = 0;
    switch (linktype) {
    case FH_LINKTYPE_ETHERNET: {
        if (caplen < 14) return FH_NET_TRUNCATED_LINK;
        ethertype = fh_load_be16(p + 12);
        off = 14;
        int tags = 0;
        while (ethertype == 0x8100 || ethertype == 0x88A8 || ethertype == 0x9100) {
            if (++tags > FH_NET_MAX_VLAN) return FH_NET_TOO_MANY_VLANS;
            if (caplen < off + 4) return FH_NET_TRUNCATED_LINK;
            vlan = fh_load_be16(p + off) & 0x0FFF;
            ethertype = fh_load_be16(p + off + 2);
            off += 4;
        }
        break;
    }
    case FH_LINKTYPE_LINUX_SLL:
        if (caplen < 16) return FH_NET_TRUNCATED_LINK;
        ethertype = fh_load_be16(p + 14);
        off = 16;
        break;
    case FH_LINKTYPE_LINUX_SLL2:
        if (caplen < 20) return FH_NET_TRUNCATED_LINK;
        ethertype = fh_load_be16(p);
        off = 20;
        break;
    case FH_LINKTYPE_RAW:
    case FH_LINKTYPE_IPV4:
        if (caplen < 1) return FH_NET_TRUNCATED_LINK;
        ethertype = (p[0] >> 4) == 4 ? 0x0800 : 0x86DD;
        break;
    case FH_LINKTYPE_NULL: {
        if (caplen < 4) return FH_NET_TRUNCATED_LINK;
        uint32_t fam = fh_load_le32(p);
        ethertype = (fam == 2 || fam == 0x02000000u) ? 0x0800 : 0;
        off = 4;
        break;
    }
    default:
        return FH_NET_UNSUPPORTED_LINKTYPE;
    }
    if (ethertype != 0x0800) return FH_NET_NOT_IPV4;
    if (caplen - off < 20) return FH_NET_TRUNCATED_IPV4;
    const uint8_t *ip = p + off;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0F) * 4;
    if ((ip[0] >> 4) != 4 || ihl < 20) return FH_NET_BAD_IPV4_HEADER;
    uint32_t total = fh_load_be16(ip + 2);
    if (total < ihl) return FH_NET_BAD_IPV4_HEADER;
    if (caplen - off < total) return FH_NET_TRUNCATED_IPV4;
    uint16_t frag = fh_load_be16(ip + 6);
    if ((frag & 0x2000) || (frag & 0x1FFF)) return FH_NET_FRAGMENT;
    out->ip_proto = ip[9];
    if (ip[9] != 17) return FH_NET_NOT_UDP;
    if (total - ihl < 8) return FH_NET_TRUNCATED_UDP;
    const uint8_t *udp = ip + ihl;
    uint32_t ulen = fh_load_be16(udp + 4);
    if (ulen < 8 || ulen > total - ihl) return FH_NET_BAD_UDP_LENGTH;
    out->payload = udp + 8;
    out->len = ulen - 8;
    out->src_ip = fh_load_be32(ip + 12);
    out->dst_ip = fh_load_be32(ip + 16);
    out->src_port = fh_load_be16(udp);
    out->dst_port = fh_load_be16(udp + 2);
    out->vlan = vlan;
    out->_reserved = 0;
    return FH_NET_OK;
}
