"""``feedhandler doctor [--iface IFACE]``: which capture backends can run here, and why not.

Everything here only looks: pkg-config and ctypes for libraries, /proc for capabilities and hugepages,
ioctls (SIOCETHTOOL ETHTOOL_GDRVINFO / ETHTOOL_GET_TS_INFO, SIOCGHWTSTAMP) for the driver and its time
stamping, an AF_XDP socket() probe for kernel support. Nothing is loaded, attached or changed.
"""
from __future__ import annotations

import argparse
import array
import ctypes.util
import fcntl
import glob
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
from typing import Sequence

__all__ = ["diagnose", "doctor_main", "ts_info", "driver_info", "hwtstamp_config"]

SIOCETHTOOL = 0x8946
SIOCGHWTSTAMP = 0x89B1
ETHTOOL_GDRVINFO = 0x00000003
ETHTOOL_GET_TS_INFO = 0x00000041
AF_XDP = 44

# SOF_TIMESTAMPING_* bits (linux/net_tstamp.h)
_SOF = {
    0: "tx_hardware", 1: "tx_software", 2: "rx_hardware", 3: "rx_software", 4: "software",
    5: "sys_hardware", 6: "raw_hardware",
}
_HWTSTAMP_FILTERS = {
    0: "none", 1: "all", 2: "some", 3: "ptp_v1_l4_event", 6: "ptp_v2_l4_event", 9: "ptp_v2_l2_event",
    12: "ptp_v2_event", 15: "ntp_all",
}
_CAPS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_SYS_ADMIN": 21, "CAP_BPF": 39}
# drivers with native XDP (driver mode) in mainline Linux 6.x (others: generic/SKB mode only)
_NATIVE_XDP = {"veth", "virtio_net", "tun", "ixgbe", "ixgbevf", "i40e", "ice", "igb", "igc", "mlx4_en",
               "mlx5_core", "bnxt_en", "nfp", "qede", "ena", "thunder", "sfc", "efx", "netsec", "stmmac",
               "tsnep", "fec", "mvneta", "mvpp2", "dpaa2-eth", "enetc", "lan966x", "hv_netvsc", "xen-netfront",
               "bond", "atlantic", "cpsw", "am65-cpsw-nuss", "octeontx2-nicpf", "gve", "idpf", "mana"}
# drivers with AF_XDP zero-copy
_ZEROCOPY = {"i40e", "ice", "ixgbe", "igc", "mlx5_core", "stmmac", "octeontx2-nicpf", "gve", "idpf",
             "tsnep", "bnxt_en"}

# drivers that implement the XDP RX metadata timestamp kfunc (xmo_rx_timestamp), Linux 6.3..6.18; veth's is the
# NIC stamp of an skb it forwards (none for locally sent packets)
_XDP_RX_TIMESTAMP = {"veth", "mlx5_core", "mlx4_en", "ice", "igc", "stmmac", "idpf"}


def _kernel_has_symbol(name: str) -> bool | None:
    """Whether /proc/kallsyms lists ``name`` (None when it cannot be read)."""
    try:
        with open("/proc/kallsyms") as f:
            return any(line.rstrip().endswith(" " + name) for line in f)
    except OSError:
        return None


def _ioctl_ethtool(iface: str, payload: bytearray) -> bytearray:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        buf = array.array("B", payload)
        addr, _ = buf.buffer_info()
        ifreq = struct.pack("16sP", iface.encode()[:15], addr)
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
        return bytearray(buf.tobytes())
    finally:
        s.close()


def driver_info(iface: str) -> dict:
    """ETHTOOL_GDRVINFO: driver, version, firmware, bus."""
    # struct ethtool_drvinfo: cmd u32, driver[32], version[32], fw_version[32], bus_info[32], ...
    b = _ioctl_ethtool(iface, bytearray(struct.pack("I", ETHTOOL_GDRVINFO) + bytes(196)))

    def cstr(x):
        return x.split(b"\0", 1)[0].decode(errors="replace")
    return {"driver": cstr(b[4:36]), "version": cstr(b[36:68]), "firmware": cstr(b[68:100]),
            "bus": cstr(b[100:132])}


def ts_info(iface: str) -> dict:
    """ETHTOOL_GET_TS_INFO: time stamping capabilities and the PHC index (ethtool -T)."""
    # struct ethtool_ts_info: cmd, so_timestamping, phc_index (s32), tx_types, tx_reserved[3],
    # rx_filters, rx_reserved[3]
    b = _ioctl_ethtool(iface, bytearray(struct.pack("I", ETHTOOL_GET_TS_INFO) + bytes(44)))
    cmd, so, phc, tx_types, _, _, _, rx_filters = struct.unpack_from("IIiIIIII", b)
    return {
        "so_timestamping": [name for bit, name in _SOF.items() if so & (1 << bit)],
        "phc_index": phc,
        "tx_types": tx_types,
        "rx_filters": [name for bit, name in _HWTSTAMP_FILTERS.items() if rx_filters & (1 << bit)],
        "hardware_rx": bool(so & (1 << 2)) and bool(so & (1 << 6)),
    }


