"""MoldUDP64 sequencing: duplicates, reordering inside the window (applied in order), holes given up when
the window overflows or the input ends (exact missing ranges, FH_GAP_* records at the right position,
AFTER_GAP on the next message), partial overlaps, heartbeats, end of session, new sessions, truncated
packets; plus a property test over random loss / duplication / reordering.

Message with sequence s carries order id s, so the record stream shows exactly what was delivered."""
from __future__ import annotations

import random

import pytest
from hypothesis import example, HealthCheck, given, settings
from hypothesis import strategies as st

from _capture_util import (
    F_MAYBE_BAD_BOOK, GAP_FILLED, GAP_LOST, GAP_OPENED, GAP_RESET, MIDNIGHT, SESSION, add_msg, events, gaps,
    mold_packets, msg_seqs,
)
from feedhandler.capture import pcapwriter as pw
from feedhandler.pipeline import Feed

T0 = MIDNIGHT + 34_200 * 10**9


def _feed(tmp_path, payloads, name="m.pcap", **kw):
    p = tmp_path / name
    pw.write_pcap(p, [(T0 + i * 1000, pw.build_udp_frame(pl)) for i, pl in enumerate(payloads)])
    f = Feed(p, **kw)
    return f, events(f.read_all())


def _pl(pk, order):
    return [pk[i][2] for i in order]


def test_in_order_no_gap_records(tmp_path):
    pk = mold_packets(1, [3, 1, 4, 2])
    f, ev = _feed(tmp_path, _pl(pk, range(4)))
    assert msg_seqs(ev) == list(range(1, 11)) and gaps(ev) == []
    assert [e[2] for e in ev] == list(range(1, 11))  # order id == sequence
    st = f.stats()
    assert st["messages"] == 10 and st["gaps"] == 0 and st["moldudp64_packets"] == 4
    assert f.missing_ranges() == []


def test_reordering_within_window_applied_in_order(tmp_path):
    pk = mold_packets(100, [2, 2, 2, 2, 2])  # 100-101, 102-103, 104-105, 106-107, 108-109
    f, ev = _feed(tmp_path, _pl(pk, [0, 1, 3, 4, 2]), reorder_window=4)
    assert msg_seqs(ev) == list(range(100, 110))
    # gap opened for 104-105 right after 103, filled, then the held packets follow
    kinds = [e if e[0] == "gap" else ("msg", e[1]) for e in ev]
    i_open = kinds.index(("gap", GAP_OPENED, 104, 2, 0, SESSION))
    assert kinds[i_open - 1] == ("msg", 103)
    i_fill = kinds.index(("gap", GAP_FILLED, 104, 2, 0, SESSION))
    assert kinds[i_fill + 1] == ("msg", 104)
    assert gaps(ev, GAP_LOST) == []
    assert not any(e[4] & F_MAYBE_BAD_BOOK for e in ev if e[0] == "msg")
    st = f.stats()
    assert st["out_of_order"] == 2 and st["reordered"] == 2 and st["filled_messages"] == 2
    assert f.missing_ranges() == []


def test_gap_lost_at_end_of_input_exact_ranges(tmp_path):
    pk = mold_packets(1, [3, 3, 3, 3, 3, 3])  # 1-3 4-6 7-9 10-12 13-15 16-18
    f, ev = _feed(tmp_path, _pl(pk, [0, 2, 3, 5]), reorder_window=16)  # 4-6 and 13-15 never come
    assert msg_seqs(ev) == [1, 2, 3, 7, 8, 9, 10, 11, 12, 16, 17, 18]
    assert gaps(ev, GAP_OPENED) == [(GAP_OPENED, 4, 3), (GAP_OPENED, 13, 3)]
    assert gaps(ev, GAP_LOST) == [(GAP_LOST, 4, 3), (GAP_LOST, 13, 3)]
    assert f.missing_ranges() == [(SESSION.decode(), 4, 6), (SESSION.decode(), 13, 15)]
    after = [e[1] for e in ev if e[0] == "msg" and e[4] & F_MAYBE_BAD_BOOK]
    assert after == [7, 16]  # the first message after each lost hole
    # LOST comes right before the first message after the hole
    lost_pos = [i for i, e in enumerate(ev) if e[0] == "gap" and e[1] == GAP_LOST]
    assert [ev[i + 1][1] for i in lost_pos] == [7, 16]
    st = f.stats()
    assert st["lost_messages"] == 6 and st["gaps_lost"] == 2 and st["gaps"] == 2


