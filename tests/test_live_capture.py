"""Live capture on a real veth pair: the sample capture is played from a network namespace with
tcpreplay and captured on the other end; ticks and final books must equal a replay of the same file.

Needs root, iproute2 and tcpreplay (skips with the reason otherwise). Every namespace/veth is created
with a unique name and deleted in a finally block (VethPair).
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "itch50_sample.pcap"
DATE = "2024-03-15"
PORT = 26477
N_MESSAGES = 20000

pytestmark = [
    pytest.mark.skipif(veth_unavailable_reason() is not None, reason=str(veth_unavailable_reason())),
    pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="needs tcpreplay (Debian package tcpreplay)"),
    pytest.mark.skipif(not SAMPLE.exists(), reason=f"missing {SAMPLE}"),
]


def _sample_packets() -> int:
    from feedhandler.pipeline import Feed
    f = Feed(SAMPLE, date=DATE)
    f.read_all()
    return f.stats()["packets"]


def _ts_recv_offsets():
    """rtype -> byte offset of ts_recv, from the record dtypes (independent of the C code)."""
    out = {}
    for name, dt in records.DTYPES.items():
        if name in records.RTYPE and "ts_recv" in dt.fields:
            out[records.RTYPE[name]] = dt.fields["ts_recv"][1]
    return out


def _without_capture_time(ticks: np.ndarray) -> np.ndarray:
    """Raw bytes of the records with the capture clock fields zeroed (ts_recv everywhere; a gap record's
    ts_event is its capture time too): what live and replay must agree on byte for byte."""
    raw = ticks.view(np.uint8).reshape(-1, 64).copy()
    rt = raw[:, 1]
    for rtype, off in _ts_recv_offsets().items():
        raw[rt == rtype, off:off + 8] = 0
    raw[rt == records.RTYPE["gap"], 8:16] = 0
    return raw


def _replay_reference():
    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed

    ticks = Feed(SAMPLE, date=DATE).read_all()
    books = BookSet()
    books.apply(ticks)      # enriches in place, as the live consumer does before handing batches out
    return ticks, books


def _live_run(capture: str, source_kw=None, sender_args=("--pps", "40000"), queues: int = 1):
    from feedhandler.live import LiveOptions, run

    from feedhandler.books import BookSet

    got = []
    lines = []
    books = BookSet()
    with VethPair(tag="fhl", queues=queues) as v:
        sender_out = {}

        def send():
            r = v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, *sender_args, str(SAMPLE)], check=False)
            sender_out["rc"] = r.returncode
            sender_out["err"] = r.stderr

        sender = threading.Thread(target=send)
        opts = LiveOptions(
            iface=v.host_if, capture=capture, date=DATE, udp_port=PORT, until_end_of_session=True, duration=30,
            status_interval=0.5, status=lines.append, on_batch=lambda b: got.append(b.copy()),
            on_ready=sender.start, source_kw=source_kw or {}, books=books,
        )
        try:
            summary = run(opts)
        finally:
            if sender.is_alive() or sender.ident:
                sender.join()
        assert sender_out.get("rc") == 0, sender_out
    ticks = np.empty(sum(len(g) for g in got), dtype=records.TICK_DTYPE)
    pos = 0
    for g in got:
        ticks[pos:pos + len(g)] = g
        pos += len(g)
    return summary, ticks, books, lines


def _check_equal_to_replay(summary, ticks, books, clock="software"):
    ref, ref_books = _replay_reference()
    assert summary["messages"] == N_MESSAGES
    assert summary["drops"]["kernel"] == 0 and summary["drops"]["xdp"] == 0
    assert summary["gaps"] == 0 and summary["lost_messages"] == 0
    assert ticks.shape == ref.shape
    a, b = _without_capture_time(ticks), _without_capture_time(ref)
    bad = np.nonzero((a != b).any(axis=1))[0]
    assert bad.size == 0, f"{bad.size} records differ, first at {bad[:5]}"
    # ts_recv comes from the capture clock (kernel software stamp, or user space per batch), in order
    mbo = ticks[ticks["rtype"] == records.RTYPE["mbo"]].view(records.DTYPES["mbo"])
    assert (mbo["ts_recv"] > 0).all() and (np.diff(mbo["ts_recv"].astype(np.int64)) >= 0).all()
    F_BAD_TS_RECV = 0x08    # DBN flag (fh/record.h FH_F_BAD_TS_RECV)
    assert not (mbo["flags"] & F_BAD_TS_RECV).any()
    # the books the live run kept equal a replay's
    books.check()
    assert np.array_equal(books.bbo_all(), ref_books.bbo_all())
    assert summary["books"] == ref_books.instrument_count
    assert summary["live_orders"] == ref_books.live_orders


def test_afpacket_live_equals_replay():
    summary, ticks, books, lines = _live_run("afpacket")
    assert summary["backend"] == "afpacket"
    assert summary["ts_recv_clock"] == "software"
    _check_equal_to_replay(summary, ticks, books)
    assert summary["latency_ns"]["wire_to_book"]["count"] > 0
    assert summary["latency_ns"]["wire_to_ring"]["count"] > 0


def _afxdp_reason():
    from feedhandler.capture.live import afxdp
    why = afxdp.unavailable_reason(None)
    if why is None:
        from feedhandler.capture.live._afxdp_source import bpf_object_path
        if bpf_object_path() is None:
            why = "the XDP filter program is not compiled (needs clang at build time)"
    return why


@pytest.mark.parametrize("xdp_mode", ["native", "skb"])
def test_afxdp_live_equals_replay(xdp_mode):
    why = _afxdp_reason()
    if why:
        pytest.skip(why)
    summary, ticks, books, _ = _live_run("afxdp", source_kw={"xdp_mode": xdp_mode})
    assert summary["backend"] == "afxdp"
    assert summary["capture"]["xdp_mode"] == xdp_mode
    assert summary["capture"]["zerocopy"] is False          # veth: copy mode only
    assert summary["ts_recv_clock"] == "user"
    # XDP RX metadata stamps (rx_timestamp "auto"): the device-bound program runs in native mode; veth has no
    # NIC stamp for these frames, so they keep the user clock; generic mode falls back and says why
    from feedhandler.live import format_summary
    cap = summary["capture"]
    if xdp_mode == "native" and cap["rx_timestamp"]:
        assert cap["meta_no_stamp"] == cap["packets"] and cap["meta_missing"] == 0
        assert "XDP RX metadata timestamps: on" in format_summary(summary)
    elif xdp_mode == "native":
        # some kernels refuse the device-bound program on veth (seen on 6.18: "program of this type cannot use
        # helper bpf_xdp_adjust_meta"): "auto" must fall back to the plain filter and say why, loudly
        assert "not accepted" in cap["rx_timestamp_reason"], cap
        assert "XDP RX metadata timestamps: off (" in format_summary(summary)
    else:
        assert cap["rx_timestamp"] is False and "generic" in cap["rx_timestamp_reason"]
        assert "XDP RX metadata timestamps: off (generic" in format_summary(summary)
    # the program redirected exactly the feed; IPv6/ARP/IGMP chatter of the link went to the kernel
    n_packets = _sample_packets()
    assert summary["capture"]["xdp_redirected"] == summary["capture"]["packets"] == n_packets
    _check_equal_to_replay(summary, ticks, books, clock="user")


def test_afxdp_two_queues_busy_poll():
    """Two rx queues (a socket and UMEM each, one receive loop) and preferred busy polling."""
    why = _afxdp_reason()
    if why:
        pytest.skip(why)
    summary, ticks, books, _ = _live_run("afxdp", source_kw={"xdp_mode": "native", "n_queues": 2,
                                                             "busy_poll_us": 20}, queues=2)
    assert summary["capture"]["xdp_no_socket"] == 0
    _check_equal_to_replay(summary, ticks, books, clock="user")


def test_afpacket_topspeed_no_drops():
    """Sender at full speed: the 64 MiB ring absorbs the burst, nothing is lost anywhere."""
    summary, ticks, books, _ = _live_run("afpacket", sender_args=("--topspeed",))
    _check_equal_to_replay(summary, ticks, books)


def test_missing_interface_exit_code(capsys):
    from feedhandler.live import EXIT_NO_IFACE, run_main

    assert run_main(["--iface", "fhnosuch0", "--capture", "afpacket", "--duration", "0.1"]) == EXIT_NO_IFACE
    assert "no interface" in capsys.readouterr().err


def test_run_main_cli_on_veth(capsys):
    """The CLI entry point end to end: status lines, summary, exit code 0."""
    from feedhandler.live import run_main

    with VethPair(tag="fhc") as v:
        # (the CLI has no ready hook: give it a second to open the ring before sending)
        t = threading.Thread(target=lambda: time.sleep(1.0) or v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "40000",
                                                       str(SAMPLE)], check=False))
        t.start()
        try:
            rc = run_main(["--iface", v.host_if, "--capture", "afpacket", "--date", DATE, "--udp-port", str(PORT),
                           "--until-eos", "--duration", "30", "--json"])
        finally:
            t.join()
    assert rc == 0
    import json
    s = json.loads(capsys.readouterr().out)
    assert s["messages"] == N_MESSAGES and s["backend"] == "afpacket"


def _dpdk_reason():
    from feedhandler.capture.live import dpdk
    return dpdk.unavailable_reason(None)


def test_dpdk_vdev_live_equals_replay(tmp_path):
    """DPDK (net_af_packet vdev, --no-huge) in its own process (the EAL runs once per process and pins
    threads), through the CLI; records written with --out are compared with the replay's."""
    import json
    import subprocess
    import sys

    why = _dpdk_reason()
    if why:
        pytest.skip(why)
    out_npy = tmp_path / "dpdk.npy"
    with VethPair(tag="fhk") as v:
        p = subprocess.Popen([sys.executable, "-m", "feedhandler.live", "--iface", v.host_if, "--capture", "dpdk",
                              "--date", DATE, "--udp-port", str(PORT), "--until-eos", "--duration", "30",
                              "--status-interval", "0.2", "--json", "--out", str(out_npy)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = p.stderr.readline()          # the first status line: capture is running
            assert "dpdk" in first, first + p.stderr.read()
            v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "40000", str(SAMPLE)])
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert p.returncode == 0, err
    summary = json.loads(out)
    assert summary["backend"] == "dpdk" and summary["ts_recv_clock"] == "user"
    assert summary["capture"]["imissed"] == 0 and summary["capture"]["rx_nombuf"] == 0
    ticks = np.load(out_npy)
    ref, ref_books = _replay_reference()
    assert summary["messages"] == N_MESSAGES
    assert summary["books"] == ref_books.instrument_count and summary["live_orders"] == ref_books.live_orders
    a = _without_capture_time(ticks.view(records.TICK_DTYPE))
    b = _without_capture_time(ref)
    assert a.shape == b.shape
    bad = np.nonzero((a != b).any(axis=1))[0]
    assert bad.size == 0, f"{bad.size} records differ, first at {bad[:5]}"


