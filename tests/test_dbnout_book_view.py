"""feedhandler.book_view: books by symbol, with named results, symbols from the stream's own records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.book_view import BBO, Books, Depth, Level, UnknownSymbol

pytest.importorskip("feedhandler.pipeline", reason="feedhandler.pipeline not built")
pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo not built")

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


def _itch_books():
    from feedhandler.pipeline import Feed

    feed, batch, books = Feed(str(PCAPS / "itch50_sample.pcap")), records.empty(1 << 12), Books()
    while n := feed.read(batch):
        books.apply(batch[:n])
    return books


def test_bbo_and_depth_by_symbol_match_the_book_set_and_replay():
    from feedhandler.replay import ReplayOptions, replay

    books = _itch_books()
    rep = {r["symbol"]: r for r in replay(PCAPS / "itch50_sample.pcap", ReplayOptions(top=25))["bbo"]}
    assert len(books.symbols) == 25 and "AMD" in books and "ZZZZ" not in books
    b = books.bbo("AMD")
    assert isinstance(b, BBO) and b.symbol == "AMD" and b.instrument_id == 4
    assert (b.bid, b.bid_size, b.ask, b.ask_size) == (rep["AMD"]["bid"], rep["AMD"]["bid_sz"], rep["AMD"]["ask"],
                                                      rep["AMD"]["ask_sz"]) == (71.70, 990, 71.71, 400)
    assert b == books.bbo(4) and tuple(b)[2:] == tuple(int(x) for x in books.bookset.bbo(4))
    assert b.spread == pytest.approx(0.01) and b.bid_px == 71_700_000_000
    d = books.depth("AMD", 5)
    assert isinstance(d, Depth) and 0 < len(d.bids) <= 5 and 0 < len(d.asks) <= 5
    assert isinstance(d.bids[0], Level) and d.bids[0].price_px == b.bid_px and d.asks[0].size == b.ask_size
    raw_b, raw_a = books.bookset.depth(4, 5)
    assert [lv.price_px for lv in d.bids] == raw_b["price"].tolist()
    assert [lv.orders for lv in d.asks] == raw_a["count"].tolist()
    assert all(x.price_px > y.price_px for x, y in zip(d.bids, d.bids[1:]))


def test_unknown_symbol_is_a_clear_key_error():
    books = _itch_books()
    with pytest.raises(UnknownSymbol, match="'ZZZZ' is not in the stream's reference data") as e:
        books.bbo("ZZZZ")
    assert isinstance(e.value, KeyError)


def test_mdp3_symbols_from_instrument_definitions():
    from feedhandler.protocols.mdp3.pcap import decode_pcap

    ticks, _ = decode_pcap(PCAPS / "mdp3_sample.pcap", channels={14310: 0, 15310: 0})
    books = Books()
    for i in range(0, len(ticks), 50):
        books.apply(ticks[i: i + 50])
    b = books.bbo("ESZ3")
    assert b.instrument_id == 100021 and b.bid == 4299.75 and b.ask == 4300.25


def test_empty_side_is_none_and_any_book_set_works():
    class OneBook:      # a book set of our own: Books needs only bbo / depth / apply
        def bbo(self, iid):
            return (records.UNDEF_PRICE, 0, 0, 10_500_000_000, 7, 2)

        def depth(self, iid, n):
            lv = np.zeros(1, [("price", "<i8"), ("size", "<u8"), ("count", "<u8")])
            lv[0] = (10_500_000_000, 7, 2)
            return lv[:0], lv

        def apply(self, ticks):
            return ticks.shape[0]

    t = records.empty(1)
    sd = t.view(records.DTYPES["stock_directory"])
    sd["rtype"], sd["instrument_id"], sd["symbol"] = records.RTYPE["stock_directory"], 9, b"XYZ     "
    books = Books(OneBook())
    assert books.apply(t) == 1
    b = books.bbo("XYZ")
    assert b.bid_px is None and b.bid is None and b.spread is None and b.ask == 10.5 and b.ask_orders == 2
    assert books.depth("XYZ", 3) == Depth("XYZ", 9, [], [Level(10_500_000_000, 7, 2)])
    sd["symbol"] = b"XYZW    "                 # a renamed instrument: the new name only
    assert books.learn(t) == 1 and "XYZW" in books and "XYZ" not in books
