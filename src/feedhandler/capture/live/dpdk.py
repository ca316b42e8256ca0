"""DPDK capture backend (cffi against libdpdk, built by ``_dpdk_build.py``).

Importing this module never fails; :func:`unavailable_reason` says why the backend cannot run.
"""
from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["unavailable_reason", "open_source"]


def _pkg_config(name: str) -> bool:
    if shutil.which("pkg-config") is None:
        return False
    return subprocess.run(["pkg-config", "--exists", name], capture_output=True).returncode == 0


def unavailable_reason(iface: str | None) -> str | None:
    try:
        from feedhandler.capture.live import _dpdk  # noqa: F401  (the cffi extension)
    except ImportError:
        if not _pkg_config("libdpdk"):
            return "libdpdk not found by pkg-config (Debian: apt-get install dpdk-dev)"
        return ("the DPDK extension is not built (python src/feedhandler/capture/live/_dpdk_build.py, "
                "or reinstall feedhandler with dpdk-dev present)")
    if os.geteuid() != 0:
        return "needs root"
    return None


def open_source(iface: str, **kw):
    from feedhandler.capture.live._dpdk_source import DpdkSource
    return DpdkSource(iface, **kw)
