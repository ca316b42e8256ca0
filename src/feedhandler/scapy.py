"""Scapy layers for the project's wire formats: MoldUDP64, ITCH 5.0, SoupBinTCP and OUCH 4.2 / 5.0.

Every message layer is *generated* from the project's one field table per protocol, so scapy shows
exactly the layouts the native decoders use:

=================  =====================================================  ==========================
layers             built from                                             bound to
=================  =====================================================  ==========================
``Itch*``          ``protocols.itch50_spec.MESSAGES`` (every message)     MoldUDP64 message blocks
``MoldUDP64``      header: session(10) sequence(u64) count(u16)           UDP ports in ``MOLD_PORTS``
``SoupBinTCP``     ``protocols.soupbintcp.PAYLOADS`` (login packets)      TCP ports in ``SOUP_PORTS``
``Ouch42*``        ``protocols.ouch42.TABLE``                             SoupBinTCP 'U' (in) / 'S' (out)
``Ouch50*``        ``protocols.ouch50_spec.TABLE`` (+ TagValue appendages)  SoupBinTCP 'U' / 'S'
=================  =====================================================  ==========================

(``MOLD_PORTS``: UDP 26477; ``SOUP_PORTS``: TCP 15000, the ports of the shipped samples.)

Class names are the table names in CamelCase: ``ItchAddOrder`` (``add_order``), ``ItchAddOrderMpid``,
``ItchNoii``, ``Ouch42EnterOrder``, ``Ouch42Accepted``, ``Ouch50OrderAccepted``, ... The dictionaries
``ITCH_LAYERS`` / ``OUCH42_LAYERS`` / ``OUCH50_LAYERS`` map type characters to classes.

Reading a capture::

    from scapy.all import rdpcap
    from feedhandler.scapy import MoldUDP64, ItchAddOrder
    for pkt in rdpcap("pcaps/itch50_sample.pcap"):
        for msg in pkt[MoldUDP64].messages:          # ITCH layers, in block order
            if isinstance(msg, ItchAddOrder):
                print(msg.stock, msg.price, msg.shares)

Crafting (lengths and counts are filled in when left unset)::

    MoldUDP64(session="000010059B", sequence=7, messages=[ItchAddOrder(stock="AAPL", price=1_890_000)])

Field values are the wire units of the tables: prices are integers with 4 implied decimals (8 for
MWCB levels; ``show()`` prints them as decimals), timestamps are ns since midnight, alpha fields are
space-padded bytes. A message whose type the table does not know, or that is shorter than its layout,
dissects as :class:`ItchMessage` (type + raw ``data``), so malformed input stays visible.

Ports: ``bind_moldudp64(port)`` and ``bind_soupbintcp(port, protocol="ouch"|"ouch42"|"ouch50"|"itch50")``
add ports (``itch50``: NASDAQ's TotalView-ITCH over SoupBinTCP, sequenced packets hold ITCH layers).
OUCH 4.2 and 5.0 share their type characters; on a port bound with ``protocol="ouch"`` (the default) a
message takes the version whose decoder (``ouch42.decode`` / ``ouch50_spec.decode``) accepts its length
and layout, 5.0 when both do. SoupBinTCP packets split across TCP segments need the stream: use
:func:`soup_messages`, which reassembles each direction by sequence number (scapy's own
``TCPSession`` is not supported: on these captures it dropped data).

scapy is an optional dependency: ``pip install 'feedhandler[scapy]'``.
"""
from __future__ import annotations

import struct

try:
    from scapy.compat import raw
    from scapy.fields import (ByteField, Field, FieldLenField, IntField, LongField, PacketListField,
                              ShortField, SignedIntField, SignedLongField, StrField, StrFixedLenField,
                              StrLenField)
    from scapy.layers.inet import TCP, UDP
    from scapy.packet import Packet, Raw, bind_layers, split_layers
except ImportError as _e:  # pragma: no cover - exercised by tests/test_scapy_layers.py in a subprocess
    raise ImportError(
        f"feedhandler.scapy needs scapy ({_e}); install it with: pip install 'feedhandler[scapy]'") from _e

from feedhandler.capture.pcapwriter import MOLD_END_OF_SESSION
from feedhandler.protocols import itch50_spec, ouch42, ouch50_spec, soupbintcp

