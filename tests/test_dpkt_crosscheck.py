"""The native framing (csrc/pcap.c + csrc/net.c behind framing.udp.UdpBatches; framing.tcp.Reassembler)
against an independent reader written with dpkt (feedhandler.capture.fallback), on every shipped
capture, the real captures in ../shared/data, and generated variants (pcapng, gzip, VLAN/QinQ, SLL,
microsecond, big-endian): the same packet counts, timestamps, UDP payloads and TCP streams, in the
same order."""
import gzip
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dpkt", reason="dpkt is not installed (pip install 'feedhandler[dpkt]')")

from feedhandler.capture import fallback  # noqa: E402
from feedhandler.capture import pcapwriter as pw  # noqa: E402
from feedhandler.framing.tcp import Reassembler  # noqa: E402
from feedhandler.framing.udp import UdpBatches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SHIPPED = sorted((ROOT / "pcaps").glob("*.pcap")) + sorted((ROOT / "pcaps").glob("*.pcapng"))
REAL = sorted(DATA.glob("**/*.pcap")) + sorted(DATA.glob("**/*.pcapng")) if DATA.is_dir() else []


def _ids(paths):
    return [str(p.relative_to(p.parents[1])) for p in paths]


def _native_udp(path, **kw):
    out = []
    with UdpBatches(str(path), batch_packets=500, **kw) as u:
        while (b := u.read()) is not None:
            buf, off, ln, ts, ch = b
            out += [(int(t), bytes(buf[o:o + n]), int(c)) for o, n, t, c in zip(off, ln, ts, ch)]
        st = u.stats()
    return out, st


def _dpkt_udp(path, **kw):
    out = []
    with fallback.UdpBatches(str(path), batch_packets=500, **kw) as u:
        while (b := u.read()) is not None:
            buf, off, ln, ts, ch = b
            out += [(int(t), bytes(buf[o:o + n]), int(c)) for o, n, t, c in zip(off, ln, ts, ch)]
        st = u.stats()
    return out, st


def check_udp(path, **kw):
    frames = list(fallback.iter_frames(str(path)))
    native, nst = _native_udp(path, **kw)
    mine, mst = _dpkt_udp(path, **kw)
    assert nst["file_packets"] == len(frames), "packet records in the file"
    assert nst["frames"] == mst["frames"] == len(frames)
    assert nst["udp"] == mst["udp"] and nst["kept"] == mst["kept"] == len(native)
    assert native == mine  # timestamps, payloads, channels, order
    assert sum(v for v in nst["link_rejects"].values()) == sum(mst["link_rejects"].values())
    return native, frames


def check_tcp(path):
    r = Reassembler()
    r.feed_file(str(path))
    native = r.finish()
    mine = fallback.tcp_streams(str(path))
    assert [s.key for s in native] == [s["key"] for s in mine]
    for n, m in zip(native, mine):
        assert bytes(n.data) == m["data"], n.key
        assert (n.syn, n.fin, bool(n.holes)) == (m["syn"], m["fin"], m["holes"])
        if m["segments"]:
            ends = [off + ln for _, off, ln in m["segments"]]
            assert n.ts_at(ends).tolist() == [ts for ts, _, _ in m["segments"]]
            assert n.first_ts <= m["segments"][0][0]
    return native


@pytest.mark.parametrize("path", SHIPPED, ids=_ids(SHIPPED))
def test_shipped_captures(path):
    udp, frames = check_udp(path)
    streams = check_tcp(path)
    assert udp or streams, f"{path.name}: neither UDP payloads nor TCP streams"
    if "itch50" in path.name:
        assert len(udp) == len(frames) == 3923
    if "ouch" in path.name or "fix" in path.name:
        assert len(streams) == 2 and all(len(s.data) > 1000 for s in streams)


@pytest.mark.parametrize("path", REAL, ids=_ids(REAL))
def test_real_captures(path):
    check_udp(path)
    check_tcp(path)


def test_real_captures_present_or_skip():
    if not DATA.is_dir():
        pytest.skip(f"{DATA} (reference captures) is absent")
    assert len(REAL) >= 30


# ---- generated variants: container formats and link layers the shipped files do not cover -------------------
def _udp_packets(n=300, seed=7, vlan=None):
    rng = random.Random(seed)
    t = 1_710_000_000_123_456_789
    out = []
    for i in range(n):
        t += rng.randint(1, 50_000)
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        port = rng.choice((14310, 15310, 26477, 5000))
        out.append((t, pw.build_udp_frame(payload, sport=4000 + i % 3, dport=port, vlan=vlan)))
    return out


