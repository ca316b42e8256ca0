"""`feedhandler replay` / `synth` for every protocol, in-process: detection, exit codes, --json keys,
human summaries, --out, --channel, --strict, and one-line errors (exit 2)."""
import json
import shutil
from pathlib import Path

import pytest

from feedhandler.cli import main
from feedhandler.replay import COMMON_KEYS

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
CASES = [("itch50_sample.pcap", "itch50"), ("itch50_sample.bin.gz", "itch50"), ("mdp3_sample.pcap", "mdp3"),
         ("fix44_sample.pcap", "fix"), ("ouch42_sample.pcap", "ouch42"), ("ouch50_sample.pcap", "ouch50")]


def run_json(capsys, *argv):
    assert main(["replay", *argv, "--json", "--no-progress"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


@pytest.mark.parametrize("name,protocol", CASES)
def test_replay_auto_and_forced(capsys, name, protocol):
    s = run_json(capsys, str(PCAPS / name))
    assert s["protocol"] == protocol and set(COMMON_KEYS) <= set(s)
    assert s["messages"] > 0 and s["records"] > 0 and s["malformed"] == 0
    forced = run_json(capsys, str(PCAPS / name), "--protocol", protocol)
    for k in ("records", "messages", "records_by_kind", "bbo"):
        assert forced[k] == s[k]


@pytest.mark.parametrize("name,protocol,needles", [
    ("mdp3_sample.pcap", "mdp3", ["channels (udp port=channel): 14310=0, 14320=1, 15310=0", "A/B duplicates",
                                  "MBP 4 instruments", " mbp ", " mbo "]),
    ("fix44_sample.pcap", "fix", ["order->ack latency", "bad checksums 0", "order events "]),
    ("ouch42_sample.pcap", "ouch42", ["SESSION01", "order->ack latency", "sequenced 155"]),
])
def test_human_summaries(capsys, name, protocol, needles):
    assert main(["replay", str(PCAPS / name), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{PCAPS / name}: {protocol}, ")
    for n in needles:
        assert n in out, n


def test_json_tcp_keys(capsys):
    s = run_json(capsys, str(PCAPS / "fix44_sample.pcap"))
    assert {"tcp", "fix", "order_events", "tcp_holes", "bad_checksums", "seq_gap_messages"} <= set(s)
    assert set(s["order_events"]["latency_ns"]) == {"count", "min", "p50", "p90", "p99", "max"}
    o = run_json(capsys, str(PCAPS / "ouch42_sample.pcap"))
    assert {"soupbintcp", "ouch", "sessions", "logins", "order_events"} <= set(o)


def test_out_dbn_every_feed(capsys, tmp_path):
    dbn = pytest.importorskip("databento_dbn")
    for name, protocol in CASES:
        out = tmp_path / f"{protocol}.dbn"
        # a BinaryFILE has no time stamps: outputs need the trading day (--date) unless its name gives it
        day = ("--date", "2023-08-22") if name.endswith(".bin.gz") else ()
        s = run_json(capsys, str(PCAPS / name), "--out", str(out), *day)
        for kind, path in s["output"]["files"].items():
            dec = dbn.DBNDecoder()
            dec.write(Path(path).read_bytes())
            recs = dec.decode()
            assert recs[0].version == 3
            if not protocol.startswith("ouch"):   # OUCH carries order events only: no DBN schema for them
                assert len(recs) > 1, (protocol, kind)


def test_mdp3_channel_option(capsys):
    s = run_json(capsys, str(PCAPS / "mdp3_sample.pcap"), "--channel", "14310=3", "--channel", "15310=4")
    assert s["channels"] == {"14310": 3, "14320": 5, "15310": 4}
    assert s["duplicates"] == 0      # A and B are different channels now: nothing arbitrated
    assert main(["replay", str(PCAPS / "mdp3_sample.pcap"), "--channel", "14310"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PORT=N" in err


def test_strict_clean_captures(capsys):
    for name, _ in CASES:   # MDP3's A/B duplicates are arbitration, not damage
        assert main(["replay", str(PCAPS / name), "--strict", "--no-progress"]) == 0, name
    capsys.readouterr()


@pytest.mark.parametrize("sample,argv,needle", [
    ("mdp3_sample.pcap", ["--protocol", "sbe"], "invalid choice"),
    # (--mode pipelined is no longer refused for FIX and OUCH: the feed core frames them, issue 13)
    ("fix44_sample.pcap", ["--channel", "9878=1"], "mdp3 captures only"),
    ("ouch50_sample.pcap", ["--no-sequencing"], "itch50 (MoldUDP64) captures only"),
    ("ouch42_sample.pcap", ["--pace", "recorded"], "implemented for itch50"),
])
def test_bad_options_exit_2(capsys, sample, argv, needle):
    assert main(["replay", str(PCAPS / sample), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    if argv[0] != "--protocol":     # our refusal: one line with the reason (argparse's own errors add usage)
        assert err.count("\n") == 1, err


def test_mdp3_pipelined_replay(capsys):
    assert main(["replay", str(PCAPS / "mdp3_sample.pcap"), "--mode", "pipelined", "--strict", "--no-progress",
                 "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["mode"] == "pipelined" and s["protocol"] == "mdp3" and s["records"] == 364


def test_undetectable_and_unreadable(capsys, tmp_path):
    p = tmp_path / "x.pcap"
    p.write_bytes(b"\x00\x01" * 1000)
    assert main(["replay", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--protocol" in err and "Traceback" not in err
    assert main(["replay", str(tmp_path / "missing.pcap")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    d = tmp_path / "dir.pcap"
    d.mkdir()
    assert main(["replay", str(d), "--protocol", "mdp3"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("sample,argv", [
    ("mdp3_sample.pcap", ["--protocol", "mdp3", "--messages", "200", "--seed", "1", "--ab"]),
    ("fix44_sample.pcap", ["--protocol", "fix", "--fix-version", "44", "--messages", "300", "--seed", "44"]),
    ("ouch42_sample.pcap", ["--protocol", "ouch42", "--messages", "300", "--seed", "42"]),
    ("ouch50_sample.pcap", ["--protocol", "ouch50", "--messages", "300", "--seed", "50"]),
])
def test_synth_reproduces_samples(capsys, tmp_path, sample, argv):
    out = tmp_path / sample
    assert main(["synth", str(out), *argv, "-q"]) == 0
    assert out.read_bytes() == (PCAPS / sample).read_bytes(), f"pcaps/{sample} is stale (pcaps/make_samples.sh)"


def test_synth_other_protocols_replay(capsys, tmp_path):
    for proto in ("ouch50", "fix"):
        out = tmp_path / f"{proto}.pcap"
        extra = ["--fix-version", "42"] if proto == "fix" else []
        assert main(["synth", str(out), "--protocol", proto, "--messages", "120", "--seed", "3", "-q", *extra]) == 0
        s = run_json(capsys, str(out))
        assert s["protocol"] == proto and s["order_events"]["events"] > 0
    assert main(["synth", str(tmp_path / "y.pcap"), "--protocol", "mdp3", "--format", "pcapng"]) == 2
    assert "itch50 only" in capsys.readouterr().err


def test_make_samples_script_lists_every_sample():
    text = (PCAPS / "make_samples.sh").read_text()
    for name in ("mdp3_sample.pcap", "fix44_sample.pcap", "ouch42_sample.pcap", "ouch50_sample.pcap"):
        assert name in text
    assert shutil.which("sh")


def test_forced_wrong_protocol_warns(capsys):
    assert main(["replay", str(PCAPS / "fix44_sample.pcap"), "--protocol", "mdp3", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "no mdp3 messages" in captured.err and "--protocol" in captured.err
    assert "packets 0; messages 0" in captured.out
