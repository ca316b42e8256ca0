"""core13: one summary builder (feedhandler.summary) for every protocol. The text and JSON summaries of
every shipped sample (pcaps/) are what they were before the builders were merged: golden copies made
with the code before the change (tests/golden/summaries.json), compared with times, rates and temporary
paths taken out. ``FH_WRITE_GOLDEN=1`` rewrites them (only to record a deliberate change)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from feedhandler.cli import format_summary
from feedhandler.replay import ReplayOptions, replay

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "summaries.json"
CASES = {
    "itch50_sample.pcap": {},
    "itch50_sample.pcap symbols": {"symbols": ["AAPL", "MSFT", "NOPE"]},
    "itch50_sample.pcap pipelined": {"mode": "pipelined"},
    "itch50_sample.bin.gz": {"date": "2019-12-30"},
    "mdp3_sample.pcap": {},
    "mdp3_sample.pcap pipelined npy": {"mode": "pipelined", "out": "OUT.npy"},
    "fix44_sample.pcap": {},
    "ouch42_sample.pcap": {},
    "ouch50_sample.pcap": {"symbols": ["AAPL"]},
}
VOLATILE = {"elapsed_s", "messages_per_s"}
# The FIX groups come from QuickFIX's dictionaries (../shared) when the parser finds them; the golden copy was
# made with them. Named explicitly, not found relative to where the package is installed (an editable and a
# regular install differ there).
FIX_SPEC = ROOT.parent / "shared" / "data" / "fix" / "spec"


def _clean(x, tmp: str):
    if isinstance(x, dict):
        return {k: _clean(v, tmp) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_clean(v, tmp) for v in x]
    if isinstance(x, str):
        return x.replace(tmp, "TMP")
    return x


def _clean_text(t: str, tmp: str) -> str:
    t = t.replace(tmp, "TMP")
    t = re.sub(r"in \d+\.\d+ s( \([\d.]+ M msg/s(, mode \w+)?\))?", r"in T s", t)
    return t


def _run(name: str, kw: dict, tmp: Path) -> tuple[dict, str]:
    kw = dict(kw)
    if "out" in kw:
        kw["out"] = str(tmp / kw["out"])
    s = replay(str(ROOT / "pcaps" / name.split()[0]), ReplayOptions(**kw))
    s = json.loads(json.dumps(s, default=int))
    s["file"] = Path(s["file"]).name
    text = format_summary({**s, "file": s["file"]})
    return _clean(s, str(tmp)), _clean_text(text, str(tmp))


def test_every_protocol_summary_as_before(tmp_path, monkeypatch):
    if not (FIX_SPEC / "FIX44.xml").is_file():
        pytest.skip(f"the FIX dictionaries the golden summaries were made with are not at {FIX_SPEC}")
    monkeypatch.setenv("FH_FIX_SPEC_DIR", str(FIX_SPEC))
    got = {name: dict(zip(("json", "text"), _run(name, kw, tmp_path))) for name, kw in CASES.items()}
    if os.environ.get("FH_WRITE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip("golden summaries written")
    want = json.loads(GOLDEN.read_text())
    assert set(want) == set(got)
    for name in CASES:
        assert got[name]["text"] == want[name]["text"], name
        g, w = got[name]["json"], want[name]["json"]
        assert sorted(g) == sorted(w), (name, set(g) ^ set(w))
        for k in w:
            assert g[k] == w[k], (name, k)


def test_summary_build_needs_the_common_counters():
    from feedhandler.summary import COMMON_KEYS, build

    with pytest.raises(ValueError, match="common counters missing"):
        build({"file": "x"}, {})
    base = {k: 0 for k in COMMON_KEYS}
    s = build(base, {"mdp3": {}, "packets": 3})
    assert s["packets"] == 3 and "mdp3" in s
