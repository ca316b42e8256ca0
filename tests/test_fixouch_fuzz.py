"""Hostile FIX order-entry input (issue 10, hostile-input suite): fuzzed NewOrderSingle / cancel / replace
field values through a real session and the order application into a real engine. Every message is
answered (ExecutionReport, OrderCancelReject, Reject or Business Reject), its MsgSeqNum is consumed, the
session stays up, and nothing but a valid order reaches the exchange's journal (it always recovers)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.fix.message import encode, split_fields, utc_timestamp
from engine.fix.order_app import OrderApplication
from engine.fix.session import FixSession
from engine.fix.store import MemoryStore
from engine.gateway import OrderPipeline
from engine.manager import EngineManager
from engine.risk import RiskLimits, RiskManager
from feedhandler.protocols.fix_dictionary import FixDictionary

SPEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "fix" / "spec"
pytestmark = pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (shared reference data) not present")

value = st.one_of(
    st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\x01", b"")),
    st.sampled_from([b"1", b"2", b"0", b"10", b"10.5", b"-5", b"1e3", b"99999999999999999999", b"AAPL", b"MSFT",
                     b"101.25", b"0.000000001", b"x" * 70, b"x" * 70_000, b"\xff\xfe", b" "]),
)
BASE = {
    b"D": [(11, b"C1"), (21, b"1"), (38, b"10"), (40, b"2"), (44, b"100"), (54, b"1"), (55, b"AAPL"),
           (59, b"0"), (60, b"20250101-00:00:00")],
    b"F": [(11, b"C2"), (37, b"1"), (38, b"10"), (41, b"C1"), (54, b"1"), (55, b"AAPL"), (60, b"20250101-00:00:00")],
    b"G": [(11, b"C3"), (21, b"1"), (37, b"1"), (38, b"10"), (40, b"2"), (41, b"C1"), (44, b"100"), (54, b"1"),
           (55, b"AAPL"), (60, b"20250101-00:00:00")],
}
#: a valid message of each type with some of its values replaced (ClOrdIDs from a small pool, so
#: duplicates, cancels of live orders and replaces happen); 97 PossResend sometimes set in the header
weird_id = st.sampled_from([b"x" * 70, b"x" * 70_000, b"\xff"])
new_id = st.one_of(st.integers(0, 10_000).map(lambda i: b"C%d" % i), weird_id)
old_id = st.one_of(st.integers(0, 40).map(lambda i: b"C%d" % i), weird_id)
message = st.tuples(st.sampled_from([b"D", b"D", b"F", b"G"]),
                    st.dictionaries(st.sampled_from([38, 44, 54, 55, 40, 59, 18, 37]), value, max_size=2),
                    new_id, old_id, st.booleans())


class Harness:
    def __init__(self, journal_dir):
        self.eng = EngineManager(["AAPL", "MSFT"], journal_dir=journal_dir)
        self.pipe = OrderPipeline(self.eng, RiskManager(RiskLimits(price_band_bps=0)))
        self.app = OrderApplication(self.pipe, {"C": "ACC"})
        self.out: list[bytes] = []
        self.s = FixSession(FixDictionary.load(SPEC / "FIX44.xml"), "X", "C", MemoryStore(), self.app)
        self.s.connection_made(self.out.append, lambda: None)
        self.app.bind(self.s)
        self.seq = 1
        self.send(b"A", [(98, 0), (108, 30)])
        assert self.s.logged_on

    def send(self, msgtype, body, extra_header=()):
        hdr = [(34, self.seq), (49, b"C"), (52, utc_timestamp()), (56, b"X")] + list(extra_header)
        self.seq += 1
        self.s.data_received(encode(b"FIX.4.4", msgtype, hdr, body))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    h = Harness(str(d / "journal"))
    yield h
    h.eng.close()
    eng = EngineManager(["AAPL", "MSFT"], journal_dir=str(d / "journal"))   # the journal always recovers
    assert eng.seq == h.eng.seq
    eng.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=message)
def test_fuzzed_order_entry_always_answered(harness, msg):
    msgtype, repl, c11, c41, poss_resend = msg
    body = [(t, c11 if t == 11 else c41 if t == 41 else repl.get(t, v)) for t, v in BASE[msgtype]]
    body += [(18, repl[18])] if 18 in repl and msgtype != b"F" else []
    h = harness
    before_out, before_target = len(h.out), h.s.next_target
    h.send(msgtype, body, [(97, b"Y")] if poss_resend else [])
    assert h.s.connected and h.s.logged_on
    assert h.s.next_target == before_target + 1                # consumed, whatever it was
    answers = []
    for raw in h.out[before_out:]:
        f = dict(split_fields(raw))
        answers.append(f[35])
    assert answers, f"no answer to {msgtype!r} {body!r}"
    assert set(answers) <= {b"8", b"9", b"3", b"j"}, answers
    assert h.s.app_errors == 0
