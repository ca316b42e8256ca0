"""The shape knobs of the synthetic ITCH day: --concentration (how the flow concentrates on the busiest
symbols) and --depth-profile (how far from the top of the book new orders go)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from feedhandler import synth
from feedhandler.synth import day as day_mod

book_mod = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo is not built (setup.py build_ext)")


def _books(d):
    from feedhandler.pipeline import Feed

    import tempfile, os  # noqa: E401
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "d.bin")
        d.write_binaryfile(p)
        ticks = Feed(p).read_all()
    b = book_mod.BookSet()
    b.apply(ticks)
    b.check()
    return b


def _levels(b):
    """Price levels per book side, over every book."""
    out = []
    for inst in b.bbo_all()["instrument_id"].tolist():
        bids, asks = b.depth(inst, 10**6)
        out += [len(bids), len(asks)]
    return np.array(out)


def _flow_share(d):
    """Share of the add messages that go to the busiest symbol."""
    adds = np.nonzero(d.types == ord("A"))[0]
    loc = np.array([int.from_bytes(d.framed[d.starts[i] + 3: d.starts[i] + 5].tobytes(), "big") for i in adds])
    counts = np.bincount(loc)
    return counts.max() / counts.sum()


def test_defaults_are_the_historical_day():
    """Naming the defaults gives the same bytes as not naming them (the sample captures under pcaps/
    are checked against the generator by test_synth.py::test_sample_captures_are_fresh)."""
    a = synth.generate_day(6_000, 12, seed=3)
    b = synth.generate_day(6_000, 12, seed=3, concentration=synth.DEFAULT_CONCENTRATION,
                           depth_profile=dict(synth.DEPTH_PROFILES["normal"]))
    assert synth.DEFAULT_DEPTH_PROFILE == "normal" and synth.DEFAULT_CONCENTRATION == 0.9
    assert a.binaryfile() == b.binaryfile()


def test_concentration_moves_the_flow_to_the_busiest_symbols():
    even = synth.generate_day(40_000, 50, seed=4, concentration=0.0)
    steep = synth.generate_day(40_000, 50, seed=4, concentration=2.0)
    assert _flow_share(even) < 0.06          # about 1/50 each
    assert _flow_share(steep) > 0.4          # 1 / zeta(2) of the flow: ~0.6


def test_depth_profile_sets_the_depth_of_the_books():
    shallow = _levels(_books(synth.generate_day(60_000, 5, seed=8, depth_profile="shallow")))
    normal = _levels(_books(synth.generate_day(60_000, 5, seed=8)))
    deep = _levels(_books(synth.generate_day(60_000, 5, seed=8, depth_profile="deep")))
    assert shallow.max() <= 101 + 10         # at most 100 ticks from the fair value (+ its walk)
    assert np.median(shallow) < np.median(normal) < np.median(deep)
    assert deep.mean() > 1.3 * normal.mean() > 1.3 * shallow.mean()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="depth profile"):
        synth.generate_day(5_000, 5, seed=1, depth_profile="bottomless")
    with pytest.raises(ValueError, match="concentration"):
        synth.generate_day(5_000, 5, seed=1, concentration=-1)
    with pytest.raises(ValueError, match="keys"):
        synth.generate_day(5_000, 5, seed=1, depth_profile={"near_share": 0.5})
    assert set(day_mod.DEPTH_PROFILES) == {"shallow", "normal", "deep"}


def _cli(*args):
    code = "import sys; from feedhandler.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_cli_knobs(tmp_path):
    h = _cli("synth", "--help")
    assert h.returncode == 0
    text = " ".join(h.stdout.split())
    assert "--concentration S" in text and "default 0.9" in text
    assert "--depth-profile {shallow,normal,deep}" in text and "default normal" in text
    out = tmp_path / "deep.bin"
    r = _cli("synth", str(out), "--messages", "20000", "--symbol-count", "20", "--seed", "5", "--format", "binaryfile",
             "--concentration", "1.5", "--depth-profile", "deep")
    assert r.returncode == 0, r.stderr
    assert "concentration 1.5, deep depth" in r.stdout
    d = synth.generate_day(20_000, 20, seed=5, concentration=1.5, depth_profile="deep")
    assert out.read_bytes() == d.binaryfile()
    bad = _cli("synth", str(tmp_path / "x.bin"), "--concentration", "-2")
    assert bad.returncode != 0 and "not in [0, 100)" in bad.stderr
    other = _cli("synth", str(tmp_path / "x.pcap"), "--protocol", "mdp3", "--depth-profile", "deep")
    assert other.returncode != 0 and "itch50 only" in other.stderr
