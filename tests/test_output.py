"""Record outputs (DBN, Parquet, .npy): written by ``feedhandler replay --out`` and read back by
independent readers (databento_dbn, pyarrow, numpy) with every field compared."""
from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pytest

from feedhandler import records
from feedhandler.output import SymbolMap, format_for
from feedhandler.output.dbn import encode_metadata
from feedhandler.synth import generate_day

pytest.importorskip("feedhandler.pipeline", reason="feedhandler.pipeline not built")
pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo not built")

from feedhandler.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    d = generate_day(15_000, 12, seed=21)
    p = tmp_path_factory.mktemp("out") / "day.pcap"
    d.write_pcap(p)
    return d, p


def _replay(path, out, *extra):
    rc = main(["replay", str(path), "--out", str(out), "--no-progress", *extra])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def npy_records(capture, tmp_path_factory):
    _, p = capture
    out = _replay(p, tmp_path_factory.mktemp("npy") / "t.npy")
    return np.load(out).view(records.TICK_DTYPE)


def test_npy_equals_feed_plus_book(capture, npy_records):
    """The .npy holds the records of Feed -> BookSet.apply, byte for byte (an independent run)."""
    from feedhandler.books import BookSet
    from feedhandler.pipeline import Feed

    _, p = capture
    recs = Feed(str(p)).read_all()
    BookSet().apply(recs)
    assert npy_records.shape == recs.shape
    assert npy_records.tobytes() == recs.tobytes()
    # enriched: deletes carry size/price/side filled in by the book
    mbo = records.view(npy_records[npy_records["rtype"] == records.RTYPE["mbo"]], "mbo")
    dels = mbo[(mbo["action"] == b"C") & ((mbo["flags"] & 0x02) != 0)]
    assert dels.shape[0] > 0
    assert (dels["size"] > 0).all() and (dels["side"] != b"N").all()


@pytest.mark.parametrize("version", [2, 3])
def test_dbn_metadata_matches_databento(version):
    dbn = pytest.importorskip("databento_dbn")
    raw = encode_metadata(dataset="XNAS.ITCH", start=1_700_000_000_000_000_000, end=1_700_000_000_000_001_000,
                          symbols=["AAPL", "MSFT"], version=version,
                          mappings=[("AAPL", [(20240315, 20240316, "1")]), ("MSFT", [(20240315, 20240316, "13")])])
    assert raw[:4] == b"DBN" + bytes([version])
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8
    if version == 3:
        assert len(raw) % 8 == 0
    m = dbn.Metadata.decode(raw, dbn.VersionUpgradePolicy.AS_IS)
    assert m.version == version
    assert m.dataset == "XNAS.ITCH" and m.start == 1_700_000_000_000_000_000 and m.end == 1_700_000_000_000_001_000
    assert str(m.schema).lower().endswith("mbo")
    assert list(m.symbols) == ["AAPL", "MSFT"]
    assert m.mappings["MSFT"][0]["symbol"] == "13"
    assert m.mappings["AAPL"][0]["start_date"] == dt.date(2024, 3, 15)
    # the reference encoder writes exactly the same bytes
    assert bytes(m.encode()) == raw


