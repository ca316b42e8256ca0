"""Synthetic ITCH days: determinism, realism, consistent order lifecycles and the capture writers.

The lifecycle checks decode every message with the pure-Python reference codec (itch50_codec) and
replay it against a small dict-based order book written here, independently of the generator's
native heaps.
"""
from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest

from feedhandler.capture import pcapwriter
from feedhandler.protocols import itch50_codec
from feedhandler.protocols.itch50_spec import LENGTH, MESSAGES
from feedhandler.synth import DEFAULT_MIX, encode_columns, generate_day, wire_dtype


@pytest.fixture(scope="module")
def day():
    return generate_day(40_000, 30, seed=11)


def test_deterministic_per_seed():
    a = generate_day(5_000, 10, seed=5)
    b = generate_day(5_000, 10, seed=5)
    c = generate_day(5_000, 10, seed=6)
    assert a.n_messages == 5_000
    assert np.array_equal(a.framed, b.framed)
    assert a.symbols == b.symbols
    assert not np.array_equal(a.framed[: min(len(a.framed), len(c.framed))], c.framed[: min(len(a.framed), len(c.framed))])


def test_exact_message_count_and_too_few_rejected():
    assert generate_day(3_000, 5, seed=1).n_messages == 3_000
    with pytest.raises(ValueError, match="too few"):
        generate_day(50, 40, seed=1)


def test_wire_dtype_matches_spec_and_codec():
    rng = random.Random(3)
    for m in MESSAGES:
        dt = wire_dtype(m.type)
        assert dt.itemsize == LENGTH[m.type] == m.length
        # differential: the numpy encoder against the reference codec, random field values
        rows = [itch50_codec.random_fields(m.type, rng) for _ in range(20)]
        cols = {}
        for f in m.fields:
            if f.name == "message_type":
                continue
            vals = [r[f.name] for r in rows]
            if f.kind in ("char", "alpha"):
                cols[f.name] = np.array([v if isinstance(v, bytes) else str(v).encode() for v in vals], f"S{f.size}")
            else:
                cols[f.name] = np.array(vals, np.uint64)
        got = encode_columns(m.type, len(rows), cols)
        for i, r in enumerate(rows):
            r = {k: v for k, v in r.items() if k != "message_type"}
            assert got[i].tobytes() == itch50_codec.encode(m.type, **r), m.name


def test_message_mix_is_realistic():
    d = generate_day(200_000, 100, seed=2)
    c = d.counts()
    bulk = sum(c.get(t, 0) for t in DEFAULT_MIX)
    for t, share in DEFAULT_MIX.items():
        got = c.get(t, 0) / bulk
        if share >= 0.004:
            assert abs(got - share) < 0.15 * share + 0.002, (t, got, share)
    for t in "SRHYLVKJhIQNOB":
        assert c.get(t, 0) > 0, f"no {t} message"
    assert c["S"] == 6
    assert c["R"] == 100
    assert c["Q"] == 200  # opening and closing cross per symbol


def _decode_all(day):
    return [itch50_codec.decode(m) for m in day.messages()]


def test_every_message_decodes_and_day_structure(day):
    msgs = _decode_all(day)
    assert len(msgs) == day.n_messages
    ts = [m["timestamp"] for m in msgs]
    assert all(a <= b for a, b in zip(ts, ts[1:])), "timestamps must not go backwards"
    assert np.array_equal(np.array(ts, np.uint64), day.timestamps)
    events = [m["event_code"] for m in msgs if m["message_type"] == "S"]
    assert events == [b"O", b"S", b"Q", b"M", b"E", b"C"]
    assert msgs[0]["message_type"] == "S" and msgs[-1]["message_type"] == "S"
    # stock directory: locates 1..K in alphabetical order, before any order of that locate
    directory = {m["stock_locate"]: m["stock"].decode().strip() for m in msgs if m["message_type"] == "R"}
    assert sorted(directory) == list(range(1, len(day.symbols) + 1))
    assert [directory[i] for i in sorted(directory)] == sorted(directory.values()) == day.symbols
    first_dir = {}
    for i, m in enumerate(msgs):
        if m["message_type"] == "R":
            first_dir.setdefault(m["stock_locate"], i)
        elif m["message_type"] in "AFPQ":
            loc = m["stock_locate"]
            assert loc in first_dir and first_dir[loc] < i
            assert m["stock"].decode().strip() == directory[loc]
    crosses = [m for m in msgs if m["message_type"] == "Q"]
    assert {m["cross_type"] for m in crosses} == {b"O", b"C"}


