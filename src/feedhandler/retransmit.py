"""MoldUDP64 retransmission: a small request server that serves from a capture file, and the requester
the live run uses to recover sequence gaps.

MoldUDP64 request packet (to the server, unicast UDP): session[10] | sequence u64 | count u16 (the first
missing message and how many). The server answers with ordinary downstream packets (session, sequence
of the first message, count, then length-prefixed messages) to the requester's address and port, at
most ``max_payload`` bytes each. The requester binds to the feed's UDP port, so the answers arrive on
the interface exactly like the feed's own packets: the live capture picks them up, and the MoldUDP64
framer fills the hole it is holding (reorder window) and applies the held packets in order, so the book
waits and never skips while the window lasts.

    python -m feedhandler.retransmit serve CAPTURE.pcap --bind 10.0.0.2:17001
"""
from __future__ import annotations

import argparse
import gzip
import ipaddress
import socket
import struct
import sys
import threading
import time
from typing import Iterator, Sequence

import numpy as np

from feedhandler.cliopts import seconds

__all__ = ["MessageStore", "RetransmitServer", "RetransmitRequester", "encode_request", "decode_request",
           "serve_main"]

REQUEST = struct.Struct(">10sQH")                 # 20 bytes
HEADER = struct.Struct(">10sQH")                  # downstream header, same shape
MAX_PAYLOAD = 1400                                # bytes per answer packet (fits a 1500 MTU)
RETRY_S = 0.05                                    # s between re-requests of a range still missing
MAX_TRIES = 10


def encode_request(session: bytes | str, first: int, count: int) -> bytes:
    s = session.encode("latin-1") if isinstance(session, str) else bytes(session)
    return REQUEST.pack(s.ljust(10, b" ")[:10], first, count)


def decode_request(b: bytes) -> tuple[bytes, int, int]:
    """(session, first, count); ValueError when it is no request packet."""
    if len(b) != REQUEST.size:
        raise ValueError(f"a MoldUDP64 request has {REQUEST.size} bytes, not {len(b)}")
    return REQUEST.unpack(b)


def _pcap_records(data: bytes) -> Iterator[bytes]:
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        raise ValueError("not a classic pcap file")
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    if linktype != 1:
        raise ValueError(f"pcap link type {linktype}: Ethernet expected")
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from(e + "I", data, off + 8)[0]
        yield data[off + 16:off + 16 + incl]
        off += 16 + incl


def _udp_payload(frame: bytes) -> tuple[int, bytes] | None:
    if len(frame) < 14:
        return None
    eth = struct.unpack_from(">H", frame, 12)[0]
    off = 14
    while eth in (0x8100, 0x88A8) and len(frame) >= off + 4:
        eth = struct.unpack_from(">H", frame, off + 2)[0]
        off += 4
    if eth != 0x0800 or len(frame) < off + 20 or frame[off + 9] != 17:
        return None
    ihl = (frame[off] & 0x0F) * 4
    u = off + ihl
    if len(frame) < u + 8:
        return None
    dport, ulen = struct.unpack_from(">HH", frame, u + 2)
    return dport, frame[u + 8:u + min(ulen, len(frame) - u)]


