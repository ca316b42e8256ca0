"""``feedhandler run --publish``: the publisher's counters are in the periodic status line (not only in the final
summary), so an operator watching a feed that strategies subscribe to sees what goes out while it runs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "itch50_sample.pcap"
STATUS = re.compile(r"^\[\s*[\d.]+s\] .* published bbo recs ([\d,]+) msgs ([\d,]+) unnamed (\d+)$")


def test_run_publish_counters_in_the_status_line():
    env = dict(os.environ)
    # the sample spans ~17 h of capture time: at 40000x about 1.5 s, several status lines at 0.1 s
    r = subprocess.run([sys.executable, "-m", "feedhandler", "run", "--file", str(SAMPLE), "--pace", "40000",
                        "--publish", "tcp://127.0.0.1:0", "--publish-what", "bbo", "--status-interval", "0.1", "--json"],
                       capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)
    assert r.returncode == 0, r.stderr
    pub = json.loads(r.stdout[r.stdout.index("{"):])["publish"]
    lines = [m.groups() for m in map(STATUS.match, r.stderr.splitlines()) if m]
    assert len(lines) >= 3, r.stderr
    recs = [int(a.replace(",", "")) for a, _, _ in lines]
    msgs = [int(b.replace(",", "")) for _, b, _ in lines]
    assert recs == sorted(recs) and msgs == sorted(msgs)            # counters, growing while the feed plays
    assert 0 < recs[-1] <= pub["records"] and 0 < msgs[-1] <= pub["messages"]
    assert recs[0] < pub["records"]                                  # seen mid-run, not only at the end
    # without --publish the status line is as before
    r = subprocess.run([sys.executable, "-m", "feedhandler", "run", "--file", str(SAMPLE), "--pace", "40000",
                        "--status-interval", "0.1"], capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)
    assert r.returncode == 0, r.stderr
    status = [ln for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert status and not any("published" in ln for ln in status)