def test_dbn_read_back_every_field(capture, npy_records, tmp_path):
    dbn = pytest.importorskip("databento_dbn")
    day, p = capture
    out = _replay(p, tmp_path / "t.dbn")
    data = out.read_bytes()
    dec = dbn.DBNDecoder()
    dec.write(data)
    got = dec.decode()
    meta, recs = got[0], got[1:]
    assert meta.version == 3
    assert sorted(meta.symbols) == day.symbols
    for loc, tk in enumerate(day.symbols, 1):
        assert meta.mappings[tk][0]["symbol"] == str(loc)
    src = npy_records[(npy_records["rtype"] == records.RTYPE["mbo"]) | (npy_records["rtype"] == records.RTYPE["trade"])]
    assert len(recs) == src.shape[0] > 1000
    mbo = records.view(src, "mbo")
    trd = records.view(src, "trade")
    is_trade = src["rtype"] == records.RTYPE["trade"]
    assert is_trade.sum() > 0
    body = memoryview(data)[8 + struct.unpack_from("<I", data, 4)[0]:]
    assert len(body) == 56 * len(recs)
    for i, r in enumerate(recs):
        assert int(r.rtype) == records.RTYPE["mbo"]
        assert r.publisher_id == 2 and src["publisher_id"][i] == 0   # XNAS.ITCH's Databento publisher
        assert r.instrument_id == src["instrument_id"][i]
        assert r.ts_event == src["ts_event"][i]
        if is_trade[i]:
            t = trd[i]
            assert (str(r.action), str(r.side)) == ("T", t["side"].decode())
            assert (r.order_id, r.price, r.size, r.flags) == (t["order_id"], t["price"], t["size"], t["flags"])
            assert (r.ts_recv, r.ts_in_delta, r.sequence, r.channel_id) == (t["ts_recv"], t["ts_in_delta"],
                                                                            t["sequence"], 0)
        else:
            m = mbo[i]
            assert str(r.action) == m["action"].decode() and str(r.side) == m["side"].decode()
            assert (r.order_id, r.price, r.size, r.flags, r.channel_id) == (
                m["order_id"], m["price"], m["size"], m["flags"], m["channel_id"])
            assert (r.ts_recv, r.ts_in_delta, r.sequence) == (m["ts_recv"], m["ts_in_delta"], m["sequence"])
            # MBO records are written unchanged but for the publisher: the first 56 bytes of the slot
            slot = bytearray(src[i : i + 1].tobytes()[:56])
            slot[2:4] = (2).to_bytes(2, "little")
            assert bytes(body[56 * i : 56 * (i + 1)]) == bytes(slot)
    assert meta.start == int(src["ts_event"].min()) and meta.end == int(src["ts_event"].max()) + 1


def test_dbn_symbol_filter(capture, tmp_path):
    dbn = pytest.importorskip("databento_dbn")
    day, p = capture
    pick = day.symbols[:2]
    out = _replay(p, tmp_path / "f.dbn", "--symbols", ",".join(pick))
    dec = dbn.DBNDecoder()
    dec.write(out.read_bytes())
    recs = dec.decode()[1:]
    assert recs and {r.instrument_id for r in recs} == {1, 2}


