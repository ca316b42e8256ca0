/* fh/net.h - link, network and transport headers down to a UDP payload.
 *
 * fh_net_udp() walks one captured frame with a bounds-checked cursor: link layer (Ethernet II with any
 * number up to FH_NET_MAX_VLAN of 802.1Q / 802.1ad tags, Linux cooked SLL and SLL2, raw IPv4, BSD
 * loopback), IPv4 (version, header length, total length within the capture, fragments), UDP (length
 * within the IP payload). It returns FH_NET_OK and fills fh_udp, or the reason the frame carries no
 * usable UDP datagram; callers count reasons, nothing here fails. Pure function, any thread.
 * On FH_NET_NOT_UDP only out->ip_proto is set (the IPv4 protocol number: 6 for TCP).
 */
#ifndef FH_NET_H
#define FH_NET_H

#include <stdint.h>

#define FH_NET_MAX_VLAN 4          /* stacked VLAN tags accepted before a frame is rejected */

/* LINKTYPE_* values understood */
#define FH_LINKTYPE_NULL 0
#define FH_LINKTYPE_ETHERNET 1
#define FH_LINKTYPE_RAW 101
#define FH_LINKTYPE_LINUX_SLL 113
#define FH_LINKTYPE_IPV4 228
#define FH_LINKTYPE_LINUX_SLL2 276

enum {
    FH_NET_OK = 0,
    FH_NET_UNSUPPORTED_LINKTYPE,   /* link type not listed above */
    FH_NET_TRUNCATED_LINK,         /* capture ends inside the link header / VLAN tags */
    FH_NET_TOO_MANY_VLANS,
    FH_NET_NOT_IPV4,               /* ARP, IPv6, LLDP, ...: counted, not an error */
    FH_NET_BAD_IPV4_HEADER,        /* version != 4, IHL < 5, total length < header */
    FH_NET_TRUNCATED_IPV4,         /* capture shorter than the IPv4 header / total length */
    FH_NET_FRAGMENT,               /* IPv4 fragment (MF set or offset != 0): unsupported */
    FH_NET_NOT_UDP,                /* TCP, ICMP, IGMP, ... */
    FH_NET_BAD_UDP_LENGTH,         /* UDP length < 8 or beyond the IPv4 payload */
    FH_NET_TRUNCATED_UDP,          /* capture ends inside the UDP header */
    FH_NET_N_REASONS
};

typedef struct fh_udp {
    const uint8_t *payload;
    uint32_t len;           /* UDP payload bytes */
    uint32_t src_ip;        /* host order */
    uint32_t dst_ip;        /* host order */
    uint16_t src_port;
    uint16_t dst_port;
    uint16_t vlan;          /* innermost VLAN id, 0 when untagged */
    uint8_t ip_proto;       /* IPv4 protocol (17); also set when FH_NET_NOT_UDP is returned (6: TCP), so
                             * callers that count other transports need no second link-layer walk */
    uint8_t _reserved;
} fh_udp;

int fh_net_udp(const uint8_t *frame, uint32_t caplen, uint16_t linktype, fh_udp *out);
const char *fh_net_reason_name(int reason);

#endif
