"""The FIX sample's market data builds consistent books (bids below offers, no dangling entries)."""
import json
from pathlib import Path

from feedhandler.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "pcaps" / "fix44_sample.pcap"


def test_fix_sample_books_are_not_crossed(capsys):
    assert main(["replay", str(SAMPLE), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    rows = s["bbo"]
    assert rows, "the sample has market data"
    for row in rows:
        if row.get("bid_px") is not None and row.get("ask_px") is not None:
            assert row["bid_px"] < row["ask_px"], row
