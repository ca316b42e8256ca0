"""The root cause of test_fixouch_durability's rare "journal and reports differ ... (oid, 'fill', 20) !=
(oid, 'fill', 10)" made deterministic: the exchange process is SIGKILLed exactly between the FIX store's two
writes for a fill report (the message appended to the log, the sequence file not yet rewritten), which a
random kill under load hits once in a while.

Before the fix, the restarted session reused that report's MsgSeqNum for its next message (the Logon
answer): the report vanished from the store (the last record of a number wins), so after the next restart
the order application's catch-up reported the journal's fill again, on top of the CumQty it had rebuilt
from the later reports: CumQty 30 where the exchange says 10, and the ResendRequest answer no longer held
the report the client was told live."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

simplefix = pytest.importorskip("simplefix")

from test_fixouch_durability import SERVER, SPEC, Client, logon, order  # noqa: E402

pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")

# the server of the durability suite, with a test-only SIGKILL right after S1's store logged its first fill
KILL_HOOK = textwrap.dedent("""
    import os, signal
    from engine.fix import store as _store
    _save = _store.FileStore.save
    def _save_then_die(self, seq, raw):
        _save(self, seq, raw)
        if os.environ.get("FH_KILL_AFTER_FILL_LOG") and "-S1" in self.body_path.name and b"\\x01150=F\\x01" in raw:
            os.kill(os.getpid(), signal.SIGKILL)       # before set_seqnums: the sequence file is one behind
    _store.FileStore.save = _save_then_die
""")


def _start(data, kill: bool):
    env = dict(os.environ)
    env.pop("FH_KILL_AFTER_FILL_LOG", None)
    if kill:
        env["FH_KILL_AFTER_FILL_LOG"] = "1"
    p = subprocess.Popen([sys.executable, "-c", KILL_HOOK + SERVER, str(data), str(SPEC)], stdout=subprocess.PIPE,
                         text=True, start_new_session=True, env=env)
    line = p.stdout.readline().split()
    assert line, "server did not start"
    return p, int(line[0])


def _kill(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)


def test_kill_between_store_log_and_seqnums_keeps_every_report_once(tmp_path):
    seqs = {"S1": 1, "S2": 1}
    live: dict[int, bytes] = {}

    def session(port, who, begin):
        c = Client(port, who, begin, seqs[who])
        logon(c)
        return c

    def done(c, who):
        if who == "S1":
            for m in c.got:
                live[int(m.get(34))] = m
        seqs[who] = c.seq
        c.close()

    # 1. S1 rests a sell of 30; S2's IOC buy of 10 fills it: killed as S1's fill report is logged
    p, port = _start(tmp_path, kill=True)
    try:
        c1, c2 = session(port, "S1", "FIX.4.4"), session(port, "S2", "FIX.4.2")
        order(c1, "A1", "2", 30, "1")
        c1.pump(0.5)
        order(c2, "B1", "1", 10, "3")
        assert p.wait(10) == -signal.SIGKILL
        c1.pump(0.3)
        c2.pump(0.3)
    finally:
        _kill(p)
    done(c1, "S1")
    done(c2, "S2")
    # 2. restart: S1 logs on again (its Logon answer is the next message), S2 buys 10 more
    p, port = _start(tmp_path, kill=False)
    try:
        c1, c2 = session(port, "S1", "FIX.4.4"), session(port, "S2", "FIX.4.2")
        order(c2, "B2", "1", 10, "3")
        c2.pump(0.5)
        c1.pump(0.5)
    finally:
        _kill(p)
    done(c1, "S1")
    done(c2, "S2")
    # 3. restart again: S1 asks for everything
    p, port = _start(tmp_path, kill=False)
    try:
        c1 = session(port, "S1", "FIX.4.4")
        c1.got.clear()
        c1.send(b"2", [(7, 1), (16, 0)])
        c1.pump(1.0)
        stream = {int(m.get(34)): m for m in c1.got if m.get(35) in (b"8", b"9")}
        c1.close()
    finally:
        _kill(p)
    fills = [(int(m.get(14)), int(m.get(32))) for _, m in sorted(stream.items()) if m.get(150) == b"F"]
    assert fills == [(10, 10), (20, 10)], f"S1's fill reports (CumQty, LastQty): {fills}"
    for seq, m in live.items():      # what S1 was told live comes back under the same MsgSeqNum
        if m.get(35) == b"8":
            assert seq in stream and stream[seq].get(17) == m.get(17), f"report {seq} told live is gone"
