# Cython view of csrc/include/fh/net.h: frame -> UDP payload.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef extern from "fh/net.h" nogil:
    enum:
        FH_NET_OK
        FH_NET_NOT_UDP
        FH_NET_N_REASONS

    ctypedef struct fh_udp:
        const uint8_t *payload
        uint32_t len
        uint32_t src_ip
        uint32_t dst_ip
        uint16_t src_port
        uint16_t dst_port
        uint16_t vlan
        uint8_t ip_proto

    int fh_net_udp(const uint8_t *frame, uint32_t caplen, uint16_t linktype, fh_udp *out)
    const char *fh_net_reason_name(int reason)