def test_order_lifecycles_are_consistent_and_price_time(day):
    """No reference to a dead order, refs increasing, executions hit the best-priced oldest order,
    and the book never crosses."""
    live: dict[int, list] = {}              # ref -> [locate, side, price, shares]
    by_book: dict[tuple, set] = defaultdict(set)
    max_ref = 0
    matches = set()
    n_exec = 0

    def best(loc, side):
        refs = by_book[(loc, side)]
        if not refs:
            return None, None
        if side == b"B":
            p = max(live[r][2] for r in refs)
        else:
            p = min(live[r][2] for r in refs)
        return p, min(r for r in refs if live[r][2] == p)

    def check_uncrossed(loc):
        bb, _ = best(loc, b"B")
        ba, _ = best(loc, b"S")
        assert bb is None or ba is None or bb < ba, (loc, bb, ba)

    for m in _decode_all(day):
        t = m["message_type"]
        if t in "AF":
            ref = m["order_reference_number"]
            assert ref > max_ref and ref not in live
            max_ref = ref
            assert m["shares"] > 0 and m["price"] > 0
            live[ref] = [m["stock_locate"], m["buy_sell_indicator"], m["price"], m["shares"]]
            by_book[(m["stock_locate"], m["buy_sell_indicator"])].add(ref)
            check_uncrossed(m["stock_locate"])
        elif t == "D":
            o = live.pop(m["order_reference_number"])
            by_book[(o[0], o[1])].discard(m["order_reference_number"])
            assert o[0] == m["stock_locate"]
        elif t == "X":
            o = live[m["order_reference_number"]]
            assert 0 < m["cancelled_shares"] < o[3]
            o[3] -= m["cancelled_shares"]
        elif t == "U":
            old = m["original_order_reference_number"]
            new = m["new_order_reference_number"]
            o = live.pop(old)
            by_book[(o[0], o[1])].discard(old)
            assert new > max_ref and new not in live
            max_ref = new
            live[new] = [o[0], o[1], m["price"], m["shares"]]
            by_book[(o[0], o[1])].add(new)
            check_uncrossed(o[0])
        elif t in "EC":
            ref = m["order_reference_number"]
            o = live[ref]
            _, oldest_best = best(o[0], o[1])
            assert ref == oldest_best, "an execution must hit the best-priced oldest order"
            assert 0 < m["executed_shares"] <= o[3]
            assert m["match_number"] not in matches
            matches.add(m["match_number"])
            n_exec += 1
            if t == "C":
                assert m["execution_price"] == o[2] and m["printable"] in (b"Y", b"N")
            o[3] -= m["executed_shares"]
            if o[3] == 0:
                del live[ref]
                by_book[(o[0], o[1])].discard(ref)
        elif t in "PQ":
            assert m["match_number"] not in matches
            matches.add(m["match_number"])
        elif t == "B":
            assert m["match_number"] in matches
    assert n_exec > 1000
    assert len(live) == day.live_orders


def test_binaryfile_and_gzip(tmp_path, day):
    p = tmp_path / "d.bin"
    day.write_binaryfile(p)
    assert p.read_bytes() == itch50_codec.binaryfile(day.messages())
    g = tmp_path / "d.bin.gz"
    day.write_binaryfile(g, gzip=True)
    import gzip

    assert gzip.decompress(g.read_bytes()) == p.read_bytes()


