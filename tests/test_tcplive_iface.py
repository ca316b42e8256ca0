"""FIX and OUCH live: ``feedhandler run --iface IF --protocol fix|ouch`` (AF_PACKET) on a real veth pair.
The shipped sample captures are played from a network namespace with tcpreplay; the TCP segments are
reassembled and decoded as they arrive (TcpSessionFramer incremental mode) and the live records
(capture clock fields aside: ts_recv and the order->ack latency measured on it) equal a replay of the
same file, and so do the session counters of the summary. Needs root, iproute2 and tcpreplay (skips
with the reason otherwise); the namespace and veth pair are made and deleted by the test (VethPair).
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason
from feedhandler.protocols import fix_stream, ouch_events

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(veth_unavailable_reason() is not None, reason=str(veth_unavailable_reason())),
    pytest.mark.skipif(shutil.which("tcpreplay") is None, reason="needs tcpreplay (Debian package tcpreplay)"),
]


def _without_capture_time(ticks: np.ndarray) -> np.ndarray:
    """Raw record bytes with the capture-clock fields zeroed: ts_recv, and the order-event latency
    (ts_recv of the ack - ts_recv of the request)."""
    raw = np.ascontiguousarray(ticks).view(np.uint8).reshape(-1, 64).copy()
    rt = raw[:, 1]
    for name, dt in records.DTYPES.items():
        if name not in records.RTYPE:
            continue
        for f in ("ts_recv", "ts_in_delta", "latency_ns"):
            if f in dt.fields:
                off, size = dt.fields[f][1], dt.fields[f][0].itemsize
                raw[rt == records.RTYPE[name], off:off + size] = 0
    return raw


@pytest.mark.parametrize("name,protocol,latency", [("fix44_sample.pcap", "fix", False), ("ouch42_sample.pcap", "ouch", False),
                                                   ("ouch50_sample.pcap", "ouch50", False),
                                                   ("fix44_sample.pcap", "fix", True)])
def test_tcp_session_live_over_veth_equals_replay(name, protocol, latency):
    """latency: run to completion (books applied on the receive thread, records fanned out after)."""
    from feedhandler.books import BookSet
    from feedhandler.live import LiveOptions, run

    path = ROOT / "pcaps" / name
    if protocol == "fix":
        ref, rst = fix_stream.replay_stream(path)
        n_messages = rst["fix"]["messages"]
    else:
        ref, rst = ouch_events.replay_stream(path, protocol)
        n_messages = rst["ouch"]["messages"]
    ref = ref.copy()
    BookSet().apply(ref)            # the live consumer enriches the records in place: so does the reference
    got = []
    with VethPair(tag="fht") as v:
        sent = {}

        def send():
            r = v.ns_run(["tcpreplay", "-q", "-i", v.ns_if, "--pps", "5000", str(path)], check=False)
            sent["rc"], sent["err"] = r.returncode, r.stderr

        sender = threading.Thread(target=send)
        # capture auto: AF_PACKET for a TCP session (AF_XDP's program redirects UDP only)
        opts = LiveOptions(iface=v.host_if, capture=None, protocol=protocol, idle_stop=1.5, duration=60,
                           status_interval=0, on_batch=lambda b: got.append(b.copy()), on_ready=sender.start,
                           install_signals=False, latency=latency, latency_spin_us=200.0 if latency else 0.0)
        try:
            s = run(opts)
        finally:
            if sender.ident:
                sender.join()
        assert sent.get("rc") == 0, sent
    ticks = records.concat(got) if got else records.empty(0)
    assert s["protocol"] == rst["protocol"] and s["backend"] == "afpacket"
    if latency:
        lm = s["latency_mode"]
        assert lm["applied_on_receive_thread"] == len(ref) and lm["fanout_dropped"] == 0
        assert lm["wire_to_book_per_message"]["count"] > 0
    assert s["messages"] == n_messages and s["drops"]["kernel"] == 0
    assert ticks.shape == ref.shape
    if protocol != "fix":
        # OUCH stamps are ns since midnight: ts_event = midnight of the day of the connection's first
        # ts_recv + stamp, and live that day is today's: every exchange record moves by the same whole days
        fx = (records.view(ref, "order_event")["flags"] & 0x01) != 0
        shift = (ticks["ts_event"][fx].astype(np.int64) - ref["ts_event"][fx].astype(np.int64))
        assert shift.size and (shift == shift[0]).all() and shift[0] % (3600 * 10**9) == 0
        ref["ts_event"][fx] = ticks["ts_event"][fx]
    a, b = _without_capture_time(ticks), _without_capture_time(ref)
    bad = np.nonzero((a != b).any(axis=1))[0]
    assert bad.size == 0, f"{bad.size} records differ, first at {bad[:5]}"
    t = s["tcp_session"]
    assert t["connections"] == 1 and t["tcp_holes"] == 0
    if protocol == "fix":
        assert t["messages_by_type"] == {k: int(v) for k, v in rst["fix"]["by_msg_type"].items()}
        assert t["fix"]["bad_checksum"] == 0 and t["fix"]["seq_gaps"] == rst["fix"]["seq_gaps"]
    else:
        assert t["soupbintcp"] == {k: int(v) for k, v in rst["soupbintcp"].items()}
        assert t["sessions"] == rst["sessions"]
