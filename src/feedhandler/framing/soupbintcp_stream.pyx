"""SoupBinTCP 3.0 packet framing over reassembled TCP streams, with session sequence tracking.

Framing (``split``, nogil over a whole contiguous piece of a stream): ``length(2, BE) type(1)
payload(length - 1)``. A packet is accepted when its type is one the direction may send and its
length fits the type (login request 47, login accepted 31, login rejected 2, heartbeats / logout /
end of session 1, data >= 1). A bad packet is counted with its reason and framing resynchronizes at
the first later offset from which ``RESYNC_CHAIN`` valid packets chain (or the piece ends exactly);
after a TCP hole the same resync is used. Nothing reads past the piece.

Sessions (``SoupSessions``): the client's Login Request carries the requested session and sequence
number; the server's Login Accepted carries the session and the sequence number of the next
Sequenced Data packet, from which every 'S' packet is numbered. Across reconnections of the same
session the highest sequence number seen is remembered: a Login Accepted above it opens a gap
(reported), sequenced packets at or below it are replays (flagged duplicate, counted). Data packets
(S from the server, U from the client) come out as one numpy table sorted by capture time.

Threading: objects here belong to one thread.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from feedhandler.framing.tcp cimport TcpStream

import numpy as np

cdef extern from "fh/endian.h" nogil:
    uint16_t fh_load_be16(const void *p)

# packet reasons (row column 3 of split())
cdef enum:
    _OK = 0
    _BAD_TYPE = 1
    _BAD_LENGTH = 2
    _TRUNCATED = 3
OK, BAD_TYPE, BAD_LENGTH, TRUNCATED = _OK, _BAD_TYPE, _BAD_LENGTH, _TRUNCATED
REASONS = ("ok", "bad_type", "bad_length", "truncated")

cdef enum:
    _RESYNC_CHAIN = 3       # packets that must chain validly before framing trusts a resync point

RESYNC_CHAIN = _RESYNC_CHAIN
MSG_DTYPE = np.dtype([
    ("conn", "<u4"),        # connection index (client stream's TcpStream.conn)
    ("from_server", "u1"),  # 1: exchange -> client (sequenced), 0: client -> exchange (unsequenced)
    ("flags", "u1"),        # DUP / AFTER_GAP / NO_LOGIN bits below
    ("ptype", "S1"),        # SoupBinTCP packet type: b'S' or b'U'
    ("_pad", "u1"),
    ("seq", "<u8"),         # SoupBinTCP sequence number (0 for unsequenced or unknown)
    ("ts_recv", "<u8"),     # capture time of the segment that completed the packet
    ("off", "<i8"),         # payload offset in the stream's bytes
    ("len", "<u4"),         # payload bytes
    ("stream", "<u4"),      # index into SoupSessions.streams
])
F_DUP = 0x01                # a replayed sequenced packet already seen in an earlier connection
F_AFTER_GAP = 0x02          # first packet after a TCP hole or a sequence gap
F_NO_LOGIN = 0x04           # sequenced data with no Login Accepted seen: seq unknown (0)


cdef inline int _valid(uint8_t t, Py_ssize_t ln, int from_server) noexcept nogil:
    """0 when a packet of type t and length ln (type byte included) may come from this side."""
    if from_server:
        if t == 83 or t == 43:                      # 'S', '+'
            return 0
        if t == 65:                                 # 'A'
            return 0 if ln == 31 else _BAD_LENGTH
        if t == 74:                                 # 'J'
            return 0 if ln == 2 else _BAD_LENGTH
        if t == 72 or t == 90:                      # 'H', 'Z'
            return 0 if ln == 1 else _BAD_LENGTH
        return _BAD_TYPE
    if t == 85 or t == 43:                          # 'U', '+'
        return 0
    if t == 76:                                     # 'L'
        return 0 if ln == 47 else _BAD_LENGTH
    if t == 82 or t == 79:                          # 'R', 'O'
        return 0 if ln == 1 else _BAD_LENGTH
    return _BAD_TYPE


cdef inline int _check(const uint8_t *p, Py_ssize_t n, Py_ssize_t i, int from_server) noexcept nogil:
    """Status of the packet at i: 0 ok, _TRUNCATED when it does not fit before n, else a reason."""
    cdef Py_ssize_t ln
    if n - i < 3:
        return _TRUNCATED
    ln = fh_load_be16(p + i)
    if ln == 0:
        return _BAD_LENGTH
    if i + 2 + ln > n:
        return _TRUNCATED
    return _valid(p[i + 2], ln, from_server)


cdef Py_ssize_t _resync(const uint8_t *p, Py_ssize_t n, Py_ssize_t i, int from_server, int final) noexcept nogil:
    """First j >= i from which _RESYNC_CHAIN packets chain validly (or chain to exactly n); n if none.

    ``final`` false (live: p[:n] is what has arrived so far, more may follow): -1 as soon as a
    candidate j cannot be decided from the bytes so far (its chain runs into n: a packet not complete
    yet, or a chain ending exactly at n, which more bytes may extend or break), so that the caller
    waits for more bytes and finds the j the whole stream gives."""
    cdef Py_ssize_t j, k, ln
    cdef int c, st = 0
    for j in range(i, n):
        k = j
        c = 0
        while c < _RESYNC_CHAIN and k < n:
            # type and length first, then whether the packet fits: a packet that the direction cannot
            # send breaks the chain whatever follows (any status but 0 breaks it: final framing is the
            # same as with _check); only a valid one that does not fit yet is undecided
            if n - k < 3:
                st = _TRUNCATED
            else:
                ln = fh_load_be16(p + k)
                st = _valid(p[k + 2], ln, from_server) if ln != 0 else _BAD_LENGTH
                if st == 0 and k + 2 + ln > n:
                    st = _TRUNCATED
            if st != 0:
                break
            if fh_load_be16(p + k) < 2 and (p[k + 2] == 83 or p[k + 2] == 85):
                st = _BAD_LENGTH    # an empty data packet is legal but too weak to resync on
                break
            k += 2 + fh_load_be16(p + k)
            c += 1
        if c == _RESYNC_CHAIN:
            return j
        if not final and (k >= n or st == _TRUNCATED):
            return -1
        if c > 0 and k == n:
            return j
    return n if final else -1


cdef Py_ssize_t _split(const uint8_t *p, Py_ssize_t start, Py_ssize_t n, int from_server, int resync_first,
                       int64_t *rows, Py_ssize_t cap, Py_ssize_t *consumed, int final) noexcept nogil:
    """Rows (payload_off, payload_len, type, reason) for p[start:n]; returns the row count. Not
    ``final``: stops (consumed) at a bad packet whose resync point the bytes so far cannot decide."""
    cdef Py_ssize_t i = start, k = 0, ln, j
    cdef int st
    if resync_first:
        j = _resync(p, n, i, from_server, final)
        if j < 0:
            consumed[0] = i
            return 0
        if j > i and k < cap:
            rows[0] = i; rows[1] = j - i; rows[2] = 0; rows[3] = _BAD_TYPE
            k = 1
        i = j
    while i < n and k < cap:
        st = _check(p, n, i, from_server)
        if st == _TRUNCATED:
            break
        if st != 0:
            j = _resync(p, n, i + 1, from_server, final)
            if j < 0:
                break               # (live) undecided: wait for more bytes, the bad packet first
            rows[4 * k] = i; rows[4 * k + 1] = j - i; rows[4 * k + 2] = p[i + 2] if n - i > 2 else 0
            rows[4 * k + 3] = st
            k += 1
            i = j
            continue
        ln = fh_load_be16(p + i)
        rows[4 * k] = i + 3
        rows[4 * k + 1] = ln - 1
        rows[4 * k + 2] = p[i + 2]
        rows[4 * k + 3] = 0
        k += 1
        i += 2 + ln
    consumed[0] = i
    return k


def split(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t end, bint from_server, bint resync_first=False,
          bint final=True):
    """Frame buf[start:end] in one native pass.

    Returns (rows, consumed): ``rows`` int64 (n, 4) = (payload_off, payload_len, type byte, reason);
    rejected byte ranges appear as rows with reason != 0 (their off/len cover the skipped bytes).
    Bytes from ``consumed`` on are an incomplete trailing packet. ``final`` false (an incremental
    consumer: ``end`` is only what has arrived so far): framing also stops at a bad packet (or, with
    ``resync_first``, at ``start``) when the resync point cannot be decided from the bytes so far
    (see ``_resync``); called again with more bytes from ``consumed``, it frames as one call over the
    whole stream would. The bytes held back are at most a resync chain (3 packets of up to 65 537 bytes).
    """
    cdef Py_ssize_t cap, k, consumed = start
    if start < 0 or end > buf.shape[0] or start > end:
        raise ValueError("bad range")
    cap = (end - start) // 3 + 2
    rows = np.empty((cap, 4), dtype=np.int64)
    cdef int64_t[:, ::1] r = rows
    if end == start:
        return rows[:0], start
    with nogil:
        k = _split(&buf[0], start, end, from_server, resync_first, &r[0, 0], cap, &consumed, final)
    return rows[:k], consumed


def packet_status(const uint8_t[::1] buf, Py_ssize_t i, Py_ssize_t end, bint from_server):
    """Status of the packet at buf[i] within buf[:end]: OK, TRUNCATED (not complete before end) or the
    reason it is bad (BAD_TYPE, BAD_LENGTH)."""
    if i < 0 or end > buf.shape[0] or i > end:
        raise ValueError("bad range")
    if end == i:
        return _TRUNCATED
    return _check(&buf[0], end, i, from_server)


cdef class SoupSessions:
    """SoupBinTCP over every (client, server) stream pair of a capture; see the module docstring."""
    cdef public list streams
    cdef public dict counters
    cdef public dict sessions        # session name -> {"last_seq", "logins", "gaps": [(first, count)], ...}
    cdef public list logins          # [(conn, requested_session, requested_seq, accepted_session, accepted_seq)]
    cdef list _tables

    def __init__(self):
        self.streams = []
        self.counters = {k: 0 for k in ("packets", "sequenced", "unsequenced", "server_heartbeats",
                                        "client_heartbeats", "login_requests", "login_accepted",
                                        "login_rejected", "end_of_session", "logout", "debug",
                                        "bad_type", "bad_length", "truncated", "duplicates", "gap_messages",
                                        "no_login_sequenced", "holes", "requested_seq_mismatch")}
        self.sessions = {}
        self.logins = []
        self._tables = []

    def add_pair(self, TcpStream client, TcpStream server):
        """Frame one connection (either stream may be None) and number its sequenced packets."""
        cdef int conn = (client or server).conn
        cdef int64_t[:, ::1] rc, rs
        cdef Py_ssize_t i, nc = 0, ns = 0
        cdef int64_t t
        cdef uint64_t nxt = 0, last = 0
        cdef bint have = False, gap_flag = False
        cdef uint8_t fl
        cdef uint64_t n_unseq = 0, n_chb = 0, n_logout = 0, n_debug = 0, n_seq = 0, n_nologin = 0
        cdef uint64_t n_dup = 0, n_shb = 0, n_eos = 0
        req_sess, req_seq = None, None
        rows_c = self._frame(client, False) if client is not None else np.zeros((0, 5), np.int64)
        rows_s = self._frame(server, True) if server is not None else np.zeros((0, 5), np.int64)
        rc = rows_c
        rs = rows_s
        ic = len(self.streams)
        if client is not None:
            self.streams.append(client)
        iss = len(self.streams)
        if server is not None:
            self.streams.append(server)
        tab = np.zeros(rows_c.shape[0] + rows_s.shape[0], dtype=MSG_DTYPE)
        cdef int64_t[::1] o_off = np.zeros(tab.shape[0], np.int64)
        cdef int64_t[::1] o_len = np.zeros(tab.shape[0], np.int64)
        cdef uint64_t[::1] o_seq = np.zeros(tab.shape[0], np.uint64)
        cdef uint8_t[::1] o_fl = np.zeros(tab.shape[0], np.uint8)
        # Client side: login request, unsequenced data, heartbeats, logout.
        for i in range(rc.shape[0]):
            if rc[i, 3]:
                continue
            t = rc[i, 2]
            if t == 85:
                n_unseq += 1
                o_off[nc] = rc[i, 0]
                o_len[nc] = rc[i, 1]
                o_fl[nc] = F_AFTER_GAP if rc[i, 4] else 0
                nc += 1
            elif t == 76:
                self.counters["login_requests"] += 1
                p = bytes(client.data[rc[i, 0]:rc[i, 0] + rc[i, 1]])
                req_sess = p[16:26].strip().decode("ascii", "replace")
                q = p[26:46].strip()
                req_seq = int(q) if q.isdigit() else 0
            elif t == 82:
                n_chb += 1
            elif t == 79:
                n_logout += 1
            else:
                n_debug += 1
        # Server side: number the sequenced data from Login Accepted.
        ns = nc
        st = None
        for i in range(rs.shape[0]):
            if rs[i, 3]:
                continue
            if rs[i, 4]:
                have = False            # the hole may have swallowed sequenced packets: numbering lost
                gap_flag = True
            t = rs[i, 2]
            if t == 83:
                n_seq += 1
                fl = 0
                if gap_flag:
                    fl |= F_AFTER_GAP
                    gap_flag = False
                o_off[ns] = rs[i, 0]
                o_len[ns] = rs[i, 1]
                if not have:
                    n_nologin += 1
                    o_fl[ns] = fl | F_NO_LOGIN
                    ns += 1
                    continue
                if nxt <= last:
                    fl |= F_DUP
                    n_dup += 1
                else:
                    last = nxt
                o_seq[ns] = nxt
                o_fl[ns] = fl
                ns += 1
                nxt += 1
            elif t == 65:
                if st is not None:
                    st["last_seq"] = last
                self.counters["login_accepted"] += 1
                p = bytes(server.data[rs[i, 0]:rs[i, 0] + rs[i, 1]])
                sess = p[:10].strip().decode("ascii", "replace")
                q = p[10:30].strip()
                nxt = int(q) if q.isdigit() else 0
                have = nxt > 0
                st = self.sessions.setdefault(sess, {"last_seq": 0, "logins": 0, "gaps": []})
                st["logins"] += 1
                last = st["last_seq"]
                if last and nxt > last + 1:
                    st["gaps"].append((last + 1, nxt - last - 1))
                    self.counters["gap_messages"] += nxt - last - 1
                    gap_flag = True
                if req_seq and req_seq != nxt:
                    self.counters["requested_seq_mismatch"] += 1
                self.logins.append((conn, req_sess, req_seq, sess, nxt))
            elif t == 74:
                self.counters["login_rejected"] += 1
                self.logins.append((conn, req_sess, req_seq, None, 0))
            elif t == 72:
                n_shb += 1
            elif t == 90:
                n_eos += 1
            else:
                n_debug += 1
        if st is not None:
            st["last_seq"] = last
        c = self.counters
        c["unsequenced"] += n_unseq; c["client_heartbeats"] += n_chb; c["logout"] += n_logout
        c["debug"] += n_debug; c["sequenced"] += n_seq; c["no_login_sequenced"] += n_nologin
        c["duplicates"] += n_dup; c["server_heartbeats"] += n_shb; c["end_of_session"] += n_eos
        # One table for both directions, capture-time ordered.
        tab = tab[:ns]
        if ns == 0:
            return tab
        offs = np.asarray(o_off[:ns])
        lens = np.asarray(o_len[:ns])
        tab["off"] = offs
        tab["len"] = lens
        tab["seq"] = np.asarray(o_seq[:ns])
        tab["flags"] = np.asarray(o_fl[:ns])
        tab["conn"] = conn
        if nc:
            tab["ts_recv"][:nc] = client.ts_at(offs[:nc] + lens[:nc])
            tab["ptype"][:nc] = b"U"
            tab["stream"][:nc] = ic
        if ns > nc:
            tab["ts_recv"][nc:] = server.ts_at(offs[nc:] + lens[nc:])
            tab["from_server"][nc:] = 1
            tab["ptype"][nc:] = b"S"
            tab["stream"][nc:] = iss
        tab = tab[np.argsort(tab["ts_recv"], kind="stable")]
        self._tables.append(tab)
        return tab

    def _frame(self, TcpStream s, bint from_server):
        """int64 rows (payload_off, payload_len, type, reason, after_hole) of one stream, piece by piece."""
        out = []
        data = s.data
        for start, end in s.pieces():
            after_hole = start > 0
            if after_hole:
                self.counters["holes"] += 1
            rows, consumed = split(data, start, end, from_server, after_hole)
            r5 = np.zeros((rows.shape[0], 5), np.int64)
            r5[:, :4] = rows
            reasons = rows[:, 3]
            ok = np.nonzero(reasons == 0)[0]
            bad = reasons[reasons != 0]
            if after_hole:
                if len(ok):
                    r5[ok[0], 4] = 1
                # the bytes skipped to resynchronize right after the hole are the hole's, not errors
                if rows.shape[0] and reasons[0] != 0:
                    bad = reasons[1:][reasons[1:] != 0]
            self.counters["packets"] += len(ok)
            for reason, cnt in zip(*np.unique(bad, return_counts=True)):
                self.counters[REASONS[int(reason)]] += int(cnt)
            if consumed < end:
                self.counters["truncated"] += 1
            out.append(r5)
        if not out:
            return np.zeros((0, 5), np.int64)
        return np.ascontiguousarray(np.concatenate(out))

    def messages(self):
        """All data packets of every pair added so far, one table ordered by capture time."""
        if not self._tables:
            return np.zeros(0, dtype=MSG_DTYPE)
        t = np.concatenate(self._tables)
        return t[np.argsort(t["ts_recv"], kind="stable")]

    def payload(self, row):
        """bytes of one message row (tests, debugging)."""
        s = self.streams[int(row["stream"])]
        o = int(row["off"])
        return bytes(s.data[o:o + int(row["len"])])