@pytest.mark.parametrize("variant", ["pcapng", "pcapng_simple", "pcapng_gzip", "pcapng_be_us", "pcap_gzip", "pcap_us",
                                     "pcap_be", "vlan", "qinq", "sll", "port_filter"])
def test_generated_variants(tmp_path, variant):
    pk = _udp_packets(vlan=100 if variant == "vlan" else [100, 200] if variant == "qinq" else None)
    # frames the reader must reject: TCP, an IPv4 fragment, a truncated frame
    pk.insert(5, (pk[4][0] + 1, pw.build_udp_frame(b"x" * 40, dport=26477)[:30]))
    frag = bytearray(pw.build_udp_frame(b"y" * 40, dport=26477))
    frag[14 + 6] |= 0x20  # more fragments
    pk.insert(9, (pk[8][0] + 1, bytes(frag)))
    p = tmp_path / "v.cap"
    kw = {}
    if variant.startswith("pcapng"):
        pw.write_pcapng(p, pk, big_endian="be" in variant, tsresol=6 if "us" in variant else 9,
                        gzip="gzip" in variant, simple=variant == "pcapng_simple")
    elif variant == "sll":
        pw.write_pcap(p, [(t, pw.build_sll_frame(f[14:])) for t, f in pk], linktype=113)
    else:
        pw.write_pcap(p, pk, nanosecond=variant != "pcap_us", big_endian=variant == "pcap_be",
                      gzip=variant == "pcap_gzip")
        if variant == "port_filter":
            kw = {"udp_port": 26477}
    native, frames = check_udp(p, **kw)
    assert len(frames) == 302
    if variant == "port_filter":
        assert 0 < len(native) < 300
    else:
        assert len(native) == 300
    if variant == "pcapng_simple":
        assert all(t == 0 for t, _, _ in native)  # Simple Packet Blocks carry no time
    elif "us" in variant:
        assert all(t % 1000 == 0 for t, _, _ in native)
    else:
        assert native[0][0] % 1000 != 0  # nanoseconds kept exactly
    if variant != "port_filter":
        # A/B feeds: ports 14310 and 15310 share a channel in both readers
        with UdpBatches(str(p)) as n, fallback.UdpBatches(str(p)) as m:
            while n.read() is not None:
                pass
            while m.read() is not None:
                pass
            assert n.channels() == m.channels()
            assert n.channels()[14310] == n.channels()[15310] != n.channels()[26477]


def test_tcp_out_of_order_and_retransmission(tmp_path):
    """A conversation whose segments are shuffled and partly repeated: both reassemble the same bytes."""
    from feedhandler.framing.tcp import TcpConversation
    conv = TcpConversation(client=("10.1.0.2", 40000), server=("10.1.0.1", 9000), mss=100)
    t = 1_700_000_000_000_000_000
    conv.handshake(t)
    rng = random.Random(3)
    for i in range(40):
        t += 1000
        conv.send(t, "c" if i % 3 else "s", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 250))))
    conv.close(t + 1000)
    frames = list(conv.frames)
    head, body, tail = frames[:3], frames[3:-4], frames[-4:]
    body = body + body[5:9]              # retransmissions
    body[10], body[11] = body[11], body[10]   # out of order
    p = tmp_path / "tcp.pcap"
    pw.write_pcap(p, head + body + tail)
    streams = Reassembler()
    streams.feed_file(str(p))
    native = streams.finish()
    mine = fallback.tcp_streams(str(p))
    assert [s.key for s in native] == [s["key"] for s in mine]
    for n, m in zip(native, mine):
        assert bytes(n.data) == m["data"]
    assert sum(len(s["data"]) for s in mine) > 3000


def test_gzip_native_and_dpkt_agree_on_the_itch_sample(tmp_path):
    src = ROOT / "pcaps" / "itch50_sample.pcap"
    if not src.exists():
        pytest.skip(f"{src} is absent")
    p = tmp_path / "itch.pcap.gz"
    p.write_bytes(gzip.compress(src.read_bytes()))
    native, _ = check_udp(p)
    assert len(native) == 3923
    assert np.all(np.diff([t for t, _, _ in native]).astype(np.int64) >= 0)
