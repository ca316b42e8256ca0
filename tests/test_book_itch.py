"""feedhandler.books.mbo over a synthetic ITCH 5.0 day decoded by Itch50Decoder: differential against the
pure-Python reference book, and against the itch-book package (an independent C++ ITCH book) as a
second reference for the BBO stream."""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np
import pytest

book_mod = pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo is not built (setup.py build_ext)")
itch50 = pytest.importorskip("feedhandler.protocols.itch50", reason="feedhandler.protocols.itch50 is not built")
synth = pytest.importorskip("feedhandler.synth", reason="feedhandler.synth is not available")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_book import ReferenceBookSet  # noqa: E402

UNDEF = (1 << 63) - 1
DATE = datetime.date(2024, 3, 15)


@pytest.fixture(scope="module")
def day():
    d = synth.generate_day(messages=120_000, symbols=40, seed=5, date=DATE)
    data = d.binaryfile()
    ticks = itch50.Itch50Decoder(midnight_ns=synth.midnight_ns_of(DATE)).decode_binaryfile(data)
    return data, np.array(ticks)


def test_itch_day_matches_reference(day):
    _, ticks = day
    mine, theirs = ticks.copy(), ticks.copy()
    b = book_mod.BookSet(track_bbo_events=True)
    ref = ReferenceBookSet(track_bbo_events=True)
    step = 8192
    for i in range(0, len(ticks), step):
        b.apply(mine[i: i + step])
        ref.apply(theirs[i: i + step])
        assert b.live_orders == ref.live_orders
        assert b.bbo_events().tolist() == ref.bbo_events()
    b.check()
    assert b.counters() == ref.c
    c = b.counters()
    # a clean synthetic day: every event found its order, nothing was rejected
    for k in ("unknown_order", "duplicate_add", "size_underflow", "zero_size_add", "bad_price", "bad_side",
              "replace_without_delete", "instrument_mismatch", "bad_action", "no_memory"):
        assert c[k] == 0, k
    assert c["adds"] > 10_000 and c["replaces"] > 1000 and c["deletes"] > 1000 and c["fills"] > 1000
    for inst in ref.books:
        assert b.bbo(inst) == ref.bbo(inst)
        bids, asks = b.depth(inst, 10**6)
        rb, ra = ref.depth(inst, 10**6)
        assert bids.tolist() == rb and asks.tolist() == ra
    assert mine.tobytes() == theirs.tobytes()
    # enrichment: every ITCH delete/replace/execute now carries side, price and size
    from feedhandler import records as R
    m = R.view(mine, "mbo")
    is_mbo = mine["rtype"] == R.RTYPE["mbo"]
    book_events = is_mbo & np.isin(m["action"], [b"A", b"C", b"F"])
    assert np.isin(m["side"][book_events], [b"B", b"A"]).all()
    assert (m["price"][book_events] != UNDEF).all()


def _bbo_streams(data: bytes, ticks: np.ndarray, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """(ours, itch-book's) BBO change streams of one day: (instrument, ts_event, bid px, bid size, ask px,
    ask size) per change, prices in 1e-4 units, -1 for an empty side."""
    itch_book = pytest.importorskip("itch_book", reason="the itch-book package is not installed")
    path = tmp_path / "day.bin"
    path.write_bytes(data)
    cols = {k: [] for k in itch_book.BBO_COLUMNS}
    feed = itch_book.open(str(path), date=DATE)
    try:
        for batch in feed.batches(tables=("bbo",)):
            for k in cols:
                cols[k].append(batch.bbo[k])
    finally:
        feed.close()
    cols = {k: np.concatenate(v) for k, v in cols.items()}

    def px_ib(a):   # itch-book: float dollars, NaN when empty -> 1e-4 units, -1
        return np.where(np.isnan(a), -1, np.round(a * 10_000)).astype(np.int64)

    def px_fh(a):   # ours: 1e-9 units, UNDEF when empty -> 1e-4 units, -1
        return np.where(a == UNDEF, -1, a // 100_000).astype(np.int64)

    b = book_mod.BookSet(track_bbo_events=True)
    b.apply(ticks.copy())
    ev = b.bbo_events()
    theirs = np.stack([cols["locate"].astype(np.int64), cols["ts_event"].astype(np.int64), px_ib(cols["bid_px"]),
                       cols["bid_sz"].astype(np.int64), px_ib(cols["ask_px"]), cols["ask_sz"].astype(np.int64)], 1)
    mine = np.stack([ev["instrument_id"].astype(np.int64), ev["ts_event"].astype(np.int64), px_fh(ev["bid_px"]),
                     ev["bid_sz"].astype(np.int64), px_fh(ev["ask_px"]), ev["ask_sz"].astype(np.int64)], 1)
    return mine, theirs


def _assert_same_stream(mine: np.ndarray, theirs: np.ndarray) -> None:
    assert mine.shape == theirs.shape
    bad = np.nonzero((mine != theirs).any(axis=1))[0]
    assert bad.size == 0, f"first difference at event {bad[:1]}: {mine[bad[:1]]} vs {theirs[bad[:1]]}"


def test_itch_day_bbo_stream_matches_itch_book(day, tmp_path):
    data, ticks = day
    mine, theirs = _bbo_streams(data, ticks, tmp_path)
    assert len(mine) > 10_000
    _assert_same_stream(mine, theirs)


@pytest.mark.parametrize("messages,symbols,seed,concentration,depth", [
    (200_000, 2000, 99, 0.3, "shallow"),    # thousands of evenly busy, shallow books
    (200_000, 12, 5, 1.5, "deep"),          # a few very deep books, one taking most of the flow
    (150_000, 1, 8, 0.0, "deep"),           # one book
])
def test_other_day_shapes_bbo_stream_matches_itch_book(messages, symbols, seed, concentration, depth, tmp_path):
    """Days of other shapes and seeds than the fixture's: the same BBO change stream as itch-book's."""
    d = synth.generate_day(messages=messages, symbols=symbols, seed=seed, date=DATE,
                           concentration=concentration, depth_profile=depth)
    data = d.binaryfile()
    ticks = np.array(itch50.Itch50Decoder(midnight_ns=synth.midnight_ns_of(DATE)).decode_binaryfile(data))
    mine, theirs = _bbo_streams(data, ticks, tmp_path)
    assert len(mine) > 10_000
    _assert_same_stream(mine, theirs)