__all__ = [
    "MoldUDP64", "MoldUDP64Block", "ItchMessage", "SoupBinTCP", "Ouch42Message", "Ouch50Message",
    "Ouch50Appendage", "ITCH_LAYERS", "OUCH42_LAYERS", "OUCH50_LAYERS", "SOUP_LAYERS", "MOLD_PORTS",
    "SOUP_PORTS", "bind_moldudp64", "bind_soupbintcp", "unbind_moldudp64", "unbind_soupbintcp", "soup_messages", "itch_messages",
]

# Ports of the project's own captures: pcaps/make_samples.sh -> `feedhandler synth` (ITCH: UDP 26477,
# synth/day.py; OUCH 4.2 and 5.0: TCP 15000, protocols/ouch_events.synth). The real NASDAQ ITCH 5.0
# captures in ../shared/data/itch50 use UDP 26477 too; the real OUCH 5.0 sessions there use TCP 8001
# and 8003, common ports for other services, so they are not bound by default:
# ``bind_soupbintcp(8003, protocol="ouch50")``.
DEFAULT_MOLD_PORTS = (26477,)
DEFAULT_SOUP_PORTS = {15000: "ouch"}
SOUP_PROTOCOLS = {"ouch": "auto", "ouch42": "4.2", "ouch50": "5.0", "itch50": None}  # -> OUCH version

MOLD_PORTS: set[int] = set()
SOUP_PORTS: dict[int, str] = {}


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


# ---- field kinds ------------------------------------------------------------------------------------
class _Alpha(StrFixedLenField):
    """Fixed-width ASCII, left-justified and space padded (str or bytes in; bytes out)."""

    def i2m(self, pkt, x):
        v = super().i2m(pkt, x)
        n = self.length_from(pkt)
        if len(v) > n:
            raise ValueError(f"{self.name}: {v!r} is longer than {n} bytes")
        return v.ljust(n, b" ")


class _AlphaRight(_Alpha):
    """Fixed-width ASCII, right-justified and space padded (SoupBinTCP session names)."""

    def i2m(self, pkt, x):
        v = StrFixedLenField.i2m(self, pkt, x)
        return v.rjust(self.length_from(pkt), b" ")


class _AsciiNumber(Field):
    """A right-justified, space-padded ASCII decimal number (SoupBinTCP sequence numbers)."""

    __slots__ = ["width"]

    def __init__(self, name, default, width):
        self.width = width
        Field.__init__(self, name, default, f"{width}s")

    def i2m(self, pkt, x):
        return str(int(x or 0)).encode().rjust(self.width, b" ")

    def m2i(self, pkt, x):
        s = x.strip()
        return int(s) if s.isdigit() else x


class _U48(Field):
    """A 6-byte big-endian unsigned integer (ITCH timestamps)."""

    def __init__(self, name, default):
        Field.__init__(self, name, default, "6s")

    def i2m(self, pkt, x):
        return int(x or 0).to_bytes(6, "big")

    def m2i(self, pkt, x):
        return int.from_bytes(x, "big")


class _PriceMixin:
    decimals = 4

    def i2repr(self, pkt, x):
        if x is None:
            return "None"
        q, r = divmod(abs(int(x)), 10 ** self.decimals)
        return f"{'-' if x < 0 else ''}{q}.{r:0{self.decimals}d}"


class _Price4(_PriceMixin, IntField):
    pass


class _Price8(_PriceMixin, LongField):
    decimals = 8


class _SignedPrice4(_PriceMixin, SignedLongField):
    pass


def _itch_field(f: itch50_spec.Field):
    if f.kind in ("char", "alpha"):
        return _Alpha(f.name, b" " * f.size, f.size)
    return {"u16": lambda n: ShortField(n, 0), "u32": lambda n: IntField(n, 0),
            "u64": lambda n: LongField(n, 0), "ts48": lambda n: _U48(n, 0),
            "price4": lambda n: _Price4(n, 0), "price8": lambda n: _Price8(n, 0)}[f.kind](f.name)


def _ouch_field(name: str, kind: str, size: int, price_fields: frozenset, signed_price: bool):
    if kind in ("s", "c"):
        return _Alpha(name, b" " * size, size)
    if name in price_fields:
        return (_SignedPrice4 if signed_price else _Price4)(name, 0)
    return {"u2": ShortField, "u4": IntField, "u8": LongField, "i4": SignedIntField,
            "i8": SignedLongField}[kind](name, 0)


