# Cython view of csrc/include/fh/pcap.h: capture file sources (pcap, pcapng, BinaryFILE, gzip).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "fh/pcap.h" nogil:
    enum:
        FH_FILESRC_CHUNK
        FH_FILESRC_MAX_RECORD
        FH_LINKTYPE_MESSAGE
        FH_PKT_TS_NONE
        FH_PKT_TS_SW
        FH_SRC_N_DAMAGE
        FH_SRC_EFORMAT
        FH_SRC_EEMPTY
        FH_SRC_ENOMEM
        FH_FILESRC_MAX_EVENTS
        FH_SRC_EVENT_RESUMED
        FH_SRC_EVENT_COMPRESSED
        FH_SRC_EVENT_CHECKSUM

    ctypedef struct fh_pkt:
        const uint8_t *data
        uint32_t caplen
        uint32_t origlen
        uint64_t ts_ns
        uint16_t linktype
        uint16_t flags

    ctypedef struct fh_filesrc_event:
        uint64_t offset
        uint64_t skipped
        uint32_t reason
        uint32_t flags

    ctypedef struct fh_filesrc_stats:
        uint64_t bytes_read
        uint64_t total_bytes
        uint64_t data_bytes
        uint64_t packets
        uint64_t blocks_skipped
        uint64_t sections
        uint64_t damage[12]    # FH_SRC_N_DAMAGE
        uint32_t format
        uint32_t gzip
        uint32_t linktype
        uint32_t big_endian
        uint64_t bytes_skipped
        uint64_t resyncs
        uint64_t events_total
        fh_filesrc_event events[32]    # FH_FILESRC_MAX_EVENTS

    ctypedef struct fh_filesrc:
        pass

    int fh_filesrc_open(fh_filesrc **out, const char *path, char *err, size_t errlen)
    size_t fh_filesrc_next(fh_filesrc *src, fh_pkt *pkts, size_t cap)
    const fh_filesrc_stats *fh_filesrc_stats_get(const fh_filesrc *src)
    void fh_filesrc_close(fh_filesrc *src)
    const char *fh_filesrc_damage_name(int reason)
    const char *fh_file_format_name(int format)


cdef inline dict filesrc_damage(const fh_filesrc_stats *s):
    """The damage of a file source as Python values (one definition for every reader of fh_filesrc):
    ``file_damage`` {reason: n} (non-zero only), ``file_events`` [{reason, offset, skipped, resumed,
    compressed}] (the first FH_FILESRC_MAX_EVENTS), ``file_events_total``, ``file_bytes_skipped``,
    ``file_resyncs``."""
    cdef int i
    cdef uint64_t k
    damage = {}
    for i in range(FH_SRC_N_DAMAGE):
        if s.damage[i]:
            damage[fh_filesrc_damage_name(i).decode()] = int(s.damage[i])
    events = []
    for k in range(min(s.events_total, <uint64_t>FH_FILESRC_MAX_EVENTS)):
        events.append({"reason": fh_filesrc_damage_name(<int>s.events[k].reason).decode(),
                       "offset": int(s.events[k].offset), "skipped": int(s.events[k].skipped),
                       "resumed": bool(s.events[k].flags & FH_SRC_EVENT_RESUMED),
                       "compressed": bool(s.events[k].flags & FH_SRC_EVENT_COMPRESSED),
                       "checksum": bool(s.events[k].flags & FH_SRC_EVENT_CHECKSUM)})
    return {"file_damage": damage, "file_events": events, "file_events_total": int(s.events_total),
            "file_bytes_skipped": int(s.bytes_skipped), "file_resyncs": int(s.resyncs)}
