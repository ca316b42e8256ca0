"""The exchange's documented input limits: one table, checked at the edge before anything is sequenced.

=====================  ==========  =====================================================================
limit                  value       where it is enforced (and what the sender gets)
=====================  ==========  =====================================================================
MAX_FRAME_BYTES        65,536      ZeroMQ gateway: ``ZMQ_MAXMSGSIZE`` on the ROUTER. libzmq checks the
                                   length in the frame header and disconnects the peer before reading
                                   the frame (no reply: the frame is never read). It bounds each frame:
                                   a message of many small frames is still received whole before it is
                                   answered ``bad_frames`` (a known limit of this transport).
MAX_BODY_BYTES         4,096       ZeroMQ gateway: a JSON body longer than this is answered
                                   ``message_too_large`` before it is verified or decoded.
MAX_ID_BYTES           64          client_order_id, orig_client_order_id (UTF-8 bytes): longer is
                                   ``bad_request`` at the JSON edge; the shard core refuses it too
                                   (``bad_request``, never sequenced) for every transport.
MAX_RID_BYTES          96          rid (a str, or an int within int64): longer is ``bad_request``.
MAX_ACCOUNT_BYTES      64          account names (configuration, FIX/OUCH sessions): refused by the
                                   shard core before sequencing.
MAX_SYMBOL_BYTES       32          symbol in a request: longer is ``bad_request`` at the JSON edge.
MAX_BOOK_DEPTH         1,000       ``query``/``book`` depth.
MAX_QTY                2**31 - 1   quantities (integers only: 1.5, true, "7" are ``bad_request``).
prices                 int64       1e-9 fixed point integers only ("100", 1.5 are ``bad_request``).
=====================  ==========  =====================================================================

Abuse limits with configurable values (``[risk]`` of the exchange configuration, engine.risk.RiskLimits):
``rate_per_s``/``burst`` (orders per second per API key, across all its connections), ``bytes_per_s``/
``burst_bytes`` (request bytes per second per API key), ``max_open_orders`` (resting orders per account),
``reference_prices`` (price-band reference per symbol until the symbol trades) and the dedup memory
(``OrderPipeline(dedup_size=...)``: outcomes kept per account, oldest forgotten first; the memory is
bounded by dedup_size times the number of accounts).
"""
from __future__ import annotations

MAX_FRAME_BYTES = 65_536
MAX_BODY_BYTES = 4_096
MAX_ID_BYTES = 64
MAX_RID_BYTES = 96
MAX_ACCOUNT_BYTES = 64
MAX_SYMBOL_BYTES = 32
MAX_BOOK_DEPTH = 1_000
MAX_QTY = 0x7FFFFFFF
#: a journal string is a u16 length + bytes: the hard ceiling behind every identifier limit above
JOURNAL_STR_MAX = 0xFFFF
