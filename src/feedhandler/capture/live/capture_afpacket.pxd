# Cython view of csrc/include/fh/capture_afpacket.h: the AF_PACKET receive ring (TPACKET_V3 blocks or
# TPACKET_V2 per-frame slots).
# (Belongs in feedhandler/includes/ with the other header views; kept here until the integrator moves it.)
from libc.stdint cimport uint32_t, uint64_t
from feedhandler.includes.pcap cimport fh_pkt

cdef extern from "fh/capture_afpacket.h" nogil:
    enum:
        FH_AFP_DEFAULT_BLOCK_SIZE
        FH_AFP_DEFAULT_BLOCK_COUNT
        FH_AFP_DEFAULT_FRAME_SIZE
        FH_AFP_DEFAULT_RETIRE_MS

    ctypedef struct fh_afp_config:
        const char *iface
        uint32_t block_size
        uint32_t block_count
        uint32_t frame_size
        uint32_t retire_ms
        uint32_t snaplen
        int promisc
        int hw_timestamps
        int fanout_id
        int ignore_outgoing
        int tpacket_version

    ctypedef struct fh_afp_stats:
        uint64_t packets
        uint64_t bytes
        uint64_t blocks
        uint64_t polls
        uint64_t idle
        uint64_t kernel_packets
        uint64_t kernel_drops
        uint64_t kernel_freezes
        uint64_t truncated
        uint64_t ts_hw
        uint64_t ts_sw
        uint64_t ts_none

    ctypedef struct fh_afp:
        pass

    int fh_afp_open(fh_afp **out, const fh_afp_config *cfg, char *err, size_t errlen)
    size_t fh_afp_next(fh_afp *s, fh_pkt *pkts, size_t cap, int timeout_ms)
    void fh_afp_wake(fh_afp *s)
    void fh_afp_stats_get(fh_afp *s, fh_afp_stats *out)
    int fh_afp_ifindex(const fh_afp *s)
    int fh_afp_hw_enabled(const fh_afp *s)
    int fh_afp_tpacket_version(const fh_afp *s)
    void fh_afp_close(fh_afp *s)
