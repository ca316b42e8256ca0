"""Damaged captures: the shipped samples of every protocol, damaged in each way the issue names (a bad
pcap caplen, a bad pcapng block length, a corrupt gzip stream), are read past the damage, the text
summary says what was skipped and at which byte offset, and ``--strict`` exits 3.

The C side (csrc/tests/test_capture_resync.c) checks the resynchronisation itself frame by frame;
these tests check what a user sees through ``feedhandler replay`` and ``feedhandler run --file``.
"""
from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from feedhandler.capture.pcapwriter import pcapng_bytes
from feedhandler.cli import main

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
SAMPLES = {"itch50": "itch50_sample.pcap", "mdp3": "mdp3_sample.pcap", "fix": "fix44_sample.pcap",
           "ouch50": "ouch50_sample.pcap"}


def read_pcap(data: bytes) -> tuple[list[int], list[tuple[int, bytes]], int]:
    """(record header offsets, [(ts_ns, frame)], linktype) of a little-endian pcap (us or ns)."""
    magic = struct.unpack_from("<I", data, 0)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D)
    mul = 1000 if magic == 0xA1B2C3D4 else 1
    linktype = struct.unpack_from("<I", data, 20)[0]
    offs, pkts, off = [], [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from("<IIII", data, off)
        offs.append(off)
        pkts.append((sec * 1_000_000_000 + frac * mul, data[off + 16: off + 16 + incl]))
        off += 16 + incl
    return offs, pkts, linktype


def replay_json(path: Path, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "feedhandler.cli", "replay", str(path), "--json", "--no-progress",
                          *extra], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def replay_text(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedhandler.cli", "replay", str(path), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def clean() -> dict:
    return {proto: replay_json(PCAPS / name) for proto, name in SAMPLES.items()}


@pytest.mark.parametrize("proto", sorted(SAMPLES))
def test_bad_caplen_resynchronises(tmp_path, clean, proto):
    data = bytearray((PCAPS / SAMPLES[proto]).read_bytes())
    offs, pkts, _ = read_pcap(bytes(data))
    victim = min(100, len(offs) // 3)
    struct.pack_into("<I", data, offs[victim] + 8, 0x7FFF_FFF0)      # caplen of record `victim`
    bad = tmp_path / f"bad_caplen_{proto}.pcap"
    bad.write_bytes(bytes(data))
    s = replay_json(bad)
    # every record but the damaged one was read (before: input ended at the damage)
    assert s["packets"] == clean[proto]["packets"] - 1
    assert s["file_damage"] == {"bad_caplen": 1}
    assert s["file_events"] == [{"reason": "bad_caplen", "offset": offs[victim],
                                 "skipped": offs[victim + 1] - offs[victim], "resumed": True, "compressed": False,
                                 "checksum": False}]
    assert s["messages"] >= clean[proto]["messages"] * 0.9
    text = replay_text(bad)
    assert text.returncode == 0
    assert "FILE DAMAGE: an impossible pcap record length x1" in text.stdout
    assert f"at byte {offs[victim]:,}: an impossible pcap record length; skipped " \
           f"{offs[victim + 1] - offs[victim]:,} bytes, resumed at byte {offs[victim + 1]:,}" in text.stdout
    strict = replay_text(bad, "--strict")
    assert strict.returncode == 3, strict.stderr
    assert replay_text(PCAPS / SAMPLES[proto], "--strict").returncode in (0, 3)   # the sample itself may have gaps


@pytest.mark.parametrize("proto", sorted(SAMPLES))
def test_pcapng_bad_block_length_resynchronises(tmp_path, clean, proto):
    _, pkts, linktype = read_pcap((PCAPS / SAMPLES[proto]).read_bytes())
    ng = bytearray(pcapng_bytes(pkts, linktype=linktype, extra_blocks=False))
    # offsets of the Enhanced Packet Blocks
    off, epbs = 0, []
    while off < len(ng):
        btype, blen = struct.unpack_from("<II", ng, off)
        if btype == 6:
            epbs.append(off)
        off += blen
    assert len(epbs) == len(pkts)
    victim = len(epbs) // 2
    blen = struct.unpack_from("<I", ng, epbs[victim] + 4)[0]
    struct.pack_into("<I", ng, epbs[victim] + 4, blen + 64)          # the trailer no longer matches
    bad = tmp_path / f"bad_block_{proto}.pcapng"
    bad.write_bytes(bytes(ng))
    s = replay_json(bad)
    assert s["packets"] == clean[proto]["packets"] - 1
    assert s["file_damage"] == {"bad_block_length": 1}
    assert s["file_events"][0]["offset"] == epbs[victim]
    assert s["file_events"][0]["skipped"] == epbs[victim + 1] - epbs[victim]
    assert s["file_events"][0]["resumed"] is True
    text = replay_text(bad)
    assert f"at byte {epbs[victim]:,}: an impossible pcapng block length; skipped" in text.stdout
    assert replay_text(bad, "--strict").returncode == 3


@pytest.mark.parametrize("proto", sorted(SAMPLES))
def test_corrupt_gzip_reads_up_to_the_damage(tmp_path, clean, proto):
    raw = (PCAPS / SAMPLES[proto]).read_bytes()
    z = bytearray(gzip.compress(raw, 6))
    at = len(z) * 3 // 4
    for i in range(at, at + 16):
        z[i] ^= 0xFF
    bad = tmp_path / f"corrupt_{proto}.pcap.gz"
    bad.write_bytes(bytes(z))
    s = replay_json(bad)
    assert s["file_damage"].get("gzip_corrupt") == 1
    ev = [e for e in s["file_events"] if e["reason"] == "gzip_corrupt"]
    assert ev and ev[0]["compressed"] and ev[0]["offset"] >= at and ev[0]["resumed"] is False
    # what precedes the damage is read: at least half of the packets (gzread lost the last read's
    # worth, which is all of a small file)
    assert s["packets"] >= clean[proto]["packets"] // 2
    text = replay_text(bad)
    assert "corrupt gzip data" in text.stdout and f"at compressed byte {ev[0]['offset']:,}" in text.stdout
    assert replay_text(bad, "--strict").returncode == 3


def test_corrupt_gzip_binaryfile(tmp_path):
    """The shipped ITCH BinaryFILE sample, its gzip stream damaged three quarters in."""
    z = bytearray((PCAPS / "itch50_sample.bin.gz").read_bytes())
    whole = replay_json(PCAPS / "itch50_sample.bin.gz", "--date", "2023-08-22")
    at = len(z) * 3 // 4
    for i in range(at, at + 16):
        z[i] ^= 0xFF
    bad = tmp_path / "corrupt.bin.gz"
    bad.write_bytes(bytes(z))
    s = replay_json(bad, "--date", "2023-08-22")
    assert s["file_damage"].get("gzip_corrupt") == 1
    assert s["messages"] >= whole["messages"] // 2
    assert replay_text(bad, "--date", "2023-08-22", "--strict").returncode == 3


def test_truncated_pcap_is_reported(tmp_path):
    data = (PCAPS / SAMPLES["itch50"]).read_bytes()
    offs, _, _ = read_pcap(data)
    cut = offs[len(offs) // 2] + 30
    bad = tmp_path / "cut.pcap"
    bad.write_bytes(data[:cut])
    s = replay_json(bad)
    assert s["file_damage"] == {"truncated_record": 1}
    assert s["file_events"] == [{"reason": "truncated_record", "offset": offs[len(offs) // 2], "skipped": 30,
                                 "resumed": False, "compressed": False,
                                 "checksum": False}]
    text = replay_text(bad)
    assert f"at byte {offs[len(offs) // 2]:,}: a record cut short; nothing after it could be read (30 bytes)" \
        in text.stdout
    assert replay_text(bad, "--strict").returncode == 3


def test_run_file_reports_damage(tmp_path, capsys):
    """``feedhandler run --file`` on the damaged ITCH capture: the same skip, in its summary."""
    data = bytearray((PCAPS / SAMPLES["itch50"]).read_bytes())
    offs, _, _ = read_pcap(bytes(data))
    struct.pack_into("<I", data, offs[100] + 8, 0x7FFF_FFF0)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data))
    code = main(["run", "--file", str(bad), "--status-interval", "0", "--json"])
    s = json.loads(capsys.readouterr().out)
    assert code == 0
    assert s["packets"] == len(offs) - 1
    assert s["file_damage"] == {"bad_caplen": 1}
    assert s["file_events"][0]["offset"] == offs[100]
    code = main(["run", "--file", str(bad), "--status-interval", "0"])
    out = capsys.readouterr().out
    assert f"at byte {offs[100]:,}: an impossible pcap record length; skipped" in out
