"""FIX / OUCH captures on every link type the UDP feeds are read from: ``tcpdump -i any`` writes Linux
cooked v2 (SLL2) on libpcap >= 1.10 and decoded nothing before (every frame an unsupported link type,
said only in --json); BSD loopback, Linux cooked v1 and a 0x9100 VLAN tag too; and TCP over IPv6 (a
client that connects to "localhost" reaches ::1 on most Linux hosts). Frames that carry no TCP segment
are counted by reason in the text summary."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from feedhandler.replay import ReplayOptions, replay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = {"fix": os.path.join(ROOT, "pcaps", "fix44_sample.pcap"),
           "ouch50": os.path.join(ROOT, "pcaps", "ouch50_sample.pcap")}


def _v6(ip: bytes, ext: bool = False) -> bytes:
    """The IPv6 packet of an IPv4 one (same TCP segment; addresses 2001:db8::<IPv4>), with a
    destination-options header in front of TCP when ``ext``."""
    ihl = (ip[0] & 15) * 4
    total = struct.unpack_from(">H", ip, 2)[0]
    seg = ip[ihl:total]
    nh = ip[9]
    if ext:
        seg = bytes([nh, 0]) + b"\x01\x04\0\0\0\0" + seg     # PadN option: 8 bytes
        nh = 60
    addr = lambda a: b"\x20\x01\x0d\xb8" + bytes(8) + a      # noqa: E731
    return struct.pack(">IHBB", 6 << 28, len(seg), nh, 64) + addr(ip[12:16]) + addr(ip[16:20]) + seg


def _relink(src: str, dst, linktype: int, ipv6: bool = False, ext: bool = False) -> None:
    """Rewrite an Ethernet pcap's frames under another link-layer header (the same IPv4 packets, or their
    IPv6 versions)."""
    b = open(src, "rb").read()
    magic, vmaj, vmin, tz, sig, snap, lt = struct.unpack_from("<IHHiIII", b, 0)
    assert lt == 1
    out = bytearray(struct.pack("<IHHiIII", magic, vmaj, vmin, tz, sig, snap, linktype if linktype >= 0 else 1))
    off = 24
    while off + 16 <= len(b):
        ts1, ts2, incl, orig = struct.unpack_from("<IIII", b, off)
        fr = b[off + 16: off + 16 + incl]
        et, ip = fr[12:14], fr[14:]
        if ipv6 and et == b"\x08\x00":
            et, ip = b"\x86\xdd", _v6(ip, ext)
        if linktype == 276:
            hdr = et + b"\0\0" + struct.pack(">IHBB", 2, 1, 0, 6) + fr[6:12] + b"\0\0"
        elif linktype == 113:
            hdr = struct.pack(">HHH", 0, 1, 6) + fr[6:12] + b"\0\0" + et
        elif linktype == 0:
            hdr = struct.pack("<I", 30 if ipv6 else 2)
        elif linktype == -1:      # Ethernet with an 802.1Q-in-0x9100 tag
            hdr = fr[:12] + b"\x91\x00\x00\x07" + et
        elif linktype == -2:      # plain Ethernet
            hdr = fr[:12] + et
        else:                     # a link type nobody reads (802.11)
            hdr = b"\0" * 24
        nf = hdr + ip
        out += struct.pack("<IIII", ts1, ts2, len(nf), len(nf)) + nf
        off += 16 + incl
    dst.write_bytes(bytes(out))


@pytest.mark.parametrize("protocol", ["fix", "ouch50"])
@pytest.mark.parametrize("linktype", [276, 113, 0, -1])
def test_records_equal_the_ethernet_capture(tmp_path, protocol, linktype):
    ref = replay(SAMPLES[protocol], ReplayOptions(out=str(tmp_path / "ref.npy"), protocol=protocol))
    cap = tmp_path / f"lt{linktype}.pcap"
    _relink(SAMPLES[protocol], cap, linktype)
    got = replay(str(cap), ReplayOptions(out=str(tmp_path / "got.npy"), protocol=protocol))
    assert got["messages"] == ref["messages"] > 0 and got["records"] == ref["records"]
    assert np.load(tmp_path / "got.npy").tobytes() == np.load(tmp_path / "ref.npy").tobytes()
    assert not got["tcp"].get("not_tcp")


@pytest.mark.parametrize("protocol", ["fix", "ouch50"])
@pytest.mark.parametrize("linktype,ext", [(1, False), (1, True), (276, False), (0, False)])
def test_tcp_over_ipv6(tmp_path, protocol, linktype, ext):
    ref = replay(SAMPLES[protocol], ReplayOptions(out=str(tmp_path / "ref.npy"), protocol=protocol))
    cap = tmp_path / "v6.pcap"
    _relink(SAMPLES[protocol], cap, linktype if linktype != 1 else -2, ipv6=True, ext=ext)
    got = replay(str(cap), ReplayOptions(out=str(tmp_path / "got.npy")))     # detected from the bytes
    assert got["protocol"] == ref["protocol"]
    assert got["messages"] == ref["messages"] > 0 and got["records"] == ref["records"]
    assert np.load(tmp_path / "got.npy").tobytes() == np.load(tmp_path / "ref.npy").tobytes()
    assert not got["tcp"].get("not_tcp")
    from feedhandler.pipeline import Feed
    f = Feed(str(cap), protocol)
    f.read_all()
    want = {"fix": "[2001:db8::a02:2]:51000>[2001:db8::a02:1]:9878",
            "ouch50": "[2001:db8::a03:2]:52000>[2001:db8::a03:1]:15000"}[protocol]
    assert f.stats()["sessions"] == [want], f.stats()["sessions"]
    # the live path's incremental decoder reads the same frames
    out = subprocess.run([sys.executable, "-m", "feedhandler", "run", "--file", str(cap), "--pace", "max", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json
    assert json.loads(out.stdout)["messages"] == ref["messages"]


def test_frames_of_an_unread_link_type_are_said_in_the_text_summary(tmp_path):
    cap = tmp_path / "wifi.pcap"
    _relink(SAMPLES["fix"], cap, 105)
    out = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(cap), "--protocol", "fix"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "frames without a TCP segment: 283 unsupported_linktype 283" in out.stdout, out.stdout
