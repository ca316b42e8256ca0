"""DpdkSource: the DPDK live source (cffi module ``_dpdk`` over csrc/dpdk/capture_dpdk.c).

Without UIO/VFIO and hugepages (this machine), DPDK runs on a virtual device bound to a kernel
interface: ``--no-huge -m 512`` with ``net_af_packet`` (default) or ``net_pcap``. EAL arguments can be
passed through whole (``eal_args``). The EAL initialises once per process and pins the calling thread;
the affinity of the calling thread is restored afterwards so the LiveFeed thread is not confined to the
EAL's main lcore by inheritance.
"""
from __future__ import annotations

import os

from feedhandler.errors import CaptureError

from . import _dpdk

__all__ = ["DpdkSource", "default_eal_args"]

_ffi, _lib = _dpdk.ffi, _dpdk.lib


def default_eal_args(iface: str, vdev: str = "af_packet", lcore: int | None = None) -> list[str]:
    if vdev == "af_packet":
        # a deep kernel ring (the PMD default of 512 frames overflows at a few 100k packets/s)
        dev = f"net_af_packet0,iface={iface},blocksz=4096,framesz=2048,framecnt=65536"
    elif vdev == "pcap":
        dev = f"net_pcap0,iface={iface}"
    elif vdev == "af_xdp":
        dev = f"net_af_xdp0,iface={iface}"
    else:
        raise ValueError(f"unknown vdev kind {vdev!r}: af_packet, pcap, af_xdp")
    cpu = lcore if lcore is not None else sorted(os.sched_getaffinity(0))[0]
    # (a per-process file prefix: the EAL still creates its runtime directory /var/run/dpdk/<prefix>,
    # which close() removes again)
    return ["feedhandler", "--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--no-telemetry",
            f"--file-prefix=fh{os.getpid()}",
            "-l", str(cpu), "--log-level=lib.eal:warning", f"--vdev={dev}"]


class DpdkSource:
    """DPDK port ``port_id`` (the first vdev by default) feeding a LiveFeed."""

    def __init__(self, iface: str, *, eal_args: list[str] | None = None, vdev: str = "af_packet",
                 port_id: int = 0, n_queues: int = 1, mbufs: int = 0, rx_desc: int = 0, promisc: bool = False):
        args = eal_args if eal_args is not None else default_eal_args(iface, vdev)
        self.iface = iface
        self.eal_args = list(args)
        self._keep = [_ffi.new("char[]", a.encode()) for a in args]
        argv = _ffi.new("char *[]", self._keep + [_ffi.NULL])
        self._keep.append(argv)
        cfg = _ffi.new("fh_dpdk_config *")
        cfg.argc = len(args)
        cfg.argv = argv
        cfg.port_id = port_id
        cfg.n_queues = n_queues
        cfg.mbufs = mbufs
        cfg.rx_desc = rx_desc
        cfg.promisc = int(promisc)
        out = _ffi.new("fh_dpdk **")
        err = _ffi.new("char[512]")
        affinity = os.sched_getaffinity(0)
        rc = _lib.fh_dpdk_open(out, cfg, err, 512)
        os.sched_setaffinity(0, affinity)
        if rc != 0:
            raise CaptureError(-rc, _ffi.string(err).decode(errors="replace"), iface)
        self._s = out[0]

    def native(self):
        if self._s is None:
            return (0, 0, 0)
        addr = lambda fn: int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, fn)))
        return (addr("fh_dpdk_next"), addr("fh_dpdk_wake"), int(_ffi.cast("uintptr_t", self._s)))

    def stats(self) -> dict:
        if self._s is None:
            return {}
        st = _ffi.new("fh_dpdk_stats *")
        _lib.fh_dpdk_stats_get(self._s, st)
        d = {k: int(getattr(st, k)) for k in ("packets", "bytes", "bursts", "idle", "ipackets", "imissed",
                                             "ierrors", "rx_nombuf")}
        d["ts_user"] = d["packets"]
        d["rx_dropped"] = d["imissed"] + d["rx_nombuf"]
        return d

    def close(self) -> None:
        if getattr(self, "_s", None) is not None:
            _lib.fh_dpdk_close(self._s)
            self._s = None
            self._remove_runtime_dir()

    def _remove_runtime_dir(self) -> None:
        prefix = next((a.split("=", 1)[1] for a in self.eal_args if a.startswith("--file-prefix=")), "rte")
        base = "/var/run/dpdk" if os.geteuid() == 0 else os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/tmp"), "dpdk")
        for d in (os.path.join(base, prefix), base):
            try:
                os.rmdir(d)            # only when empty: never another process's files
            except OSError:
                break

    def __del__(self):
        self.close()
