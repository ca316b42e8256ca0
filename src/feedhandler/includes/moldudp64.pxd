# Cython view of csrc/include/fh/moldudp64.h: MoldUDP64 sequencing and the frame -> message framer.
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from feedhandler.includes.msg cimport fh_msg
from feedhandler.includes.pcap cimport fh_pkt

cdef extern from "fh/moldudp64.h" nogil:
    enum:
        FH_MSG_RECORD
        FH_MOLD_HEADER
        FH_MOLD_SESSION_LEN
        FH_MOLD_MAX_SESSIONS
        FH_MOLD_MAX_WINDOW
        FH_MOLD_MAX_FILTER
        FH_FRAMER_MSG_CAP
        FH_FRAMER_REC_CAP
        FH_MOLD_N_MALFORMED

    ctypedef struct fh_framer_config:
        uint32_t reorder_window
        uint32_t reorder_window_msgs
        uint32_t dst_ip
        uint16_t dst_port
        uint16_t publisher_id
        uint64_t channel_mask
        uint32_t n_session_filter
        char session_filter[8][10]
        uint32_t no_sequencing

    ctypedef struct fh_framer_stats:
        uint64_t packets
        uint64_t udp_datagrams
        uint64_t net_reject[11]    # FH_NET_N_REASONS
        uint64_t filtered
        uint64_t mold_packets
        uint64_t heartbeats
        uint64_t end_of_session
        uint64_t malformed[5]    # FH_MOLD_N_MALFORMED
        uint64_t sessions
        uint64_t filtered_sessions
        uint64_t messages
        uint64_t duplicate_packets
        uint64_t duplicate_messages
        uint64_t out_of_order
        uint64_t reordered
        uint64_t gaps
        uint64_t gaps_filled
        uint64_t gaps_lost
        uint64_t filled_messages
        uint64_t lost_messages
        uint64_t after_end_of_session
        uint64_t resets
        uint64_t records
        uint64_t held_max
        uint64_t missing_dropped
        uint64_t hold_failed
        uint64_t held_slots
        uint64_t zero_sequence_packets

    ctypedef struct fh_missing_range:
        char session[10]
        uint16_t channel
        uint64_t first
        uint64_t last

    ctypedef struct fh_framer:
        pass

    fh_framer *fh_framer_new(const fh_framer_config *cfg)
    void fh_framer_free(fh_framer *f)
    void fh_framer_set_input(fh_framer *f, const fh_pkt *pkts, size_t n)
    int fh_framer_input_done(const fh_framer *f)
    size_t fh_framer_run(fh_framer *f, const fh_msg **msgs)
    size_t fh_framer_finish(fh_framer *f, const fh_msg **msgs)
    const fh_framer_stats *fh_framer_stats_get(const fh_framer *f)
    size_t fh_framer_missing_copy(fh_framer *f, fh_missing_range *out, size_t max)
    const char *fh_framer_session(const fh_framer *f, uint16_t channel)
    size_t fh_framer_n_sessions(const fh_framer *f)
    uint64_t fh_framer_first_ts(const fh_framer *f)
    const char *fh_mold_malformed_name(int reason)
