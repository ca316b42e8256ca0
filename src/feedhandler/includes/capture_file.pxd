# Cython view of csrc/include/fh/capture_file.h: a capture file replayed as a live source.
from libc.stdint cimport uint64_t
from feedhandler.includes.pcap cimport fh_filesrc, fh_pkt

cdef extern from "fh/capture_file.h" nogil:
    ctypedef struct fh_filelive_stats:
        uint64_t packets
        uint64_t bytes
        uint64_t batches
        uint64_t waits
        uint64_t unstamped
        uint64_t behind_ns
        uint64_t eof

    ctypedef struct fh_filelive:
        pass

    int fh_filelive_open(fh_filelive **out, const char *path, double speed, char *err, size_t errlen)
    size_t fh_filelive_next(void *src, fh_pkt *pkts, size_t cap, int timeout_ms)
    void fh_filelive_wake(void *src)
    void fh_filelive_stats_get(fh_filelive *s, fh_filelive_stats *out)
    const fh_filesrc *fh_filelive_file(const fh_filelive *s)
    void fh_filelive_close(fh_filelive *s)