def test_reorder_beyond_window_is_lost_then_late_packet_is_duplicate(tmp_path):
    pk = mold_packets(1, [1] * 8)
    f, ev = _feed(tmp_path, _pl(pk, [0, 1, 3, 4, 5, 2, 6, 7]), reorder_window=2)
    # 4 and 5 are held; 6 overflows the window of 2: the hole {3} is lost, 4, 5, 6 applied
    assert msg_seqs(ev) == [1, 2, 4, 5, 6, 7, 8]
    assert gaps(ev) == [(GAP_OPENED, 3, 1), (GAP_LOST, 3, 1)]
    assert f.missing_ranges() == [(SESSION.decode(), 3, 3)]
    st = f.stats()
    assert st["duplicate_packets"] == 1 and st["duplicates"] == 1  # 3 arrived after it was given up
    assert [e[1] for e in ev if e[0] == "msg" and e[4] & F_MAYBE_BAD_BOOK] == [4]


def test_window_bounded_in_messages(tmp_path):
    pk = mold_packets(1, [1, 1, 5, 5, 1])  # 1, 2, 3-7, 8-12, 13
    # packet 2 is late; holding 3-7 (5 messages) is fine, 8-12 makes 10 > 8: the hole {2} is lost
    f, ev = _feed(tmp_path, _pl(pk, [0, 2, 3, 1, 4]), reorder_window=100, reorder_window_messages=8)
    assert msg_seqs(ev) == [1] + list(range(3, 14))
    assert gaps(ev) == [(GAP_OPENED, 2, 1), (GAP_LOST, 2, 1)]
    f, ev = _feed(tmp_path, _pl(pk, [0, 2, 3, 1, 4]), name="b.pcap", reorder_window=100, reorder_window_messages=10)
    assert msg_seqs(ev) == list(range(1, 14)) and gaps(ev, GAP_LOST) == []


def test_window_zero_loses_every_hole_at_once(tmp_path):
    pk = mold_packets(1, [1] * 5)
    f, ev = _feed(tmp_path, _pl(pk, [0, 2, 1, 3, 4]), reorder_window=0)
    assert msg_seqs(ev) == [1, 3, 4, 5]
    assert gaps(ev) == [(GAP_OPENED, 2, 1), (GAP_LOST, 2, 1)]


def test_duplicates_dropped_and_counted(tmp_path):
    pk = mold_packets(1, [2, 2, 2])
    f, ev = _feed(tmp_path, _pl(pk, [0, 0, 1, 0, 1, 2, 2]))
    assert msg_seqs(ev) == [1, 2, 3, 4, 5, 6] and gaps(ev) == []
    st = f.stats()
    assert st["duplicate_packets"] == 4 and st["duplicates"] == 8


def test_partial_overlap_delivers_only_new_messages(tmp_path):
    a = pw.build_moldudp64(SESSION, 1, [add_msg(s) for s in range(1, 6)])     # 1..5
    b = pw.build_moldudp64(SESSION, 3, [add_msg(s) for s in range(3, 9)])     # 3..8
    c = pw.build_moldudp64(SESSION, 12, [add_msg(s) for s in range(12, 14)])  # 12..13 (held)
    d = pw.build_moldudp64(SESSION, 7, [add_msg(s) for s in range(7, 15)])    # 7..14 fills 9..11
    f, ev = _feed(tmp_path, [a, b, c, d])
    assert msg_seqs(ev) == list(range(1, 15))
    assert gaps(ev) == [(GAP_OPENED, 9, 3), (GAP_FILLED, 9, 3)]
    st = f.stats()
    assert st["duplicates"] == 3 + 2 + 2  # 3-5 of b, 7-8 of d, 12-13 of the held c
    assert st["messages"] == 14


