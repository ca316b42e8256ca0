"""AF_XDP capture backend (cffi API mode against libxdp/libbpf, built by ``_afxdp_build.py``).

Importing this module never fails; :func:`unavailable_reason` says why the backend cannot run.
"""
from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["unavailable_reason", "open_source"]


def _lib():
    from feedhandler.capture.live import _afxdp  # the cffi extension
    return _afxdp


def _pkg_config(name: str) -> bool:
    if shutil.which("pkg-config") is None:
        return False
    return subprocess.run(["pkg-config", "--exists", name], capture_output=True).returncode == 0


def unavailable_reason(iface: str | None) -> str | None:
    try:
        _lib()
    except ImportError:
        if not _pkg_config("libxdp"):
            return "libxdp not found by pkg-config (Debian: apt-get install libxdp-dev libbpf-dev)"
        return ("the AF_XDP extension is not built (python src/feedhandler/capture/live/_afxdp_build.py, "
                "or reinstall feedhandler with libxdp-dev present)")
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN + CAP_BPF to load the XDP program, CAP_NET_RAW for the socket)"
    if iface and not os.path.exists(f"/sys/class/net/{iface}"):
        return f"no interface {iface!r}"
    return None


def open_source(iface: str, **kw):
    from feedhandler.capture.live._afxdp_source import AfXdpSource
    allowed = {"udp_port", "ports", "groups", "first_queue", "n_queues", "xdp_mode", "zerocopy", "busy_poll_us",
               "frames", "frame_size", "ring_size", "filter", "rx_timestamp"}
    return AfXdpSource(iface, **{k: v for k, v in kw.items() if k in allowed})
