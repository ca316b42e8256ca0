"""CME MDP 3.0 packet framing and channel sequencing: the pure-Python reference.

A UDP payload is the binary packet header (MsgSeqNum u32, SendingTime u64, little-endian) followed
by messages, each behind a 2-byte MsgSize that counts itself. The native decoder
(``feedhandler.protocols.mdp3.Mdp3Decoder``) frames and sequences packets inside its nogil loop;
this module states the same rules in a few lines of Python so that tests can check the native
counters against it, and tools can split packets.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

PACKET_HEADER = struct.Struct("<IQ")
MSG_SIZE = struct.Struct("<H")
SBE_HEADER_SIZE = 8


class FramingError(ValueError):
    """A payload that cannot be split into messages (the reason is the message)."""


def split_packet(payload: bytes) -> tuple[int, int, list[bytes]]:
    """(MsgSeqNum, SendingTime, [SBE messages without their MsgSize]) of one payload."""
    if len(payload) < PACKET_HEADER.size:
        raise FramingError(f"payload of {len(payload)} bytes is shorter than the packet header")
    seq, sending = PACKET_HEADER.unpack_from(payload, 0)
    pos, out = PACKET_HEADER.size, []
    while pos < len(payload):
        if len(payload) - pos < 2:
            raise FramingError(f"1 stray byte at offset {pos}")
        (size,) = MSG_SIZE.unpack_from(payload, pos)
        if size < 2 + SBE_HEADER_SIZE or size > len(payload) - pos:
            raise FramingError(f"MsgSize {size} at offset {pos} does not fit the packet")
        out.append(payload[pos + 2 : pos + size])
        pos += size
    return seq, sending, out


@dataclass
class ChannelSequencer:
    """Arbitration of the A and B copies of one channel: first copy wins, later ones are dropped.

    ``accept(seq)`` returns "ok", "duplicate", "late", "gap" (accepted after a gap) or "reset".
    """

    expected: int | None = None
    seen: set = field(default_factory=set)
    counts: dict = field(default_factory=lambda: {"ok": 0, "duplicate": 0, "late": 0, "gap": 0,
                                                  "missing": 0, "reset": 0, "reordered": 0})

    def accept(self, seq: int) -> str:
        if self.expected is None or seq == self.expected:
            kind = "ok"
        elif seq < self.expected:
            # like the native decoder, duplicates are recognised within 64 packets
            if seq in self.seen and self.expected - 1 - seq < 64:
                kind = "duplicate"
            elif seq == 1:
                kind = "reset"
                self.seen.clear()
            else:
                kind = "late"
            if kind != "reset":
                self.counts[kind] += 1
                return kind
        else:
            kind = "gap"
            self.counts["missing"] += seq - self.expected
        self.counts[kind] += 1
        self.expected = seq + 1
        self.seen.add(seq)
        if len(self.seen) > 4096:
            self.seen = {s for s in self.seen if s > seq - 64}
        return kind


REORDER_WINDOW = 32  # payloads the native decoder searches ahead for a missing MsgSeqNum


def arbitrate(seqs, channels, window: int = REORDER_WINDOW):
    """The order in which a batch of packets is applied, and the per-kind counts summed over channels.

    seqs[i], channels[i]: MsgSeqNum and channel of payload i (A and B copies share a channel). When a
    packet skips ahead, the next ``window`` payloads are searched for the missing ones, which are
    applied first ("reordered"); duplicates, late packets and truly missing ones are not applied.
    """
    seqr: dict[int, ChannelSequencer] = {}
    taken: set[int] = set()
    order: list[int] = []
    n = len(seqs)
    for i, (s, ch) in enumerate(zip(seqs, channels)):
        if i in taken:
            continue
        sq = seqr.setdefault(ch, ChannelSequencer())
        while sq.expected is not None and s > sq.expected:
            k = next((j for j in range(i + 1, min(n, i + 1 + window))
                      if j not in taken and channels[j] == ch and seqs[j] == sq.expected), None)
            if k is None:
                break
            taken.add(k)
            sq.accept(seqs[k])
            sq.counts["reordered"] += 1
            order.append(k)
        if sq.accept(s) in ("ok", "gap", "reset"):
            order.append(i)
    counts = {k: sum(q.counts[k] for q in seqr.values()) for k in ChannelSequencer().counts}
    return order, counts


def sniff(payload: bytes, schema_ids=(1,), versions=range(1, 64)) -> bool:
    """True when payload looks like an MDP 3.0 packet: a first message whose MsgSize fits and whose
    SBE header names a known schema id and a plausible version (for protocol auto-detection)."""
    if len(payload) < PACKET_HEADER.size + 2 + SBE_HEADER_SIZE:
        return False
    (size,) = MSG_SIZE.unpack_from(payload, PACKET_HEADER.size)
    if size < 2 + SBE_HEADER_SIZE or size > len(payload) - PACKET_HEADER.size:
        return False
    _bl, _tid, sid, ver = struct.unpack_from("<HHHH", payload, PACKET_HEADER.size + 2)
    return sid in schema_ids and ver in versions