def test_packets_framing(day):
    tb = day.packet_table()
    cnt, seq = tb["count"], tb["seq"].astype(np.int64)
    data = (cnt > 0) & (cnt != 0xFFFF)
    assert cnt[-1] == 0xFFFF and (cnt[:-1] != 0xFFFF).all(), "exactly one end-of-session packet, last"
    assert (cnt == 0).sum() > 0, "heartbeats in quiet periods"
    assert cnt[data].sum() == day.n_messages
    assert (cnt[data] > 1).mean() > 0.2, "several messages per packet in bursts"
    # sequence numbers: contiguous from 1 over data packets; heartbeats / end carry the next one
    nxt = 1
    for s, c in zip(seq.tolist(), cnt.tolist()):
        assert s == nxt
        if c not in (0, 0xFFFF):
            nxt += c
    assert nxt == day.n_messages + 1
    # payloads fit a 1400-byte MoldUDP64 packet; capture times never go backwards
    body = tb["body_b"] - tb["body_a"]
    assert (body + 20 <= 1400).all()
    assert (np.diff(tb["ts"]) >= 0).all()
    assert tb["ts"][0] > day.midnight_ns


def test_native_pcap_equals_pcapwriter(tmp_path):
    d = generate_day(3_000, 8, seed=4)
    p = tmp_path / "d.pcap"
    n = d.write_pcap(p, vlan=12)
    frames = [(t, pcapwriter.build_udp_frame(pl, "206.200.43.72", "233.54.12.111", 18001, 26477, vlan=12))
              for t, pl in d.packets()]
    assert n == len(frames)
    assert p.read_bytes() == pcapwriter.pcap_bytes(frames, True)
    # and the MoldUDP64 payloads carry exactly the day's messages, in order
    got = []
    for _, pl in d.packets():
        cnt = int.from_bytes(pl[18:20], "big")
        if cnt in (0, 0xFFFF):
            continue
        pos = 20
        for _ in range(cnt):
            ln = int.from_bytes(pl[pos : pos + 2], "big")
            got.append(pl[pos + 2 : pos + 2 + ln])
            pos += 2 + ln
        assert pos == len(pl)
    assert got == list(d.messages())


def _feed_records(path):
    pipeline = pytest.importorskip("feedhandler.pipeline", reason="feedhandler.pipeline not built")
    f = pipeline.Feed(str(path))
    return f, f.read_all()


@pytest.mark.parametrize("fmt", ["pcap", "pcapng", "binaryfile"])
def test_feed_reads_every_format(tmp_path, fmt):
    d = generate_day(4_000, 10, seed=9)
    p = tmp_path / f"d.{fmt}"
    d.write(p, fmt)
    f, recs = _feed_records(p)
    st = f.stats()
    assert st["messages"] == d.n_messages
    assert st["gaps"] == 0 and st["duplicates"] == 0 and st["truncated"] == 0
    assert st["decoder"]["messages"] == d.counts()
    assert st["decoder"]["unknown"] == 0 and st["decoder"]["bad_length"] == 0
    if fmt != "binaryfile":
        assert st["end_of_session"] == 1 and st["heartbeats"] > 0


def test_sample_captures_are_fresh():
    """pcaps/ holds what pcaps/make_samples.sh generates (rerun it after changing the generator)."""
    import gzip
    import pathlib
    import shlex

    here = pathlib.Path(__file__).resolve().parents[1] / "pcaps"
    script = (here / "make_samples.sh").read_text()
    args = shlex.split(script.split('common="', 1)[1].split('"', 1)[0])
    opts = dict(zip(args[::2], args[1::2]))
    d = generate_day(int(opts["--messages"]), int(opts["--symbol-count"]), int(opts["--seed"]), date=opts["--date"])
    pcap = here / "itch50_sample.pcap"
    assert pcap.exists() and pcap.stat().st_size + (here / "itch50_sample.bin.gz").stat().st_size < 2 * 2**20
    frames = [(t, pcapwriter.build_udp_frame(pl, "206.200.43.72", "233.54.12.111", 18001, 26477))
              for t, pl in d.packets()]
    assert pcap.read_bytes() == pcapwriter.pcap_bytes(frames, True), "stale: run pcaps/make_samples.sh"
    assert gzip.decompress((here / "itch50_sample.bin.gz").read_bytes()) == d.binaryfile(), \
        "stale: run pcaps/make_samples.sh"
