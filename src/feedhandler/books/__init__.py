"""The feed's order books, fed by normalized tick records.

- :class:`BookSet` (``feedhandler.books.mbo``): order-by-order (L3) books per instrument, with L2
  levels and the BBO derived from them; the core is C (``csrc/book.c``, ``fh/book.h``).
- :class:`MbpBookSet` (``feedhandler.books.mbp``): price-level (MBP) books, depth-N per side, fed by
  ``mbp_update`` records (CME MDP 3.0).

For access by symbol (``bbo("AAPL")``, ``depth("AAPL", 5)``) wrap a book set in
:class:`feedhandler.book_view.Books`.
"""
from feedhandler.books.mbo import BookSet
from feedhandler.books.mbp import MbpBookSet

__all__ = ["BookSet", "MbpBookSet"]
