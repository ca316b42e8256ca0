"""ITCH captures as real feeds write them: VLAN-tagged, MoldUDP64 session of ten NUL bytes, UDP ports 0,
sequence numbers all 0. Detected by the packets' structure; the unsequenced stream is called out with
a warning and decoded whole with ``--no-sequencing`` (replay and run --file)."""
from __future__ import annotations

import json
import struct

import pytest

from feedhandler.capture.pcapwriter import build_moldudp64, build_udp_frame, write_pcap
from feedhandler.cli import main
from feedhandler.detect import classify_udp, detect
from feedhandler.replay import ReplayOptions, replay

T0 = 1_700_000_000_000_000_000


def stock_directory(locate: int, stock: bytes) -> bytes:
    """ITCH 5.0 'R' (39 bytes)."""
    return (b"R" + struct.pack(">HH", locate, 0) + (1000).to_bytes(6, "big") + stock.ljust(8)
            + b"Q" + b"N" + struct.pack(">I", 100) + b"N" + b"C" + b"  " + b"P" + b"N" + b"1" + b"N" + b"N"
            + struct.pack(">I", 0) + b"N")


def add_order(locate: int, ref: int, price: int = 1_000_000) -> bytes:
    """ITCH 5.0 'A' (36 bytes)."""
    return (b"A" + struct.pack(">HH", locate, 0) + (2000 + ref).to_bytes(6, "big") + struct.pack(">Q", ref) + b"B"
            + struct.pack(">I", 100) + b"ZVZZT   " + struct.pack(">I", price))


def zero_seq_capture(path, packets: int = 5, per_packet: int = 1) -> int:
    """VLAN 100, session of NULs, ports 0, every packet sequence 0; returns the messages written."""
    frames, n = [], 0
    for i in range(packets):
        msgs = [stock_directory(1, b"ZVZZT")] if i == 0 else []
        while len(msgs) < per_packet:
            msgs.append(add_order(1, 1 + n))
            n += 1
        payload = build_moldudp64(bytes(10), 0, msgs)
        frames.append((T0 + i * 1000, build_udp_frame(payload, sport=0, dport=0, vlan=100)))
    write_pcap(path, frames)
    return packets * per_packet


def test_structure_not_session_or_port(tmp_path):
    p = tmp_path / "vlan_nul_session.pcap"
    zero_seq_capture(p)
    assert detect(p) == "itch50"
    # the structure is what counts: a message whose length is not its type's length is not ITCH
    mold = build_moldudp64(bytes(10), 0, [add_order(1, 1)[:-1]])
    assert classify_udp(mold) is None
    assert classify_udp(build_moldudp64(bytes(10), 1, [add_order(1, 1), stock_directory(1, b"X")])) == "itch50"


def test_all_zero_sequence_warns_and_no_sequencing_decodes_all(tmp_path, capsys):
    p = tmp_path / "zero_seq.pcap"
    n = zero_seq_capture(p, packets=5, per_packet=1)
    s = replay(p)
    # sequenced: 4 of 5 messages are duplicates of sequence 0 -- but now the summary says why
    assert s["messages"] == 1 and s["duplicates"] == 4
    assert len(s["warnings"]) == 1
    assert "sequence number 0" in s["warnings"][0] and "--no-sequencing" in s["warnings"][0]
    s2 = replay(p, ReplayOptions(sequencing=False))
    assert s2["messages"] == n and s2["duplicates"] == 0 and s2["gaps"] == 0
    assert s2["books"] == 1 and s2["live_orders"] == n - 1
    assert "sequencing off" in s2["warnings"][0]
    # the CLI: warning on stderr and in the text summary; --no-sequencing
    assert main(["replay", str(p), "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "feedhandler: warning:" in cap.err and "--no-sequencing" in cap.err
    assert "WARNING:" in cap.out
    assert main(["replay", str(p), "--no-progress", "--no-sequencing", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["messages"] == n and js["live_orders"] == n - 1


def test_run_file_no_sequencing(tmp_path, capsys):
    p = tmp_path / "zero_seq.pcap"
    n = zero_seq_capture(p, packets=5, per_packet=3)
    assert main(["run", "--file", str(p), "--status-interval", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["messages"] == 3 and s["duplicates"] == 12
    assert s["warnings"] and "--no-sequencing" in s["warnings"][0]
    assert main(["run", "--file", str(p), "--status-interval", "0", "--json", "--no-sequencing"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["messages"] == n and s["duplicates"] == 0


@pytest.mark.parametrize("per_packet", [1, 4])
def test_real_sequence_numbers_give_no_warning(tmp_path, per_packet):
    frames, seq = [], 1
    for i in range(4):
        msgs = [add_order(1, seq + k) for k in range(per_packet)]
        frames.append((T0 + i, build_udp_frame(build_moldudp64(bytes(10), seq, msgs), sport=0, dport=0, vlan=7)))
        seq += per_packet
    p = tmp_path / "seq.pcap"
    write_pcap(p, frames)
    s = replay(p)
    assert s["warnings"] == [] and s["messages"] == 4 * per_packet and s["duplicates"] == 0
