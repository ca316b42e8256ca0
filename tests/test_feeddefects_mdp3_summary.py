"""The MDP3 summary says which schema versions the capture holds and when another version's layout
decoded them (schema 8 is decoded with version 5's today); MDP3 over TCP is said not to be decoded."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from feedhandler.capture.pcapwriter import write_pcap
from feedhandler.cli import format_summary, main
from feedhandler.framing.tcp import build_tcp_frame
from feedhandler.protocols.mdp3 import Mdp3Decoder
from feedhandler.protocols.mdp3._decoder import schema_versions
from feedhandler.replay import ReplayOptions, replay

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mdp3" / "pcap"


def pcap_records(data: bytes):
    magic = struct.unpack_from("<I", data, 0)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D)
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        yield off + 16, incl
        off += 16 + incl


def udp_payload_offset(data: bytes, frame_off: int) -> int:
    eth, et = 14, struct.unpack_from(">H", data, frame_off + 12)[0]
    while et in (0x8100, 0x88A8):
        et = struct.unpack_from(">H", data, frame_off + eth + 2)[0]
        eth += 4
    ihl = (data[frame_off + eth] & 15) * 4
    return frame_off + eth + ihl + 8


def rewrite_versions(data: bytes, new_version: int) -> bytes:
    """The capture with every SBE message header's version field set to new_version."""
    d = bytearray(data)
    for off, incl in pcap_records(data):
        p = udp_payload_offset(data, off)
        end = off + incl
        q = p + 12                                   # after the MDP3 packet header
        while q + 10 <= end:
            size = struct.unpack_from("<H", d, q)[0]
            if size < 10:
                break
            struct.pack_into("<H", d, q + 2 + 6, new_version)   # msg size, then blockLength, template, schema, version
            q += size
    return bytes(d)


def test_schema_versions_in_the_summary(capsys):
    s = replay(PCAPS / "mdp3_sample.pcap")
    vers = s["schema_versions"]
    assert vers and all(u["decoded_as"] == int(v) for v, u in vers.items())
    assert s["schema_fallbacks"] == []
    text = format_summary(s)
    v = next(iter(vers))
    assert f"schema: version {v} (" in text and "DECODED WITH" not in text


def test_schema_fallback_is_said_in_the_text(tmp_path):
    compiled = sorted(v for _, v in schema_versions())
    missing = next(v for v in range(compiled[0] + 1, compiled[-1]) if v not in compiled)   # 8 today
    older = max(v for v in compiled if v < missing)
    data = (PCAPS / "mdp3_sample.pcap").read_bytes()
    p = tmp_path / f"v{missing}.pcap"
    p.write_bytes(rewrite_versions(data, missing))
    s = replay(p, ReplayOptions(protocol="mdp3"))
    assert list(s["schema_versions"]) == [str(missing)]
    assert s["schema_versions"][str(missing)]["decoded_as"] == older
    assert s["schema_fallbacks"] == [{"wire": missing, "decoded_as": older,
                                      "messages": s["schema_versions"][str(missing)]["messages"]}]
    text = format_summary(s)
    assert f"schema: version {missing} (" in text
    assert f"DECODED WITH VERSION {older}'s layout" in text


def test_unknown_schema_is_said():
    dec = Mdp3Decoder(schemas=[max(v for _, v in schema_versions())])
    pl = bytearray(12) + struct.pack("<HHHHH", 10, 0, 4, 1, 3)   # a message of schema version 3
    dec.decode_packets([bytes(pl)])
    assert dec.schema_usage() == {3: {"messages": 1, "decoded_as": None}}


def test_mdp3_over_tcp_is_said_not_supported(tmp_path, capsys):
    # MDP3 packets (the sample's UDP payloads) carried in TCP segments
    data = (PCAPS / "mdp3_sample.pcap").read_bytes()
    pkts, seq = [], 1
    for i, (off, incl) in enumerate(pcap_records(data)):
        p = udp_payload_offset(data, off)
        payload = data[p: off + incl]
        pkts.append((1_700_000_000_000_000_000 + i, build_tcp_frame(payload, seq=seq, dport=14310)))
        seq += len(payload)
        if i == 20:
            break
    tcp = tmp_path / "mdp3_tcp.pcap"
    write_pcap(tcp, pkts)
    s = replay(tcp, ReplayOptions(protocol="mdp3"))
    assert s["tcp_frames"] == 21 and s["messages"] == 0
    assert main(["replay", str(tcp), "--protocol", "mdp3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "TCP: 21 TCP frames NOT decoded: MDP3 over TCP" in out


@pytest.mark.skipif(not (SHARED / "v12_SnapshotFullRefreshTcpLongQty.Tcp.pcap").exists(),
                    reason="shared MDP3 reference captures absent")
def test_real_tcp_capture_says_so(capsys):
    assert main(["replay", str(SHARED / "v12_SnapshotFullRefreshTcpLongQty.Tcp.pcap"), "--protocol", "mdp3",
                 "--no-progress"]) == 0
    assert "TCP frames NOT decoded" in capsys.readouterr().out
