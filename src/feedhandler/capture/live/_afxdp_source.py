"""AfXdpSource: the AF_XDP live source (cffi module ``_afxdp`` over csrc/afxdp/capture_afxdp.c).

It plugs into :class:`feedhandler.capture.live._live.LiveFeed` through the C addresses of
``fh_xsk_next`` / ``fh_xsk_wake`` and its ``fh_xsk *``: no Python runs per packet or per batch.
"""
from __future__ import annotations

import ipaddress
import os

from feedhandler.errors import CaptureError

from . import _afxdp

__all__ = ["AfXdpSource", "bpf_object_path"]

_ffi, _lib = _afxdp.ffi, _afxdp.lib
_MODES = {"auto": 0, "native": 1, "drv": 1, "skb": 2, "generic": 2}


_RX_TIMESTAMP = {"off": 0, "auto": 1, "on": 2}


def bpf_object_path(rx_timestamp: bool = False) -> str | None:
    """The compiled XDP filter program next to this module (built with clang), or None; with
    ``rx_timestamp`` its variant that stamps frames from the XDP RX metadata (fh/xdp_meta.h)."""
    name = "xdp_feed_rxts.bpf.o" if rx_timestamp else "xdp_feed.bpf.o"
    p = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    return p if os.path.exists(p) else None


