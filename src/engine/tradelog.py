"""TradeLogger: every trade to CSV (and optionally Parquet), exactly once, in engine order.

One row per trade (the taker's fill event carries both sides)::

    trade_id, seq, symbol, price_raw, price, qty, aggressor_side, buy_account, sell_account,
    buy_order_id, sell_order_id, ts_event

``price_raw`` is the int64 1e-9 fixed-point price and ``price`` the same number as an exact decimal
string (no float anywhere). ``ts_event`` is the aggressor's gateway receive time (ns since the UNIX
epoch), which is journaled, so a log rebuilt by recovery is byte-identical.

Recovery: on opening an existing file the logger drops a torn last line and remembers the highest
trade id per symbol; fills replayed by the EngineManager's recovery that are already in the file are
skipped, the missing ones appended, so after a crash the log equals the log of an uninterrupted run.
"""
from __future__ import annotations

import csv
import io
import os

FIELDS = ("trade_id", "seq", "symbol", "price_raw", "price", "qty", "aggressor_side", "buy_account",
          "sell_account", "buy_order_id", "sell_order_id", "ts_event")
PRICE_SCALE = 1_000_000_000


def price_str(price_raw: int) -> str:
    """Exact decimal string of a 1e-9 fixed-point price: 1234500000000 -> '1234.5'."""
    sign = "-" if price_raw < 0 else ""
    whole, frac = divmod(abs(price_raw), PRICE_SCALE)
    frac_s = f"{frac:09d}".rstrip("0")
    return f"{sign}{whole}.{frac_s}" if frac_s else f"{sign}{whole}"


class TradeLogger:
    """Append trades to a CSV file.

    Parameters
    ----------
    path : str
        CSV file (created with a header line; appended to if it exists).
    parquet_path : str, optional
        Also write the whole log as Parquet (pyarrow) on close().
    flush_every : int
        Flush the file after this many rows (1 = every row). close()/flush() always flush.
    """

    def __init__(self, path: str, parquet_path: str | None = None, flush_every: int = 1):
        self.path = path
        self.parquet_path = parquet_path
        self.flush_every = max(1, flush_every)
        self.last_id: dict[str, int] = {}
        self.rows = 0
        self.skipped = 0
        self._pending = 0
        exists = os.path.exists(path) and os.path.getsize(path) > 0
        if exists:
            self._scan_existing()
        self._f = open(path, "a", newline="")
        self._w = csv.writer(self._f, lineterminator="\n")
        if not exists:
            self._w.writerow(FIELDS)
            self._f.flush()

    def _scan_existing(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        if not data.endswith(b"\n"):  # a torn last row from a crash: drop it, replay rewrites it
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        reader = csv.reader(io.StringIO(data.decode()))
        header = next(reader, None)
        if header is None:
            return
        if tuple(header) != FIELDS:
            raise ValueError(f"{self.path}: not a trade log (header {header})")
        for row in reader:
            sym, tid = row[2], int(row[0])
            if tid > self.last_id.get(sym, 0):
                self.last_id[sym] = tid
            self.rows += 1

    def on_fill(self, ev: dict) -> bool:
        """Log the trade of a taker fill event (maker fills are ignored). False when already logged."""
        if ev.get("type") != "fill" or ev.get("liquidity") != "taker":
            return False
        sym, tid = ev["symbol"], ev["trade_id"]
        if tid <= self.last_id.get(sym, 0):
            self.skipped += 1
            return False
        self.last_id[sym] = tid
        if ev["side"] == "B":
            buy_a, sell_a, buy_o, sell_o = ev["account"], ev["contra_account"], ev["order_id"], ev["contra_order_id"]
        else:
            buy_a, sell_a, buy_o, sell_o = ev["contra_account"], ev["account"], ev["contra_order_id"], ev["order_id"]
        self._w.writerow((tid, ev["seq"], sym, ev["price"], price_str(ev["price"]), ev["qty"], ev["side"], buy_a,
                          sell_a, buy_o, sell_o, ev["ts_event"]))
        self.rows += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()
        return True

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()
        self._pending = 0

    def close(self) -> None:
        if self._f.closed:
            return
        self.flush()
        self._f.close()
        if self.parquet_path:
            write_parquet(self.path, self.parquet_path)


def read_trades(path: str) -> list[dict]:
    """The rows of a trade log CSV with integer columns as ints."""
    ints = {"trade_id", "seq", "price_raw", "qty", "buy_order_id", "sell_order_id", "ts_event"}
    with open(path, newline="") as f:
        return [{k: int(v) if k in ints else v for k, v in row.items()} for row in csv.DictReader(f)]


def write_parquet(csv_path: str, parquet_path: str) -> None:
    """Convert a trade log CSV to Parquet with integer columns typed (needs pyarrow)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # optional dependency
        raise ImportError("Parquet trade logs need pyarrow: pip install 'feedhandler[parquet]'") from e
    rows = read_trades(csv_path)
    types = {"trade_id": pa.uint64(), "seq": pa.uint64(), "price_raw": pa.int64(), "qty": pa.uint32(),
             "buy_order_id": pa.uint64(), "sell_order_id": pa.uint64(), "ts_event": pa.uint64()}
    cols = {k: pa.array([r[k] for r in rows], type=types.get(k, pa.string())) for k in FIELDS}
    pq.write_table(pa.table(cols), parquet_path)
