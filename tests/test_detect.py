"""Protocol auto-detection (feedhandler.detect) from the bytes of every sample capture, in every
container variant (gzip, pcapng with EPB and SPB, big-endian, microsecond pcap), under a wrong
extension, and the clear errors for unknown, empty and mixed captures."""
import gzip
import shutil
import struct
from pathlib import Path

import pytest

from feedhandler.capture.pcapwriter import (build_moldudp64, build_udp_frame, write_pcap, write_pcapng)
from feedhandler.detect import DetectError, classify_tcp, classify_udp, container, detect
from feedhandler.errors import CaptureFormatError

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
SHARED = ROOT.parent / "shared" / "data"

SAMPLES = {
    "itch50_sample.pcap": "itch50",
    "itch50_sample.bin.gz": "itch50",
    "mdp3_sample.pcap": "mdp3",
    "fix44_sample.pcap": "fix",
    "ouch42_sample.pcap": "ouch",
    "ouch50_sample.pcap": "ouch",
}


def frames_of(path: Path) -> list[tuple[int, bytes]]:
    """(ts_ns, frame) of a classic little-endian pcap (an independent reader for the test inputs)."""
    d = path.read_bytes()
    nano = d[:4] == b"\x4d\x3c\xb2\xa1"
    assert nano or d[:4] == b"\xd4\xc3\xb2\xa1"
    off, out = 24, []
    while off + 16 <= len(d):
        sec, frac, incl, _ = struct.unpack_from("<IIII", d, off)
        off += 16
        out.append((sec * 10**9 + (frac if nano else frac * 1000), d[off: off + incl]))
        off += incl
    return out


@pytest.mark.parametrize("name,expected", SAMPLES.items())
def test_every_sample(name, expected):
    assert detect(PCAPS / name) == expected


@pytest.mark.parametrize("name,expected", [(k, v) for k, v in SAMPLES.items() if k.endswith(".pcap")])
@pytest.mark.parametrize("variant", ["gzip", "pcapng", "pcapng-be", "pcapng-spb", "pcap-be-us", "pcapng-gz"])
def test_container_variants(tmp_path, name, expected, variant):
    frames = frames_of(PCAPS / name)
    p = tmp_path / "capture.data"   # the extension says nothing
    if variant == "gzip":
        p.write_bytes(gzip.compress((PCAPS / name).read_bytes()))
    elif variant == "pcapng":
        write_pcapng(p, frames)
    elif variant == "pcapng-be":
        write_pcapng(p, frames, big_endian=True)
    elif variant == "pcapng-spb":
        write_pcapng(p, frames, simple=True)
    elif variant == "pcap-be-us":
        write_pcap(p, frames, nanosecond=False, big_endian=True)
    else:
        write_pcapng(p, frames, gzip=True)
    assert detect(p) == expected
    fmt, gz = container(p)
    assert gz == variant.endswith(("gz", "gzip"))
    assert fmt.startswith("pcapng" if "pcapng" in variant else "pcap")


@pytest.mark.parametrize("ext", [".txt", ".bin.gz", ".pcapng", ""])
def test_wrong_extension(tmp_path, ext):
    for name, expected in SAMPLES.items():
        p = tmp_path / f"x{ext}"
        shutil.copyfile(PCAPS / name, p)
        assert detect(p) == expected, (name, ext)


def test_binaryfile_plain(tmp_path):
    p = tmp_path / "day.pcap"   # a BinaryFILE named like a pcap
    p.write_bytes(gzip.decompress((PCAPS / "itch50_sample.bin.gz").read_bytes()))
    assert detect(p) == "itch50"
    assert container(p) == ("binaryfile", False)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (reference captures) is absent")
def test_reference_captures():
    itch = sorted((SHARED / "itch50").glob("*.pcap"))
    ouch = sorted((SHARED / "ouch50").glob("*.pcap"))
    mdp3 = sorted((SHARED / "mdp3" / "pcap").glob("v9_*.pcap"))
    assert itch and ouch and mdp3
    assert {detect(p) for p in itch} == {"itch50"}
    assert {detect(p) for p in ouch} == {"ouch"}
    udp_mdp3 = [p for p in mdp3 if ".Tcp." not in p.name]
    assert udp_mdp3 and {detect(p) for p in udp_mdp3} == {"mdp3"}



