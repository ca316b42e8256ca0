"""Embedding: third-party Cython code cimports feedhandler's declarations and drives a ring.

A tiny extension is written to a temporary directory and compiled the way a user would compile it:
Cython's include path is the directory that holds the installed ``feedhandler`` package (so the
shipped ``.pxd`` files are found), the C include path is ``feedhandler.get_include()`` (the shipped
headers), and no feedhandler C source is compiled in. It then pushes and pops records through a Ring
made from Python. This works the same from an editable checkout (``src/``) and from a normal install
(``site-packages``), since both hold ``feedhandler/**.pxd`` next to the package.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import feedhandler
from feedhandler import records
from feedhandler.ring import Ring

Cython = pytest.importorskip("Cython", reason="Cython is needed to compile the embedding example")
if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
    pytest.skip("no C compiler on PATH", allow_module_level=True)

PYX = textwrap.dedent(
    """
    # cython: language_level=3
    from libc.stdint cimport uint64_t
    from feedhandler.includes.record cimport fh_tick, FH_RTYPE_MBO
    from feedhandler.includes.ring cimport (fh_ring, fh_ring_claim, fh_ring_publish, fh_ring_push,
        fh_ring_peek, fh_ring_release, fh_ring_stats, fh_ring_get_stats, fh_ring_close)
    from feedhandler.ring cimport Ring

    def produce(Ring r, uint64_t first, uint64_t n):
        '''Zero-copy producer: claim, fill in place, publish. Returns records published.'''
        cdef fh_ring *ring = r.ring
        cdef fh_tick *w
        cdef uint64_t done = 0, k, i
        with nogil:
            while done < n:
                k = fh_ring_claim(ring, n - done, &w)
                if k == 0:
                    break  # full: the test sizes the ring so this does not happen
                for i in range(k):
                    w[i].mbo.hd.rtype = FH_RTYPE_MBO
                    w[i].mbo.order_id = first + done + i
                    w[i].mbo.price = <long long>(first + done + i) * 7
                fh_ring_publish(ring, k)
                done += k
        return done

    def push_copy(Ring r, uint64_t first, uint64_t n):
        '''Copying producer through fh_ring_push from a C array.'''
        cdef fh_tick buf[16]
        cdef uint64_t i
        assert n <= 16
        for i in range(n):
            buf[i].mbo.hd.rtype = FH_RTYPE_MBO
            buf[i].mbo.order_id = first + i
            buf[i].mbo.price = <long long>(first + i) * 7
        with nogil:
            n = fh_ring_push(r.ring, buf, n)
        return n

    def drain(Ring r):
        '''Consume everything ready; return the order ids seen.'''
        cdef const fh_tick *rd
        cdef uint64_t n, i
        out = []
        while True:
            n = fh_ring_peek(r.ring, 1000, &rd)
            if n == 0:
                return out
            for i in range(n):
                assert rd[i].mbo.price == <long long>rd[i].mbo.order_id * 7
                out.append(rd[i].mbo.order_id)
            fh_ring_release(r.ring, n)

    def published(Ring r):
        cdef fh_ring_stats s
        fh_ring_get_stats(r.ring, &s)
        return s.published

    def close(Ring r):
        fh_ring_close(r.ring)
    """
)

SETUP = textwrap.dedent(
    """
    import os, feedhandler
    from setuptools import Extension, setup
    from Cython.Build import cythonize
    site = os.path.dirname(os.path.dirname(os.path.abspath(feedhandler.__file__)))
    ext = Extension("fh_embed_example", ["fh_embed_example.pyx"], include_dirs=[feedhandler.get_include()])
    setup(name="fh-embed-example", ext_modules=cythonize([ext], include_path=[site], quiet=True),
          script_args=["build_ext", "--inplace"])
    """
)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    d = tmp_path_factory.mktemp("embed")
    (d / "fh_embed_example.pyx").write_text(PYX)
    (d / "setup.py").write_text(SETUP)
    p = subprocess.run([sys.executable, "setup.py"], cwd=d, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"embedding example failed to build:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    sys.path.insert(0, str(d))
    try:
        yield importlib.import_module("fh_embed_example")
    finally:
        sys.path.remove(str(d))


def test_headers_and_pxds_are_where_users_look():
    inc = feedhandler.get_include()
    assert os.path.isfile(os.path.join(inc, "fh", "ring.h"))
    assert os.path.isfile(os.path.join(inc, "fh", "record.h"))
    pkg = os.path.dirname(feedhandler.__file__)
    for pxd in ("ring.pxd", "includes/ring.pxd", "includes/record.pxd", "__init__.pxd", "includes/__init__.pxd"):
        assert os.path.isfile(os.path.join(pkg, pxd)), pxd


def test_cython_producer_python_consumer(example):
    r = Ring(64)
    assert example.produce(r, 100, 40) == 40
    assert example.push_copy(r, 140, 10) == 10
    assert example.published(r) == 50
    v = r.read(max=64)
    assert list(records.view(v, "mbo")["order_id"]) == list(range(100, 150))
    r.release(len(v))


def test_python_producer_cython_consumer(example):
    r = Ring(16, overflow="drop")
    t = records.empty(20)
    m = records.view(t, "mbo")
    m["rtype"] = records.RTYPE["mbo"]
    m["order_id"] = np.arange(20)
    m["price"] = np.arange(20) * 7
    assert r.push(t[:10]) == 10
    assert example.drain(r) == list(range(10))
    assert r.push(t[10:]) == 10  # slots 10..15, then 0..3
    assert example.drain(r) == list(range(10, 20))  # two runs: a run never crosses the end
    assert r.push(t) == 16
    assert example.drain(r) == list(range(16))
    s = r.stats()
    assert (s["published"], s["consumed"], s["dropped"]) == (36, 36, 4)
    example.close(r)
    assert r.finished
