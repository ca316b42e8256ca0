"""FIX / OUCH captures on every link type the UDP feeds are read from: ``tcpdump -i any`` writes Linux
cooked v2 (SLL2) on libpcap >= 1.10 and decoded nothing before (every frame an unsupported link type,
said only in --json); BSD loopback, Linux cooked v1 and a 0x9100 VLAN tag too. Frames that carry no
TCP/IPv4 segment are counted by reason in the text summary."""
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


def _relink(src: str, dst, linktype: int) -> None:
    """Rewrite an Ethernet pcap's frames under another link-layer header (same IPv4 packets)."""
    b = open(src, "rb").read()
    magic, vmaj, vmin, tz, sig, snap, lt = struct.unpack_from("<IHHiIII", b, 0)
    assert lt == 1
    out = bytearray(struct.pack("<IHHiIII", magic, vmaj, vmin, tz, sig, snap, linktype if linktype >= 0 else 1))
    off = 24
    while off + 16 <= len(b):
        ts1, ts2, incl, orig = struct.unpack_from("<IIII", b, off)
        fr = b[off + 16: off + 16 + incl]
        et, ip = fr[12:14], fr[14:]
        if linktype == 276:
            hdr = et + b"\0\0" + struct.pack(">IHBB", 2, 1, 0, 6) + fr[6:12] + b"\0\0"
        elif linktype == 113:
            hdr = struct.pack(">HHH", 0, 1, 6) + fr[6:12] + b"\0\0" + et
        elif linktype == 0:
            hdr = struct.pack("<I", 2)
        elif linktype == -1:      # Ethernet with an 802.1Q-in-0x9100 tag
            hdr = fr[:12] + b"\x91\x00\x00\x07" + et
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


def test_frames_of_an_unread_link_type_are_said_in_the_text_summary(tmp_path):
    cap = tmp_path / "wifi.pcap"
    _relink(SAMPLES["fix"], cap, 105)
    out = subprocess.run([sys.executable, "-m", "feedhandler", "replay", str(cap), "--protocol", "fix"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "frames without a TCP/IPv4 segment: 283 unsupported_linktype 283" in out.stdout, out.stdout