def test_parquet_tables(capture, npy_records, tmp_path):
    """Real types (timestamps, exact decimals with nulls, strings, symbols), every record kind, read back
    with pyarrow and with pandas."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from decimal import Decimal

    day, p = capture
    out = _replay(p, tmp_path / "t.parquet")
    t = pq.read_table(out)
    mbo = records.view(npy_records[npy_records["rtype"] == records.RTYPE["mbo"]], "mbo")
    assert t.num_rows == mbo.shape[0]
    sch = t.schema
    assert sch.field("ts_event").type == pa.timestamp("ns", tz="UTC") == sch.field("ts_recv").type
    assert sch.field("price").type == pa.decimal128(38, 9)
    assert sch.field("symbol").type == pa.string() and t.column_names.index("symbol") == \
        t.column_names.index("instrument_id") + 1
    for name in ("instrument_id", "order_id", "size", "flags", "sequence"):
        assert np.array_equal(t.column(name).to_numpy(), mbo[name]), name
    for name in ("ts_event", "ts_recv"):
        assert np.array_equal(t.column(name).cast(pa.int64()).to_numpy(), mbo[name].astype(np.int64)), name
    # exact prices: the decimal's unscaled integer is the record's fixed-point value; no price -> null
    undef = mbo["price"] == records.UNDEF_PRICE
    px = t.column("price").to_pylist()
    assert [v is None for v in px] == undef.tolist()
    assert all(v == Decimal(int(r)).scaleb(-9) for v, r in zip(px, mbo["price"].tolist()) if v is not None)
    assert t.column("action").to_pylist() == [a.decode() for a in mbo["action"].tolist()]
    sym = t.column("symbol").to_pylist()
    assert sym == [day.symbols[i - 1] for i in mbo["instrument_id"].tolist()]
    adds_f = t.filter(t.column("attribution").is_valid()).column("attribution").to_pylist()
    assert any(a for a in adds_f), "F adds carry an MPID attribution"
    kinds = {records.RTYPE_NAME[r] for r in np.unique(npy_records["rtype"]).tolist()}
    for kind in kinds - {"mbo"}:
        side = pq.read_table(str(out).replace(".parquet", f".{kind}.parquet"))
        assert side.num_rows == int((npy_records["rtype"] == records.RTYPE[kind]).sum()), kind
        assert side.schema.field("ts_recv").type == pa.timestamp("ns", tz="UTC"), kind
        assert not any(n.startswith("_") for n in side.column_names), kind
    sd = pq.read_table(str(out).replace(".parquet", ".stock_directory.parquet"))
    assert sorted(sd.column("symbol").to_pylist()) == day.symbols
    # the same file in pandas: datetime64[ns, UTC], Decimal prices, None for no price
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(out)
    assert str(df["ts_event"].dtype) in ("datetime64[ns, UTC]",)
    assert df["ts_event"].iloc[0] == pd.Timestamp(int(mbo["ts_event"][0]), unit="ns", tz="UTC")
    first = int(np.flatnonzero(~undef)[0])
    assert df["price"].iloc[first] == Decimal(int(mbo["price"][first])).scaleb(-9)
    if undef.any():
        assert df["price"].iloc[int(np.flatnonzero(undef)[0])] is None
    assert df["symbol"].iloc[0] == day.symbols[int(mbo["instrument_id"][0]) - 1]


def test_parquet_is_frames_to_arrow(capture, npy_records, tmp_path):
    """One conversion: the Parquet table equals frames.to_arrow of the same records."""
    pq = pytest.importorskip("pyarrow.parquet")
    from feedhandler import frames

    day, p = capture
    out = _replay(p, tmp_path / "u.parquet")
    want = frames.to_arrow(npy_records, "mbo", symbols=frames.symbols_of(npy_records))
    assert pq.read_table(out).equals(want)
    # many row groups, batches cut anywhere: the same table
    from feedhandler.output.parquet import ParquetWriter

    sm = SymbolMap()
    w = ParquetWriter(tmp_path / "v.parquet", symbols=sm, row_group=500)
    for i in range(0, npy_records.shape[0], 777):
        sm.update(npy_records[i: i + 777])
        w.write(npy_records[i: i + 777])
    w.close()
    f = pq.ParquetFile(tmp_path / "v.parquet")
    assert f.metadata.num_row_groups > 5
    assert f.read().combine_chunks().equals(want.combine_chunks())


def test_parquet_missing_pyarrow_is_a_clear_error(capture, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *a, **kw):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    _, p = capture
    rc = main(["replay", str(p), "--out", str(tmp_path / "x.parquet"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "pip install" in err and "pyarrow" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_format_for():
    assert format_for("a.dbn") == "dbn" and format_for("a.PARQUET") == "parquet" and format_for("a.npy") == "npy"
    assert format_for("a.bin", "npy") == "npy"
    with pytest.raises(ValueError):
        format_for("a.bin")
    with pytest.raises(ValueError):
        format_for("a.dbn", "csv")


def test_symbol_map_learns_stock_directory():
    t = records.empty(3)
    sd = records.view(t, "stock_directory")
    t["rtype"][:2] = records.RTYPE["stock_directory"]
    sd["instrument_id"][:2] = [7, 9]
    sd["symbol"][:2] = [b"AAPL    ", b"MSFT    "]
    m = SymbolMap()
    assert m.update(t) == 2
    assert m() == {7: "AAPL", 9: "MSFT"}
    assert m.ids_of(["MSFT", "X"]) == {"MSFT": 9}
