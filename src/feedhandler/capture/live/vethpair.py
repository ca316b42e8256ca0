"""A throw-away veth pair with one end in its own network namespace, for tests and benchmarks.

    with VethPair() as v:            # needs root (CAP_NET_ADMIN) and iproute2
        v.host_if, v.ns_if, v.ns     # capture on host_if, send from ns_if inside netns v.ns
        v.ns_run(["tcpreplay", "-i", v.ns_if, "file.pcap"])

Everything it creates is deleted on exit, whatever happens (deleting the namespace deletes its end
of the pair, which deletes the pair). Names are unique per process and instance. It never touches
sysctls.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from typing import Sequence

__all__ = ["VethPair", "veth_unavailable_reason"]

_counter = itertools.count()


def veth_unavailable_reason() -> str | None:
    """None when a VethPair can be made here, else why not (for pytest skips)."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to create a veth pair and a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class VethPair:
    """host_if (this namespace, address host_addr) <-> ns_if (namespace ns, address ns_addr), a /30."""

    def __init__(self, tag: str = "fh", subnet_octet: int | None = None, mtu: int = 1500, queues: int = 1):
        n = next(_counter)
        uid = f"{os.getpid() % 100000:05d}{n % 100:02d}"
        self.host_if = f"{tag[:3]}h{uid}"[:15]
        self.ns_if = f"{tag[:3]}n{uid}"[:15]
        self.ns = f"{tag}ns{uid}"
        o = subnet_octet if subnet_octet is not None else (os.getpid() + n * 7) % 250 + 1
        self.host_addr = f"10.213.{o}.1"
        self.ns_addr = f"10.213.{o}.2"
        self.mtu = mtu
        self.queues = queues
        self._up = False

    def __enter__(self) -> "VethPair":
        try:
            _ip("netns", "add", self.ns)
            q = ["numrxqueues", str(self.queues), "numtxqueues", str(self.queues)] if self.queues > 1 else []
            _ip("link", "add", self.host_if, "mtu", str(self.mtu), *q, "type", "veth", "peer", "name", self.ns_if,
                "mtu", str(self.mtu), *q)
            _ip("link", "set", self.ns_if, "netns", self.ns)
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            self.ns_ip("addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
            self.ns_ip("link", "set", self.ns_if, "up")
            self.ns_ip("link", "set", "lo", "up")
            # multicast out of the namespace goes to the veth
            self.ns_ip("route", "add", "224.0.0.0/4", "dev", self.ns_if)
            self._up = True
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.ns, check=False)
        self._up = False

    def ns_ip(self, *args: str) -> subprocess.CompletedProcess:
        return _ip("-n", self.ns, *args)

    def ns_cmd(self, argv: Sequence[str]) -> list[str]:
        """argv run inside the namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def ns_run(self, argv: Sequence[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.ns_cmd(argv), check=check, capture_output=True, text=True, timeout=timeout)

    def ns_popen(self, argv: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.ns_cmd(argv), **kw)