# ---- ITCH 5.0 -----------------------------------------------------------------------------------------
class ItchMessage(Packet):
    """One ITCH 5.0 message. ``ItchMessage(raw_bytes)`` dissects into the class of its type character;
    an unknown type, or fewer bytes than the type's layout, stays an ``ItchMessage`` (type + ``data``)."""

    name = "ITCH 5.0 message"
    fields_desc = [_Alpha("message_type", b"?", 1), StrField("data", b"")]
    wire_length = None

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        if _pkt:
            c = ITCH_LAYERS.get(_pkt[:1])
            if c is not None and len(_pkt) >= c.wire_length:
                return c
            return ItchMessage
        return cls

    def extract_padding(self, s):
        return b"", s  # bytes past the layout (a block longer than its message) become Padding


ITCH_LAYERS: dict[bytes, type] = {}
for _m in itch50_spec.MESSAGES:
    _fields = [_Alpha("message_type", _m.type.encode(), 1)] + [_itch_field(f) for f in _m.fields[1:]]
    _cls = type(f"Itch{_camel(_m.name)}", (ItchMessage,), {
        "name": f"ITCH 5.0 {_m.title}", "fields_desc": _fields, "wire_length": _m.length,
        "__doc__": f"ITCH 5.0 '{_m.type}' {_m.title} ({_m.length} bytes), from itch50_spec.MESSAGES.",
        "__module__": __name__})
    ITCH_LAYERS[_m.type.encode()] = _cls
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
del _m, _fields, _cls


# ---- MoldUDP64 --------------------------------------------------------------------------------------
class MoldUDP64Block(Packet):
    """A message block with an explicit length, for crafting blocks whose length is wrong
    (``MoldUDP64(messages=[MoldUDP64Block(length=40, data=b"A...")])``)."""

    name = "MoldUDP64 message block"
    fields_desc = [FieldLenField("length", None, length_of="data", fmt="!H"),
                   StrLenField("data", b"", length_from=lambda p: p.length)]

    def extract_padding(self, s):
        return b"", s


class _MessageBlocks(PacketListField):
    """``count`` length-prefixed (u16) ITCH messages; a block whose length runs past the end of the
    datagram stops the list and the rest stays in the packet's Raw payload."""

    def __init__(self, name):
        PacketListField.__init__(self, name, [], ItchMessage, count_from=lambda p: p.count)

    def getfield(self, pkt, s):
        n = pkt.count or 0
        if n == MOLD_END_OF_SESSION:
            n = 0
        out = []
        while n > 0 and len(s) >= 2:
            ln = (s[0] << 8) | s[1]
            if 2 + ln > len(s):
                break
            out.append(self.m2i(pkt, s[2:2 + ln]))
            s = s[2 + ln:]
            n -= 1
        return s, out

    def addfield(self, pkt, s, val):
        for m in val or []:
            if isinstance(m, MoldUDP64Block):
                s += raw(m)
            else:
                b = raw(m)
                s += struct.pack("!H", len(b)) + b
        return s


class MoldUDP64(Packet):
    """MoldUDP64 downstream packet: session(10) sequence(u64) count(u16), then ``count`` message
    blocks (u16 length + one ITCH message) in ``messages``. ``count`` 0 is a heartbeat, 0xFFFF the end
    of the session; left unset it is ``len(messages)``."""

    name = "MoldUDP64"
    fields_desc = [_Alpha("session", b" " * 10, 10), LongField("sequence", 0),
                   FieldLenField("count", None, count_of="messages", fmt="!H"),
                   _MessageBlocks("messages")]


# ---- SoupBinTCP and OUCH ------------------------------------------------------------------------------
def _direction(soup_type: bytes) -> str | None:
    return {soupbintcp.SEQUENCED_DATA: "out", soupbintcp.UNSEQUENCED_DATA: "in"}.get(soup_type)


class _OuchBase(Packet):
    ouch_version = ""     # "4.2" / "5.0"
    ouch_direction = ""   # "in" (client -> exchange) / "out" (exchange -> client)
    spec_name = ""        # the message's name in the version's TABLE

    def extract_padding(self, s):
        return b"", s