def test_heartbeats(tmp_path):
    pk = mold_packets(1, [2, 2])
    hb_ok = pw.build_moldudp64(SESSION, 5, [], count=pw.MOLD_HEARTBEAT)    # next expected = 5: fine
    hb_gap = pw.build_moldudp64(SESSION, 9, [], count=pw.MOLD_HEARTBEAT)   # says 5..8 exist
    f, ev = _feed(tmp_path, [pk[0][2], pk[1][2], hb_ok, hb_gap, hb_gap])
    assert msg_seqs(ev) == [1, 2, 3, 4]
    assert gaps(ev) == [(GAP_OPENED, 5, 4), (GAP_LOST, 5, 4)]
    assert f.missing_ranges() == [(SESSION.decode(), 5, 8)]
    assert f.stats()["heartbeats"] == 3


def test_heartbeat_gap_filled_later(tmp_path):
    pk = mold_packets(1, [2, 2])
    hb = pw.build_moldudp64(SESSION, 5, [], count=0)
    f, ev = _feed(tmp_path, [pk[0][2], hb, pk[1][2]])
    assert msg_seqs(ev) == [1, 2, 3, 4]
    assert gaps(ev) == [(GAP_OPENED, 3, 2), (GAP_FILLED, 3, 2)]


def test_end_of_session_and_new_session(tmp_path):
    pk = mold_packets(1, [2, 2])
    eos = pw.build_moldudp64(SESSION, 5, [], count=pw.MOLD_END_OF_SESSION)
    late = pw.build_moldudp64(SESSION, 5, [add_msg(5)])
    new = pw.build_moldudp64(b"000010060A", 1, [add_msg(1001)])
    f, ev = _feed(tmp_path, [pk[0][2], pk[1][2], eos, eos, late, new])
    assert [e[2] for e in ev if e[0] == "msg"] == [1, 2, 3, 4, 1001]
    g = [e for e in ev if e[0] == "gap"]
    assert g == [("gap", GAP_RESET, 5, 0, 0, SESSION), ("gap", GAP_RESET, 1, 0, 1, b"000010060A")]
    assert ev.index(g[0]) == 4  # right after message 4
    st = f.stats()
    assert st["end_of_session"] == 2 and st["after_end_of_session"] == 1 and st["resets"] == 2
    assert st["sessions"] == [SESSION.decode(), "000010060A"]
    assert [e[1] for e in ev if e[0] == "msg" and e[2] == 1001] == [1]


def test_end_of_session_out_of_order_waits_for_hole(tmp_path):
    pk = mold_packets(1, [2, 2])
    eos = pw.build_moldudp64(SESSION, 5, [], count=pw.MOLD_END_OF_SESSION)
    f, ev = _feed(tmp_path, [pk[0][2], eos, pk[1][2]])
    assert msg_seqs(ev) == [1, 2, 3, 4]
    assert gaps(ev) == [(GAP_OPENED, 3, 2), (GAP_FILLED, 3, 2), (GAP_RESET, 5, 0)]


def test_truncated_packet_keeps_complete_messages_and_reports_the_rest(tmp_path):
    full = pw.build_moldudp64(SESSION, 1, [add_msg(s) for s in range(1, 6)])
    cut = full[: 20 + 3 * 38 + 10]  # messages 1..3 complete, 4 cut, 5 absent
    nxt = pw.build_moldudp64(SESSION, 6, [add_msg(6)])
    f, ev = _feed(tmp_path, [cut, nxt])
    assert msg_seqs(ev) == [1, 2, 3, 6]
    assert gaps(ev) == [(GAP_OPENED, 4, 2), (GAP_LOST, 4, 2)]
    assert f.stats()["malformed"]["truncated_message"] == 1
    assert f.missing_ranges() == [(SESSION.decode(), 4, 5)]


def test_many_messages_per_packet_and_large_runs(tmp_path):
    # 200 packets of 300 messages (small messages keep packets under 64 KiB): output batches of the
    # framer (65536 messages) and of read() are crossed many times
    payloads = []
    s = 1
    for i in range(200):
        payloads.append(pw.build_moldudp64(SESSION, s, [add_msg(s + k) for k in range(300)]))
        s += 300
    payloads[10], payloads[11] = payloads[11], payloads[10]
    f, ev = _feed(tmp_path, payloads)
    assert msg_seqs(ev) == list(range(1, s))