_SEND_FRAMES = r"""
import socket, struct, sys
iface, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = bytes(18)
udp = struct.pack(">HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                           socket.inet_aton("10.213.0.2"), socket.inet_aton("10.213.0.1")))
c = sum(int.from_bytes(ip[i:i + 2], "big") for i in range(0, 20, 2))
c = (c & 0xFFFF) + (c >> 16)
c = (c & 0xFFFF) + (c >> 16)
ip[10:12] = (~c & 0xFFFF).to_bytes(2, "big")
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x02\x08\x00" + bytes(ip) + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for _ in range(n):
    s.send(frame)
"""


def test_afxdp_fill_ring_topped_up_while_frames_wait():
    """Fill policy: every frame we own goes back to the fill ring as soon as it has room, also frames
    the kernel has never seen (frames = 2 x ring_size), so frames left waiting in the rx ring when the
    receive thread goes away do not shrink what the kernel can still take. Here: 200 frames arrive,
    the receiver takes 64 and goes away with 136 waiting; 100 more arrive. The old policy (only the
    frames handed out came back) had 56 frames posted at that point and dropped 44 as fill-ring-empty;
    now nothing may be lost."""
    why = _afxdp_reason()
    if why:
        pytest.skip(why)
    import sys
    import subprocess
    from feedhandler.capture.live._afxdp_source import AfXdpSource, _ffi, _lib
    ring = 256
    buf = _ffi.new("char[]", 32 * ring)                 # fh_pkt is 32 bytes (opaque to cffi here)
    pkts = _ffi.cast("fh_pkt *", buf)

    def send(v, n):
        subprocess.run(v.ns_cmd([sys.executable, "-c", _SEND_FRAMES, v.ns_if, str(n), str(PORT)]),
                       check=True, capture_output=True, timeout=60)

    with VethPair(tag="fhf") as v:
        src = AfXdpSource(v.host_if, udp_port=PORT, xdp_mode="native", frames=2 * ring, ring_size=ring)
        try:
            send(v, 200)
            deadline = time.monotonic() + 10
            while src.stats()["xdp_redirected"] < 200 and time.monotonic() < deadline:
                time.sleep(0.01)
            got = int(_lib.fh_xsk_next(src._s, pkts, 64, 50))
            assert got == 64
            send(v, 100)
            while got < 300 and time.monotonic() < deadline:
                got += int(_lib.fh_xsk_next(src._s, pkts, ring, 50))
            st = src.stats()
        finally:
            src.close()
    assert st["xdp_redirected"] == 300, st
    assert st["rx_fill_ring_empty"] == 0 and st["rx_ring_full"] == 0 and st["xsk_rx_dropped"] == 0, st
    assert got == 300, st