class Ouch42Message(_OuchBase):
    """An OUCH 4.2 message the table does not describe (or too short for it): type + raw ``data``."""

    name = "OUCH 4.2 message"
    ouch_version = "4.2"
    fields_desc = [_Alpha("message_type", b"?", 1), StrField("data", b"")]


class Ouch50Message(_OuchBase):
    """An OUCH 5.0 message the table does not describe (or too short for it): type + raw ``data``."""

    name = "OUCH 5.0 message"
    ouch_version = "5.0"
    fields_desc = [_Alpha("message_type", b"?", 1), StrField("data", b"")]


class Ouch50Appendage(Packet):
    """One OUCH 5.0 TagValue appendage: length(1, counts tag + value) tag(1) value."""

    name = "OUCH 5.0 appendage"
    fields_desc = [FieldLenField("length", None, length_of="value", fmt="B", adjust=lambda p, x: x + 1),
                   ByteField("tag", 0),
                   StrLenField("value", b"", length_from=lambda p: max(p.length - 1, 0))]

    def extract_padding(self, s):
        return b"", s

    def decoded(self):
        """(name, value) as ``ouch50_spec.decode`` gives it (ints unpacked, alpha stripped)."""
        name, kind, n = ouch50_spec.APPENDAGES.get(self.tag, (f"tag_{self.tag}", "raw", len(self.value)))
        raw_v = bytes(self.value)
        if kind in ("s", "c"):
            return name, raw_v.rstrip(b" \x00")
        if kind == "raw" or len(raw_v) != n:
            return name, raw_v
        return name, struct.unpack(">" + ouch50_spec._FMT[kind], raw_v)[0]

    def mysummary(self):
        return "%s=%r" % self.decoded()


def _field_property(name: str) -> property:
    """Attribute access to a field whose name Packet already uses (OUCH ``display``); Packet's own
    method stays reachable as ``Packet.<name>(pkt)``."""
    return property(lambda self: self.getfieldval(name), lambda self, v: self.setfieldval(name, v))


OUCH42_LAYERS: dict[tuple[str, bytes], type] = {}
OUCH50_LAYERS: dict[tuple[str, bytes], type] = {}


def _ouch_layers(version: str, table: dict, generic: type, prefix: str, out: dict) -> None:
    for (direction, mtype), (mname, fields) in table.items():
        price_fields = frozenset(f for f, k, _ in fields if "price" in f and k in ("u4", "i8"))
        fd = [_Alpha("message_type", mtype, 1)]
        for f, kind, n in fields:
            if kind == "a":
                fd.append(FieldLenField("appendage_length", None, length_of="appendages", fmt="!H"))
                fd.append(PacketListField("appendages", [], Ouch50Appendage,
                                          length_from=lambda p: p.appendage_length or 0))
            else:
                fd.append(_ouch_field(f, kind, n, price_fields, signed_price=(version == "5.0")))
        ns = {"name": f"OUCH {version} {mname.replace('_', ' ')}", "fields_desc": fd, "ouch_direction": direction,
              "spec_name": mname, "__module__": __name__,
              "__doc__": f"OUCH {version} {direction}bound '{mtype.decode()}' {mname}, from the version's TABLE."}
        cls = type(f"{prefix}{_camel(mname)}", (generic,), ns)
        for f in fd:
            if hasattr(Packet, f.name):  # a field named like a Packet method ("display"): the field wins
                setattr(cls, f.name, _field_property(f.name))
        out[(direction, mtype)] = cls
        globals()[cls.__name__] = cls
        __all__.append(cls.__name__)


_ouch_layers("4.2", ouch42.TABLE, Ouch42Message, "Ouch42", OUCH42_LAYERS)
_ouch_layers("5.0", ouch50_spec.TABLE, Ouch50Message, "Ouch50", OUCH50_LAYERS)

_SPECS = {"4.2": (ouch42, OUCH42_LAYERS, Ouch42Message), "5.0": (ouch50_spec, OUCH50_LAYERS, Ouch50Message)}


