#!/usr/bin/env python3
"""Our FIX acceptor configured as QuickFIX's acceptance-test server (its ``test/setup.sh`` at.cfg for the
FIX 4.2 and 4.4 sessions: SenderCompID ISLD, TargetCompID TW42 / TW44, ResetOnLogon=Y, the test
application reflecting NewOrderSingle, SecurityDefinition and Email), so that QuickFIX's own runner can
be pointed at it.

Usage
  python tools/fix_at_server.py PORT [SPEC_DIR]      (SPEC_DIR: ../shared/data/fix/spec by default)

then, from QuickFIX's ``test`` directory (not part of this repository):
  ruby -I. Runner.rb 127.0.0.1 PORT <scenarios>/fix42/*.def
  ruby -I. Runner.rb 127.0.0.1 PORT <scenarios>/fix44/*.def

tests/test_fix_acceptance.py runs the same scenarios with a runner that compares as QuickFIX's does.
Stops on SIGINT/SIGTERM.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from engine.fix.acceptor import EchoApplication, FixAcceptor, SessionConfig


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or not argv[1].isdigit():
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    spec = Path(argv[2]) if len(argv) == 3 else Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"
    if not (spec / "FIX44.xml").is_file():
        print(f"fix_at_server: no FIX44.xml in {spec}", file=sys.stderr)
        return 2
    acc = FixAcceptor([SessionConfig("FIX.4.2", "ISLD", "TW42"), SessionConfig("FIX.4.4", "ISLD", "TW44")],
                      EchoApplication(), spec, port=int(argv[1]), reset_on_logon=True).start()
    print(f"fix_at_server: listening on 127.0.0.1:{acc.port}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    acc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
