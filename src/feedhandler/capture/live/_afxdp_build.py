"""cffi (API mode) builder of ``feedhandler.capture.live._afxdp``: the AF_XDP shim
(csrc/afxdp/capture_afxdp.c) against libxdp/libbpf, plus the XDP filter program (csrc/bpf/xdp_feed.bpf.c)
compiled with clang when clang exists.

setup.py: ``cffi_modules=["src/feedhandler/capture/live/_afxdp_build.py:ffibuilder"]`` only when
``pkg-config --exists libxdp libbpf`` succeeds. By hand (in place):

    .venv/bin/python src/feedhandler/capture/live/_afxdp_build.py
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
BPF_SRC = os.path.join(CSRC, "bpf", "xdp_feed.bpf.c")
BPF_OBJ_NAME = "xdp_feed.bpf.o"
BPF_RXTS_OBJ_NAME = "xdp_feed_rxts.bpf.o"    # the same program, filling fh/xdp_meta.h metadata


def _pkg(args: list[str]) -> list[str]:
    try:
        out = subprocess.run(["pkg-config", *args, "libxdp", "libbpf"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.split()


def available() -> bool:
    return shutil.which("pkg-config") is not None and subprocess.run(
        ["pkg-config", "--exists", "libxdp", "libbpf"], capture_output=True).returncode == 0


def compile_bpf(out_dir: str = HERE) -> str | None:
    """Compile the XDP program with clang into out_dir: the filter (BPF_OBJ_NAME) and its receive-timestamp
    variant (BPF_RXTS_OBJ_NAME, -DFH_XDP_RX_TIMESTAMP); returns the filter's path or None (no clang)."""
    clang = shutil.which("clang")
    if clang is None:
        return None
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    base = [clang, "-O2", "-g", "-target", "bpf", "-I", os.path.join(CSRC, "include")]
    if multiarch:
        base.append(f"-I/usr/include/{multiarch}")
    out = os.path.join(out_dir, BPF_OBJ_NAME)
    subprocess.run(base + ["-c", BPF_SRC, "-o", out], check=True)
    subprocess.run(base + ["-DFH_XDP_RX_TIMESTAMP", "-c", BPF_SRC, "-o", os.path.join(out_dir, BPF_RXTS_OBJ_NAME)],
                   check=True)
    return out


CDEF = """
typedef struct fh_pkt fh_pkt;
typedef struct fh_xsk fh_xsk;
typedef struct fh_xsk_config {
    const char *iface;
    uint32_t first_queue;
    uint32_t n_queues;
    uint32_t frames;
    uint32_t frame_size;
    uint32_t ring_size;
    int xdp_mode;
    int zerocopy;
    int busy_poll_us;
    const char *bpf_object;
    const char *bpf_object_rxts;
    int rx_timestamp;
    uint16_t ports[16];
    uint32_t n_ports;
    uint32_t groups[16];
    uint32_t n_groups;
} fh_xsk_config;
typedef struct fh_xsk_stats {
    uint64_t packets, bytes, batches, idle, polls, wakeups, fill_short, rx_dropped, rx_invalid_descs,
             rx_ring_full, rx_fill_ring_empty, xdp_seen, xdp_redirected, xdp_passed, xdp_no_socket,
             zerocopy, xdp_mode, busy_poll_napi_id, rx_timestamp, ts_hw, meta_no_stamp, meta_missing,
             xdp_meta_failed, meta_last_errno;
} fh_xsk_stats;
int fh_xsk_open(fh_xsk **out, const fh_xsk_config *cfg, char *err, size_t errlen);
size_t fh_xsk_next(void *xsk, fh_pkt *pkts, size_t cap, int timeout_ms);
void fh_xsk_wake(void *xsk);
void fh_xsk_stats_get(fh_xsk *s, fh_xsk_stats *out);
void fh_xsk_close(fh_xsk *s);
const char *fh_xsk_rx_timestamp_reason(fh_xsk *s);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "feedhandler.capture.live._afxdp",
    '#include "fh/capture_afxdp.h"\n',
    # setup.py (cffi_modules) runs in the project root and rejects absolute source paths; the in-place
    # build (run as a script) compiles inside a temporary directory and needs an absolute one.
    sources=[os.path.join(CSRC, "afxdp", "capture_afxdp.c") if __name__ == "__main__"
             else os.path.relpath(os.path.join(CSRC, "afxdp", "capture_afxdp.c"), ROOT)],
    include_dirs=[os.path.join(CSRC, "include")] + [a[2:] for a in _pkg(["--cflags-only-I"])],
    libraries=["xdp", "bpf"],
    library_dirs=[a[2:] for a in _pkg(["--libs-only-L"])],
    extra_compile_args=["-std=gnu11", "-O2"],
)


def build_in_place() -> str:
    """Build the extension next to this file (what ``pip install -e .`` would do) and the BPF object."""
    if not available():
        raise SystemExit("pkg-config finds no libxdp/libbpf (Debian: apt-get install libxdp-dev libbpf-dev)")
    tmp = os.path.join(ROOT, "build", "tmp-live-cffi")
    os.makedirs(tmp, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        so = ffibuilder.compile(tmpdir=tmp, verbose=False)
    finally:
        os.chdir(cwd)
    dst = os.path.join(HERE, os.path.basename(so))
    shutil.copy2(so, dst)
    compile_bpf(HERE)
    return dst


if __name__ == "__main__":
    print(build_in_place())
    sys.exit(0)
