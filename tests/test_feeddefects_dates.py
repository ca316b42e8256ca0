"""The trading day of outputs: from the capture's time stamps, else the NASDAQ file name
(MMDDYYYY.NASDAQ_ITCH50), else refused (exit 2, one line) unless --date is given; never today's date
for a file, never 1970 in silence. DBN metadata lists only the symbols written."""
from __future__ import annotations

import datetime as _dt
import gzip
import json
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from feedhandler.cli import main

dbn = pytest.importorskip("databento_dbn", reason="databento-dbn is a test dependency")
PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
NY = ZoneInfo("America/New_York")


def read_dbn(path: Path):
    dec = dbn.DBNDecoder()
    dec.write(path.read_bytes())
    got = dec.decode()
    return got[0], got[1:]


def ny_dates(recs) -> set[_dt.date]:
    return {_dt.datetime.fromtimestamp(r.ts_event / 1e9, NY).date() for r in recs}


def capture_day(capsys) -> str:
    assert main(["replay", str(PCAPS / "itch50_sample.pcap"), "--json", "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["date_source"] == "capture time stamps"
    return s["date"]


def test_run_file_takes_the_capture_day_not_today(tmp_path, capsys):
    day = capture_day(capsys)
    out = tmp_path / "run.dbn"
    assert main(["run", "--file", str(PCAPS / "itch50_sample.pcap"), "--pace", "max", "--out", str(out),
                 "--status-interval", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["date"] == day and s["date_source"] == "capture time stamps"
    meta, recs = read_dbn(out)
    assert recs and ny_dates(recs) == {_dt.date.fromisoformat(day)}
    assert _dt.date.today().isoformat() != day       # the bug this guards against stamped today


def test_binaryfile_without_date_refuses_outputs(tmp_path, capsys):
    out = tmp_path / "x.dbn"
    code = main(["replay", str(PCAPS / "itch50_sample.bin.gz"), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "trading day is unknown" in err and "--date" in err and err.count("\n") == 1
    assert not out.exists()
    # no output asked: the replay runs and says the day is unknown
    assert main(["replay", str(PCAPS / "itch50_sample.bin.gz"), "--no-progress"]) == 0
    assert "trading day unknown" in capsys.readouterr().out
    # run --file too
    code = main(["run", "--file", str(PCAPS / "itch50_sample.bin.gz"), "--out", str(out), "--status-interval", "0"])
    assert code == 2 and "--date" in capsys.readouterr().err
    assert not out.exists()


def test_binaryfile_day_from_the_nasdaq_file_name(tmp_path, capsys):
    named = tmp_path / "08222023.NASDAQ_ITCH50.gz"
    shutil.copy(PCAPS / "itch50_sample.bin.gz", named)
    plain = tmp_path / "03152024.NASDAQ_ITCH50"
    plain.write_bytes(gzip.decompress((PCAPS / "itch50_sample.bin.gz").read_bytes()))
    for path, day in ((named, "2023-08-22"), (plain, "2024-03-15")):
        out = tmp_path / f"{day}.dbn"
        assert main(["replay", str(path), "--out", str(out), "--json", "--no-progress"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["date"] == day and s["date_source"] == "file name"
        meta, recs = read_dbn(out)
        assert ny_dates(recs) == {_dt.date.fromisoformat(day)}
        assert meta.mappings and all(iv["start_date"] == _dt.date.fromisoformat(day)
                                     for m in meta.mappings.values() for iv in m)
    # --date wins over the name
    out = tmp_path / "d.dbn"
    assert main(["replay", str(named), "--date", "2023-09-01", "--out", str(out), "--json", "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["date"] == "2023-09-01" and s["date_source"] == "--date"


def test_dbn_metadata_lists_only_the_symbols_written(tmp_path, capsys):
    out_all = tmp_path / "all.dbn"
    assert main(["replay", str(PCAPS / "itch50_sample.pcap"), "--out", str(out_all), "--json", "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    busiest = s["bbo"][0]["symbol"]
    meta_all, recs_all = read_dbn(out_all)
    written = {r.instrument_id for r in recs_all}
    listed = {iid for m in meta_all.mappings.values() for iv in m for iid in [int(iv["symbol"])]}
    assert listed == written            # not the whole stock directory
    out = tmp_path / "one.dbn"
    assert main(["replay", str(PCAPS / "itch50_sample.pcap"), "--symbols", busiest, "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    meta, recs = read_dbn(out)
    assert list(meta.symbols) == [busiest] and list(meta.mappings) == [busiest]


@pytest.mark.parametrize("bad", ["1900-01-01", "1969-12-31", "3000-01-01", "2024-13-01"])
def test_impossible_dates_are_refused_in_words(bad, capsys):
    assert main(["replay", str(PCAPS / "itch50_sample.pcap"), "--date", bad, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "midnight_ns" not in err and bad in err
