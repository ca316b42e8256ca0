"""The MDP 3.0 Python codec's layouts ship inside the package (generated from CME's XML at development
time), so `feedhandler synth --protocol mdp3` and the reference codec need no schema file."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from feedhandler.protocols.mdp3 import schema as S

ROOT = Path(__file__).resolve().parents[1]
XML_DIR = ROOT.parent / "shared" / "data" / "mdp3" / "schema"


@pytest.mark.skipif(not XML_DIR.is_dir(), reason="needs ../shared/data/mdp3/schema (CME's XML)")
def test_generated_layouts_equal_the_xml():
    gen = S.generated_schemas()
    xmls = sorted(XML_DIR.glob("*.xml"))
    assert sorted(gen) == sorted(S.load_schema(p).version for p in xmls)
    for p in xmls:
        x = S.load_schema(p)
        g = gen[x.version]
        assert p.name in g.path
        assert dataclasses.replace(g, path=x.path) == x, p.name


def test_load_schemas_needs_no_xml(monkeypatch):
    monkeypatch.delenv("FH_MDP3_SCHEMA_DIR", raising=False)
    s = S.load_schemas()
    assert sorted(s) == [5, 9, 12, 13]
    t = s[9].by_name["MDIncrementalRefreshBook46"]
    assert t.id == 46 and t.groups and t.groups[0].leaf("MDEntryPx").exponent == -9
    # an explicit folder still means XML files, and a wrong one says what to do
    with pytest.raises(FileNotFoundError, match="FH_MDP3_SCHEMA_DIR"):
        S.load_schemas("/nonexistent-schema-dir")


def test_synth_mdp3_without_schema_files_matches_the_sample(tmp_path):
    """Run from an empty folder with no XML anywhere it would look: the bytes equal the shipped sample
    (made by pcaps/make_samples.sh from the same seed)."""
    env = {k: v for k, v in os.environ.items() if k != "FH_MDP3_SCHEMA_DIR"}
    out = tmp_path / "m.pcap"
    r = subprocess.run([sys.executable, "-m", "feedhandler", "synth", str(out), "--protocol", "mdp3",
                        "--messages", "200", "--seed", "1", "--ab", "-q"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (ROOT / "pcaps" / "mdp3_sample.pcap").read_bytes()
