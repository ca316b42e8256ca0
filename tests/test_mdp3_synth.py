"""The MDP 3.0 synth mode, the committed sample capture, and the fh_decode_fn entry point."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from feedhandler import records as R
from feedhandler.protocols.mdp3 import Mdp3Decoder
from feedhandler.protocols.mdp3.synth import INCREMENTAL_A, SNAPSHOT, generate, read_pcap

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "mdp3_sample.pcap"
SCHEMA_DIR = ROOT.parent / "shared" / "data" / "mdp3" / "schema"
pytestmark = pytest.mark.skipif(not SCHEMA_DIR.exists(), reason=f"{SCHEMA_DIR} (shared reference data) is absent")

SAMPLE_ARGS = dict(messages=200, seed=1, ab=True)  # how pcaps/mdp3_sample.pcap is made


def test_generate_is_deterministic(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    sa = generate(a, messages=300, seed=9)
    generate(b, messages=300, seed=9)
    assert a.read_bytes() == b.read_bytes()
    assert sa["messages"] >= 300
    assert generate(tmp_path / "c.pcap", messages=300, seed=10) != sa


def test_sample_capture_is_reproducible(tmp_path):
    assert SAMPLE.exists(), "pcaps/mdp3_sample.pcap is missing"
    generate(tmp_path / "s.pcap", **SAMPLE_ARGS)
    assert (tmp_path / "s.pcap").read_bytes() == SAMPLE.read_bytes(), (
        "pcaps/mdp3_sample.pcap is stale: regenerate with feedhandler.protocols.mdp3.synth.generate("
        f"'pcaps/mdp3_sample.pcap', **{SAMPLE_ARGS})")


def test_sample_capture_decodes_cleanly():
    pk = read_pcap(SAMPLE)
    dec = Mdp3Decoder()
    ch = [1 if port == SNAPSHOT[1] else 0 for _, port, _ in pk]
    ticks = dec.decode_packets([p for _, _, p in pk], ts_recv=[t for t, _, _ in pk], channel=ch)
    c = dec.counters()
    assert dec.rejects() == 0
    assert c["packet_duplicate"] == sum(1 for _, port, _ in pk if port != INCREMENTAL_A[1] and port != SNAPSHOT[1])
    names = {R.RTYPE_NAME[int(r)] for r in np.unique(ticks["rtype"])}
    assert {"mbp_update", "mbo", "trade", "statistic", "security_status", "instrument_def"} <= names
    # ts_recv comes from the capture: no record is flagged as lacking one
    m = R.view(ticks[ticks["rtype"] == R.RTYPE["mbp_update"]], "mbp_update")
    assert (m["ts_recv"] > 0).all() and not (m["flags"] & 0x08).any()
    # DBN ts_in_delta = ts_recv - SendingTime: synth frames are captured 3 us after they are sent (A feed)
    tr = R.view(ticks[ticks["rtype"] == R.RTYPE["trade"]], "trade")
    assert len(tr) and set(tr["ts_in_delta"]) <= {3_000, 9_000}


MSG_DTYPE = np.dtype([("data", "<u8"), ("len", "<u4"), ("channel", "<u2"), ("flags", "<u2"),
                      ("ts_recv", "<u8"), ("sequence", "<u8")])
assert MSG_DTYPE.itemsize == 32  # fh/msg.h: _Static_assert(sizeof(fh_msg) == 32)


def test_decode_fn_capsule_matches_decode_packets():
    pk = read_pcap(SAMPLE)
    payloads = [p for _, port, p in pk if port == INCREMENTAL_A[1]]
    ref = Mdp3Decoder().decode_packets(payloads, ts_recv=np.arange(1, len(payloads) + 1))
    dec = Mdp3Decoder()
    fn_cap, ctx_cap = dec.decode_fn()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    proto = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                             ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t))
    fn = proto(get(fn_cap, b"fh_decode_fn"))
    ctx = get(ctx_cap, b"fh_mdp3_ctx")
    bufs = [np.frombuffer(p, dtype=np.uint8) for p in payloads]
    msgs = np.zeros(len(bufs), dtype=MSG_DTYPE)
    msgs["data"] = [b.ctypes.data for b in bufs]
    msgs["len"] = [len(b) for b in bufs]
    msgs["flags"] = 2  # FH_MSG_TS_SW
    msgs["ts_recv"] = np.arange(1, len(bufs) + 1)
    out = R.empty(200)  # small on purpose (>= 154 for a 1500-byte packet): the rest is passed again
    got, done, n_out = [], 0, ctypes.c_size_t()
    while done < len(bufs):
        k = fn(ctx, msgs.ctypes.data + done * 32, len(bufs) - done, out.ctypes.data, len(out), ctypes.byref(n_out))
        assert k > 0
        got.append(out[: n_out.value].tobytes())  # bytes: see the note on structured copies in _decoder
        done += k
    assert b"".join(got) == ref.tobytes()


def test_decode_pcap_and_sniff():
    from feedhandler.framing.cme import sniff
    from feedhandler.protocols.mdp3.pcap import decode_pcap

    ticks, dec = decode_pcap(SAMPLE, channels={INCREMENTAL_A[1]: 0, 15310: 0})
    c = dec.counters()
    assert dec.rejects() == 0 and c["packet_duplicate"] > 0 and c["packet_gaps"] == 0
    pk = read_pcap(SAMPLE)
    assert all(sniff(p) for _, _, p in pk)
    assert not sniff(b"\0" * 40) and not sniff(pk[0][2][:15])
    real = ROOT.parent / "shared" / "data" / "mdp3" / "pcap" / "v9_MdIncrementalRefreshBook.pcap"
    if real.exists():
        assert all(sniff(p) for _, _, p in read_pcap(real))
