"""DBN as the readers people use take it: zstd-compressed ``OUT.dbn.zst`` (Databento's usual form), the
dataset's Databento publisher in every record, read back by databento_dbn and loaded by NautilusTrader's
``DatabentoDataLoader`` with no instrument-id override (optional: ``pip install 'feedhandler[nautilus]'``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.output import extension, format_for
from feedhandler.output.dbn import PUBLISHER_ID, DbnWriter, mbp1_path
from feedhandler.replay import ReplayOptions, replay

dbn = pytest.importorskip("databento_dbn")
zstandard = pytest.importorskip("zstandard")
pytest.importorskip("feedhandler.pipeline", reason="feedhandler.pipeline not built")

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
ITCH = PCAPS / "itch50_sample.pcap"
MDP3 = PCAPS / "mdp3_sample.pcap"
FIX = PCAPS / "fix44_sample.pcap"


def _decode(data: bytes):
    dec = dbn.DBNDecoder()
    dec.write(data)
    got = dec.decode()
    return got[0], got[1:]


def _unzstd(path) -> bytes:
    with open(path, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


@pytest.fixture(scope="module")
def itch_out(tmp_path_factory):
    d = tmp_path_factory.mktemp("itch")
    s_plain = replay(ITCH, ReplayOptions(out=str(d / "itch.dbn")))
    s_zst = replay(ITCH, ReplayOptions(out=str(d / "itch.dbn.zst")))
    return d, s_plain, s_zst


@pytest.fixture(scope="module")
def mdp3_out(tmp_path_factory):
    d = tmp_path_factory.mktemp("mdp3")
    s = replay(MDP3, ReplayOptions(out=str(d / "cme.dbn.zst")))
    replay(MDP3, ReplayOptions(out=str(d / "cme.dbn")))
    return d, s


def test_extension_and_paths():
    assert extension("X/a.DBN.ZST") == ".dbn.zst" and extension("a.dbn") == ".dbn" and extension("a.zst") == ".zst"
    assert format_for("a.dbn.zst") == "dbn"
    with pytest.raises(ValueError, match=r"\.dbn\.zst"):
        format_for("a.parquet.zst")
    assert mbp1_path("d/cme.dbn.zst") == "d/cme.mbp-1.dbn.zst" and mbp1_path("d/cme.dbn") == "d/cme.mbp-1.dbn"


def test_zst_is_the_plain_file_compressed(itch_out):
    d, s_plain, s_zst = itch_out
    raw = (d / "itch.dbn.zst").read_bytes()
    assert raw[:4] == b"\x28\xb5\x2f\xfd"                     # zstd frame magic
    plain = (d / "itch.dbn").read_bytes()
    assert _unzstd(d / "itch.dbn.zst") == plain
    assert len(raw) < len(plain) / 2
    assert s_zst["output"]["records"] == s_plain["output"]["records"] > 20_000
    assert s_zst["output"]["files"] == {"mbo": str(d / "itch.dbn.zst")}
    assert not [p for p in os.listdir(d) if ".part" in p]     # atomic: no temporaries left


def test_itch_records_carry_xnas_itch_publisher(itch_out):
    d, _, _ = itch_out
    meta, recs = _decode(_unzstd(d / "itch.dbn.zst"))
    assert meta.dataset == "XNAS.ITCH"
    assert {r.publisher_id for r in recs} == {PUBLISHER_ID["XNAS.ITCH"]} == {2}
    assert {"AAPL", "AMD", "META"} <= set(meta.symbols)
    ids = {r.instrument_id for r in recs}
    assert {int(m[0]["symbol"]) for m in meta.mappings.values()} == ids


def test_mdp3_records_carry_glbx_publisher(mdp3_out):
    d, s = mdp3_out
    assert s["output"]["files"] == {"mbo": str(d / "cme.dbn.zst"), "mbp-1": str(d / "cme.mbp-1.dbn.zst")}
    for name in ("cme.dbn.zst", "cme.mbp-1.dbn.zst"):
        meta, recs = _decode(_unzstd(d / name))
        assert meta.dataset == "GLBX.MDP3" and "ESZ3" in meta.symbols
        assert recs and {r.publisher_id for r in recs} == {PUBLISHER_ID["GLBX.MDP3"]} == {1}
        assert _unzstd(d / name) == (d / name[: -len(".zst")]).read_bytes()


def test_fix_keeps_publisher_zero(tmp_path):
    """A FIX session is no Databento dataset: publisher 0, dataset FH.FIX (see output/dbn.py)."""
    replay(FIX, ReplayOptions(out=str(tmp_path / "fix.dbn")))
    meta, recs = _decode((tmp_path / "fix.dbn").read_bytes())
    assert meta.dataset == "FH.FIX" and recs and {r.publisher_id for r in recs} == {0}


def test_publisher_of_records_that_have_one_is_kept(tmp_path):
    t = np.zeros(2, records.TICK_DTYPE)
    m = t.view(records.DTYPES["mbo"])
    m["rtype"], m["length"] = records.RTYPE["mbo"], 14
    m["action"], m["side"], m["ts_event"] = b"A", b"B", [10, 11]
    m["publisher_id"] = [0, 39]
    w = DbnWriter(tmp_path / "p.dbn", dataset="XNAS.ITCH")
    w.write(t)
    w.close()
    _, recs = _decode((tmp_path / "p.dbn").read_bytes())
    assert [r.publisher_id for r in recs] == [2, 39]


def test_publisher_ids_are_databentos():
    """Our numbers against Databento's publisher table as NautilusTrader ships it (the reader that needs
    them). databento_dbn's Python package has no Publisher enum (0.72), so that table is the reference."""
    nt = pytest.importorskip("nautilus_trader", reason="nautilus_trader not installed (pip install "
                             "'feedhandler[nautilus]'): Databento's publisher table comes with it")
    table = json.loads((Path(nt.__file__).parent / "adapters" / "databento" / "publishers.json").read_text())
    by_id = {p["publisher_id"]: p for p in table}
    for dataset, pid in PUBLISHER_ID.items():
        assert by_id[pid]["dataset"] == dataset
    assert by_id[2]["venue"] == "XNAS" and by_id[1]["venue"] == "GLBX"


