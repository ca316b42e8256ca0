"""SoupBinTCP framing: real NASDAQ captures (../shared/data/ouch50), login packets, stream splitting."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from feedhandler.protocols import soupbintcp as soup

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ouch50"


def tcp_payloads(path: Path) -> list[bytes]:
    """TCP payloads of a classic pcap (µs or ns magic, either byte order), Ethernet/IPv4 only."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    assert linktype == 1
    pos, out = 24, []
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[pos : pos + 16])
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        eth_type = struct.unpack("!H", frame[12:14])[0]
        off = 14
        if eth_type == 0x8100:
            eth_type = struct.unpack("!H", frame[16:18])[0]
            off = 18
        if eth_type != 0x0800 or frame[off + 9] != 6:
            continue
        ihl = (frame[off] & 15) * 4
        total = struct.unpack("!H", frame[off + 2 : off + 4])[0]
        tcp = frame[off + ihl : off + total]
        doff = (tcp[12] >> 4) * 4
        if tcp[doff:]:
            out.append(tcp[doff:])
    return out


EXPECTED_TYPES = {
    "EnterOrderMessage.pcap": b"U",
    "CancelOrderMessage.pcap": b"U",
    "ClientHeartbeatPacket.pcap": b"R",
    "OrderAcceptedMessage.pcap": b"S",
    "CanceledMessage.pcap": b"S",
    "ServerHeartbeatPacket.pcap": b"H",
}


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} (shared reference data) not present")
@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_real_captures_frame_exactly(name):
    payloads = tcp_payloads(DATA / name)
    assert payloads
    f = soup.Framer()
    pkts = []
    for p in payloads:
        pkts += f.feed(p)
    assert not f.buf, "bytes left over: the length fields must account for every byte"
    assert {t for t, _ in pkts} == {EXPECTED_TYPES[name]}
    if EXPECTED_TYPES[name] in (b"U", b"S"):
        # OUCH 5.0 (these captures) message types inside the Soup payload
        assert all(p[:1] in (b"O", b"X", b"A", b"C") for _, p in pkts)


def test_login_request_layout():
    pk = soup.login_request("alice", "secret", "SESS1", 42)
    assert len(pk) == 2 + 47 and struct.unpack(">H", pk[:2])[0] == 47 and pk[2:3] == b"L"
    assert pk[3:9] == b"alice " and pk[9:19] == b"secret    "
    assert pk[19:29] == b"     SESS1" and pk[29:49] == b"42".rjust(20)
    assert soup.parse_login_request(pk[3:]) == ("alice", "secret", "SESS1", 42)
    t, p = soup.Framer().feed(soup.login_accepted("SESS1", 7))[0]
    assert t == b"A" and soup.parse_login_accepted(p) == ("SESS1", 7)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"S", b"U", b"H", b"R", b"+"]), st.binary(max_size=300)), max_size=20),
       st.lists(st.integers(1, 50), min_size=1, max_size=30))
def test_framer_any_split(packets, cuts):
    stream = b"".join(soup.packet(t, p) for t, p in packets)
    f = soup.Framer()
    got, pos, i = [], 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        got += f.feed(stream[pos : pos + n])
        pos += n
        i += 1
    assert got == packets and not f.buf


def test_zero_length_is_an_error():
    with pytest.raises(soup.SoupError):
        soup.Framer().feed(b"\x00\x00")
