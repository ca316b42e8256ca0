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

    ctypedef struct fh_pkt:
        const uint8_t *data
        uint32_t caplen
        uint32_t origlen
        uint64_t ts_ns
        uint16_t linktype
        uint16_t flags

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

    ctypedef struct fh_filesrc:
        pass

    int fh_filesrc_open(fh_filesrc **out, const char *path, char *err, size_t errlen)
    size_t fh_filesrc_next(fh_filesrc *src, fh_pkt *pkts, size_t cap)
    const fh_filesrc_stats *fh_filesrc_stats_get(const fh_filesrc *src)
    void fh_filesrc_close(fh_filesrc *src)
    const char *fh_filesrc_damage_name(int reason)
    const char *fh_file_format_name(int format)
