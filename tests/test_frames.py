"""Record batches as Arrow/pandas/polars tables: timestamps, exact decimal prices, nulls, symbols."""
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from feedhandler import frames, records
from feedhandler.pipeline import Feed

pa = pytest.importorskip("pyarrow")
ROOT = Path(__file__).resolve().parents[1]


def _sample():
    feed = Feed(str(ROOT / "pcaps" / "itch50_sample.pcap"))
    batch = records.empty(1 << 16)
    parts = []
    while n := feed.read(batch):
        parts.append(batch[:n].copy())
    return records.concat(parts)


@pytest.fixture(scope="module")
def ticks():
    return _sample()


def test_fixed_point_fields_are_the_headers_1e9_fields():
    """The one definition is csrc/include/fh/record.h: every int64 field it documents in 1e-9 units."""
    text = (ROOT / "csrc" / "include" / "fh" / "record.h").read_text()
    documented = set(re.findall(r"int64_t\s+(\w+);\s*/\*[^*]*1e-9 units", text))
    assert documented <= frames.FIXED_POINT_FIELDS
    in_layouts = {f for dt in records.DTYPES.values() for f in dt.names if f in frames.FIXED_POINT_FIELDS}
    assert in_layouts == frames.FIXED_POINT_FIELDS
    for dt in records.DTYPES.values():
        for f in set(dt.names) & frames.FIXED_POINT_FIELDS:
            assert dt[f] == np.dtype("<i8"), f


def test_mbo_table_types_and_values(ticks):
    mbo = ticks[ticks["rtype"] == records.RTYPE["mbo"]].view(records.DTYPES["mbo"])
    syms = frames.symbols_of(ticks)
    assert len(syms) == 25 and all(s and s == s.strip() for s in syms.values())
    t = frames.to_arrow(ticks, "mbo", symbols=syms)
    assert t.num_rows == mbo.shape[0] > 1000
    assert t.schema.field("ts_event").type == pa.timestamp("ns", tz="UTC")
    assert t.schema.field("ts_recv").type == pa.timestamp("ns", tz="UTC")
    assert t.schema.field("price").type == pa.decimal128(38, 9)
    assert t.schema.field("action").type == pa.string()
    assert t.column_names.index("symbol") == t.column_names.index("instrument_id") + 1
    # exact: each defined price is its fixed-point integer / 1e9; undefined prices are null
    got = t.column("price").to_pylist()
    undef = mbo["price"] == records.UNDEF_PRICE
    for i in range(0, mbo.shape[0], 97):
        raw = int(mbo["price"][i])
        assert got[i] is None if undef[i] else got[i] == Decimal(raw).scaleb(-9)
    assert t.column("price").null_count == int(undef.sum())
    assert t.column("ts_event").cast(pa.int64()).to_pylist()[:50] == mbo["ts_event"][:50].astype(np.int64).tolist()
    s = t.column("symbol").to_pylist()
    assert all(s[i] == syms[int(mbo["instrument_id"][i])] for i in range(0, len(s), 101))


def test_float_and_raw_prices_and_unknown_symbols(ticks):
    mbo = ticks[ticks["rtype"] == records.RTYPE["mbo"]].view(records.DTYPES["mbo"])
    f = frames.to_arrow(mbo, "mbo", prices="float").column("price").to_numpy(zero_copy_only=False)
    r = frames.to_arrow(mbo, "mbo", prices="raw").column("price").to_pylist()
    ok = mbo["price"] != records.UNDEF_PRICE
    assert np.allclose(f[ok], mbo["price"][ok] / 1e9)
    assert np.isnan(f[~ok]).all() and all(r[i] is None for i in np.flatnonzero(~ok)[:20])
    t = frames.to_arrow(mbo[:10], "mbo", symbols={})
    assert t.column("symbol").null_count == 10
    with pytest.raises(ValueError, match="prices must be"):
        frames.to_arrow(mbo, "mbo", prices="cents")
    with pytest.raises(ValueError, match="unknown record kind"):
        frames.to_arrow(mbo, "nope")


def test_dates_null_and_reserved_fields_dropped():
    st = np.zeros(3, dtype=records.DTYPES["statistic"])
    st["rtype"] = records.RTYPE["statistic"]
    st["trading_date"] = [19797, 65535, 0]
    st["price"] = [1_500_000_000, records.UNDEF_PRICE, -250_000_000]
    t = frames.to_arrow(st, "statistic")
    assert t.schema.field("trading_date").type == pa.date32()
    assert [d and d.isoformat() for d in t.column("trading_date").to_pylist()] == ["2024-03-15", None, "1970-01-01"]
    assert t.column("price").to_pylist() == [Decimal("1.5"), None, Decimal("-0.25")]
    assert not any(c.startswith("_") for c in t.column_names)


def test_pandas_and_polars(ticks):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    df = frames.to_pandas(ticks, "trade", prices="float", symbols=frames.symbols_of(ticks))
    assert str(df["ts_event"].dtype) == "datetime64[ns, UTC]" and df["price"].dtype == np.float64
    assert df["ts_event"].dt.year.eq(2024).all()
    assert len(df) == int((ticks["rtype"] == records.RTYPE["trade"]).sum())
    pf = frames.to_polars(ticks, "mbo")
    assert pf.schema["ts_recv"] == pl.Datetime("ns", "UTC") and isinstance(pf.schema["price"], pl.Decimal)
    assert pd is not None
