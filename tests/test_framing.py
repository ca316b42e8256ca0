"""Link, network and transport layers down to the MoldUDP64 payload: VLAN / QinQ, Linux cooked, raw
IPv4, IPv4 options, and every reject reason counted (non-UDP, non-IPv4, fragments, bad lengths,
truncated captures), plus the UDP port / multicast group filter."""
from __future__ import annotations

import struct

import pytest

from _capture_util import MIDNIGHT, SESSION, add_msg, events
from feedhandler.capture import pcapwriter as pw
from feedhandler.pipeline import Feed

T0 = MIDNIGHT + 36_000 * 10**9


def _mold(seq):
    return pw.build_moldudp64(SESSION, seq, [add_msg(seq)])


def _run(tmp_path, frames, linktype=pw.LINKTYPE_ETHERNET, **kw):
    p = tmp_path / "f.pcap"
    pw.write_pcap(p, [(T0 + i, fr) for i, fr in enumerate(frames)], linktype=linktype)
    f = Feed(p, **kw)
    ev = events(f.read_all())
    return f.stats(), [e[2] for e in ev if e[0] == "msg"]


def _eth(ethertype, body):
    return b"\x01\x00\x5e\x00\x00\x01" + b"\x00\x11\x22\x33\x44\x55" + struct.pack("!H", ethertype) + body


def test_vlan_and_qinq(tmp_path):
    frames = [pw.build_udp_frame(_mold(1)), pw.build_udp_frame(_mold(2), vlan=100),
              pw.build_udp_frame(_mold(3), vlan=[10, 20]), pw.build_udp_frame(_mold(4), vlan=[1, 2, 3, 4]),
              pw.build_udp_frame(_mold(5), vlan=[1, 2, 3, 4, 5])]
    st, ids = _run(tmp_path, frames)
    assert ids == [1, 2, 3, 4]
    assert st["link_rejects"]["too_many_vlans"] == 1
    assert st["udp_datagrams"] == 4


def test_linux_cooked_and_raw_ip(tmp_path):
    ip1 = pw.build_ipv4_udp(_mold(1))
    ip2 = pw.build_ipv4_udp(_mold(2))
    st, ids = _run(tmp_path, [pw.build_sll_frame(ip1), pw.build_sll_frame(ip2)], linktype=pw.LINKTYPE_LINUX_SLL)
    assert ids == [1, 2]
    st, ids = _run(tmp_path, [ip1, ip2], linktype=pw.LINKTYPE_RAW)
    assert ids == [1, 2]
    st, ids = _run(tmp_path, [ip1], linktype=147)  # a DLT_USER link type
    assert ids == [] and st["link_rejects"]["unsupported_linktype"] == 1


def test_ipv4_options(tmp_path):
    frame = pw.build_udp_frame(_mold(1), ip_options=b"\x01\x01\x01\x00")  # NOP NOP NOP EOL
    st, ids = _run(tmp_path, [frame])
    assert ids == [1]


def test_mixed_traffic_counted_by_reason(tmp_path):
    good = [pw.build_udp_frame(_mold(i)) for i in range(1, 4)]
    tcp = pw.build_udp_frame(b"x" * 30, proto=6)
    icmp = pw.build_udp_frame(b"x" * 30, proto=1)
    arp = _eth(0x0806, b"\x00" * 28)
    ipv6 = _eth(0x86DD, b"\x60" + b"\x00" * 60)
    frag_mf = pw.build_udp_frame(_mold(9), flags_frag=0x2000)
    frag_off = pw.build_udp_frame(_mold(9), flags_frag=0x0010)
    bad_ver = bytearray(pw.build_udp_frame(_mold(9)))
    bad_ver[14] = 0x65
    bad_ihl = bytearray(pw.build_udp_frame(_mold(9)))
    bad_ihl[14] = 0x44
    udp_short = pw.build_udp_frame(_mold(9), udp_length=4)
    udp_long = pw.build_udp_frame(_mold(9), udp_length=5000)
    ip_long = pw.build_udp_frame(_mold(9), total_length=3000)
    runt = good[0][:12]
    frames = [good[0], tcp, arp, good[1], icmp, ipv6, frag_mf, frag_off, bytes(bad_ver), bytes(bad_ihl),
              udp_short, udp_long, ip_long, runt, good[2]]
    st, ids = _run(tmp_path, frames)
    assert ids == [1, 2, 3]
    rej = st["link_rejects"]
    assert rej == {
        "unsupported_linktype": 0, "truncated_link": 1, "too_many_vlans": 0, "not_ipv4": 2,
        "bad_ipv4_header": 2, "truncated_ipv4": 1, "ipv4_fragment": 2, "not_udp": 2,
        "bad_udp_length": 2, "truncated_udp": 0,
    }
    assert st["packets"] == len(frames) == st["udp_datagrams"] + sum(rej.values())


def test_short_moldudp64_payload_and_trailing_bytes(tmp_path):
    frames = [pw.build_udp_frame(b"0123456789abc"),                 # < 20 bytes
              pw.build_udp_frame(_mold(1) + b"\x00"),               # one trailing byte
              pw.build_udp_frame(_mold(2))]
    st, ids = _run(tmp_path, frames)
    assert ids == [1, 2]
    assert st["malformed"]["short_header"] == 1 and st["malformed"]["trailing_bytes"] == 1
    assert st["moldudp64_packets"] == 2


def test_port_and_group_filter(tmp_path):
    frames = [pw.build_udp_frame(_mold(1), dst="233.54.12.111", dport=26477),
              pw.build_udp_frame(_mold(1000), dst="233.54.12.111", dport=26478),
              pw.build_udp_frame(_mold(2000), dst="233.54.12.112", dport=26477),
              pw.build_udp_frame(_mold(2), dst="233.54.12.111", dport=26477)]
    st, ids = _run(tmp_path, frames, udp_port=26477, group="233.54.12.111")
    assert ids == [1, 2] and st["filtered"] == 2
    st, ids = _run(tmp_path, frames, udp_port=26478)
    assert ids == [1000] and st["filtered"] == 3
    with pytest.raises(ValueError):
        Feed(tmp_path / "f.pcap", udp_port=0)


def test_channel_filter_by_session_and_index(tmp_path):
    a = [pw.build_udp_frame(pw.build_moldudp64(b"SESSIONA", s, [add_msg(s)])) for s in (1, 2)]
    b = [pw.build_udp_frame(pw.build_moldudp64(b"SESSIONB", s, [add_msg(100 + s)])) for s in (1, 2)]
    frames = [a[0], b[0], a[1], b[1]]
    st, ids = _run(tmp_path, frames, channel_filter=["SESSIONB"])
    assert ids == [101, 102] and st["filtered_sessions"] == 2
    st, ids = _run(tmp_path, frames, channel_filter=[0])
    assert ids == [1, 2] and st["filtered_sessions"] == 2
    st, ids = _run(tmp_path, frames)
    assert sorted(ids) == [1, 2, 101, 102] and st["sessions"] == ["SESSIONA  ", "SESSIONB  "]