class AfXdpSource:
    """AF_XDP sockets on ``n_queues`` queues of ``iface`` with the feed filter attached.

    Parameters
    ----------
    iface : str
    udp_port, ports : int / iterable of int
        UDP destination ports of the feed (the XDP program passes everything else to the kernel).
    groups : iterable of str
        IPv4 destinations (multicast groups) of the feed; empty = any.
    xdp_mode : "auto" | "native" | "skb"
        Native (driver) XDP first, generic (skb) as the fallback in auto.
    zerocopy : None | bool
        None: try zero-copy, fall back to copy; True: require it; False: copy only.
    busy_poll_us : int
        > 0 enables preferred busy polling (SO_PREFER_BUSY_POLL, SO_BUSY_POLL) with this budget in us.
        Since Linux 6.13 it only takes effect on zero-copy sockets (``stats()["busy_poll_napi_id"]``
        is 0 otherwise); on veth use threaded NAPI instead (bench/README.md, "Live capture").
    filter : bool
        False: no filter program (libxdp's default program redirects the whole queue).
    rx_timestamp : "auto" | "on" | "off"
        Hardware receive stamps from the XDP RX metadata (the driver's ``bpf_xdp_metadata_rx_timestamp``
        kfunc, Linux >= 6.3): the filter is loaded device-bound in native mode and puts the stamp in front
        of every frame; frames with a stamp get ``ts_recv`` from it (clock flag hardware), the others the
        user-space clock. "auto" falls back to the plain filter when the device-bound program is refused
        (``stats()["rx_timestamp_reason"]`` says why), "on" fails instead. Drivers that have the kfunc but
        no stamp for a frame (veth: skbs without a NIC stamp) are counted in ``meta_no_stamp``.
    """

    def __init__(self, iface: str, *, udp_port: int | None = None, ports=(), groups=(), first_queue: int = 0,
                 n_queues: int = 1, xdp_mode: str = "auto", zerocopy: bool | None = None, busy_poll_us: int = 0,
                 frames: int = 0, frame_size: int = 0, ring_size: int = 0, filter: bool = True,
                 rx_timestamp: str = "auto"):
        if rx_timestamp not in _RX_TIMESTAMP:
            raise ValueError(f"rx_timestamp must be one of {sorted(_RX_TIMESTAMP)}, not {rx_timestamp!r}")
        ports = sorted(set(ports) | ({udp_port} if udp_port else set()))
        # libxdp's multi-program dispatcher fails its compatibility probe on some kernels (EPERM) and then
        # falls back to attaching the single program, loudly: skip the probe (one program is all we need)
        os.environ.setdefault("LIBXDP_SKIP_DISPATCHER", "1")
        bpf = bpf_object_path() if filter else None
        if filter and bpf is None:
            raise CaptureError("the XDP filter program was not compiled (no clang at build time): install clang "
                               "and rebuild, or pass filter=False to redirect the whole queue")
        if filter and not ports:
            raise CaptureError("AF_XDP with the feed filter needs the feed's UDP port (--port or --group ADDR:PORT)")
        if len(ports) > 16 or len(groups) > 16:
            raise ValueError("at most 16 ports and 16 groups")
        self.iface = iface
        self._keep = []
        cfg = _ffi.new("fh_xsk_config *")
        b_iface = _ffi.new("char[]", iface.encode())
        self._keep.append(b_iface)
        cfg.iface = b_iface
        cfg.first_queue = first_queue
        cfg.n_queues = n_queues
        cfg.frames = frames
        cfg.frame_size = frame_size
        cfg.ring_size = ring_size
        cfg.xdp_mode = _MODES[xdp_mode]
        cfg.zerocopy = 0 if zerocopy is None else (1 if zerocopy else -1)
        cfg.busy_poll_us = busy_poll_us
        if bpf:
            b_bpf = _ffi.new("char[]", bpf.encode())
            self._keep.append(b_bpf)
            cfg.bpf_object = b_bpf
            rxts = bpf_object_path(rx_timestamp=True)
            if rxts:
                b_rxts = _ffi.new("char[]", rxts.encode())
                self._keep.append(b_rxts)
                cfg.bpf_object_rxts = b_rxts
        cfg.rx_timestamp = _RX_TIMESTAMP[rx_timestamp]
        for i, p in enumerate(ports):
            cfg.ports[i] = int(p)
        cfg.n_ports = len(ports)
        for i, g in enumerate(groups):
            cfg.groups[i] = int(ipaddress.IPv4Address(g))
        cfg.n_groups = len(groups)
        out = _ffi.new("fh_xsk **")
        err = _ffi.new("char[512]")
        rc = _lib.fh_xsk_open(out, cfg, err, 512)
        if rc != 0:
            raise CaptureError(-rc, _ffi.string(err).decode(errors="replace"), iface)
        self._s = out[0]

    def native(self):
        if self._s is None:
            return (0, 0, 0)
        addr = lambda fn: int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, fn)))
        return (addr("fh_xsk_next"), addr("fh_xsk_wake"), int(_ffi.cast("uintptr_t", self._s)))

    def stats(self) -> dict:
        if self._s is None:
            return {}
        st = _ffi.new("fh_xsk_stats *")
        _lib.fh_xsk_stats_get(self._s, st)
        d = {k: int(getattr(st, k)) for k in ("packets", "bytes", "batches", "idle", "polls", "wakeups", "fill_short",
                                             "rx_invalid_descs", "rx_ring_full", "rx_fill_ring_empty",
                                             "xdp_seen", "xdp_redirected", "xdp_passed", "xdp_no_socket",
                                             "ts_hw", "meta_no_stamp", "meta_missing", "xdp_meta_failed",
                                             "meta_last_errno")}
        d["xsk_rx_dropped"] = int(st.rx_dropped)
        d["zerocopy"] = bool(st.zerocopy)
        d["xdp_mode"] = {1: "native", 2: "skb"}.get(int(st.xdp_mode), "default")
        # 0 with busy_poll_us > 0: busy polling drives nothing (copy mode on Linux >= 6.13)
        d["busy_poll_napi_id"] = int(st.busy_poll_napi_id)
        d["rx_timestamp"] = bool(st.rx_timestamp)
        d["rx_timestamp_reason"] = _ffi.string(_lib.fh_xsk_rx_timestamp_reason(self._s)).decode(errors="replace")
        d["ts_user"] = d["packets"] - d["ts_hw"]
        d["xdp_drops"] = d["xsk_rx_dropped"] + d["rx_ring_full"]
        return d

    def close(self) -> None:
        """Detach the XDP program and free the sockets (only after the LiveFeed using it was joined)."""
        if getattr(self, "_s", None) is not None:
            _lib.fh_xsk_close(self._s)
            self._s = None

    def __del__(self):
        self.close()