def _receive_frames(src, n, timeout=10.0):
    """Run the AF_XDP source's C receive loop until n frames arrived: (frame bytes, ts_ns, clock flag) each."""
    import struct

    from feedhandler.capture.live._afxdp_source import _ffi, _lib
    cap = 256
    buf = _ffi.new("char[]", 32 * cap)
    pkts = _ffi.cast("fh_pkt *", buf)
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        got = int(_lib.fh_xsk_next(src._s, pkts, cap, 50))
        raw = _ffi.buffer(buf, 32 * got)[:]
        for i in range(got):   # fh_pkt: data, caplen, origlen, ts_ns, linktype, flags (fh/pcap.h)
            data, caplen, _origlen, ts_ns, _lt, flags = struct.unpack_from("<QIIQHH", raw, 32 * i)
            out.append((bytes(_ffi.buffer(_ffi.cast("char *", data), caplen)), ts_ns, flags))
    return out


def test_afxdp_rx_metadata_timestamp_program_on_veth():
    """XDP RX metadata: the receive-timestamp variant of the filter loads device-bound in native mode, so
    its bpf_xdp_metadata_rx_timestamp() call is veth's own (veth_xdp_rx_timestamp: status 0 for an skb,
    whose NIC stamp is 0 here; the generic stub of a program that is not device-bound answers
    -EOPNOTSUPP instead). Every frame arrives with our metadata in front of it and its bytes intact; without
    a stamp the frames keep the user-space clock (FH_MSG_TS_USER = 1)."""
    why = _afxdp_reason()
    if why:
        pytest.skip(why)
    import subprocess
    import sys

    from feedhandler.capture.live._afxdp_source import AfXdpSource, bpf_object_path
    if bpf_object_path(rx_timestamp=True) is None:
        pytest.skip("the receive-timestamp XDP program is not compiled (needs clang at build time)")
    n = 40
    from feedhandler.errors import CaptureError
    with VethPair(tag="fhm") as v:
        try:
            src = AfXdpSource(v.host_if, udp_port=PORT, xdp_mode="native", rx_timestamp="on")
        except CaptureError as e:
            if "not accepted" not in str(e):
                raise
            pytest.skip(f"this kernel refuses the device-bound RX-timestamp program on veth: {e}")
        try:
            t0 = time.time_ns()
            subprocess.run(v.ns_cmd([sys.executable, "-c", _SEND_FRAMES, v.ns_if, str(n), str(PORT)]),
                           check=True, capture_output=True, timeout=60)
            frames = _receive_frames(src, n)
            st = src.stats()
        finally:
            src.close()
    assert st["rx_timestamp"] is True and st["rx_timestamp_reason"] == "", st
    assert len(frames) == n, st
    assert st["meta_no_stamp"] == n and st["meta_missing"] == 0 and st["xdp_meta_failed"] == 0, st
    assert st["meta_last_errno"] == 0, st          # veth's kfunc answered, not the -EOPNOTSUPP stub
    assert st["ts_hw"] == 0 and st["ts_user"] == n, st
    ip_udp_len = 20 + 8 + 18
    for data, ts_ns, flags in frames:
        assert len(data) == 14 + ip_udp_len and data[12:14] == b"\x08\x00"       # the frame, not metadata
        assert int.from_bytes(data[36:38], "big") == PORT
        assert flags == 1 and ts_ns >= t0


def test_afxdp_rx_timestamp_falls_back_in_generic_mode():
    """Device-bound programs cannot run in generic (skb) XDP: "auto" falls back to the plain filter and
    says why; "on" refuses to start."""
    why = _afxdp_reason()
    if why:
        pytest.skip(why)
    from feedhandler.capture.live._afxdp_source import AfXdpSource
    from feedhandler.errors import CaptureError
    with VethPair(tag="fhg") as v:
        src = AfXdpSource(v.host_if, udp_port=PORT, xdp_mode="skb", rx_timestamp="auto")
        try:
            st = src.stats()
        finally:
            src.close()
        assert st["rx_timestamp"] is False and "generic" in st["rx_timestamp_reason"], st
        assert st["xdp_mode"] == "skb"
        with pytest.raises(CaptureError, match="XDP RX timestamps"):
            AfXdpSource(v.host_if, udp_port=PORT, xdp_mode="skb", rx_timestamp="on")
