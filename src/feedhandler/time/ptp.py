"""IEEE 1588 PTP v2 / v2.1 messages: decode (Sync, Delay_Req, Pdelay_Req/Resp/Resp_Follow_Up, Follow_Up,
Delay_Resp, Announce, Signaling, Management) and encode (Delay_Req, for the slave).

Control plane: a handful of messages a second, so this is plain Python over ``struct``, each layout
declared once as data. Every decode checks the length first and raises :class:`PtpDecodeError` (with
the reason) instead of reading past the buffer. Timestamps are (seconds: 48 bits, nanoseconds: 32 bits)
and are returned as integer nanoseconds; correctionField is returned in units of 2^-16 ns as on the
wire (``correction_ns`` gives whole nanoseconds).

Common header (34 bytes, all big-endian)::

    0  majorSdoId(4) | messageType(4)     1  minorVersionPTP(4) | versionPTP(4)
    2  messageLength u16                  4  domainNumber u8     5  minorSdoId / reserved u8
    6  flagField u16                      8  correctionField i64 (ns * 2^16)
    16 messageTypeSpecific u32            20 sourcePortIdentity: clockIdentity u64, portNumber u16
    30 sequenceId u16                     32 controlField u8     33 logMessageInterval i8
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "PtpDecodeError", "PtpMessage", "decode", "encode_delay_req", "HEADER", "HEADER_LEN",
    "SYNC", "DELAY_REQ", "PDELAY_REQ", "PDELAY_RESP", "FOLLOW_UP", "DELAY_RESP", "PDELAY_RESP_FOLLOW_UP",
    "ANNOUNCE", "SIGNALING", "MANAGEMENT", "MSG_NAMES", "FLAG_NAMES", "EVENT_PORT", "GENERAL_PORT",
    "PTP_PRIMARY_MCAST", "PTP_ETHERTYPE",
]

EVENT_PORT = 319
GENERAL_PORT = 320
PTP_PRIMARY_MCAST = "224.0.1.129"
PTP_ETHERTYPE = 0x88F7

SYNC, DELAY_REQ, PDELAY_REQ, PDELAY_RESP = 0x0, 0x1, 0x2, 0x3
FOLLOW_UP, DELAY_RESP, PDELAY_RESP_FOLLOW_UP, ANNOUNCE, SIGNALING, MANAGEMENT = 0x8, 0x9, 0xA, 0xB, 0xC, 0xD

MSG_NAMES = {
    SYNC: "sync", DELAY_REQ: "delay_req", PDELAY_REQ: "pdelay_req", PDELAY_RESP: "pdelay_resp",
    FOLLOW_UP: "follow_up", DELAY_RESP: "delay_resp", PDELAY_RESP_FOLLOW_UP: "pdelay_resp_follow_up",
    ANNOUNCE: "announce", SIGNALING: "signaling", MANAGEMENT: "management",
}

# flagField bits (IEEE 1588-2019 table 37)
FLAG_NAMES = {
    0x0001: "leap61", 0x0002: "leap59", 0x0004: "utc_offset_valid", 0x0008: "ptp_timescale",
    0x0010: "time_traceable", 0x0020: "frequency_traceable", 0x0040: "sync_uncertain",
    0x0100: "alternate_master", 0x0200: "two_step", 0x0400: "unicast", 0x2000: "profile_specific_1",
    0x4000: "profile_specific_2", 0x8000: "security",
}
TWO_STEP = 0x0200

# (name, struct code) in wire order; "ts" = 10-byte timestamp, "pid" = 10-byte port identity
HEADER = (
    ("sdo_type", "B"), ("version", "B"), ("length", "H"), ("domain", "B"), ("minor_sdo_id", "B"),
    ("flags", "H"), ("correction", "q"), ("type_specific", "I"), ("clock_identity", "Q"),
    ("port_number", "H"), ("sequence_id", "H"), ("control", "B"), ("log_interval", "b"),
)
_HEADER = struct.Struct(">" + "".join(c for _, c in HEADER))
HEADER_LEN = _HEADER.size
assert HEADER_LEN == 34

# Bodies after the header, by message type.
BODIES: dict[int, tuple[tuple[str, str], ...]] = {
    SYNC: (("origin_timestamp", "ts"),),
    DELAY_REQ: (("origin_timestamp", "ts"),),
    FOLLOW_UP: (("precise_origin_timestamp", "ts"),),
    DELAY_RESP: (("receive_timestamp", "ts"), ("requesting_port", "pid")),
    PDELAY_REQ: (("origin_timestamp", "ts"), ("reserved_port", "pid")),
    PDELAY_RESP: (("request_receipt_timestamp", "ts"), ("requesting_port", "pid")),
    PDELAY_RESP_FOLLOW_UP: (("response_origin_timestamp", "ts"), ("requesting_port", "pid")),
    ANNOUNCE: (
        ("origin_timestamp", "ts"), ("current_utc_offset", "h"), ("reserved", "B"),
        ("gm_priority1", "B"), ("gm_clock_class", "B"), ("gm_clock_accuracy", "B"),
        ("gm_clock_variance", "H"), ("gm_priority2", "B"), ("gm_identity", "Q"), ("steps_removed", "H"),
        ("time_source", "B"),
    ),
    SIGNALING: (("target_port", "pid"),),
    MANAGEMENT: (
        ("target_port", "pid"), ("starting_boundary_hops", "B"), ("boundary_hops", "B"),
        ("action", "B"), ("reserved", "B"),
    ),
}
_SIZES = {"ts": 10, "pid": 10, "B": 1, "b": 1, "H": 2, "h": 2, "I": 4, "Q": 8, "q": 8}


class PtpDecodeError(ValueError):
    """The bytes are no PTP v2 message we can read (reason in the message)."""


@dataclass
class PtpMessage:
    msg_type: int
    major_sdo_id: int
    version: int                  # versionPTP (2)
    minor_version: int            # minorVersionPTP (1 for v2.1, 0 for v2.0)
    length: int
    domain: int
    minor_sdo_id: int
    flags: int
    correction: int               # ns * 2^16
    type_specific: int
    clock_identity: int
    port_number: int
    sequence_id: int
    control: int
    log_interval: int             # signed
    body: dict = field(default_factory=dict)
    tlvs: list = field(default_factory=list)   # [(type, bytes)] after the body (management, signaling)

    @property
    def name(self) -> str:
        return MSG_NAMES.get(self.msg_type, f"reserved_{self.msg_type:x}")

    @property
    def correction_ns(self) -> int:
        return self.correction >> 16

    @property
    def two_step(self) -> bool:
        return bool(self.flags & TWO_STEP)

    @property
    def flag_names(self) -> list[str]:
        return [n for b, n in FLAG_NAMES.items() if self.flags & b]

    @property
    def source_port(self) -> tuple[int, int]:
        return (self.clock_identity, self.port_number)


def _ts(buf: bytes, off: int) -> int:
    hi, lo, ns = struct.unpack_from(">HII", buf, off)
    return ((hi << 32) | lo) * 1_000_000_000 + ns


def _ts_raw(buf: bytes, off: int) -> tuple[int, int]:
    hi, lo, ns = struct.unpack_from(">HII", buf, off)
    return ((hi << 32) | lo), ns


def decode(buf: bytes | bytearray | memoryview) -> PtpMessage:
    """Decode one PTP message (the UDP payload or the Ethernet payload of ethertype 0x88F7).

    Raises
    ------
    PtpDecodeError
        Shorter than the header or than its type's body, version other than 2, messageLength beyond
        the buffer.
    """
    buf = bytes(buf)
    if len(buf) < HEADER_LEN:
        raise PtpDecodeError(f"{len(buf)} bytes: shorter than the 34-byte PTP header")
    h = _HEADER.unpack_from(buf, 0)
    sdo_type, ver = h[0], h[1]
    version, minor = ver & 0x0F, ver >> 4
    if version != 2:
        raise PtpDecodeError(f"PTP version {version} (only 2 / 2.1)")
    length = h[2]
    if length < HEADER_LEN or length > len(buf):
        raise PtpDecodeError(f"messageLength {length} outside 34..{len(buf)} (the bytes received)")
    msg = PtpMessage(
        msg_type=sdo_type & 0x0F, major_sdo_id=sdo_type >> 4, version=version, minor_version=minor,
        length=length, domain=h[3], minor_sdo_id=h[4], flags=h[5], correction=h[6], type_specific=h[7],
        clock_identity=h[8], port_number=h[9], sequence_id=h[10], control=h[11], log_interval=h[12],
    )
    layout = BODIES.get(msg.msg_type)
    if layout is None:
        return msg
    need = HEADER_LEN + sum(_SIZES[c] for _, c in layout)
    if length < need:
        raise PtpDecodeError(f"{msg.name}: messageLength {length} < {need}")
    off = HEADER_LEN
    for name, code in layout:
        if code == "ts":
            msg.body[name] = _ts(buf, off)
        elif code == "pid":
            msg.body[name] = struct.unpack_from(">QH", buf, off)
        else:
            msg.body[name] = struct.unpack_from(">" + code, buf, off)[0]
        off += _SIZES[code]
    # TLVs (management / signaling / any message with a suffix): type u16, length u16, value
    while off + 4 <= length:
        t, n = struct.unpack_from(">HH", buf, off)
        if off + 4 + n > length:
            break
        msg.tlvs.append((t, buf[off + 4:off + 4 + n]))
        off += 4 + n
    return msg


def encode_delay_req(clock_identity: int, port_number: int, sequence_id: int, domain: int = 0,
                     minor_version: int = 0) -> bytes:
    """A Delay_Req (44 bytes) with a zero originTimestamp (the transmit stamp is taken by the sender)."""
    hdr = _HEADER.pack(DELAY_REQ, (minor_version << 4) | 2, 44, domain, 0, 0, 0, 0, clock_identity,
                       port_number, sequence_id, 1, 0x7F)
    return hdr + bytes(10)


def describe(msg: PtpMessage, raw: bytes | None = None) -> str:
    """One line in tcpdump's style (``PTPv2, majorSdoId: ..., msg type: ...``): for tests and logs."""
    tcp_names = {SYNC: "sync msg", DELAY_REQ: "delay req msg", PDELAY_REQ: "peer delay req msg",
                 PDELAY_RESP: "peer delay resp msg", FOLLOW_UP: "follow up msg", DELAY_RESP: "delay resp msg",
                 PDELAY_RESP_FOLLOW_UP: "pdelay resp fup msg", ANNOUNCE: "announce msg",
                 SIGNALING: "signaling msg", MANAGEMENT: "management msg"}
    flags = [(0x1, "l1 61"), (0x2, "l1 59"), (0x4, "utc reasonable"), (0x8, "timescale"),
             (0x10, "time tracable"), (0x20, "frequency tracable"), (0x100, "alternate master"),
             (0x200, "two step"), (0x400, "unicast"), (0x1000, "profile specific 1"),
             (0x2000, "profile specific 2"), (0x4000, "security mask"), (0x18C0, "unknown")]
    controls = {0: "Sync", 1: "Delay_Req", 2: "Follow_Up", 3: "Delay_Resp", 4: "Management", 5: "Other"}
    fl = ", ".join(n for b, n in flags if msg.flags & b) or "none"
    ver = f"v{msg.version}.{msg.minor_version}" if msg.minor_version else f"v{msg.version}"
    corr = msg.correction
    s = (f"PTP{ver}, majorSdoId: 0x{msg.major_sdo_id:x}, msg type: {tcp_names.get(msg.msg_type, 'Reserved')}, "
         f"length: {msg.length}, domain: {msg.domain}, reserved1: {msg.minor_sdo_id}, Flags [{fl}], "
         f"NS correction: {(corr >> 16) & 0xFFFFFFFFFFFF}, sub NS correction: {corr & 0xFFFF}, "
         f"reserved2: {msg.type_specific}, clock identity: 0x{msg.clock_identity:x}, port id: {msg.port_number}, "
         f"seq id: {msg.sequence_id}, control: {msg.control} ({controls.get(msg.control, 'Reserved')}), "
         f"log message interval: {msg.log_interval & 0xFF}")

    def ts(name, ns):
        return f", {name}: {ns // 1_000_000_000}.{ns % 1_000_000_000:09d} seconds"

    b = msg.body
    t = msg.msg_type
    if t in (SYNC, DELAY_REQ):
        s += ts("originTimeStamp", b["origin_timestamp"])
    elif t == FOLLOW_UP:
        s += ts("preciseOriginTimeStamp", b["precise_origin_timestamp"])
    elif t == DELAY_RESP:
        s += ts("receiveTimeStamp", b["receive_timestamp"])
        s += f", port identity: 0x{b['requesting_port'][0]:x}, port id: {b['requesting_port'][1]}"
    elif t == PDELAY_REQ:
        s += ts("preciseOriginTimeStamp", b["origin_timestamp"])
        s += f", port identity: 0x{b['reserved_port'][0]:x}, port id: {b['reserved_port'][1]}"
    elif t == PDELAY_RESP:
        s += ts("receiveTimeStamp", b["request_receipt_timestamp"])
        s += f", port identity: 0x{b['requesting_port'][0]:x}, port id: {b['requesting_port'][1]}"
    elif t == PDELAY_RESP_FOLLOW_UP:
        s += ts("preciseOriginTimeStamp", b["response_origin_timestamp"])
        s += f", port identity: 0x{b['requesting_port'][0]:x}, port id: {b['requesting_port'][1]}"
    elif t == ANNOUNCE:
        s += ts("originTimeStamp", b["origin_timestamp"])
        s += (f", origin cur utc:{b['current_utc_offset']}, rsvd: {b['reserved']}, gm priority_1: {b['gm_priority1']}, "
              f"gm clock class: {b['gm_clock_class']}, gm clock accuracy: {b['gm_clock_accuracy']}, "
              f"gm clock variance: {b['gm_clock_variance']}, gm priority_2: {b['gm_priority2']}, "
              f"gm clock id: 0x{b['gm_identity']:x}, steps removed: {b['steps_removed']}, "
              f"time source: 0x{b['time_source']:x}")
    elif t == SIGNALING:
        s += f", port identity: 0x{b['target_port'][0]:x}, port id: {b['target_port'][1]}"
    elif t == MANAGEMENT:
        s += (f", port identity: 0x{b['target_port'][0]:x}, port id: {b['target_port'][1]}, start boundary hops: "
              f"{b['starting_boundary_hops']}, boundary hops: {b['boundary_hops']}, flags: 0x{b['action']:x}, "
              f"reserved: 0x{b['reserved']:x}")
    return s