@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (reference captures) is absent")
def test_cme_sbe_over_tcp_is_named_not_unknown():
    """The shared MDP3 TCP captures (CME's 0xCAFE-framed SBE over TCP) get an error that says what they are
    and that only the UDP feeds are decoded, not "cannot tell the protocol"."""
    tcp = sorted((SHARED / "mdp3" / "pcap").glob("*.Tcp.pcap"))
    assert tcp
    for p in tcp:
        with pytest.raises(DetectError, match="CME SBE messages over TCP") as e:
            detect(p)
        assert "UDP feeds" in str(e.value) and "cannot tell" not in str(e.value)


def test_sofh_framed_tcp_is_named(tmp_path):
    """iLink 3's Simple Open Framing Header (length, 0xCAFE big-endian) in a synthetic TCP capture."""
    from feedhandler.framing.tcp import TcpConversation
    conv = TcpConversation()
    conv.handshake(1000)
    body = bytes(40)
    conv.send(5000, "c", struct.pack(">IH", 6 + len(body), 0xCAFE) + body)
    p = tmp_path / "ilink3.pcap"
    write_pcap(p, conv.frames)
    with pytest.raises(DetectError, match="CME SBE messages over TCP"):
        detect(p)

def test_unknown_bytes(tmp_path):
    p = tmp_path / "noise.pcap"
    p.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(DetectError, match="--protocol"):
        detect(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.pcap"
    p.write_bytes(b"")
    with pytest.raises(CaptureFormatError, match="empty"):
        detect(p)


def test_pcap_of_unknown_udp_is_a_clear_error(tmp_path):
    p = tmp_path / "dns.pcap"
    write_pcap(p, [(i, build_udp_frame(b"\x12\x34\x01\x00" + bytes(20), dport=53)) for i in range(10)])
    with pytest.raises(DetectError, match="pass --protocol"):
        detect(p)


def test_mixed_capture_is_ambiguous(tmp_path):
    mdp3 = frames_of(PCAPS / "mdp3_sample.pcap")[:20]
    itch = [(t, build_udp_frame(build_moldudp64("SESSION001", 1 + i, [b"S" + bytes(11)]), dport=26400))
            for i, (t, _) in enumerate(mdp3)]
    p = tmp_path / "mixed.pcap"
    write_pcap(p, [x for pair in zip(mdp3, itch) for x in pair])
    with pytest.raises(DetectError, match="more than one"):
        detect(p)


def test_classifiers_reject_lookalikes():
    mold = build_moldudp64("SESSION001", 5, [b"A" * 36, b"D" * 19])
    assert classify_udp(mold) == "itch50"
    assert classify_udp(mold[:-1]) is None                  # last message block does not fit
    assert classify_udp(b"\x01" + mold[1:]) == "itch50"     # the session's bytes do not matter (real: NULs)
    assert classify_udp(mold[:22] + b"Z" + mold[23:]) is None  # 'Z' is no ITCH message type
    assert classify_tcp(b"8=FIX.4.2\x019=5\x01") == "fix"
    login = struct.pack(">H", 47) + b"L" + b" " * 46
    assert classify_tcp(login) == "ouch"
    assert classify_tcp(struct.pack(">H", 40) + b"L" + b" " * 39) is None   # wrong login length
    assert classify_tcp(b"GET / HTTP/1.1\r\n") is None


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PCAP_HEADERS = [b"", struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1),
                struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1),
                bytes.fromhex("0a0d0d0a") + struct.pack("<I", 28) + bytes.fromhex("4d3c2b1a")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from(PCAP_HEADERS), body=st.binary(max_size=600), gz=st.booleans())
def test_fuzz_detect_never_crashes(tmp_path, head, body, gz):
    data = head + body
    p = tmp_path / "f"
    p.write_bytes(gzip.compress(data) if gz else data)
    try:
        got = detect(p)
    except DetectError:
        return
    assert got in ("itch50", "mdp3", "fix", "ouch")
