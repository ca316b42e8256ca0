"""PTP decoder against the tcpdump captures in ../shared/data/ptp: every packet decodes, and our
tcpdump-style rendering of each decoded message equals tcpdump's own expected output, field for field.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from feedhandler.time import ptp

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptp"
CAPTURES = ["ptp", "ptp_corrections", "ptp_ethernet", "ptp_management", "ptp_v2_1"]


def _pcap_frames(path: Path):
    """Minimal classic-pcap reader (independent of the project's C reader)."""
    b = path.read_bytes()
    magic = struct.unpack_from("<I", b, 0)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), "little-endian pcap expected"
    linktype = struct.unpack_from("<I", b, 20)[0]
    assert linktype == 1
    off = 24
    while off + 16 <= len(b):
        _, _, incl, _ = struct.unpack_from("<IIII", b, off)
        yield b[off + 16: off + 16 + incl]
        off += 16 + incl


def _ptp_payload(frame: bytes) -> bytes | None:
    eth = struct.unpack_from(">H", frame, 12)[0]
    off = 14
    while eth in (0x8100, 0x88A8):
        eth = struct.unpack_from(">H", frame, off + 2)[0]
        off += 4
    if eth == ptp.PTP_ETHERTYPE:
        return frame[off:]
    if eth == 0x0800:
        ihl = (frame[off] & 0x0F) * 4
        if frame[off + 9] != 17:
            return None
        udp = off + ihl
        sport, dport, ulen = struct.unpack_from(">HHH", frame, udp)
        if dport in (319, 320):
            return frame[udp + 8: udp + ulen]
    return None


def _expected(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        m = re.search(r"(PTPv2(\.1)?, .*)$", line)
        assert m, line
        out.append(m.group(1))
    return out


def _skip_without_data():
    if not DATA.exists():
        pytest.skip(f"reference data missing: {DATA}")


@pytest.mark.parametrize("name", CAPTURES)
def test_matches_tcpdump(name):
    _skip_without_data()
    frames = [_ptp_payload(f) for f in _pcap_frames(DATA / f"{name}.pcap")]
    frames = [f for f in frames if f is not None]
    expected = _expected(DATA / f"{name}.out")
    assert len(frames) == len(expected)
    for i, (raw, want) in enumerate(zip(frames, expected)):
        got = ptp.describe(ptp.decode(raw))
        assert got == want, f"packet {i + 1}:\n got  {got}\n want {want}"


def test_types_and_values():
    _skip_without_data()
    msgs = [ptp.decode(f) for f in map(_ptp_payload, _pcap_frames(DATA / "ptp.pcap")) if f]
    assert [m.name for m in msgs] == ["delay_req", "delay_resp", "announce", "sync", "follow_up"]
    fu = msgs[4]
    assert fu.body["precise_origin_timestamp"] == 1516736650_034751783
    assert msgs[3].two_step and msgs[3].sequence_id == fu.sequence_id == 1067
    assert msgs[1].body["requesting_port"] == (0x7CFE90FFFEF950B4, 1)
    corr = [ptp.decode(f) for f in map(_ptp_payload, _pcap_frames(DATA / "ptp_corrections.pcap")) if f]
    assert corr[1].correction_ns == 36035 and corr[2].correction_ns == 105045
    v21 = [ptp.decode(f) for f in map(_ptp_payload, _pcap_frames(DATA / "ptp_v2_1.pcap")) if f]
    assert {m.minor_version for m in v21} == {1}
    mg = [ptp.decode(f) for f in map(_ptp_payload, _pcap_frames(DATA / "ptp_management.pcap")) if f]
    assert all(m.name == "management" and m.tlvs for m in mg)
    assert mg[0].tlvs[0][0] == 0x0001      # MANAGEMENT TLV


def test_delay_req_round_trip():
    raw = ptp.encode_delay_req(0x0011223344556677, 3, 4242, domain=7)
    m = ptp.decode(raw)
    assert (m.name, m.clock_identity, m.port_number, m.sequence_id, m.domain) == ("delay_req", 0x0011223344556677, 3, 4242, 7)
    assert m.length == len(raw) == 44 and m.body["origin_timestamp"] == 0 and m.control == 1


def test_rejects_short_and_bad_version():
    raw = ptp.encode_delay_req(1, 1, 1)
    for n in (0, 10, 33, 40):
        with pytest.raises(ptp.PtpDecodeError):
            ptp.decode(raw[:n])
    bad = bytearray(raw)
    bad[1] = 1
    with pytest.raises(ptp.PtpDecodeError, match="version"):
        ptp.decode(bytes(bad))


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_fuzz_never_crashes(b):
    try:
        m = ptp.decode(b)
    except ptp.PtpDecodeError:
        return
    assert m.length <= len(b)
    ptp.describe(m)
