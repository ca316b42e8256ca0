"""Order books by symbol: ``books.bbo("AAPL")`` and ``books.depth("AAPL", 5)`` with named results.

A thin layer over a book set (``feedhandler.books.mbo.BookSet``, or anything with the same ``apply`` /
``bbo(instrument_id)`` / ``depth(instrument_id, n)``): it learns ``symbol -> instrument_id`` from the
stream's own reference data as batches pass (ITCH stock directory, MDP3 and FIX instrument
definitions: :func:`feedhandler.frames.symbols_of`) and answers by symbol or by instrument id.

    from feedhandler.book_view import Books
    books = Books()                       # a new feedhandler.books.mbo.BookSet inside (or Books(my_bookset))
    while n := feed.read(batch):
        books.apply(batch[:n])            # learns the symbols of the batch, then applies it
    books.bbo("AAPL")                     # BBO(symbol='AAPL', instrument_id=..., bid_px=..., ...)
    books.bbo("AAPL").bid                 # float (None when the side is empty); bid_px: exact int, 1e-9
    books.depth("AAPL", 5).asks[0]        # Level(price_px=..., size=..., orders=...)

With ``BookSet.consume(ring, ...)`` (records never enter Python) call :meth:`Books.learn` on the
reference-data records yourself, or pass ``symbols={instrument_id: symbol}``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from feedhandler import frames, records

__all__ = ["BBO", "Books", "Depth", "Level", "UnknownSymbol"]

_SCALE = records.PRICE_SCALE


def _px(v: int | None) -> float | None:
    return None if v is None else v / _SCALE


class BBO(NamedTuple):
    """Best bid and offer of one book. ``*_px`` are exact fixed-point integers (1e-9 units) or None for
    an empty side; ``bid`` / ``ask`` / ``spread`` are the same as floats."""

    symbol: str | None
    instrument_id: int
    bid_px: int | None
    bid_size: int
    bid_orders: int
    ask_px: int | None
    ask_size: int
    ask_orders: int

    @property
    def bid(self) -> float | None:
        return _px(self.bid_px)

    @property
    def ask(self) -> float | None:
        return _px(self.ask_px)

    @property
    def spread(self) -> float | None:
        return None if self.bid_px is None or self.ask_px is None else (self.ask_px - self.bid_px) / _SCALE


class Level(NamedTuple):
    """One price level: price (exact, 1e-9 units), total size, number of orders."""

    price_px: int
    size: int
    orders: int

    @property
    def price(self) -> float:
        return self.price_px / _SCALE


class Depth(NamedTuple):
    """Up to n levels a side, best first."""

    symbol: str | None
    instrument_id: int
    bids: list
    asks: list


class UnknownSymbol(KeyError):
    """A symbol the stream's reference data has not named (yet)."""

    def __str__(self) -> str:   # KeyError would print the repr of its argument
        return str(self.args[0])


class Books:
    """Access a book set by symbol (see the module docstring).

    Parameters
    ----------
    bookset : the book set to wrap (default: a new ``feedhandler.books.mbo.BookSet``).
    symbols : an initial ``{instrument_id: symbol}`` map (the stream's own records add to it).
    """

    def __init__(self, bookset=None, symbols: dict[int, str] | None = None):
        if bookset is None:
            from feedhandler.books import BookSet   # the default book set; pass your own to avoid the import

            bookset = BookSet()
        self.bookset = bookset
        self.symbols: dict[int, str] = dict(symbols or {})
        self._ids: dict[str, int] = {s: i for i, s in self.symbols.items()}

    def learn(self, ticks: np.ndarray) -> int:
        """Learn the symbols of the reference-data records of a batch; returns how many were new or
        changed."""
        new = {i: s for i, s in frames.symbols_of(ticks).items() if s and self.symbols.get(i) != s}
        for i, s in new.items():
            old = self.symbols.get(i)
            if old is not None and self._ids.get(old) == i:
                del self._ids[old]
            self.symbols[i] = s
            self._ids[s] = i
        return len(new)

    def apply(self, ticks: np.ndarray):
        """Learn the batch's symbols, then ``bookset.apply(ticks)`` (which enriches it in place)."""
        self.learn(ticks)
        return self.bookset.apply(ticks)

    def instrument_id(self, key: str | int) -> int:
        """The instrument id of a symbol (an int is taken as an instrument id already)."""
        if isinstance(key, (int, np.integer)):
            return int(key)
        try:
            return self._ids[key]
        except KeyError:
            raise UnknownSymbol(f"{key!r} is not in the stream's reference data ({len(self._ids)} symbols "
                                "seen: stock directory / instrument definitions)") from None

    def bbo(self, key: str | int) -> BBO:
        """Best bid and offer of ``key`` (a symbol or an instrument id)."""
        iid = self.instrument_id(key)
        bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n = self.bookset.bbo(iid)
        und = records.UNDEF_PRICE
        return BBO(self.symbols.get(iid), iid, None if bid_px == und or not bid_sz else int(bid_px), int(bid_sz),
                   int(bid_n), None if ask_px == und or not ask_sz else int(ask_px), int(ask_sz), int(ask_n))

    def depth(self, key: str | int, n: int = 10) -> Depth:
        """Up to ``n`` price levels a side of ``key``, best first."""
        iid = self.instrument_id(key)
        bids, asks = self.bookset.depth(iid, n)

        def levels(a):
            return [Level(int(p), int(s), int(c)) for p, s, c in zip(a["price"].tolist(), a["size"].tolist(),
                                                                      a["count"].tolist())]

        return Depth(self.symbols.get(iid), iid, levels(bids), levels(asks))

    def __contains__(self, key) -> bool:
        return key in self._ids if isinstance(key, str) else key in self.symbols

    def __repr__(self) -> str:
        return f"<Books: {len(self._ids)} symbols over {type(self.bookset).__name__}>"