def ouch_version(msg: bytes, direction: str, prefer: str = "auto") -> str:
    """The OUCH version of one message: ``prefer`` unless "auto"; else the version whose decoder
    accepts it (5.0 when both or neither do)."""
    if prefer in _SPECS:
        return prefer
    ok = []
    for v in ("5.0", "4.2"):
        try:
            _SPECS[v][0].decode(msg, direction)
            ok.append(v)
        except ValueError:
            pass
    return ok[0] if len(ok) == 1 else "5.0"


def ouch_layer(msg: bytes, direction: str, version: str = "auto") -> Packet:
    """Dissect one OUCH message (``direction`` "in" = client -> exchange, "out" = exchange -> client)."""
    spec, layers, generic = _SPECS[ouch_version(msg, direction, version)]
    cls = layers.get((direction, msg[:1]))
    if cls is None:
        return generic(msg)
    lay = spec.LAYOUTS[(direction, msg[:1])]
    if len(msg) < lay.size:
        return generic(msg)
    return cls(msg)


class _SoupLogin(Packet):
    def extract_padding(self, s):
        return b"", s


SOUP_LAYERS: dict[bytes, type] = {}
for _t, (_n, _fields) in soupbintcp.PAYLOADS.items():
    _fd = []
    for _f, _kind, _w in _fields:
        _fd.append({"alpha": _Alpha, "alpha_right": _AlphaRight}[_kind](_f, b" " * _w, _w)
                   if _kind != "numeric" else _AsciiNumber(_f, 0, _w))
    _cls = type(f"Soup{_camel(_n)}", (_SoupLogin,), {"name": f"SoupBinTCP {_n.replace('_', ' ')}",
                                                     "fields_desc": _fd, "__module__": __name__})
    SOUP_LAYERS[_t] = _cls
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
del _t, _n, _fields, _fd, _f, _kind, _w, _cls


class _SoupBody(StrLenField):
    """The payload of one SoupBinTCP packet (``length - 1`` bytes), dissected as OUCH (data packets),
    a login layout, or bytes."""

    holds_packets = 1  # so that pkt[Ouch50OrderAccepted] / haslayer look inside

    def getfield(self, pkt, s):
        n = self.length_from(pkt)
        return s[n:], self.m2i(pkt, s[:n])

    def m2i(self, pkt, m):
        ptype = pkt.packet_type
        d = _direction(ptype)
        if d is not None and m:
            proto = pkt.port_protocol()
            if proto == "itch50":
                return ItchMessage(m) if d == "out" else Raw(m)
            return ouch_layer(m, d, SOUP_PROTOCOLS[proto])
        cls = SOUP_LAYERS.get(ptype)
        if cls is not None and len(m) == sum(w for _, _, w in soupbintcp.PAYLOADS[ptype][1]):
            return cls(m)
        return Raw(m)  # heartbeats, logout, end of session (empty); debug text; a bad login layout

    def any2i(self, pkt, x):
        if isinstance(x, (bytes, bytearray, str)):
            return Raw(x.encode() if isinstance(x, str) else bytes(x))
        return x

    def i2m(self, pkt, x):
        if x is None:
            return b""
        return raw(x) if isinstance(x, Packet) else bytes(x)

    def i2len(self, pkt, x):
        return len(self.i2m(pkt, x))

    def i2repr(self, pkt, x):
        return repr(x)


class SoupBinTCP(Packet):
    """One SoupBinTCP packet: length(u16, counts the type and the payload) type(1) payload. The payload
    of 'S' (sequenced, exchange -> client) and 'U' (unsequenced, client -> exchange) packets is an
    OUCH layer in ``payload_msg``; 'L'/'A'/'J' carry their login layouts; several packets in one TCP
    segment chain as SoupBinTCP / SoupBinTCP / ..."""

    name = "SoupBinTCP"
    fields_desc = [FieldLenField("length", None, length_of="payload_msg", fmt="!H", adjust=lambda p, x: x + 1),
                   _Alpha("packet_type", soupbintcp.SEQUENCED_DATA, 1),
                   _SoupBody("payload_msg", None, length_from=lambda p: max((p.length or 1) - 1, 0))]

    def port_protocol(self) -> str:
        """What the data packets carry: the protocol bound to the TCP port below ("ouch" if none)."""
        u = self.underlayer
        while u is not None and not isinstance(u, TCP):
            u = u.underlayer
        if u is None:
            return "ouch"
        return SOUP_PORTS.get(u.dport, SOUP_PORTS.get(u.sport, "ouch"))

    def guess_payload_class(self, payload):
        return SoupBinTCP if len(payload) >= 3 else Raw