def hwtstamp_config(iface: str) -> dict:
    """SIOCGHWTSTAMP: the current hardware stamping configuration, or the error (veth: unsupported)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        cfg = array.array("B", bytes(12))
        addr, _ = cfg.buffer_info()
        fcntl.ioctl(s.fileno(), SIOCGHWTSTAMP, struct.pack("16sP", iface.encode()[:15], addr))
        flags, tx, rx = struct.unpack("iii", cfg.tobytes())
        return {"ok": True, "tx_type": tx, "rx_filter": _HWTSTAMP_FILTERS.get(rx, rx)}
    except OSError as e:
        return {"ok": False, "error": os.strerror(e.errno) if e.errno else str(e)}
    finally:
        s.close()


def _pkg(name: str) -> str | None:
    if shutil.which("pkg-config") is None:
        return None
    r = subprocess.run(["pkg-config", "--modversion", name], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def _caps() -> dict:
    eff = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    eff = int(line.split()[1], 16)
    except OSError:
        pass
    return {name: bool(eff & (1 << bit)) for name, bit in _CAPS.items()}


def _meminfo() -> dict:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.startswith("Huge"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def _af_xdp_kernel() -> tuple[bool, str]:
    try:
        s = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        s.close()
        return True, "AF_XDP sockets available"
    except OSError as e:
        return False, f"socket(AF_XDP): {os.strerror(e.errno)}"


def _xdp_attached(iface: str) -> str | None:
    r = subprocess.run(["ip", "-d", "link", "show", "dev", iface], capture_output=True, text=True)
    for tok in ("xdpgeneric", "xdpdrv", "xdpoffload", "xdp"):
        if f" {tok}" in r.stdout:
            return tok
    return None


def _module_built(mod: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def diagnose(iface: str | None = None) -> dict:
    """Everything doctor knows, as a dict (the ``--json`` schema)."""
    from feedhandler.capture import live as backends

    caps = _caps()
    d: dict = {
        "kernel": platform.release(),
        "euid": os.geteuid(),
        "capabilities": caps,
        "libraries": {
            "libxdp": _pkg("libxdp"), "libbpf": _pkg("libbpf"), "libdpdk": _pkg("libdpdk"),
            "libpcap": _pkg("libpcap"),
            "find_library": {n: ctypes.util.find_library(n) for n in ("xdp", "bpf", "pcap", "rte_eal")},
        },
        "extensions": {
            "afpacket (feedhandler.capture.live._live)": _module_built("feedhandler.capture.live._live"),
            "afxdp (feedhandler.capture.live._afxdp)": _module_built("feedhandler.capture.live._afxdp"),
            "dpdk (feedhandler.capture.live._dpdk)": _module_built("feedhandler.capture.live._dpdk"),
        },
        "clang": shutil.which("clang"),
        "af_xdp_kernel": _af_xdp_kernel()[1],
        "xdp_rx_metadata_kernel": _kernel_has_symbol("bpf_xdp_metadata_rx_timestamp"),
        "hugepages": _meminfo(),
        "hugetlbfs_mounted": any(" hugetlbfs " in l for l in open("/proc/mounts")) if os.path.exists("/proc/mounts") else False,
        "vfio": os.path.isdir("/sys/bus/pci/drivers/vfio-pci"),
        "ptp_devices": sorted(glob.glob("/dev/ptp*")),
        "tools": {t: shutil.which(t) for t in ("ptp4l", "phc2sys", "tcpreplay", "ethtool", "ip")},
    }
    if iface:
        info: dict = {"name": iface, "exists": os.path.exists(f"/sys/class/net/{iface}")}
        if info["exists"]:
            try:
                info["driver"] = driver_info(iface)
            except OSError as e:
                info["driver"] = {"error": os.strerror(e.errno or 0)}
            drv = info["driver"].get("driver", "")
            info["xdp_native"] = drv in _NATIVE_XDP
            info["xdp_zerocopy"] = drv in _ZEROCOPY
            info["xdp_rx_timestamp"] = drv in _XDP_RX_TIMESTAMP and bool(d["xdp_rx_metadata_kernel"])
            info["xdp_attached"] = _xdp_attached(iface)
            try:
                info["timestamping"] = ts_info(iface)
            except OSError as e:
                info["timestamping"] = {"error": os.strerror(e.errno or 0)}
            info["hwtstamp"] = hwtstamp_config(iface)
            try:
                with open(f"/sys/class/net/{iface}/mtu") as f:
                    info["mtu"] = int(f.read())
                info["rx_queues"] = len(glob.glob(f"/sys/class/net/{iface}/queues/rx-*"))
            except OSError:
                pass
        d["iface"] = info
    d["backends"] = {}
    for name in backends.BACKENDS:
        why = backends.probe(name, iface) if name != "pcap" else None
        d["backends"][name] = {"usable": why is None, "why_not": why}
    d["backends"]["pcap"]["note"] = "capture file replay through the live path (feedhandler run --file FILE [--pace recorded]): always available"
    try:
        d["auto"] = backends.select("auto", iface).describe() if iface else None
    except backends.BackendUnavailable as e:
        d["auto"] = str(e)
    return d


def format_report(d: dict) -> str:
    L = [f"kernel {d['kernel']}, euid {d['euid']}, capabilities: "
         + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in d["capabilities"].items())]
    libs = d["libraries"]
    L.append("libraries (pkg-config): " + ", ".join(f"{k} {v or 'missing'}" for k, v in libs.items()
                                                     if k != "find_library"))
    L.append("extensions: " + ", ".join(f"{k} {'built' if v else 'not built'}" for k, v in d["extensions"].items()))
    L.append(f"kernel AF_XDP: {d['af_xdp_kernel']}; clang: {d['clang'] or 'missing (XDP filter program not compiled)'}"
             f"; XDP RX metadata kfuncs: {'yes' if d['xdp_rx_metadata_kernel'] else 'no (Linux >= 6.3)'}")
    hp = d["hugepages"]
    L.append(f"hugepages: {hp.get('HugePages_Total', 0)} total, {hp.get('HugePages_Free', 0)} free, "
             f"{hp.get('Hugepagesize', 0)} kB each; hugetlbfs {'mounted' if d['hugetlbfs_mounted'] else 'not mounted'}"
             f"; vfio-pci {'present' if d['vfio'] else 'absent'} (DPDK: --no-huge with virtual devices only)"
             if not hp.get("HugePages_Total") or not d["vfio"] else "")
    L.append(f"PTP hardware clocks: {', '.join(d['ptp_devices']) or 'none'}")
    if "iface" in d:
        i = d["iface"]
        if not i["exists"]:
            L.append(f"interface {i['name']}: does not exist in this network namespace")
        else:
            drv = i.get("driver", {})
            L.append(f"interface {i['name']}: driver {drv.get('driver', '?')} {drv.get('version', '')}, mtu "
                     f"{i.get('mtu')}, rx queues {i.get('rx_queues')}; XDP native {'yes' if i['xdp_native'] else 'no (generic only)'}"
                     f", zero-copy {'yes' if i['xdp_zerocopy'] else 'no (copy mode)'}"
                     f", XDP RX timestamp {'yes' if i['xdp_rx_timestamp'] else 'no (user-space clock per batch)'}"
                     f"{', program attached: ' + i['xdp_attached'] if i['xdp_attached'] else ''}")
            ts = i.get("timestamping", {})
            hw = i.get("hwtstamp", {})
            L.append(f"  time stamping: {', '.join(ts.get('so_timestamping', [])) or ts.get('error', '-')}; "
                     f"PHC index {ts.get('phc_index')}; hardware rx "
                     f"{'yes' if ts.get('hardware_rx') else 'no'}; SIOCGHWTSTAMP "
                     f"{'rx_filter ' + str(hw.get('rx_filter')) if hw.get('ok') else hw.get('error')}")
    L.append("backends:")
    for name, b in d["backends"].items():
        L.append(f"  {name:9s} {'usable' if b['usable'] else 'NOT usable: ' + str(b['why_not'])}"
                 + (f" ({b['note']})" if b.get("note") else ""))
    if d.get("auto"):
        L.append(f"auto -> {d['auto']}")
    return "\n".join(l for l in L if l)


def build_parser() -> argparse.ArgumentParser:
    from feedhandler.cliopts import add_debug, plain

    p = argparse.ArgumentParser(prog="feedhandler doctor",
                                description=plain(__doc__.strip().splitlines()[0].split(": ", 1)[1]))
    p.add_argument("--iface", default=None,
                   help="also check this network interface: link, driver, queues, timestamping and which "
                        "capture backends can open it (default: the host-wide checks only)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_debug(p)
    return p


def doctor_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``feedhandler doctor``: prints the report; exit 0, or 2 (usage / unreadable input,
    feedhandler.exitcodes) when --iface names a missing interface."""
    from feedhandler.exitcodes import EXIT_OK, EXIT_USAGE

    a = build_parser().parse_args(argv)
    d = diagnose(a.iface)
    print(json.dumps(d, indent=2) if a.json else format_report(d))
    if a.iface and not d["iface"]["exists"]:
        print(f"feedhandler doctor: error: no interface {a.iface!r} in this network namespace", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(doctor_main())
