"""``feedhandler shell [CAPTURE]``: an interactive session with order books loaded.

Three sources, one set of helpers:

  feedhandler shell pcaps/itch50_sample.pcap      # a capture: its books at the end of the file
  feedhandler shell --attach-ring feed            # a running `feedhandler run --ring feed`
  feedhandler shell --exchange tcp://127.0.0.1:5555   # the exchange, through engine.client

In the session (``help()`` lists them again):

  books                  feedhandler.book_view.Books (bbo / depth by symbol or instrument id)
  ladder("AAPL", 5)      print the price ladder of a symbol (asks above, bids below)
  bbo("AAPL")            the best bid and offer (a named tuple)
  symbols()              the symbols seen, busiest books first
  step(n=1)              apply and print the next n records (one message at a time); rewind() starts over
  only("AAPL")           filter by symbol: step() and tape() then show that symbol's records only,
                         ladder() defaults to it; only() clears the filter
  tape(20)               print the last 20 records stepped through
  refresh()              ring / exchange: read what has arrived since (ladder() and bbo() do it too)

The session runs in ptpython (``pip install 'feedhandler[shell]'``) when it is installed and stdin is a
terminal, else in Python's own REPL with a one-line note saying why. ``-c CODE`` runs CODE in the
session and exits (scripts and tests).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from typing import Callable, Sequence

import numpy as np

from feedhandler.cliopts import add_debug, add_symbols, plain, positive_seconds, zmq_endpoint
from feedhandler.exitcodes import EXIT_OK, RuntimeFailure, UsageError

__all__ = ["Session", "CaptureSource", "RingSource", "ExchangeSource", "format_ladder", "format_record",
           "build_parser", "main"]

_SCALE = 1_000_000_000
STEP_BATCH = 4096          # records read from the source at a time while stepping
TAPE = 1000                # records kept for tape()


def _price(px) -> str:
    return "-" if px is None else f"{px / _SCALE:,.4f}"


def format_ladder(symbol: str, bids: list, asks: list, title: str = "") -> str:
    """A price ladder: asks from the highest shown down to the best ask, the spread, then bids from the
    best down. Levels are ``(price_px, size, orders)`` with prices in 1e-9 units (``orders`` may be None)."""
    lines = [f"{symbol}{title}", f"  {'side':<4} {'price':>14} {'size':>10} {'orders':>7}"]
    for p, s, n in reversed(asks):
        lines.append(f"  {'ask':<4} {_price(p):>14} {s:>10,} {'-' if n is None else n:>7}")
    if bids and asks:
        lines.append(f"  {'':-<4} spread {(asks[0][0] - bids[0][0]) / _SCALE:,.4f}")
    elif not bids and not asks:
        lines.append("  (empty book)")
    else:
        lines.append("  " + "-" * 38)
    for p, s, n in bids:
        lines.append(f"  {'bid':<4} {_price(p):>14} {s:>10,} {'-' if n is None else n:>7}")
    return "\n".join(lines)


def format_record(rec: np.ndarray, symbols: dict[int, str]) -> str:
    """One record (a TICK_DTYPE slot) on one line: time, kind, symbol and the fields it has of action,
    side, price, size, order id."""
    from feedhandler import records

    rtype = int(rec["rtype"])
    kind = records.RTYPE_NAME.get(rtype, f"rtype {rtype:#x}")
    iid = int(rec["instrument_id"])
    parts = [f"{int(rec['ts_event'])}", f"{kind:<16}", f"{symbols.get(iid, iid)!s:<8}"]
    dt = records.DTYPES.get(kind)
    if dt is not None:
        v = np.ascontiguousarray(rec).reshape(1).view(dt)[0]
        names = dt.names
        for f in ("action", "side"):
            if f in names:
                c = v[f]
                parts.append(f"{f} {c.decode('ascii', 'replace') if isinstance(c, bytes) else chr(int(c)) if int(c) else '-'}")
        if "price" in names:
            px = int(v["price"])
            parts.append(f"price {'-' if px == records.UNDEF_PRICE else _price(px)}")
        if "size" in names:
            parts.append(f"size {int(v['size']):,}")
        if "order_id" in names:
            parts.append(f"order {int(v['order_id'])}")
    return "  ".join(parts)


class CaptureSource:
    """Records of a capture file, read in batches (``Feed``); ``reopen()`` starts over."""

    live = False

    def __init__(self, path: str, protocol: str = "auto", date: str | None = None):
        from feedhandler.pipeline import Feed

        if protocol == "auto":
            from feedhandler.detect import detect

            protocol = detect(path)
        if protocol not in ("itch50", "mdp3"):
            raise UsageError(f"{path}: the shell builds books from itch50 and mdp3 captures; this one is "
                             f"{protocol} (feedhandler replay reads it)")
        self._open = lambda: Feed(path, protocol, date=date)
        self.path = path
        self.feed = self._open()
        self.describe = f"capture {path} ({protocol})"

    def reopen(self) -> None:
        self.feed = self._open()

    def read(self, max_records: int = 1 << 16) -> np.ndarray:
        from feedhandler import records

        batch = records.empty(max_records)
        n = self.feed.read(batch)
        return batch[:n]

    def close(self) -> None:
        pass


class RingSource:
    """Records from a running ``feedhandler run --ring NAME``: its shared-memory ring (attached by name)."""

    live = True

    def __init__(self, name: str):
        from feedhandler.ring import Ring

        try:
            self.ring = Ring.attach(name)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot attach to the ring {name!r}: {e} (start `feedhandler run ... --ring "
                             f"{name}` first)") from None
        self.describe = f"ring {name} (capacity {self.ring.capacity:,} records)"

    def reopen(self) -> None:
        raise RuntimeError("a live ring cannot be rewound")

    def read(self, max_records: int = 1 << 16) -> np.ndarray:
        b = self.ring.read(max_records, timeout=0.0)
        out = b.copy()
        self.ring.release(b.shape[0])
        return out

    def close(self) -> None:
        pass


class Session:
    """The state and helpers of a shell over a record source (capture or ring).

    ``load()`` applies every record available (a capture: to its end); ``step()`` applies them one at a
    time and prints each; both keep ``books`` current.
    """

    def __init__(self, source, out: Callable[[str], None] = print):
        from feedhandler.book_view import Books

        self.source = source
        self.out = out
        self.books = Books()
        self.filter: str | None = None
        self.position = 0                       # records applied so far
        self.tape_records: deque = deque(maxlen=TAPE)
        self._pending = None                    # records read but not yet applied
        self._at = 0

    # ---- reading -------------------------------------------------------------------------------
    def _next_pending(self) -> bool:
        if self._pending is not None and self._at < self._pending.shape[0]:
            return True
        b = self.source.read(STEP_BATCH)
        if b.shape[0] == 0:
            return False
        self._pending, self._at = b, 0
        return True

    def load(self) -> int:
        """Apply every record available now (a capture: to its end); returns how many."""
        n0 = self.position
        if self._pending is not None and self._at < self._pending.shape[0]:
            rest = self._pending[self._at:]
            self.books.apply(rest)
            self.position += rest.shape[0]
        self._pending = None
        while True:
            b = self.source.read(1 << 16)
            if b.shape[0] == 0:
                break
            self.books.apply(b)
            self.position += b.shape[0]
            self.tape_records.extend(b[-TAPE:].copy())
        return self.position - n0

    def refresh(self) -> int:
        """Live sources: apply what arrived since; returns how many records."""
        return self.load() if self.source.live else 0

    def rewind(self) -> None:
        """Start over from the first record with empty books (captures only)."""
        from feedhandler.book_view import Books

        self.source.reopen()
        self.books = Books()
        self.position, self._pending, self._at = 0, None, 0
        self.tape_records.clear()

    def _matches(self, rec) -> bool:
        if self.filter is None:
            return True
        return self.books.symbols.get(int(rec["instrument_id"])) == self.filter

    def step(self, n: int = 1) -> list[str]:
        """Apply the next ``n`` records (of the ``only()`` symbol when a filter is set: records of other
        symbols in between are applied silently) and print each; returns the lines."""
        shown = []
        while len(shown) < n and self._next_pending():
            rec = self._pending[self._at:self._at + 1]
            self._at += 1
            self.books.apply(rec)                 # one record at a time (learns symbols first)
            self.position += 1
            self.tape_records.append(rec[0].copy())
            if self._matches(rec[0]):
                line = f"#{self.position:<8} " + format_record(rec[0], self.books.symbols)
                shown.append(line)
                self.out(line)
        if len(shown) < n:
            self.out(f"(end of {self.source.describe}: {self.position:,} records)")
        return shown

    def only(self, symbol: str | None = None) -> None:
        """Filter step() and tape() by a symbol (and make it ladder()'s default); only() clears it."""
        if symbol is not None:
            symbol = symbol.upper()
            if self.position and symbol not in self.books:
                self.out(f"note: {symbol} is not in the reference data seen so far")
        self.filter = symbol

    def tape(self, n: int = 20) -> list[str]:
        """Print the last ``n`` records stepped or loaded (of the ``only()`` symbol when set)."""
        recs = [r for r in self.tape_records if self._matches(r)][-n:]
        lines = [format_record(r, self.books.symbols) for r in recs]
        for line in lines:
            self.out(line)
        return lines

    # ---- books ---------------------------------------------------------------------------------
    def _symbol(self, symbol: str | int | None):
        if symbol is None:
            symbol = self.filter
        if symbol is None:
            raise ValueError("which symbol? ladder('AAPL') or only('AAPL') first")
        return symbol.upper() if isinstance(symbol, str) else symbol

    def bbo(self, symbol: str | int | None = None):
        self.refresh()
        return self.books.bbo(self._symbol(symbol))

    def depth(self, symbol: str | int | None = None, n: int = 10):
        self.refresh()
        return self.books.depth(self._symbol(symbol), n)

    def ladder(self, symbol: str | int | None = None, n: int = 5) -> str:
        """Print (and return) the price ladder of ``symbol`` (default: the only() symbol), n levels a side."""
        self.refresh()
        d = self.books.depth(self._symbol(symbol), n)
        text = format_ladder(d.symbol or str(d.instrument_id),
                             [(lv.price_px, lv.size, lv.orders) for lv in d.bids],
                             [(lv.price_px, lv.size, lv.orders) for lv in d.asks],
                             f"  (instrument {d.instrument_id}, after {self.position:,} records)")
        self.out(text)
        return text

    def symbols(self, n: int = 20) -> list[str]:
        """The symbols seen, those with the most resting size first (n of them)."""
        self.refresh()
        rows = []
        for iid, sym in self.books.symbols.items():
            b = self.books.bbo(iid)
            rows.append((b.bid_size + b.ask_size, sym))
        return [s for _, s in sorted(rows, key=lambda r: (-r[0], r[1]))[:n]]

    def namespace(self) -> dict:
        """The names the interactive session starts with."""
        from feedhandler import book_view, frames, records

        return {"session": self, "books": self.books, "ladder": self.ladder, "bbo": self.bbo,
                "depth": self.depth, "step": self.step, "rewind": self.rewind, "only": self.only,
                "tape": self.tape, "refresh": self.refresh, "symbols": self.symbols, "source": self.source,
                "records": records, "frames": frames, "book_view": book_view, "np": np}


class ExchangeSource:
    """The exchange, through the client library: books by query, market data by subscription."""

    def __init__(self, endpoint: str, api_key: str, secret: str, md_endpoint: str | None, timeout: float,
                 out: Callable[[str], None] = print):
        from engine.client import Client, GatewayTimeout

        self.out = out
        self.client = Client(endpoint, api_key, secret, md_endpoint=md_endpoint, timeout=timeout, retries=1)
        try:
            r = self.client.hello()
        except GatewayTimeout:
            self.client.close()
            raise RuntimeFailure(f"no exchange answers at {endpoint} (start one with `feedhandler exchange`)") from None
        if r.get("status") != "ok":
            self.client.close()
            raise UsageError(f"the exchange at {endpoint} refused API key {api_key!r}: {r.get('reason', r)}")
        self.endpoint = endpoint
        self.filter: str | None = None
        self.tape_lines: deque = deque(maxlen=TAPE)
        if md_endpoint:
            self.client.subscribe(None)

    def ladder(self, symbol: str | None = None, n: int = 5) -> str:
        symbol = (symbol or self.filter or "").upper()
        if not symbol:
            raise ValueError("which symbol? ladder('AAPL') or only('AAPL') first")
        r = self.client.book(symbol, n)
        if r.get("status") != "ok":
            raise ValueError(f"{symbol}: {r.get('reason', r)}")

        def lv(levels):
            out = []
            for x in levels:
                if isinstance(x, dict):
                    out.append((int(x["price"]), int(x.get("qty", x.get("size", 0))), x.get("orders")))
                else:
                    out.append((int(x[0]), int(x[1]), int(x[2]) if len(x) > 2 else None))
            return out

        text = format_ladder(symbol, lv(r["bids"]), lv(r["asks"]), f"  (exchange {self.endpoint})")
        self.out(text)
        return text

    def step(self, n: int = 1, timeout: float = 1.0) -> list[str]:
        """Print the next ``n`` market-data records (of the only() symbol when set), waiting up to
        ``timeout`` s for each batch."""
        if self.client.sub is None:
            raise ValueError("no market data: start the shell with --md-endpoint")
        shown: list[str] = []
        deadline = time.monotonic() + timeout
        while len(shown) < n and time.monotonic() < deadline:
            for sym, ticks in self.client.market_data(0.1):
                if self.filter and sym != self.filter:
                    continue
                for rec in ticks:
                    if len(shown) < n:
                        line = format_record(rec, {int(rec["instrument_id"]): sym})
                        shown.append(line)
                        self.tape_lines.append(line)
                        self.out(line)
        return shown

    def only(self, symbol: str | None = None) -> None:
        self.filter = symbol.upper() if symbol else None

    def tape(self, n: int = 20) -> list[str]:
        lines = list(self.tape_lines)[-n:]
        for line in lines:
            self.out(line)
        return lines

    def close(self) -> None:
        self.client.close()

    def namespace(self) -> dict:
        return {"session": self, "client": self.client, "ladder": self.ladder, "step": self.step,
                "only": self.only, "tape": self.tape, "np": np}


BANNER = ("feedhandler shell: {what}\n"
          "  ladder(SYM, n)  bbo(SYM)  depth(SYM, n)  symbols()  step(n)  only(SYM)  tape(n)  rewind()  refresh()"
          "\n  books: feedhandler.book_view.Books; session: all of it (help(session))")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="feedhandler shell", description="An interactive Python session (ptpython when installed) with "
        "order books loaded from a capture, a running `feedhandler run --ring NAME`, or the exchange.",
        epilog=plain(__doc__.split("\n\n", 2)[2]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture", nargs="?", help="capture file to load (pcap, pcapng, BinaryFILE, gzip; default: "
                                              "none, then --attach-ring or --exchange)")
    p.add_argument("--protocol", choices=("auto", "itch50", "mdp3", "fix", "ouch42", "ouch50"), default="auto",
                   help="capture: feed protocol (default auto: from the file's bytes)")
    p.add_argument("--date", default=None, metavar="YYYY-MM-DD",
                   help="capture: trading day (default: from the capture: its time stamps or file name)")
    p.add_argument("--attach-ring", metavar="NAME", default=None,
                   help="attach to the shared-memory ring of a running `feedhandler run --ring NAME` "
                        "(default: none)")
    p.add_argument("--exchange", type=zmq_endpoint, metavar="ENDPOINT", default=None,
                   help="attach to the exchange's gateway through engine.client, e.g. tcp://127.0.0.1:5555 "
                        "(default: none)")
    p.add_argument("--md-endpoint", type=zmq_endpoint, metavar="ENDPOINT", default=None,
                   help="--exchange: its market-data address, for step() (default: none)")
    p.add_argument("--api-key", default="demo-mm", help="--exchange: API key (default demo-mm)")
    p.add_argument("--api-secret", default="demo-mm-secret", help="--exchange: its secret (default demo-mm-secret)")
    p.add_argument("--timeout", type=positive_seconds, default=2.0, help="--exchange: seconds to wait for a reply (default 2)")
    add_symbols(p, "only() the first of them at the start (step() and ladder() follow it)")
    p.add_argument("--no-load", action="store_true",
                   help="capture: start at its first record with empty books (step() through it) instead "
                        "of at its end (default: load it all)")
    p.add_argument("--plain", action="store_true", help="use Python's own REPL even when ptpython is installed")
    p.add_argument("-c", dest="code", metavar="CODE", default=None,
                   help="run CODE in the session and exit instead of starting the REPL (default: interactive)")
    add_debug(p)
    return p


def open_session(a, out: Callable[[str], None] = print):
    given = [x for x in (a.capture, a.attach_ring, a.exchange) if x]
    if len(given) != 1:
        raise UsageError("give exactly one of CAPTURE, --attach-ring NAME or --exchange ENDPOINT")
    if a.exchange:
        return ExchangeSource(a.exchange, a.api_key, a.api_secret, a.md_endpoint, a.timeout, out)
    if a.capture:
        from feedhandler.detect import capture_file_problem

        why = capture_file_problem(a.capture)
        if why is not None:
            raise UsageError(why)
        if a.date:
            from feedhandler.trading_day import check_date

            try:
                check_date(a.date)
            except ValueError as e:
                raise UsageError(str(e)) from None
        src = CaptureSource(a.capture, a.protocol, a.date)
    else:
        src = RingSource(a.attach_ring)
    s = Session(src, out)
    if not a.no_load:
        s.load()
    return s


def _interact(ns: dict, banner: str, plain: bool) -> None:
    why = None
    if plain:
        why = "--plain"
    elif not sys.stdin.isatty():
        why = "stdin is not a terminal"
    else:
        try:
            from ptpython.repl import embed
        except ImportError:
            why = "ptpython is not installed (pip install 'feedhandler[shell]')"
    if why is None:
        print(banner)
        embed(globals=ns, locals=ns, title="feedhandler shell")
        return
    import code

    print(f"(plain Python REPL: {why})", file=sys.stderr)
    code.interact(banner=banner, local=ns, exitmsg="")


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    s = open_session(a)
    try:
        if a.symbols:
            s.only(a.symbols[0])
        ns = s.namespace()
        what = getattr(getattr(s, "source", None), "describe", None) or f"exchange {a.exchange}"
        if isinstance(s, Session):
            what += f", {s.position:,} records applied, {len(s.books.symbols):,} symbols"
        if a.code is not None:
            exec(compile(a.code, "<feedhandler shell -c>", "exec"), ns)
            return EXIT_OK
        _interact(ns, BANNER.format(what=what), a.plain)
        return EXIT_OK
    finally:
        s.source.close() if isinstance(s, Session) else s.close()
