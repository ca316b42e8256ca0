"""Which protocol a capture file holds, from its bytes (``feedhandler replay --protocol auto``).

A small, bounded reader: it decompresses at most ``MAX_BYTES`` of the file (gzip is recognised by its
magic, never by the name), reads the first ``MAX_PACKETS`` frames of a classic pcap (both magics,
both byte orders) or pcapng (Enhanced and Simple Packet Blocks, per-interface link types, both byte
orders), walks Ethernet/VLAN/IPv4 down to UDP or TCP, and votes:

- a NASDAQ BinaryFILE (no capture header, a run of length-prefixed ITCH messages) -> ``itch50``
- UDP holding a MoldUDP64 packet, told by its structure, never by the port or the session's text:
  a 10-byte session (any bytes: real feeds send ten NULs), a sequence number, a count, then exactly
  ``count`` length-prefixed messages filling the UDP payload, each an ITCH 5.0 message of a known type
  and that type's length -> ``itch50``. (Heartbeats, 20 bytes with count 0, vote only when their
  session is printable or NULs: any 20-byte datagram has that structure.)
- UDP that :func:`feedhandler.framing.cme.sniff` accepts (MDP 3.0 packet + SBE header) -> ``mdp3``
- TCP payload starting ``8=FIX`` -> ``fix``
- TCP SoupBinTCP packets (a login request ``L`` or accepted ``A`` with its fixed length, or a run of
  well-formed SoupBinTCP packets) -> ``ouch`` (the OUCH version, 4.2 or 5.0, is decided later by
  ``ouch_events.detect_version`` from the decoded messages)

Anything else, or two protocols with votes, raises :class:`DetectError` telling the user to pass
``--protocol``. Nothing here is on the hot path: it reads a few dozen packets once per replay.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import Counter

from feedhandler.errors import CaptureFormatError

__all__ = ["PROTOCOLS", "DetectError", "detect", "container", "sniff_packets", "classify_udp", "classify_tcp",
           "capture_file_problem"]


def capture_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a capture file (a sentence that starts with the path), or None.

    Captures are read from files: the format is told from the first bytes and the readers open the file
    again, so a pipe, a terminal or a socket (``cat x | feedhandler replay /dev/stdin``) cannot be read,
    and ``-`` is not standard input."""
    path = os.fspath(path)
    if path == "-" and not os.path.exists(path):
        return ("-: captures are read from files, not from standard input: write the capture to a file "
                "first (tcpdump -w FILE), or capture live with feedhandler run --iface")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: no such file"
    except OSError as e:
        return f"{path}: cannot read: {e.strerror or e}"
    import stat

    if stat.S_ISDIR(st.st_mode):
        return f"{path}: is a directory, not a capture file"
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        what = "a pipe" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else \
            "a terminal or device" if stat.S_ISCHR(st.st_mode) else "not a regular file"
        return (f"{path}: is {what}: captures are read from files (the format is told from the first bytes, "
                "then the file is read again): write it to a file first, or capture live with "
                "feedhandler run --iface")
    return None

PROTOCOLS = ("itch50", "mdp3", "fix", "ouch42", "ouch50")
MAX_BYTES = 4 << 20     # decompressed bytes read at most
MAX_PACKETS = 64        # frames looked at
_MAX_MOLD_COUNT = 2048  # messages in one MoldUDP64 packet (a 64 KiB datagram holds < 2048 messages of >= 3 bytes + 2)


class DetectError(CaptureFormatError):
    """The protocol of a capture could not be told from its bytes (the message says why)."""


# ---- reading the first bytes / frames -----------------------------------------------------------
def _head(path: str, n: int = MAX_BYTES) -> bytes:
    with open(path, "rb") as f:
        raw = f.read(2)
        f.seek(0)
        if raw == b"\x1f\x8b":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = bytearray()
            while len(out) < n:
                # small steps: zlib raises on damage and the output of the failing call is lost
                chunk = f.read(1 << 12)
                if not chunk:
                    break
                try:
                    out += d.decompress(chunk, n - len(out))
                except zlib.error as e:
                    if out:
                        break  # damaged further on: the head is enough
                    raise DetectError(f"{path}: broken gzip stream ({e})") from None
            return bytes(out)
        return f.read(n)