class MessageStore:
    """Every MoldUDP64 message of a capture, by (session, sequence)."""

    def __init__(self):
        self.messages: dict[bytes, dict[int, bytes]] = {}

    @classmethod
    def from_capture(cls, path: str, udp_port: int | None = None) -> "MessageStore":
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        st = cls()
        for frame in _pcap_records(data):
            u = _udp_payload(frame)
            if u is None or (udp_port is not None and u[0] != udp_port) or len(u[1]) < HEADER.size:
                continue
            st.add_packet(u[1])
        return st

    def add_packet(self, payload: bytes) -> None:
        session, seq, count = HEADER.unpack_from(payload, 0)
        if count in (0, 0xFFFF):
            return
        d = self.messages.setdefault(session, {})
        off = HEADER.size
        for i in range(count):
            if off + 2 > len(payload):
                break
            n = struct.unpack_from(">H", payload, off)[0]
            d[seq + i] = payload[off + 2:off + 2 + n]
            off += 2 + n

    def packets(self, session: bytes, first: int, count: int, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
        """Downstream packets holding messages first..first+count-1 (stops at the first one unknown)."""
        d = self.messages.get(session, {})
        out, cur, cur_first, size = [], [], first, HEADER.size
        for seq in range(first, first + count):
            m = d.get(seq)
            if m is None:
                break
            if cur and size + 2 + len(m) > max_payload:
                out.append(HEADER.pack(session, cur_first, len(cur)) + b"".join(cur))
                cur, cur_first, size = [], seq, HEADER.size
            cur.append(struct.pack(">H", len(m)) + m)
            size += 2 + len(m)
        if cur:
            out.append(HEADER.pack(session, cur_first, len(cur)) + b"".join(cur))
        return out


class RetransmitServer:
    """Answers MoldUDP64 requests from a MessageStore on a UDP socket, in a thread."""

    def __init__(self, store: MessageStore, host: str = "0.0.0.0", port: int = 0, max_count: int = 10000):
        self.store = store
        self.max_count = max_count
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.stats = {"requests": 0, "bad_requests": 0, "messages_sent": 0, "packets_sent": 0, "unknown": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                session, first, count = decode_request(data)
            except ValueError:
                self.stats["bad_requests"] += 1
                continue
            self.stats["requests"] += 1
            pkts = self.store.packets(session, first, min(count, self.max_count))
            sent = 0
            for p in pkts:
                self.sock.sendto(p, peer)
                sent += HEADER.unpack_from(p, 0)[2]
            self.stats["packets_sent"] += len(pkts)
            self.stats["messages_sent"] += sent
            if sent < count:
                self.stats["unknown"] += count - sent

    def start(self) -> "RetransmitServer":
        self._thread = threading.Thread(target=self.serve, name="fh-retransmit", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sock.close()


class RetransmitRequester:
    """Sends a request for every gap the live framer opens, and again every ``RETRY_S`` until the gap is
    reported filled (or ``MAX_TRIES``). Fed from the consumer's batches (gap records), never per packet.

    Parameters
    ----------
    server : str
        "HOST:PORT" of the retransmission server.
    bind_port : int or None
        Local UDP port to send from: the feed's port, so answers are captured like feed packets.
    bind_addr : str
        Local address (the interface's).
    """

    def __init__(self, server: str, bind_port: int | None = None, bind_addr: str = "0.0.0.0"):
        host, _, port = server.rpartition(":")
        self.server = (str(ipaddress.IPv4Address(host)), int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind_addr, bind_port or 0))
        # the answers are taken from the capture path; this socket's own copy is never read
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        self.pending: dict[tuple[bytes, int], list] = {}   # (session, first) -> [count, tries, last_sent]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters = {"gaps_seen": 0, "requests_sent": 0, "filled": 0, "given_up": 0}

    def request(self, session: bytes, first: int, count: int) -> None:
        self.sock.sendto(encode_request(session, first, count), self.server)
        self.counters["requests_sent"] += 1

    def handle_batch(self, batch: np.ndarray) -> None:
        """Look at a consumed batch for gap records (vectorized select, Python only for the gaps)."""
        from feedhandler import records
        if self._stop.is_set():
            return
        gap = records.RTYPE["gap"]
        sel = np.nonzero(batch["rtype"] == gap)[0]
        if not sel.shape[0]:
            return
        g = batch[sel].view(records.DTYPES["gap"])
        now = time.monotonic()
        for kind, sess, first, count in zip(g["kind"], g["session"], g["first_missing"], g["count"]):
            key = (bytes(sess).ljust(10, b" "), int(first))
            with self._lock:
                if kind == 1:        # FH_GAP_OPENED
                    self.counters["gaps_seen"] += 1
                    self.pending[key] = [int(count), 1, now]
                    self.request(key[0], key[1], int(count))
                elif kind in (2, 3):  # FILLED / LOST
                    if self.pending.pop(key, None) is not None:
                        self.counters["filled" if kind == 2 else "given_up"] += 1

    def _retry_loop(self) -> None:
        while not self._stop.wait(RETRY_S / 2):
            now = time.monotonic()
            with self._lock:
                for key, v in list(self.pending.items()):
                    if now - v[2] >= RETRY_S:
                        if v[1] >= MAX_TRIES:
                            del self.pending[key]
                            self.counters["given_up"] += 1
                            continue
                        v[1] += 1
                        v[2] = now
                        self.request(key[0], key[1], v[0])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._retry_loop, name="fh-retx-requester", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sock.close()

    def stats(self) -> dict:
        with self._lock:
            return dict(self.counters, pending=len(self.pending))


def serve_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m feedhandler.retransmit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve retransmissions from a capture file")
    s.add_argument("capture")
    s.add_argument("--bind", default="0.0.0.0:17001", metavar="ADDR:PORT")
    s.add_argument("--udp-port", type=int, default=None, help="only the feed on this UDP port")
    s.add_argument("--duration", type=seconds, default=None, help="stop after this many seconds")
    a = p.parse_args(argv)
    host, _, port = a.bind.rpartition(":")
    store = MessageStore.from_capture(a.capture, a.udp_port)
    srv = RetransmitServer(store, host, int(port))
    print(f"serving {sum(len(d) for d in store.messages.values())} messages of "
          f"{len(store.messages)} session(s) on {srv.address[0]}:{srv.address[1]}", flush=True)
    srv.start()
    try:
        t0 = time.monotonic()
        while a.duration is None or time.monotonic() - t0 < a.duration:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    print(f"stats {srv.stats}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve_main())
