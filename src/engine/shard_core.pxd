# Typed state of one shard's request path (engine/shard_core.pyx); engine.manager.ShardEngine subclasses it.
from libc.stdint cimport uint32_t
from engine.matching cimport Engine, fh_order_req


cdef class ShardCore:
    cdef public Engine engine
    cdef public object journal
    cdef public unsigned long long seq
    cdef public dict inst               # symbol -> local instrument index
    cdef public list symbols
    cdef public list symbol_ids         # global symbol index of each local instrument (order/trade ids)
    cdef public dict local_of_global
    cdef public list next_n             # orders so far per local instrument
    cdef public dict accounts           # account name -> number
    cdef public list account_names
    cdef public dict clordid            # live order id -> client order id
    cdef public dict last_trades        # symbol -> (price, qty) of the last trade
    cdef public int stp                 # default self-trade prevention code
    cdef public bint reprice            # default post-only mode: reprice (True) or reject
    cdef fh_order_req *buf              # this batch's records (reused, grown on demand)
    cdef size_t cap

    cdef int _reserve(self, size_t n) except -1
    cdef uint32_t _account(self, str name) except? 0xFFFFFFFF
    cdef int _to_record(self, dict req, fh_order_req *r, list metas) except -1
    cdef list _apply(self, const fh_order_req *p, size_t n, list metas, tokens)
