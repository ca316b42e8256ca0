"""SoupBinTCP 3.0 framing (NASDAQ): a 2-byte big-endian length, a 1-byte packet type, the payload.

The length counts the type byte and the payload, not itself. Packet types and layouts::

    client -> server   'L' Login Request  username(6) password(10) session(10) sequence(20, ASCII)
                       'U' Unsequenced Data   'R' Client Heartbeat   'O' Logout Request
    server -> client   'A' Login Accepted  session(10) sequence(20, ASCII)
                       'J' Login Rejected  reason(1): 'A' not authorized, 'S' session not available
                       'S' Sequenced Data  'H' Server Heartbeat  'Z' End of Session  '+' Debug

Alphanumeric fields are left justified and space padded; numeric ASCII fields right justified and
space padded. :class:`Framer` splits a TCP byte stream into packets and never reads past the bytes it
was given.
"""
from __future__ import annotations

import struct

LOGIN_REQUEST = b"L"
LOGIN_ACCEPTED = b"A"
LOGIN_REJECTED = b"J"
SEQUENCED_DATA = b"S"
UNSEQUENCED_DATA = b"U"
SERVER_HEARTBEAT = b"H"
CLIENT_HEARTBEAT = b"R"
END_OF_SESSION = b"Z"
LOGOUT_REQUEST = b"O"
DEBUG = b"+"

REJECT_NOT_AUTHORIZED = b"A"
REJECT_SESSION_UNAVAILABLE = b"S"

# Payload layouts of the session packets: type -> (name, ((field, kind, width), ...)); kind "alpha" is
# left-justified, "alpha_right" right-justified (session names, as ``login_request`` writes them),
# "numeric" right-justified ASCII digits; all space padded. ``feedhandler.scapy`` builds its layers
# from this table; the encoders and parsers below use the same widths (tests/test_scapy_layers.py).
PAYLOADS: dict[bytes, tuple[str, tuple[tuple[str, str, int], ...]]] = {
    LOGIN_REQUEST: ("login_request", (("username", "alpha", 6), ("password", "alpha", 10),
                                      ("requested_session", "alpha_right", 10),
                                      ("requested_sequence", "numeric", 20))),
    LOGIN_ACCEPTED: ("login_accepted", (("session", "alpha_right", 10), ("sequence", "numeric", 20))),
    LOGIN_REJECTED: ("login_rejected", (("reject_reason_code", "alpha", 1),)),
}

MAX_PACKET = 0xFFFF
_LEN = struct.Struct(">H")


class SoupError(ValueError):
    """A malformed SoupBinTCP packet."""


def packet(ptype: bytes, payload: bytes = b"") -> bytes:
    n = 1 + len(payload)
    if n > MAX_PACKET:
        raise SoupError("payload too long")
    return _LEN.pack(n) + ptype + payload


def alpha(v: str | bytes, width: int) -> bytes:
    b = v.encode() if isinstance(v, str) else v
    if len(b) > width:
        raise SoupError(f"{b!r} longer than {width}")
    return b.ljust(width, b" ")


def numeric(v: int, width: int) -> bytes:
    b = str(int(v)).encode()
    if len(b) > width:
        raise SoupError(f"{v} longer than {width}")
    return b.rjust(width, b" ")


def login_request(username: str, password: str, session: str = "", sequence: int = 0) -> bytes:
    """Client Login Request; session '' = the current session, sequence 0 = from the next message."""
    return packet(LOGIN_REQUEST, alpha(username, 6) + alpha(password, 10) + session.encode().rjust(10, b" ")
                  + numeric(sequence, 20))


def parse_login_request(payload: bytes) -> tuple[str, str, str, int]:
    """(username, password, requested session ('' = current), requested sequence (0 = next/any))."""
    if len(payload) != 46:
        raise SoupError(f"login request payload is {len(payload)} bytes, not 46")
    user = payload[0:6].decode("ascii", "replace").strip()
    pw = payload[6:16].decode("ascii", "replace").strip()
    sess = payload[16:26].decode("ascii", "replace").strip()
    seq_s = payload[26:46].strip()
    if seq_s and not seq_s.isdigit():
        raise SoupError("requested sequence number is not numeric")
    return user, pw, sess, int(seq_s or b"0")


def login_accepted(session: str, sequence: int) -> bytes:
    return packet(LOGIN_ACCEPTED, session.encode().rjust(10, b" ") + numeric(sequence, 20))


def parse_login_accepted(payload: bytes) -> tuple[str, int]:
    if len(payload) != 30:
        raise SoupError("login accepted payload is not 30 bytes")
    return payload[:10].decode().strip(), int(payload[10:30].strip() or b"0")


def login_rejected(reason: bytes) -> bytes:
    return packet(LOGIN_REJECTED, reason)


def sequenced(msg: bytes) -> bytes:
    return packet(SEQUENCED_DATA, msg)


def unsequenced(msg: bytes) -> bytes:
    return packet(UNSEQUENCED_DATA, msg)


class Framer:
    """Incremental SoupBinTCP packet splitter: ``feed(data) -> [(type, payload), ...]``."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        out = []
        pos, n = 0, len(self.buf)
        buf = self.buf
        while n - pos >= 2:
            ln = (buf[pos] << 8) | buf[pos + 1]
            if ln == 0:
                raise SoupError("zero-length packet")
            if n - pos - 2 < ln:
                break
            out.append((bytes(buf[pos + 2 : pos + 3]), bytes(buf[pos + 3 : pos + 2 + ln])))
            pos += 2 + ln
        del self.buf[:pos]
        return out
