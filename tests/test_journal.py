"""Journal: framing, torn tails, fsync policies, recovery (snapshot + tail), SIGKILL mid-stream, hot standby."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from reference_matcher import dict_flow  # noqa: E402

from engine.journal import (MAGIC, JournalCorrupt, JournalError, JournalFollower, JournalWriter, frame,  # noqa: E402
                            next_valid_frame, read_journal, scan)
from engine.manager import EngineManager, StandbyEngine, _unpack_str  # noqa: E402
from engine.orders import REQ_DTYPE  # noqa: E402
from engine.tradelog import TradeLogger  # noqa: E402

SYMS = ["AAPL", "MSFT", "NVDA"]
N = 3000
SEED = 21


# ---- framing ---------------------------------------------------------------------------------------

def test_frame_roundtrip_and_torn_tail(tmp_path):
    path = str(tmp_path / "j.bin")
    w = JournalWriter(path, fsync="batch")
    payloads = [bytes([i]) * (1 + i * 7 % 50) for i in range(100)]
    for p in payloads:
        w.append(p)
    w.commit()
    w.close()
    assert read_journal(path)[0] == payloads
    size = os.path.getsize(path)
    with open(path, "ab") as f:  # a crash in the middle of a write
        f.write(frame(b"x" * 40)[:17])
    got, end = read_journal(path)
    assert got == payloads and end == size
    w = JournalWriter(path)  # reopening truncates the torn tail and appends after it
    assert w.truncated_bytes == 17 and w.records == 100
    w.append(b"after")
    w.close()
    assert read_journal(path)[0] == payloads + [b"after"]


def test_corrupt_frame_ends_journal():
    data = MAGIC + frame(b"a") + frame(b"bb") + frame(b"ccc")
    bad = bytearray(data)
    bad[len(MAGIC) + 8 + 1 + 8] ^= 0xFF  # flip a payload byte of the second frame
    assert scan(bytes(bad))[0] == [b"a"]
    assert scan(data)[0] == [b"a", b"bb", b"ccc"]
    hdr = bytearray(frame(b"zz"))
    assert int.from_bytes(hdr[4:8], "little") == zlib.crc32(b"zz")


def _journal(path, n=100):
    w = JournalWriter(str(path), fsync="none")
    payloads = [b"R" + bytes([i % 251]) * (3 + i * 13 % 300) for i in range(n)]
    for p in payloads:
        w.append(p)
    w.commit()
    w.close()
    starts, pos = [], len(MAGIC)
    for p in payloads:
        starts.append(pos)
        pos += len(frame(p))
    return payloads, starts


@pytest.mark.parametrize("where", ["payload", "crc", "length_huge", "length_zero"])
def test_damage_in_the_middle_is_refused_not_truncated(tmp_path, where):
    """A frame that fails its check with valid frames after it is not a torn tail: recovery refuses it
    (JournalCorrupt, with the offsets) and nothing is truncated (the acknowledged inputs after it stay)."""
    path = tmp_path / "j.bin"
    payloads, starts = _journal(path)
    data = bytearray(path.read_bytes())
    k = 37
    at = starts[k]
    if where == "payload":
        data[at + 8 + 2] ^= 0x10
    elif where == "crc":
        data[at + 5] ^= 0x01
    elif where == "length_huge":
        data[at:at + 4] = (1 << 30).to_bytes(4, "little")
    else:
        data[at:at + 4] = bytes(4)
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as e:
        read_journal(str(path))
    assert e.value.offset == at and e.value.next_valid == starts[k + 1] and e.value.size == len(data)
    assert f"byte {at:,}" in str(e.value) and f"truncate -s {at}" in str(e.value)
    with pytest.raises(JournalCorrupt):
        JournalWriter(str(path))
    assert path.read_bytes() == bytes(data)          # untouched
    assert isinstance(e.value, JournalError)         # the exchange's start answers it as a data-dir error


@pytest.mark.parametrize("tail", ["zeros", "garbage", "cut_frame", "cut_header", "zeros_after_cut"])
def test_torn_tails_are_truncated(tmp_path, tail):
    """What a crash leaves after the last whole frame (a cut frame, zeros the file system never wrote,
    stale bytes) ends the journal: every whole frame is recovered and the writer truncates the rest."""
    import random
    path = tmp_path / "j.bin"
    payloads, _ = _journal(path)
    size = path.stat().st_size
    extra = {"zeros": bytes(8192), "garbage": random.Random(5).randbytes(20000),
             "cut_frame": frame(b"R" + b"x" * 500)[:300], "cut_header": frame(b"Rabc")[:5],
             "zeros_after_cut": frame(b"R" + b"y" * 90)[:40] + bytes(4096)}[tail]
    with open(path, "ab") as f:
        f.write(extra)
    got, end = read_journal(str(path))
    assert got == payloads and end == size
    w = JournalWriter(str(path))
    assert w.truncated_bytes == len(extra) and w.records == len(payloads)
    w.append(b"Rafter")
    w.close()
    assert read_journal(str(path))[0] == payloads + [b"Rafter"]


def test_next_valid_frame_and_empty_records(tmp_path):
    data = MAGIC + frame(b"a") + frame(b"bb") + frame(b"ccc")
    second = len(MAGIC) + len(frame(b"a"))
    assert next_valid_frame(data, len(MAGIC) + 1) == second
    assert next_valid_frame(data, len(data) - 3) == -1
    assert next_valid_frame(MAGIC + bytes(100_000), len(MAGIC)) == -1
    # a lone stray match is not enough: a valid frame must be followed by another one or the end
    lone = bytes(50) + frame(b"zz") + b"\xff" * 7
    assert next_valid_frame(lone, 0) == -1
    assert next_valid_frame(lone + frame(b"q"), 0) == len(lone)         # q: whole, then the end
    assert next_valid_frame(bytes(50) + frame(b"zz") + frame(b"q"), 0) == 50
    w = JournalWriter(str(tmp_path / "e.bin"))
    with pytest.raises(JournalError, match="empty journal record"):
        w.append(b"")
    w.close()


def test_engine_refuses_a_journal_damaged_in_the_middle_and_recovers_a_zero_tail(tmp_path):
    flow = dict_flow(3, 300, SYMS)
    d = tmp_path / "j"
    with EngineManager(SYMS, journal_dir=str(d)) as m:
        for i in range(0, len(flow), 7):
            m.submit_many(flow[i:i + 7])
        h, seq = m.state_hash(), m.seq
    path = d / "journal.bin"
    good = path.read_bytes()
    path.write_bytes(good + bytes(4096))          # a power loss: the size grew, the data never landed
    with EngineManager(SYMS, journal_dir=str(d)) as m:
        assert m.state_hash() == h and m.seq == seq
    assert path.read_bytes() == good
    bad = bytearray(good)
    bad[len(good) // 2] ^= 0x40
    path.write_bytes(bytes(bad))
    with pytest.raises(JournalCorrupt):
        EngineManager(SYMS, journal_dir=str(d))
    assert path.read_bytes() == bytes(bad)


@pytest.mark.parametrize("policy", ["every", "batch", "interval", "none"])
def test_fsync_policies_write_the_same_journal(tmp_path, policy):
    flow = dict_flow(3, 300, SYMS)
    d = tmp_path / policy
    with EngineManager(SYMS, journal_dir=str(d), fsync=policy, fsync_interval_ms=2) as m:
        for i in range(0, len(flow), 7):
            m.submit_many(flow[i : i + 7])
        h = m.state_hash()
    ref = tmp_path / "ref"
    if not ref.exists():
        with EngineManager(SYMS, journal_dir=str(ref), fsync="none") as m:
            m.submit_many(flow)
    assert (d / "journal.bin").read_bytes() == (ref / "journal.bin").read_bytes()
    with EngineManager(SYMS, journal_dir=str(d)) as m:
        assert m.state_hash() == h


def test_follower_sees_only_whole_frames(tmp_path):
    path = tmp_path / "j.bin"
    f = JournalFollower(str(path))
    assert f.poll() == []
    data = MAGIC + frame(b"one") + frame(b"two")
    with open(path, "wb") as out:
        out.write(data[:5])
        out.flush()
        assert f.poll() == []
        out.write(data[5 : len(MAGIC) + 13])
        out.flush()
        assert f.poll() == [b"one"]
        out.write(data[len(MAGIC) + 13 :])
        out.flush()
        assert f.poll() == [b"two"] and f.poll() == []


# ---- recovery ------------------------------------------------------------------------------------

def reference_hashes(tmp_path, n_prefix: int):
    """Hash after the first n_prefix requests, final hash and trade log of an uninterrupted run."""
    flow = dict_flow(SEED, N, SYMS)
    log = tmp_path / "ref_trades.csv"
    tl = TradeLogger(str(log))
    with EngineManager(SYMS, trade_log=tl) as m:
        m.submit_many(flow[:n_prefix])
        prefix = m.state_hash()
        m.submit_many(flow[n_prefix:])
        final = m.state_hash()
    tl.close()
    return prefix, final, log.read_bytes()


def test_recovery_with_snapshot(tmp_path):
    flow = dict_flow(SEED, N, SYMS)
    with EngineManager(SYMS, journal_dir=str(tmp_path)) as m:
        m.submit_many(flow[:1000])
        m.snapshot()
        m.submit_many(flow[1000:2000])
        h = m.state_hash()
    with EngineManager(SYMS, journal_dir=str(tmp_path)) as m:
        assert m.state_hash() == h and m.seq == 2000
        m.submit_many(flow[2000:])
        final = m.state_hash()
    assert final == reference_hashes(tmp_path, 10)[1]


@pytest.mark.parametrize("damage", ["flip", "cut", "empty"])
def test_a_damaged_snapshot_is_a_clear_error_and_the_journal_alone_recovers(tmp_path, damage):
    flow = dict_flow(SEED, 600, SYMS)
    with EngineManager(SYMS, journal_dir=str(tmp_path)) as m:
        m.submit_many(flow[:300])
        m.snapshot()
        m.submit_many(flow[300:])
        h = m.state_hash()
    snap = tmp_path / "snapshot.npz"
    data = bytearray(snap.read_bytes())
    if damage == "flip":
        for i in range(40, len(data), 97):
            data[i] ^= 0x5A
    elif damage == "cut":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    snap.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="snapshot .* cannot be read .* aside to recover from the whole journal"):
        EngineManager(SYMS, journal_dir=str(tmp_path))
    snap.rename(tmp_path / "snapshot.npz.damaged")      # what the message says: the journal has everything
    with EngineManager(SYMS, journal_dir=str(tmp_path)) as m:
        assert m.state_hash() == h and m.seq == 600


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from reference_matcher import dict_flow
    from engine.manager import EngineManager
    from engine.tradelog import TradeLogger
    jdir, log, n, seed, pace = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    syms = {syms!r}
    flow = dict_flow(seed, n, syms)
    tl = TradeLogger(log, flush_every=64) if log != "-" else None
    m = EngineManager(syms, journal_dir=jdir, fsync="batch", trade_log=tl)
    start = m.seq
    print("START", start, m.state_hash(), flush=True)
    for i in range(start, n, 10):
        m.submit_many(flow[i : i + 10])
        print("ACK", min(i + 10, n), flush=True)  # every request below this index is acknowledged
        if pace:
            time.sleep(pace)
    print("HASH", m.state_hash(), flush=True)
    m.close()
    if tl is not None:
        tl.close()
    """
)


