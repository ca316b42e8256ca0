"""feedhandler.ring.Ring: semantics against a pure-Python model, zero copy, shared memory across
processes, overflow policies, end of stream, and errors.

Every record the tests stream carries its sequence number and a checksum computed here with numpy
(independently of the C code), and the consumer checks order, loss and duplication.
"""
from __future__ import annotations

import collections
import errno
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandler import records
from feedhandler.ring import Ring, RingClosedError

MIX = np.uint64(0x9E3779B97F4A7C15)


def checksum(seq: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = seq.astype(np.uint64) * MIX
    return x ^ (x >> np.uint64(29))


def make_batch(first: int, n: int) -> np.ndarray:
    t = records.empty(n)
    m = records.view(t, "mbo")
    seq = np.arange(first, first + n, dtype=np.uint64)
    m["rtype"] = records.RTYPE["mbo"]
    m["order_id"] = seq
    m["price"] = checksum(seq).view(np.int64)
    m["ts_event"] = ~seq
    return t


def check_batch(view: np.ndarray) -> np.ndarray:
    """Return the sequences of a batch after checking every record's checksum."""
    m = records.view(view, "mbo")
    seq = m["order_id"]
    assert (m["rtype"] == records.RTYPE["mbo"]).all()
    assert (m["price"].view(np.uint64) == checksum(seq)).all()
    assert (m["ts_event"] == ~seq).all()
    return seq


def shm_name() -> str:
    return f"/fh_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"


def mapping_of(address: int) -> str | None:
    """The /proc/self/maps path that holds an address (None when anonymous or not found)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else None
    return None


# ---- single thread -------------------------------------------------------------------------------
def test_push_read_release_wraparound():
    r = Ring(8)
    assert (r.capacity, r.overflow, r.name, r.closed, r.finished) == (8, "block", None, False, False)
    assert r.push(make_batch(0, 5)) == 5
    a = r.read()
    assert list(check_batch(a)) == [0, 1, 2, 3, 4]
    r.release(3)
    assert r.push(make_batch(5, 6)) == 6  # 2 ready + 6 = full
    b = r.read(max=100)
    assert list(check_batch(b)) == [3, 4, 5, 6, 7]  # the run stops at the end of the slot array
    assert b.ctypes.data == a.ctypes.data + 3 * 64
    r.release(5)
    c = r.read()
    assert list(check_batch(c)) == [8, 9, 10]
    assert c.ctypes.data == a.ctypes.data  # wrapped to slot 0
    r.release(3)
    assert len(r.read()) == 0
    s = r.stats()
    assert s == {"capacity": 8, "published": 11, "consumed": 11, "dropped": 0,
                 "producer_waits": 0, "consumer_empty_polls": 1}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["push", "read", "release"]), st.integers(0, 20)), max_size=80),
       st.sampled_from([2, 4, 8, 16]))
def test_matches_model(ops, capacity):
    """Differential test against a deque: what is readable, in what runs, what is dropped."""
    r = Ring(capacity, overflow="drop")
    model: collections.deque[int] = collections.deque()
    head = tail = offered = dropped = 0
    for op, k in ops:
        if op == "push":
            written = r.push(make_batch(offered, k))
            fits = min(k, capacity - len(model))
            assert written == fits
            model.extend(range(offered, offered + fits))
            head += fits
            dropped += k - fits
            offered += k
        elif op == "read":
            got = r.read(max=max(k, 1))
            run = min(max(k, 1), len(model), capacity - tail % capacity)
            assert list(check_batch(got)) == list(model)[:run]
        else:
            k = min(k, len(model))
            r.release(k)
            for _ in range(k):
                model.popleft()
            tail += k
    s = r.stats()
    assert (s["published"], s["consumed"], s["dropped"]) == (head, tail, dropped)
    assert r.readable == len(model)


def test_read_is_zero_copy_and_read_only():
    r = Ring(16)
    src = make_batch(0, 4)
    r.push(src)
    a = r.read()
    b = r.read()  # peeking again returns the same slots
    assert a.ctypes.data == b.ctypes.data != src.ctypes.data
    assert a.dtype == records.TICK_DTYPE
    assert a.ctypes.data % 64 == 0
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a["ts_event"][0] = 1
    # the producer's next write lands under the same address the consumer's view points at
    r.release(4)
    r.push(make_batch(100, 12))
    r.push(make_batch(112, 4))  # slots 0..3 again
    r.release(12)
    assert list(check_batch(a)) == [112, 113, 114, 115]  # the old view sees the slots reused


def test_shm_view_points_into_the_shared_mapping():
    name = shm_name()
    p = Ring(64, shm_name=name)
    c = Ring.attach(name)
    p.push(make_batch(0, 10))
    v = c.read()
    assert list(check_batch(v)) == list(range(10))
    assert mapping_of(v.ctypes.data) == "/dev/shm" + name
    del v
    c.release(10)
    assert p.stats()["consumed"] == 10


def test_view_keeps_ring_alive():
    r = Ring(8)
    r.push(make_batch(0, 3))
    v = r.read()
    ref = weakref.ref(r)
    del r
    gc.collect()
    assert ref() is not None
    assert list(check_batch(v)) == [0, 1, 2]
    del v
    gc.collect()
    assert ref() is None


def test_drop_policy_counts():
    r = Ring(8, overflow="drop")
    assert r.push(make_batch(0, 5)) == 5
    assert r.push(make_batch(5, 5)) == 3
    assert r.push(make_batch(10, 1)) == 0
    s = r.stats()
    assert (s["published"], s["dropped"], s["producer_waits"]) == (8, 3, 0)
    assert list(check_batch(r.read())) == list(range(8))


def test_close_and_drain():
    r = Ring(8)
    r.push(make_batch(0, 3))
    r.close()
    assert r.closed and not r.finished
    with pytest.raises(RingClosedError):
        r.push(make_batch(3, 1))
    got = r.read(timeout=None)
    assert list(check_batch(got)) == [0, 1, 2]
    r.release(3)
    assert len(r.read(timeout=None)) == 0  # closed and empty: returns at once
    assert r.finished


def test_read_timeout_returns_empty():
    r = Ring(4)
    assert len(r.read(timeout=0.02)) == 0
    assert not r.finished
    assert r.stats()["consumer_empty_polls"] >= 1


def test_argument_errors():
    for cap in (0, 1, 3, 1000, 2**40):
        with pytest.raises(ValueError, match="power of two"):
            Ring(cap)
    with pytest.raises(ValueError, match="overflow"):
        Ring(8, overflow="wait")
    r = Ring(8)
    with pytest.raises(ValueError, match="64 bytes"):
        r.push(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="whole number"):
        r.push(b"x" * 65)
    assert r.push(bytes(128)) == 2  # any buffer of whole records
    with pytest.raises(ValueError, match="cannot release 3"):
        r.release(3)
    with pytest.raises(ValueError):
        r.read(max=0)
    with pytest.raises(ValueError, match="not initialised"):
        Ring.__new__(Ring).stats()


def test_shm_name_errors():
    name = shm_name()
    with pytest.raises(FileNotFoundError, match=name):
        Ring.attach(name)
    for bad in ("", "/", "a/b", "x" * 300):
        with pytest.raises(ValueError, match="invalid"):
            Ring(8, shm_name=bad)
    with pytest.raises(TypeError):
        Ring.attach(b"/x")
    r = Ring(8, shm_name=name)
    with pytest.raises(FileExistsError):
        Ring(8, shm_name=name)
    del r
    gc.collect()
    with pytest.raises(FileNotFoundError):  # the creator unlinked it
        Ring.attach(name)
    # a shared memory object that is not a ring
    junk = "/dev/shm" + name
    with open(junk, "wb") as f:
        f.write(b"\x01" * 4096)
    try:
        with pytest.raises(OSError, match="not a feedhandler ring") as e:
            Ring.attach(name)
        assert e.value.errno == errno.EPROTO
    finally:
        os.unlink(junk)


# ---- threads ---------------------------------------------------------------------------------------
def consume_all(r: Ring, proc: subprocess.Popen | None = None) -> tuple[int, int]:
    """Read until the stream ends; return (records, sequence gaps). Checks order and checksums."""
    nxt = received = gaps = 0
    while True:
        v = r.read(max=3000, timeout=1.0)
        if len(v) == 0:
            if r.finished:
                return received, gaps
            if proc is not None and proc.poll() not in (None, 0):
                raise AssertionError(f"producer process failed: {proc.communicate()}")
            continue
        seq = check_batch(v).astype(np.int64)
        d = np.diff(seq, prepend=nxt - 1)
        assert (d >= 1).all(), "duplicated or reordered records"
        gaps += int((d - 1).sum())
        nxt = int(seq[-1]) + 1
        received += len(v)
        del v
        r.release(len(seq))


def produce(r: Ring, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    seq = 0
    while seq < n:
        k = min(int(rng.integers(1, 2000)), n - seq)
        r.push(make_batch(seq, k))
        seq += k
    r.close()


@pytest.mark.parametrize("overflow", ["block", "drop"])
def test_threads(overflow):
    n = 300_000
    r = Ring(256, overflow=overflow)
    t = threading.Thread(target=produce, args=(r, n, 7))
    t.start()
    received, gaps = consume_all(r)
    t.join()
    s = r.stats()
    assert received == s["published"] == s["consumed"]
    assert s["published"] + s["dropped"] == n
    if overflow == "block":
        assert received == n and gaps == 0 and s["dropped"] == 0
    else:
        assert gaps <= s["dropped"]  # drops after the last record received are not gaps


# ---- processes -------------------------------------------------------------------------------------
CHILD_PRELUDE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {testdir!r})
    from test_ring import Ring, produce, consume_all
    """
)


def run_child(body: str, **kw) -> subprocess.Popen:
    code = CHILD_PRELUDE.format(testdir=os.path.dirname(os.path.abspath(__file__))) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code.format(**kw)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_producer_in_another_process():
    n = 1_000_000
    name = shm_name()
    r = Ring(1024, overflow="block", shm_name=name)
    proc = run_child("produce(Ring.attach({name!r}), {n}, 11)\n", name=name, n=n)
    try:
        received, gaps = consume_all(r, proc)
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert (received, gaps) == (n, 0)
    s = r.stats()
    assert (s["published"], s["consumed"], s["dropped"]) == (n, n, 0)


def test_consumer_in_another_process():
    n = 500_000
    name = shm_name()
    r = Ring(512, overflow="block", shm_name=name)
    proc = run_child(
        "c = Ring.attach({name!r})\nprint(json.dumps(consume_all(c)))\n", name=name)
    # produce from a daemon thread: if the child died, a blocking push would wait forever
    t = threading.Thread(target=produce, args=(r, n, 13), daemon=True)
    t.start()
    out, err = proc.communicate(timeout=120)
    t.join(timeout=10)
    assert proc.returncode == 0, err
    assert not t.is_alive()
    assert json.loads(out) == [n, 0]
    assert r.finished
