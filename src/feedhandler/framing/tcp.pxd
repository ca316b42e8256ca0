# Cython view of feedhandler.framing.tcp: per-direction TCP stream state (see tcp.pyx for the contract).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from feedhandler.includes.pcap cimport fh_pkt, fh_filesrc_stats


cdef struct _seg:            # one TCP segment located in a captured frame (filled by _walk, nogil)
    uint32_t src_ip          # IPv4 (v6 == 0)
    uint32_t dst_ip
    uint8_t v6               # 1: IPv6, the addresses in src6 / dst6 (network order)
    uint8_t src6[16]
    uint8_t dst6[16]
    uint16_t sport
    uint16_t dport
    uint32_t seq
    uint32_t ack
    uint32_t off             # payload offset in the frame
    uint32_t len             # payload bytes
    uint8_t flags
    uint8_t status           # T_* reason (0: a TCP segment)


cdef class TcpStream:
    # identity
    cdef readonly tuple key              # (src_ip, src_port, dst_ip, dst_port), ips as host-order ints
                                         # (IPv6: the 128-bit address + 2**128, see tcp.addr_text)
    cdef readonly int conn               # connection index in the capture (order of first appearance)
    cdef public object is_client         # True: sent the SYN; False: sent SYN-ACK; None: unknown
    # delivered bytes
    cdef readonly bytearray data
    cdef list _end_off                   # stream offset after each delivered chunk
    cdef list _end_ts                    # capture ns of that chunk
    cdef readonly list holes             # [(stream offset, missing bytes)]
    # sequence state
    cdef dict pending                    # seq -> payload of out-of-order segments
    cdef readonly int64_t pending_bytes
    cdef int64_t base                    # seq of data[0] (shifted past holes)
    cdef int64_t valid_from              # seq from which data offsets are seq - base
    cdef readonly int64_t next_seq
    cdef uint32_t last_raw
    cdef int64_t last_abs
    cdef int64_t fin_seq
    cdef readonly bint syn, fin, rst
    cdef readonly uint64_t first_ts
    # counters
    cdef readonly uint64_t packets, retrans_segments, retrans_bytes, overlap_segments, overlap_bytes
    cdef readonly uint64_t overlap_conflicts, ooo_segments, hole_bytes, after_fin_bytes
    # incremental consumers (Reassembler.marks): what was last reported
    cdef Py_ssize_t _mk_len, _mk_holes
    cdef readonly int64_t trimmed        # bytes dropped from the front of data (discard): data[0] is
                                         # stream byte `trimmed`; offsets (holes, marks, ts_at) are data's
    # retirement (Reassembler.retire): the stream's bytes and chunk lists are dropped, its counters kept
    cdef readonly bint retired
    cdef readonly uint64_t holes_dropped # holes of the dropped bytes (stats()["holes"] still counts them)
    cdef readonly uint64_t late_bytes    # new bytes that arrived after retirement (not delivered)

    cdef int64_t _unwrap(self, uint32_t raw)
    cdef void _append(self, bytes chunk, uint64_t ts)
    cdef void _deliver(self, int64_t s, bytes payload, uint64_t ts)
    cdef void _drain(self, uint64_t ts)
    cdef void _compare(self, int64_t s, bytes payload)
    cdef void _skip_hole(self, uint64_t ts)


cdef class Reassembler:
    cdef readonly int max_ooo_segments   # segments buffered per direction before a hole is declared
    cdef readonly int64_t max_ooo_bytes  # bytes buffered per direction before a hole is declared
    cdef dict flows
    cdef readonly list streams
    cdef list reasons
    cdef readonly uint64_t frames
    cdef uint64_t syn_retrans
    cdef dict file_damage
    cdef list file_events
    cdef uint64_t file_bytes_skipped
    cdef public object marks             # None, or a list receiving (stream, bytes, holes) per change
    cdef public object closing           # None, or a list receiving the streams that got a FIN / RST
    cdef readonly int64_t n_created      # streams created so far (the next TcpStream.conn)
    cdef readonly int max_closed         # retired streams kept (as tombstones) for late segments
    cdef object closed                   # retired streams, oldest first: {stream: None}
    cdef readonly dict gone              # counters folded from the tombstones evicted

    cdef void _segment(self, _seg *s, bytes payload, uint64_t ts)
    cdef void _segment_inner(self, _seg *s, bytes payload, uint64_t ts)
    cdef void _mark(self, TcpStream st)
    cdef int _feed_pkts(self, const fh_pkt *pkts, size_t n) except -1
    cdef _add_source_damage(self, const fh_filesrc_stats *st)