def _pcap_frames(d: bytes, limit: int):
    magic = d[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    else:
        e = ">"
    if len(d) < 24:
        return
    linktype = struct.unpack_from(e + "I", d, 20)[0] & 0xFFFF
    off = 24
    for _ in range(limit):
        if off + 16 > len(d):
            return
        incl = struct.unpack_from(e + "I", d, off + 8)[0]
        off += 16
        if incl > (1 << 20) or off + incl > len(d):
            return
        yield linktype, d[off: off + incl]
        off += incl


def _pcapng_frames(d: bytes, limit: int):
    off, e, links, got = 0, "<", [], 0
    while off + 12 <= len(d) and got < limit:
        btype_raw = d[off: off + 4]
        if btype_raw == b"\x0a\x0d\x0d\x0a":
            bom = d[off + 8: off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                return
            links = []
        btype, blen = struct.unpack_from(e + "II", d, off)
        if blen < 12 or blen % 4 or off + blen > len(d):
            return
        body = d[off + 8: off + blen - 4]
        if btype == 1 and len(body) >= 8:            # Interface Description Block
            links.append(struct.unpack_from(e + "H", body, 0)[0])
        elif btype == 6 and len(body) >= 20:         # Enhanced Packet Block
            ifc, _th, _tl, cap = struct.unpack_from(e + "IIII", body, 0)
            if ifc < len(links) and 20 + cap <= len(body):
                got += 1
                yield links[ifc], body[20: 20 + cap]
        elif btype == 3 and len(body) >= 4 and links:  # Simple Packet Block (interface 0)
            orig = struct.unpack_from(e + "I", body, 0)[0]
            got += 1
            yield links[0], body[4: 4 + min(orig, len(body) - 4)]
        off += blen


def _l4_v6(fr: bytes, eth: int):
    """('udp'|'tcp', payload, dst_port) of the IPv6 packet at fr[eth:], or None (TCP order entry on a
    host that resolves localhost to ::1 is IPv6)."""
    if len(fr) < eth + 40 or fr[eth] >> 4 != 6:
        return None
    end = min(len(fr), eth + 40 + struct.unpack_from(">H", fr, eth + 4)[0])
    nh, l4 = fr[eth + 6], eth + 40
    for _ in range(8):
        if nh not in (0, 43, 60) or end < l4 + 8:
            break
        nh, l4 = fr[l4], l4 + (fr[l4 + 1] + 1) * 8
    if nh == 17 and end >= l4 + 8:
        dport, ulen = struct.unpack_from(">HH", fr, l4 + 2)
        return "udp", fr[l4 + 8: min(end, l4 + max(ulen, 8))], dport
    if nh == 6 and end >= l4 + 20:
        doff = (fr[l4 + 12] >> 4) * 4
        return "tcp", fr[l4 + doff: end], struct.unpack_from(">H", fr, l4 + 2)[0]
    return None


def _l4(linktype: int, fr: bytes):
    """('udp'|'tcp', payload, dst_port) of an IPv4 (or IPv6) frame, or None."""
    if linktype == 1:        # Ethernet
        if len(fr) < 14:
            return None
        eth, et = 14, struct.unpack_from(">H", fr, 12)[0]
        while et in (0x8100, 0x88A8, 0x9100) and len(fr) >= eth + 4:
            et = struct.unpack_from(">H", fr, eth + 2)[0]
            eth += 4
        if et == 0x86DD:
            return _l4_v6(fr, eth)
        if et != 0x0800:
            return None
    elif linktype == 113:    # Linux SLL
        if len(fr) < 16:
            return None
        et = struct.unpack_from(">H", fr, 14)[0]
        if et == 0x86DD:
            return _l4_v6(fr, 16)
        if et != 0x0800:
            return None
        eth = 16
    elif linktype == 276:    # Linux SLL2
        if len(fr) < 20:
            return None
        et = struct.unpack_from(">H", fr, 0)[0]
        if et == 0x86DD:
            return _l4_v6(fr, 20)
        if et != 0x0800:
            return None
        eth = 20
    elif linktype in (101, 228, 229):  # raw IPv4 / IPv6
        if linktype == 229 or (fr and fr[0] >> 4 == 6):
            return _l4_v6(fr, 0)
        eth = 0
    elif linktype == 0:      # BSD loopback
        if len(fr) > 4 and fr[4] >> 4 == 6:
            return _l4_v6(fr, 4)
        eth = 4
    else:
        return None
    if len(fr) < eth + 20 or fr[eth] >> 4 != 4:
        return None
    ihl = (fr[eth] & 15) * 4
    total = struct.unpack_from(">H", fr, eth + 2)[0]
    end = min(len(fr), eth + total) if total >= ihl else len(fr)
    l4 = eth + ihl
    proto = fr[eth + 9]
    if proto == 17 and end >= l4 + 8:
        dport, ulen = struct.unpack_from(">HH", fr, l4 + 2)
        return "udp", fr[l4 + 8: min(end, l4 + max(ulen, 8))], dport
    if proto == 6 and end >= l4 + 20:
        doff = (fr[l4 + 12] >> 4) * 4
        dport = struct.unpack_from(">H", fr, l4 + 2)[0]
        return "tcp", fr[l4 + doff: end], dport
    return None


# ---- classifying payloads -------------------------------------------------------------------------
def _itch_lengths() -> dict[int, int]:
    from feedhandler.protocols.itch50_spec import LENGTH

    return {ord(t): n for t, n in LENGTH.items()}


_ITCH_LENGTH: dict[int, int] = {}


def _is_moldudp64(p: bytes) -> bool:
    """A MoldUDP64 packet of ITCH 5.0 messages, by structure alone (see the module docstring)."""
    if len(p) < 20:
        return False
    count = struct.unpack_from(">H", p, 18)[0]
    if count in (0, 0xFFFF):       # heartbeat / end of session: no messages, no structure to check
        sess = p[:10]
        return len(p) == 20 and (all(0x20 <= c < 0x7F for c in sess) or sess == bytes(10))
    if count > _MAX_MOLD_COUNT:
        return False
    if not _ITCH_LENGTH:
        _ITCH_LENGTH.update(_itch_lengths())
    off = 20
    for _ in range(count):         # every message block must fit exactly and be an ITCH message
        if off + 3 > len(p):
            return False
        ln = struct.unpack_from(">H", p, off)[0]
        if _ITCH_LENGTH.get(p[off + 2]) != ln:
            return False
        off += 2 + ln
    return off == len(p)


def classify_udp(p: bytes) -> str | None:
    """'itch50' (MoldUDP64), 'mdp3' (CME packet) or None for one UDP payload."""
    from feedhandler.framing.cme import sniff

    if _is_moldudp64(p):
        return "itch50"
    if sniff(p):
        return "mdp3"
    return None


_SOUP_TYPES = set(b"+ALJSUHRZO")
_SOUP_FIXED = {ord("L"): 47, ord("A"): 31, ord("J"): 2, ord("H"): 1, ord("R"): 1, ord("Z"): 1, ord("O"): 1}


def classify_tcp(p: bytes) -> str | None:
    """'fix' or 'ouch' for the first bytes of a TCP segment's payload, or None."""
    if p.startswith(b"8=FIX"):
        return "fix"
    if len(p) < 3:
        return None
    off, n = 0, 0
    while off + 3 <= len(p):
        ln = struct.unpack_from(">H", p, off)[0]
        typ = p[off + 2]
        if ln == 0 or typ not in _SOUP_TYPES:
            return None
        if typ in _SOUP_FIXED and ln != _SOUP_FIXED[typ]:
            return None
        n += 1
        off += 2 + ln
    # a segment may end inside a packet (TCP), but the first packet header must be sane
    return "ouch" if n else None


def _is_cme_sbe_tcp(p: bytes) -> bool:
    """CME's SBE over TCP: the Simple Open Framing Header (4-byte length, encoding type 0xCAFE big-endian,
    iLink 3) or the 0xCAFE little-endian marker that starts the payloads of CME's TCP recovery captures."""
    return len(p) >= 6 and (p[:2] == b"\xfe\xca" or (p[4:6] == b"\xca\xfe" and struct.unpack_from(">I", p)[0] >= 6))


def sniff_packets(path: str | os.PathLike, limit: int = MAX_PACKETS) -> tuple[str, list[tuple[str, bytes, int]]]:
    """(container, [(l4, payload, dst_port)]) of the first ``limit`` IPv4 UDP/TCP frames of a capture.

    ``container`` is 'pcap', 'pcapng' or 'binaryfile' ('binaryfile' has no frames).
    """
    path = os.fspath(path)
    try:
        d = _head(path)
    except OSError as e:
        raise DetectError(f"{path}: cannot read: {e.strerror or e}") from None
    if not d:
        raise DetectError(f"{path}: the file is empty")
    magic = d[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        kind, frames = "pcap", _pcap_frames(d, limit)
    elif magic == b"\x0a\x0d\x0d\x0a":
        kind, frames = "pcapng", _pcapng_frames(d, limit)
    elif _is_binaryfile(d):
        return "binaryfile", []
    else:
        raise DetectError(f"{path}: not a pcap, pcapng or NASDAQ BinaryFILE (gzip or plain): no capture format "
                          f"this reads (first bytes {d[:4].hex(' ')}); --protocol cannot help")
    out = []
    for lt, fr in frames:
        x = _l4(lt, fr)
        if x is not None and x[1]:
            out.append(x)
    return kind, out


def container(path: str | os.PathLike) -> tuple[str, bool]:
    """(format, gzip) of a capture file: format 'pcap', 'pcap-ns', 'pcapng', 'binaryfile' or 'unknown'."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    d = _head(path, 4096)
    m = d[:4]
    if m in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"):
        return "pcap", gz
    if m in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        return "pcap-ns", gz
    if m == b"\x0a\x0d\x0d\x0a":
        return "pcapng", gz
    return ("binaryfile" if d and _is_binaryfile(d) else "unknown"), gz


def _is_binaryfile(d: bytes) -> bool:
    """A run of at least 8 (or all, if fewer) length-prefixed messages of known ITCH types."""
    itch_types = set(b"SRHYLVWKJhAFECXDUPQBINO")
    off, n = 0, 0
    while off + 3 <= len(d) and n < 64:
        ln = struct.unpack_from(">H", d, off)[0]
        if ln == 0 or ln > 64 or d[off + 2] not in itch_types:
            return False
        if off + 2 + ln > len(d):
            break
        off += 2 + ln
        n += 1
    return n >= 8 or (n > 0 and off == len(d))


def detect(path: str | os.PathLike) -> str:
    """The protocol of a capture: 'itch50', 'mdp3', 'fix' or 'ouch' (OUCH version decided later).

    Raises DetectError (a CaptureFormatError) when it cannot tell, with advice to pass --protocol.
    """
    path = os.fspath(path)
    kind, pkts = sniff_packets(path)
    if kind == "binaryfile":
        return "itch50"
    votes: Counter = Counter()
    for l4, payload, _port in pkts:
        v = classify_udp(payload) if l4 == "udp" else classify_tcp(payload)
        if v:
            votes[v] += 1
    if not pkts:
        raise DetectError(f"{path}: this {kind} holds no complete IPv4 UDP or TCP packet in its first "
                          f"{len(_head(path, 1 << 16)):,} bytes (empty or cut short?)" if os.path.getsize(path) < (1 << 16)
                          else f"{path}: no IPv4 UDP or TCP packet among the first {MAX_PACKETS} frames of this {kind}; "
                          "pass --protocol itch50|mdp3|fix|ouch42|ouch50")
    if not votes:
        if any(l4 == "tcp" and _is_cme_sbe_tcp(payload) for l4, payload, _port in pkts):
            raise DetectError(f"{path}: this {kind} holds CME SBE messages over TCP (the 0xCAFE framing of CME's "
                              "TCP recovery and iLink 3), which feedhandler does not decode: CME MDP 3.0 is read "
                              "from its UDP feeds (incremental and snapshot channels)")
        raise DetectError(f"{path}: cannot tell the protocol from the first {len(pkts)} IPv4 packets of this "
                          f"{kind} (no MoldUDP64, MDP 3.0, FIX or SoupBinTCP seen); pass --protocol "
                          "itch50|mdp3|fix|ouch42|ouch50")
    (best, n), *rest = votes.most_common()
    if rest and rest[0][1] * 4 > n:   # a real second protocol, not a stray look-alike packet
        seen = ", ".join(f"{k} ({v} packets)" for k, v in votes.most_common())
        raise DetectError(f"{path}: the capture looks like more than one protocol: {seen}; pass --protocol")
    return best