def start_child(tmp_path, jdir, log, pace=0.0):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), syms=SYMS))
    return subprocess.Popen([sys.executable, str(script), str(jdir), str(log), str(N), str(SEED), str(pace)],
                            stdout=subprocess.PIPE, text=True)


def read_until_ack(proc, at_least: int) -> int:
    acked = 0
    for line in proc.stdout:
        if line.startswith("ACK"):
            acked = int(line.split()[1])
            if acked >= at_least:
                return acked
    raise AssertionError("child ended before the kill point")


def journaled_ids(jdir) -> set[str]:
    ids = set()
    for p in read_journal(str(jdir / "journal.bin"))[0]:
        if p[:1] in (b"R", b"Q"):
            _acct, pos = _unpack_str(p, 1 + REQ_DTYPE.itemsize)
            ids.add(_unpack_str(p, pos)[0])
    return ids


def test_sigkill_mid_stream_recovers_exactly(tmp_path):
    jdir, log = tmp_path / "journal", tmp_path / "trades.csv"
    proc = start_child(tmp_path, jdir, log)
    acked = read_until_ack(proc, 700)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # every acknowledged client order id is in the journal the dead process left behind
    assert {f"r{i}" for i in range(acked)} <= journaled_ids(jdir)
    # restart: recovery replays the journal, then the child finishes the stream
    proc = start_child(tmp_path, jdir, log)
    out = proc.communicate(timeout=120)[0].split("\n")
    assert proc.returncode == 0
    _, start, recovered_hash = out[0].split()
    start = int(start)
    assert start >= acked, "an acknowledged order was lost"
    prefix_hash, final_hash, ref_log = reference_hashes(tmp_path, start)
    assert recovered_hash == prefix_hash
    assert [ln for ln in out if ln.startswith("HASH")] == [f"HASH {final_hash}"]
    assert log.read_bytes() == ref_log
    assert journaled_ids(jdir) == {f"r{i}" for i in range(N)}


