"""Live capture backends behind one interface, chosen like pyzmq chooses its backend.

``--capture auto|afxdp|dpdk|afpacket|pcap`` or the environment variable ``FEEDHANDLER_CAPTURE`` picks
the backend. ``auto`` walks the chain afxdp -> dpdk -> afpacket -> pcap and takes the first one usable
for the interface; every backend passed over is reported with the reason (library not built or not
found, missing privilege, driver without XDP support, no file to replay).

``pcap`` replays a capture file (``--file``) through the same live pipeline, at the recorded pace
(``--pace recorded`` or a speed factor) or as fast as possible (``--pace max``); it is what runs when no
interface is given. A backend opens a *source*: an object with ``native() -> (next_addr, wake_addr, ctx_addr)`` (the C
receive loop's entry points, driven by :class:`feedhandler.capture.live._live.LiveFeed` on its own
thread), ``stats() -> dict`` (counters, any thread) and ``close()``.
"""
from __future__ import annotations

import ctypes.util
import os
from dataclasses import dataclass, field

from feedhandler.errors import CaptureError

__all__ = ["BACKENDS", "CHAIN", "ENV", "Selection", "BackendUnavailable", "probe", "select", "open_source"]

BACKENDS = ("afxdp", "dpdk", "afpacket", "pcap")
CHAIN = BACKENDS                       # auto: fastest first
ENV = "FEEDHANDLER_CAPTURE"


class BackendUnavailable(CaptureError):
    """The requested capture backend cannot run here; the message says why and how to fix it."""


@dataclass
class Selection:
    backend: str                        # the backend chosen
    requested: str                      # what was asked for (auto or a name)
    skipped: dict[str, str] = field(default_factory=dict)   # backend -> why it was not used

    def describe(self) -> str:
        s = f"capture backend {self.backend}"
        if self.skipped:
            s += " (" + "; ".join(f"{k} not used: {v}" for k, v in self.skipped.items()) + ")"
        return s


def _has_net_raw() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 13))   # CAP_NET_RAW
    except OSError:
        pass
    return False


def _iface_reason(iface: str | None) -> str | None:
    if not iface:
        return "no interface given (--iface)"
    if not os.path.exists(f"/sys/class/net/{iface}"):
        return f"no interface {iface!r} in this network namespace"
    return None


def probe(name: str, iface: str | None = None, *, pcap_file: str | None = None, auto: bool = False) -> str | None:
    """None when backend ``name`` can capture from ``iface`` here, else the reason it cannot (``auto``:
    also the reasons auto selection passes a backend over that an explicit request would still run)."""
    if name == "pcap":
        return None if pcap_file else "no capture file given to replay (--file)"
    r = _iface_reason(iface)
    if r:
        return r
    if name == "afpacket":
        return None if _has_net_raw() else "needs CAP_NET_RAW (run as root or setcap cap_net_raw+ep)"
    if name == "afxdp":
        try:
            from feedhandler.capture.live import afxdp
        except ImportError as e:  # pragma: no cover - depends on the build
            return f"AF_XDP module not importable: {e}"
        return afxdp.unavailable_reason(iface)
    if name == "dpdk":
        try:
            from feedhandler.capture.live import dpdk
        except ImportError as e:  # pragma: no cover
            return f"DPDK module not importable: {e}"
        why = dpdk.unavailable_reason(iface)
        if why is None and auto:
            why = dpdk.auto_reason(iface)
        return why
    raise ValueError(f"unknown capture backend {name!r}: expected one of auto, {', '.join(BACKENDS)}")


def select(requested: str | None = None, iface: str | None = None, *, pcap_file: str | None = None) -> Selection:
    """Choose the backend: ``requested`` (or $FEEDHANDLER_CAPTURE, or auto).

    Raises
    ------
    BackendUnavailable
        An explicitly requested backend cannot run (message: why), or no backend in the chain can.
    ValueError
        Unknown backend name.
    """
    req = (requested or os.environ.get(ENV) or "auto").strip().lower()
    if req != "auto":
        why = probe(req, iface, pcap_file=pcap_file)
        if why:
            raise BackendUnavailable(f"capture backend {req} is not usable: {why}")
        return Selection(req, req)
    skipped: dict[str, str] = {}
    for name in CHAIN:
        why = probe(name, iface, pcap_file=pcap_file, auto=True)
        if why is None:
            return Selection(name, req, skipped)
        skipped[name] = why
    raise BackendUnavailable("no capture backend is usable: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))


def open_source(name: str, iface: str | None, **kw):
    """Open a live source of backend ``name`` on ``iface`` (keyword options are backend specific; the
    ``pcap`` backend takes ``file`` and ``speed`` instead of an interface)."""
    if name == "pcap":
        from feedhandler.capture.live._live import FileSource
        if not kw.get("file"):
            raise BackendUnavailable("capture backend pcap needs a capture file (--file)")
        return FileSource(kw["file"], speed=float(kw.get("speed") or 0.0))
    if name == "afpacket":
        from feedhandler.capture.live._live import AfPacketSource
        allowed = {"block_size", "block_count", "frame_size", "retire_ms", "snaplen", "promisc",
                   "hw_timestamps", "fanout_id", "ignore_outgoing", "tpacket_version"}
        return AfPacketSource(iface, **{k: v for k, v in kw.items() if k in allowed})
    if name == "afxdp":
        from feedhandler.capture.live import afxdp
        return afxdp.open_source(iface, **kw)
    if name == "dpdk":
        from feedhandler.capture.live import dpdk
        return dpdk.open_source(iface, **kw)
    raise ValueError(f"backend {name!r} has no live source")


def find_library(name: str) -> str | None:
    """ctypes.util.find_library, for doctor."""
    return ctypes.util.find_library(name)
