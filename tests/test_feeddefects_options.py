"""Options that silently did nothing, and error wording (issue 14, the replay/run parts): each now
either works, is refused in one line, or is said in a warning."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from feedhandler.cli import main

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


def test_channel_on_itch_is_refused(capsys):
    assert main(["replay", str(PCAPS / "itch50_sample.pcap"), "--channel", "26477=1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--channel applies to mdp3" in err and err.count("\n") == 1


def test_no_sequencing_on_mdp3_is_refused(capsys):
    assert main(["replay", str(PCAPS / "mdp3_sample.pcap"), "--no-sequencing", "--no-progress"]) == 2
    assert "--no-sequencing applies to itch50" in capsys.readouterr().err


def test_unknown_symbol_is_warned(capsys):
    assert main(["replay", str(PCAPS / "itch50_sample.pcap"), "--symbols", "ZZZZ", "--json", "--no-progress"]) == 0
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    assert any("ZZZZ" in w and "nothing was kept" in w for w in s["warnings"])
    assert "warning: --symbols: not in the capture's reference data: ZZZZ" in cap.err


def test_date_on_mdp3_is_warned(capsys):
    assert main(["replay", str(PCAPS / "mdp3_sample.pcap"), "--date", "2024-01-02", "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "--date has no effect on mdp3" in cap.err and "WARNING: --date has no effect" in cap.out


def test_out_format_disagreeing_with_the_name(tmp_path, capsys):
    out = tmp_path / "x.dbn"
    assert main(["replay", str(PCAPS / "itch50_sample.pcap"), "--out", str(out), "--out-format", "parquet",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "names a dbn file but --out-format is parquet" in err and not out.exists()
    # an extension that names no format is fine with --out-format
    out2 = tmp_path / "x.bin"
    assert main(["replay", str(PCAPS / "itch50_sample.pcap"), "--out", str(out2), "--out-format", "npy",
                 "--no-progress"]) == 0
    assert out2.exists()


def test_tiny_pcap_is_said_so(tmp_path, capsys):
    p = tmp_path / "tiny.pcap"
    p.write_bytes((PCAPS / "itch50_sample.pcap").read_bytes()[:10])
    assert main(["replay", str(p), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "first 0" not in err and err.count("\n") == 1
    assert "no complete IPv4 UDP or TCP packet" in err


def test_random_bytes_are_not_sent_to_protocol(tmp_path, capsys):
    p = tmp_path / "noise.bin"
    p.write_bytes(os.urandom(4096).replace(b"\x1f\x8b", b"\x00\x00"))
    assert main(["replay", str(p), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--protocol cannot help" in err and "pass --protocol if you know" not in err
