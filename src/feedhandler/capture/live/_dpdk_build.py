"""cffi (API mode) builder of ``feedhandler.capture.live._dpdk``: the DPDK receive shim
(csrc/dpdk/capture_dpdk.c) against libdpdk (flags from pkg-config).

setup.py: ``cffi_modules=["src/feedhandler/capture/live/_dpdk_build.py:ffibuilder"]`` only when
``pkg-config --exists libdpdk`` succeeds. By hand (in place):

    .venv/bin/python src/feedhandler/capture/live/_dpdk_build.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", ".."))
CSRC = os.path.join(ROOT, "csrc")


def _pkg(args: list[str]) -> list[str]:
    try:
        out = subprocess.run(["pkg-config", *args, "libdpdk"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.split()


def available() -> bool:
    return shutil.which("pkg-config") is not None and subprocess.run(
        ["pkg-config", "--exists", "libdpdk"], capture_output=True).returncode == 0


CDEF = """
typedef struct fh_pkt fh_pkt;
typedef struct fh_dpdk fh_dpdk;
typedef struct fh_dpdk_config {
    int argc;
    char **argv;
    uint16_t port_id;
    uint16_t n_queues;
    uint32_t mbufs;
    uint32_t rx_desc;
    int promisc;
} fh_dpdk_config;
typedef struct fh_dpdk_stats {
    uint64_t packets, bytes, bursts, idle, ipackets, imissed, ierrors, rx_nombuf;
} fh_dpdk_stats;
int fh_dpdk_open(fh_dpdk **out, const fh_dpdk_config *cfg, char *err, size_t errlen);
size_t fh_dpdk_next(void *ctx, fh_pkt *pkts, size_t cap, int timeout_ms);
void fh_dpdk_wake(void *ctx);
void fh_dpdk_stats_get(fh_dpdk *s, fh_dpdk_stats *out);
void fh_dpdk_close(fh_dpdk *s);
"""

_cflags = _pkg(["--cflags"])
ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "feedhandler.capture.live._dpdk",
    '#include "fh/capture_dpdk.h"\n',
    # setup.py (cffi_modules) runs in the project root and rejects absolute source paths; the in-place
    # build (run as a script) compiles inside a temporary directory and needs an absolute one.
    sources=[os.path.join(CSRC, "dpdk", "capture_dpdk.c") if __name__ == "__main__"
             else os.path.relpath(os.path.join(CSRC, "dpdk", "capture_dpdk.c"), ROOT)],
    include_dirs=[os.path.join(CSRC, "include")] + [a[2:] for a in _cflags if a.startswith("-I")],
    extra_compile_args=["-std=gnu11", "-O2"] + [a for a in _cflags if not a.startswith("-I")],
    extra_link_args=_pkg(["--libs"]),
)


def build_in_place() -> str:
    if not available():
        raise SystemExit("pkg-config finds no libdpdk (Debian: apt-get install dpdk-dev)")
    tmp = os.path.join(ROOT, "build", "tmp-live-cffi-dpdk")
    os.makedirs(tmp, exist_ok=True)
    so = ffibuilder.compile(tmpdir=tmp, verbose=False)
    dst = os.path.join(HERE, os.path.basename(so))
    shutil.copy2(so, dst)
    return dst


if __name__ == "__main__":
    print(build_in_place())
    sys.exit(0)