def test_hot_standby_failover(tmp_path):
    jdir = tmp_path / "journal"
    proc = start_child(tmp_path, jdir, "-", pace=0.002)
    standby = StandbyEngine(SYMS, str(jdir))
    standby.start(interval_s=0.001)
    acked = read_until_ack(proc, 600)
    assert standby.seq > 0  # it follows live
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(jdir / "journal.bin", "ab") as f:  # the dying primary left half a frame behind
        f.write(frame(b"R" + b"\x00" * 100)[:30])
    m = standby.take_over()
    start = m.seq
    assert start >= acked
    prefix_hash, final_hash, _ = reference_hashes(tmp_path, start)
    assert m.state_hash() == prefix_hash
    flow = dict_flow(SEED, N, SYMS)
    m.submit_many(flow[start:])
    assert m.state_hash() == final_hash
    m.close()
    with EngineManager(SYMS, journal_dir=str(jdir)) as again:  # the taken-over journal replays cleanly
        assert again.state_hash() == final_hash


@pytest.mark.parametrize("fail", ["write_part_way", "fsync"])
def test_a_failed_commit_leaves_no_frame_of_its_batch(tmp_path, monkeypatch, fail):
    """A disk that fills up (or an fsync that fails) in the middle of a batch: the engine applies nothing
    of it and answers it as failed, so the journal must not keep any of its frames either (recovery would
    apply them: orders the clients were told had failed). Seen with a 1 MiB tmpfs: 27 whole frames of the
    failed batch were in the file and the recovered state was not the one before the failure."""
    import engine.journal as jmod
    flow = dict_flow(SEED, 400, SYMS)
    d = tmp_path / "j"
    m = EngineManager(SYMS, journal_dir=str(d), fsync="batch")
    m.submit_many(flow[:300])
    h, seq, size = m.state_hash(), m.seq, (d / "journal.bin").stat().st_size
    real_write, real_fsync = os.write, os.fsync

    def write_part_way(fd, data):
        n = real_write(fd, bytes(data[: len(data) // 2]))
        assert n > 0
        raise OSError(28, "No space left on device")

    def fsync_fails(fd):
        raise OSError(5, "Input/output error")

    if fail == "write_part_way":
        monkeypatch.setattr(jmod.os, "write", write_part_way)
    else:
        monkeypatch.setattr(jmod.os, "fsync", fsync_fails)
    with pytest.raises(Exception, match="journal write failed"):
        m.submit_many(flow[300:])
    monkeypatch.setattr(jmod.os, "write", real_write)
    monkeypatch.setattr(jmod.os, "fsync", real_fsync)
    assert m.seq == seq and m.state_hash() == h                 # nothing applied
    assert (d / "journal.bin").stat().st_size == size           # nothing of the batch kept
    m.close()
    with EngineManager(SYMS, journal_dir=str(d)) as again:
        assert again.seq == seq and again.state_hash() == h