# ---- property: random loss, duplication and bounded reordering ---------------------------------------
def _check_invariants(f, ev, sent_ranges, dropped, window):
    seqs = msg_seqs(ev)
    assert seqs == sorted(set(seqs)), "delivered strictly in order, no duplicates"
    # the first packet RECEIVED sets where the session starts (earlier sequences are unknowable)
    first = sent_ranges[0][0]
    delivered = set(seqs)
    missing = set()
    for _, a, b in f.missing_ranges():
        rng = set(range(a, b + 1))
        assert not (rng & missing)
        missing |= rng
    lost_ranges = [(g[1], g[2]) for g in gaps(ev, GAP_LOST)]
    assert [(a, b - a + 1) for _, a, b in f.missing_ranges()] == lost_ranges
    assert not (delivered & missing)
    # every sequence that was ever sent is delivered or reported missing... (the tail after the last
    # packet received is unknowable)
    hi = max(seqs) + 1 if seqs else first
    assert delivered | missing >= set(range(first, hi))
    # everything of the packets that really arrived (not dropped) that lies above the start is delivered
    # unless it was given up because it came after its hole had been declared lost
    opened = sum(g[2] for g in gaps(ev, GAP_OPENED))
    filled = sum(g[2] for g in gaps(ev, GAP_FILLED))
    lost = sum(g[2] for g in gaps(ev, GAP_LOST))
    assert opened == filled + lost
    st = f.stats()
    assert st["lost_messages"] == lost == len(missing)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    counts=st.lists(st.integers(1, 5), min_size=2, max_size=30),
    drop=st.lists(st.integers(0, 29), max_size=4),
    dup=st.lists(st.integers(0, 29), max_size=6),
    seed=st.integers(0, 2**32 - 1),
    window=st.integers(0, 6),
    displacement=st.integers(0, 6),
)
@example(counts=[1, 1, 1, 1], drop=[], dup=[], seed=65535, window=1, displacement=3)   # arrives 0, 2, 3, 1
def test_random_loss_dup_reorder(tmp_path, counts, drop, dup, seed, window, displacement):
    pk = mold_packets(50, counts)
    n = len(pk)
    order = [i for i in range(n) if i not in set(drop)]
    order += [i for i in dup if i < n]
    rnd = random.Random(seed)
    keyed = sorted(((i + rnd.uniform(0, displacement), i) for i in order))
    order = [i for _, i in keyed]
    f, ev = _feed(tmp_path, _pl(pk, order), name=f"p{seed}.pcap", reorder_window=window)
    ranges = [(s, s + c) for s, c, _ in pk]
    _check_invariants(f, ev, [ranges[order[0]]] if order else ranges, [i for i in range(n) if i not in order], window)
    # when nothing was dropped and every packet is at most `window` places late, nothing is lost
    first_pos = {}
    for pos, i in enumerate(order):
        first_pos.setdefault(i, pos)
    if len(first_pos) < n or first_pos[0] != 0:
        return
    # packets the framer must hold while it waits for packet i: those after i that arrived before it
    # (the old count - earlier packets arriving after i - under-counted: [0, 2, 3, 1] needs 2 held, not 1)
    held = max((sum(1 for j in range(i + 1, n) if first_pos[j] < first_pos[i]) for i in range(n)), default=0)
    if held <= window:
        assert gaps(ev, GAP_LOST) == [] and msg_seqs(ev) == list(range(50, 50 + sum(counts)))


def test_ab_lines_arbitrated_by_sequence(tmp_path):
    # the same session on two multicast groups (A and B lines), each line losing different packets:
    # duplicates are dropped, and together the lines deliver everything
    pk = mold_packets(1, [3] * 40)
    rnd = random.Random(7)
    frames = []
    for i, (_, _, pl) in enumerate(pk):
        lines = ["233.54.12.111", "233.54.12.112"]
        rnd.shuffle(lines)
        for k, grp in enumerate(lines):
            if (i % 7 == 3 and k == 0) or (i % 11 == 5 and i % 7 != 3 and k == 1):
                continue  # lost on this line
            frames.append(pw.build_udp_frame(pl, dst=grp))
    p = tmp_path / "ab.pcap"
    pw.write_pcap(p, [(T0 + i, fr) for i, fr in enumerate(frames)])
    f = Feed(p, reorder_window=4)
    ev = events(f.read_all())
    assert msg_seqs(ev) == list(range(1, 121))
    assert gaps(ev, GAP_LOST) == []
    st = f.stats()
    assert st["duplicate_packets"] == len(frames) - 40
