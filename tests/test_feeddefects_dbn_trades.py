"""MDP3 DBN output counts each trade once: a TradeSummary's trade entries are ``T`` records, its per-order
fill entries ``F`` records (as in the Parquet output). Read back with databento_dbn; the traded volume
must equal the sum of the TradeSummary MDTradeEntry sizes as the independent sbedecoder reads them."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records
from feedhandler.protocols.mdp3.synth import generate, read_pcap
from feedhandler.replay import ReplayOptions, replay

dbn = pytest.importorskip("databento_dbn", reason="databento-dbn is a test dependency: pip install databento-dbn")
sbedecoder = pytest.importorskip("sbedecoder", reason="sbedecoder (PyPI) is the reference: pip install sbedecoder")

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mdp3" / "schema"


def _schema_version(payloads) -> int:
    for pl in payloads:
        if len(pl) >= 22:
            return struct.unpack_from("<H", pl, 20)[0]   # packet header 12, msg size 2, SBE header: version
    raise AssertionError("no MDP3 message")


def sbe_trade_volume(path) -> tuple[int, int]:
    """(sum of MDTradeEntry sizes, trade entries) of every TradeSummary (busts left out), by sbedecoder."""
    pk = [x for x in read_pcap(path)]
    payloads = [x[2] for x in pk]
    ver = _schema_version(payloads)
    xml = SCHEMAS / f"Cme.Futures.Mdp3.Sbe.v1.{ver}.xml"
    if not xml.exists():
        pytest.skip(f"{xml} (shared reference data) is absent")
    schema = sbedecoder.MDPSchema()
    schema.parse(str(xml))
    parser = sbedecoder.SBEParser(sbedecoder.MDPMessageFactory(schema))
    vol = n = 0
    seen = set()
    for pl in payloads:
        seq = int.from_bytes(pl[:4], "little")
        if seq in seen:          # the B feed repeats A's packets
            continue
        seen.add(seq)
        for m in parser.parse(pl, 12):
            if m.name.replace("LongQty", "") != "MDIncrementalRefreshTradeSummary":
                continue
            # sbedecoder re-wraps shared field objects: read each entry while it is current
            for g in m.groups:
                if g.name != "no_md_entries":
                    continue
                for rg in g.repeating_groups:
                    e = {f.name: f.raw_value for f in rg.fields}
                    if e["md_update_action"] != 2:
                        vol += e["md_entry_size"]
                        n += 1
    return vol, n


def dbn_trades(path) -> list:
    dec = dbn.DBNDecoder()
    dec.write(Path(path).read_bytes())
    got = dec.decode()
    return [r for r in got[1:] if isinstance(r, dbn.MBOMsg) and str(r.action) in ("T", "F", "Action.TRADE",
                                                                                 "Action.FILL")]


def _action(r) -> str:
    a = r.action
    return {"Action.TRADE": "T", "Action.FILL": "F"}.get(str(a), str(a))


@pytest.mark.parametrize("source", ["sample", "synth"])
def test_mdp3_dbn_volume_counts_each_trade_once(tmp_path, source):
    if source == "sample":
        cap = PCAPS / "mdp3_sample.pcap"
    else:
        cap = tmp_path / "s.pcap"
        try:
            generate(cap, messages=3000, seed=5, ab=True)
        except Exception as e:   # the generator needs CME's schema XML
            pytest.skip(f"synth needs the MDP3 schema: {e}")
    out = tmp_path / "cme.dbn"
    npy = tmp_path / "cme.npy"
    replay(cap, ReplayOptions(out=str(out)))
    replay(cap, ReplayOptions(out=str(npy)))
    ticks = np.load(npy).view(records.TICK_DTYPE)
    tr = records.view(ticks[ticks["rtype"] == records.RTYPE["trade"]], "trade")
    fills_ours = int((tr["action"] == b"F").sum())
    trades_ours = int((tr["action"] == b"T").sum())
    assert trades_ours > 0 and fills_ours > 0, "the capture must hold trades with order-level fills"

    recs = dbn_trades(out)
    t = [r for r in recs if _action(r) == "T"]
    f = [r for r in recs if _action(r) == "F"]
    assert len(t) == trades_ours and len(f) == fills_ours
    assert all(r.order_id != 0 for r in f)
    vol_ref, n_ref = sbe_trade_volume(cap)
    assert len(t) == n_ref
    assert sum(r.size for r in t) == vol_ref
    # the fills are the same volume again, order by order: a reader summing every trade-like record
    # would double it, which is why they must not be 'T'
    assert sum(r.size for r in f) <= vol_ref * 2
