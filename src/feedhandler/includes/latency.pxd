# Cython view of csrc/include/fh/latency.h (latency histogram buckets shared by the live capture
# loop and the book consumer).
from libc.stdint cimport uint64_t

cdef extern from "fh/latency.h" nogil:
    enum:
        FH_LAT_SUB
        FH_LAT_BUCKETS
    size_t fh_lat_bucket(uint64_t ns)
    uint64_t fh_lat_bucket_lower_ns(size_t b)
    uint64_t fh_now_realtime_ns()