def test_missing_zstandard_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import builtins

    from feedhandler.cli import main

    real_import = builtins.__import__

    def no_zstd(name, *a, **kw):
        if name == "zstandard":
            raise ImportError("No module named 'zstandard'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_zstd)
    rc = main(["replay", str(ITCH), "--out", str(tmp_path / "x.dbn.zst"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "zstandard" in err and "pip install" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_out_format_disagreeing_with_dbn_zst_is_refused(tmp_path, capsys):
    from feedhandler.cli import main

    rc = main(["replay", str(ITCH), "--out", str(tmp_path / "x.dbn.zst"), "--out-format", "parquet",
               "--no-progress"])
    assert rc == 2 and "dbn" in capsys.readouterr().err


# ---- NautilusTrader ------------------------------------------------------------------------------
def _loader():
    pytest.importorskip("nautilus_trader", reason="nautilus_trader not installed (optional, large: "
                        "pip install 'feedhandler[nautilus]'; .ci/run installs it when it can)")
    from nautilus_trader.adapters.databento.loaders import DatabentoDataLoader

    return DatabentoDataLoader()


def test_nautilus_loads_itch_order_book_deltas(itch_out):
    loader = _loader()
    from nautilus_trader.model.data import OrderBookDelta

    d, _, _ = itch_out
    data = loader.from_dbn_file(str(d / "itch.dbn.zst"))          # no instrument_id override
    assert len(data) == 21_166 and all(isinstance(x, OrderBookDelta) for x in data)
    ids = {str(x.instrument_id) for x in data}
    assert {"AAPL.XNAS", "AMD.XNAS", "META.XNAS"} <= ids and all(i.endswith(".XNAS") for i in ids)
    # every MBO record is a delta (adds, cancels, fills) but the 250 trade prints (action T: ITCH P and Q)
    _, recs = _decode(_unzstd(d / "itch.dbn.zst"))
    assert len(data) == sum(1 for r in recs if str(r.action) != "T") == len(recs) - 250


def test_nautilus_loads_mdp3_quote_ticks(mdp3_out):
    loader = _loader()
    from nautilus_trader.model.data import QuoteTick

    d, _ = mdp3_out
    data = loader.from_dbn_file(str(d / "cme.mbp-1.dbn.zst"))
    meta, recs = _decode(_unzstd(d / "cme.mbp-1.dbn.zst"))
    assert len(data) == len(recs) > 20 and all(isinstance(x, QuoteTick) for x in data)
    sym = {int(m[0]["symbol"]): s for s, m in meta.mappings.items()}     # instrument_id -> symbol
    assert [str(x.instrument_id) for x in data] == [f"{sym[r.instrument_id]}.GLBX" for r in recs]
    assert "ESZ3.GLBX" in {str(x.instrument_id) for x in data}
    both = [(x, r) for x, r in zip(data, recs) if r.levels[0].bid_px != dbn.UNDEF_PRICE
            and r.levels[0].ask_px != dbn.UNDEF_PRICE]
    assert both
    for x, r in both:
        assert x.bid_price.as_double() == pytest.approx(r.levels[0].bid_px / 1e9)
        assert x.ask_price.as_double() == pytest.approx(r.levels[0].ask_px / 1e9)
        assert int(x.ts_event) == r.ts_recv or int(x.ts_event) == r.ts_event


def test_zst_writer_abort_leaves_nothing(tmp_path):
    """A failed replay leaves no .dbn.zst (nor its MBP-1 sibling, nor a temporary)."""
    from feedhandler.protocols.mdp3.pcap import decode_pcap

    ref, _ = decode_pcap(MDP3, channels={14310: 0, 15310: 0})
    w = DbnWriter(tmp_path / "a.dbn.zst", dataset="GLBX.MDP3")
    assert w.write(ref) > 0 and "mbp-1" in w.files
    w.abort()
    assert os.listdir(tmp_path) == []
    w = DbnWriter(tmp_path / "b.dbn.zst", dataset="GLBX.MDP3")
    w.write(ref)
    w.close()
    assert sorted(os.listdir(tmp_path)) == ["b.dbn.zst", "b.mbp-1.dbn.zst"]
    meta, recs = _decode(_unzstd(tmp_path / "b.mbp-1.dbn.zst"))
    assert str(meta.schema) in ("mbp-1", "Schema.MBP_1") and {r.publisher_id for r in recs} == {1}
