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


def auto_reason(iface: str | None) -> str | None:
    """Why auto selection does not pick DPDK for ``iface`` (None: it would)."""
    if iface is None:
        return "no interface"
    drv = os.path.realpath(f"/sys/class/net/{iface}/device/driver") if os.path.exists(
        f"/sys/class/net/{iface}/device/driver") else ""
    name = os.path.basename(drv) if drv else "virtual"
    if name not in ("vfio-pci", "uio_pci_generic", "igb_uio"):
        return (f"{iface} is a kernel interface (driver {name}): DPDK could only wrap it in a virtual device "
                "(net_af_packet), slower than AF_XDP/AF_PACKET; bind a NIC to vfio-pci, or force --capture dpdk")
    return None


def open_source(iface: str, **kw):
    from feedhandler.capture.live._dpdk_source import DpdkSource
    allowed = {"eal_args", "vdev", "port_id", "n_queues", "mbufs", "rx_desc", "promisc"}
    return DpdkSource(iface, **{k: v for k, v in kw.items() if k in allowed})