# ---- binding ------------------------------------------------------------------------------------------
def bind_moldudp64(port: int) -> None:
    """Dissect UDP datagrams to or from ``port`` as MoldUDP64 (carrying ITCH 5.0)."""
    port = int(port)
    if port not in MOLD_PORTS:
        bind_layers(UDP, MoldUDP64, dport=port)
        bind_layers(UDP, MoldUDP64, sport=port)
        MOLD_PORTS.add(port)


def bind_soupbintcp(port: int, protocol: str = "ouch") -> None:
    """Dissect TCP segments to or from ``port`` as SoupBinTCP whose data packets carry ``protocol``:
    "ouch42", "ouch50", "ouch" (the version per message, by which decoder accepts it) or "itch50"."""
    if protocol not in SOUP_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(SOUP_PROTOCOLS)}, not {protocol!r}")
    port = int(port)
    if port not in SOUP_PORTS:
        bind_layers(TCP, SoupBinTCP, dport=port)
        bind_layers(TCP, SoupBinTCP, sport=port)
    SOUP_PORTS[port] = protocol


def unbind_moldudp64(port: int) -> None:
    """Undo :func:`bind_moldudp64`."""
    port = int(port)
    if port in MOLD_PORTS:
        split_layers(UDP, MoldUDP64, dport=port)
        split_layers(UDP, MoldUDP64, sport=port)
        MOLD_PORTS.discard(port)


def unbind_soupbintcp(port: int) -> None:
    """Undo :func:`bind_soupbintcp`."""
    port = int(port)
    if port in SOUP_PORTS:
        split_layers(TCP, SoupBinTCP, dport=port)
        split_layers(TCP, SoupBinTCP, sport=port)
        del SOUP_PORTS[port]


for _p in DEFAULT_MOLD_PORTS:
    bind_moldudp64(_p)
for _p, _v in DEFAULT_SOUP_PORTS.items():
    bind_soupbintcp(_p, _v)
del _p, _v


def _mold_summary(self):
    count = len(self.messages) if self.count is None else self.count
    return f"MoldUDP64 {self.session!r} seq={self.sequence} count={count}"


MoldUDP64.mysummary = _mold_summary


# ---- helpers ------------------------------------------------------------------------------------------
def itch_messages(packets):
    """(packet, ITCH layer) for every message of every MoldUDP64 packet, in capture order."""
    for pkt in packets:
        if MoldUDP64 in pkt:
            for m in pkt[MoldUDP64].messages:
                yield pkt, m


def soup_messages(packets, port: int | None = None):
    """SoupBinTCP packets of TCP streams, reassembled per direction (in sequence order, duplicates
    dropped): yields (packet carrying the last byte, SoupBinTCP layer). ``port`` selects the server
    port (default: any port bound with :func:`bind_soupbintcp`)."""
    from scapy.layers.inet import IP

    streams: dict[tuple, list] = {}  # (src, sport, dst, dport) -> [next_seq or None, buffer]
    for pkt in packets:
        if TCP not in pkt or IP not in pkt:
            continue
        t = pkt[TCP]
        ports = {port} if port is not None else set(SOUP_PORTS)
        if t.sport not in ports and t.dport not in ports:
            continue
        key = (pkt[IP].src, t.sport, pkt[IP].dst, t.dport)
        hdr = t.dataofs * 4
        data = raw(t)[hdr:max(pkt[IP].len - pkt[IP].ihl * 4, hdr)]
        st = streams.setdefault(key, [None, b""])
        if t.flags.S:
            st[0] = (t.seq + 1) & 0xFFFFFFFF
            continue
        if not data:
            continue
        if st[0] is None:
            st[0] = t.seq
        off = (st[0] - t.seq) & 0xFFFFFFFF
        if off >= len(data):  # retransmission of bytes already seen
            continue
        st[1] += data[off:]
        st[0] = (t.seq + len(data)) & 0xFFFFFFFF
        buf = st[1]
        while len(buf) >= 2:
            ln = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + ln:
                break
            one = SoupBinTCP(buf[:2 + ln], _underlayer=t)
            yield pkt, one
            buf = buf[2 + ln:]
        st[1] = buf
