"""bench/bench_acceptors.py runs end to end (small): the exchange and the floor both answer every order, over
FIX (when QuickFIX's dictionaries are there) and OUCH, and the JSON names both with their ratios."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_acceptors_small_run(tmp_path):
    pytest.importorskip("simplefix")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_acceptors.py"), "--n", "40", "--rounds", "1",
                        "--json"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    protos = ["ouch"] + (["fix"] if out["fix_measured"] else [])
    for proto in protos:
        for name in ("exchange", "floor"):
            row = out[proto][name]
            assert row["orders_per_s"] > 0 and 0 < row["p50_us"] <= row["p99_us"], (proto, name, row)
        assert out[proto]["ratio_p50"] > 0 and out[proto]["ratio_throughput"] > 0
