"""A PTP ordinary-clock slave over UDP/IPv4 (E2E delay request-response) that only MEASURES: offset from
master and mean path delay. It never steers any clock (``free_running`` semantics).

Time stamps: SO_TIMESTAMPING software stamps taken by the kernel (receive: Sync t2; transmit: Delay_Req
t3 read back from the socket error queue). With a PHC and hardware stamping the same code would read
raw hardware stamps (index 2 of scm_timestamping); this machine has neither.

Per Sync (two-step: with its Follow_Up) the slave has t1 (master send, + correctionField) and t2; per
Delay_Req/Delay_Resp it has t3 and t4 (master receive, - correctionField). Then, as IEEE 1588 11.3:
    mean_path_delay = ((t2 - t1) + (t4 - t3)) / 2          (over the latest pair)
    offset_from_master = (t2 - t1) - filtered_path_delay   (filter: moving median of 10, like ptp4l)

    with PtpSlave("eth0") as s:
        samples = s.run(duration=10)          # list of Sample

From the shell: ``feedhandler ptp-slave --iface eth0 --duration 30``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import statistics
import struct
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Sequence

from feedhandler.cliopts import parse_number, positive_seconds
from feedhandler.time import ptp

__all__ = ["PtpSlave", "Sample", "slave_main"]

SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_RAW_HARDWARE = 1 << 6
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
DELAY_FILTER = 10                    # samples in the path delay moving median (ptp4l's default length)
TX_STAMP_WAIT_S = 0.05               # s: how long to wait for the Delay_Req transmit stamp
DEFAULT_LOG_MIN_DELAY_REQ = 0        # log2 s: IEEE 1588 default logMinDelayReqInterval (1 Delay_Req/s) until
                                     # the master's Delay_Resp tells its own (its logMessageInterval field)
LOG_INTERVAL_UNSPECIFIED = 0x7F      # logMessageInterval value meaning "not specified"


@dataclass
class Sample:
    t_ns: int                        # local time of the Sync receipt (t2)
    sequence_id: int
    offset_ns: int                   # offset from master, with the filtered path delay
    path_delay_ns: int               # filtered mean path delay
    raw_delay_ns: int                # the last exchange's mean path delay


def _stamp(ancdata) -> int | None:
    for level, typ, data in ancdata:
        if level == socket.SOL_SOCKET and typ == SCM_TIMESTAMPING and len(data) >= 48:
            sw_s, sw_ns, _, _, hw_s, hw_ns = struct.unpack_from("@qqqqqq", data)
            if hw_s or hw_ns:
                return hw_s * 1_000_000_000 + hw_ns
            if sw_s or sw_ns:
                return sw_s * 1_000_000_000 + sw_ns
    return None


class PtpSlave:
    """Listens on UDP 319 (event) and 320 (general) of ``iface`` in PTP domain ``domain``."""

    def __init__(self, iface: str, domain: int = 0, delay_req_interval: float | None = None,
                 clock_identity: int | None = None, group: str = ptp.PTP_PRIMARY_MCAST):
        """``delay_req_interval`` (s): the wanted mean Delay_Req period; None follows the master. Never
        shorter than the master's logMinDelayReqInterval (IEEE 1588 9.5.11.2): the master announces it in
        every Delay_Resp, and a slave that asks faster is the one that breaks the master's budget."""
        if delay_req_interval is not None and not delay_req_interval > 0:
            raise ValueError(f"delay_req_interval must be > 0 s, not {delay_req_interval!r}")
        self.iface = iface
        self.domain = domain
        self.delay_req_interval = delay_req_interval
        self.log_min_delay_req: int = DEFAULT_LOG_MIN_DELAY_REQ   # the master's, once a Delay_Resp said it
        self.clock_identity = clock_identity if clock_identity is not None else random.getrandbits(64)
        self.port_number = 1
        self.group = group
        self.master: tuple[int, int] | None = None
        self.samples: list[Sample] = []
        self.counters = {"sync": 0, "follow_up": 0, "delay_req": 0, "delay_resp": 0, "announce": 0,
                         "other": 0, "decode_errors": 0, "no_rx_stamp": 0, "no_tx_stamp": 0, "other_domain": 0,
                         "delay_req_clamped": 0}
        self._socks: list[socket.socket] = []
        self._seq = 0
        self._pending_sync: dict[int, tuple[int, int, int]] = {}    # seq -> (t2, t1 or -1, correction)
        self._t1t2: tuple[int, int] | None = None                     # latest complete sync
        self._t3: dict[int, int] = {}                                 # delay_req seq -> t3
        self._delays: deque[int] = deque(maxlen=DELAY_FILTER)
        self._last_raw_delay = 0

    # ---- sockets ---------------------------------------------------------------------------------
    def open(self) -> "PtpSlave":
        ifindex = socket.if_nametoindex(self.iface)
        for port in (ptp.EVENT_PORT, ptp.GENERAL_PORT):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # ptp4l may share the ports
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.iface.encode())
                s.bind(("", port))
                mreq = socket.inet_aton(self.group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreq)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                flags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
                if port == ptp.EVENT_PORT:
                    flags |= SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_OPT_TSONLY
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
                s.setblocking(False)
            except BaseException:
                s.close()
                self.close()
                raise
            self._socks.append(s)
        return self

    def close(self) -> None:
        for s in self._socks:
            s.close()
        self._socks = []

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # ---- protocol --------------------------------------------------------------------------------
    def _send_delay_req(self) -> None:
        ev = self._socks[0]
        self._seq = (self._seq + 1) & 0xFFFF
        raw = ptp.encode_delay_req(self.clock_identity, self.port_number, self._seq, self.domain)
        ev.sendto(raw, (self.group, ptp.EVENT_PORT))
        self.counters["delay_req"] += 1
        deadline = time.monotonic() + TX_STAMP_WAIT_S
        while time.monotonic() < deadline:
            try:
                _, anc, _, _ = ev.recvmsg(0, 1024, socket.MSG_ERRQUEUE)
            except BlockingIOError:
                select.select([], [], [ev], 0.002)
                continue
            t3 = _stamp(anc)
            if t3 is not None:
                self._t3[self._seq] = t3
                if len(self._t3) > 64:
                    self._t3.pop(next(iter(self._t3)))
                return
        self.counters["no_tx_stamp"] += 1

    def delay_req_period(self) -> float:
        """Seconds between two Delay_Req: the wanted interval, but never below the master's minimum."""
        floor = 2.0 ** self.log_min_delay_req
        if self.delay_req_interval is None:
            return floor
        return max(self.delay_req_interval, floor)

    def _from_master(self, m: ptp.PtpMessage) -> bool:
        return self.master is not None and m.source_port == self.master

    def _on_message(self, raw: bytes, t_rx: int | None) -> None:
        try:
            m = ptp.decode(raw)
        except ptp.PtpDecodeError:
            self.counters["decode_errors"] += 1
            return
        if m.domain != self.domain:
            self.counters["other_domain"] += 1
            return
        if m.msg_type == ptp.ANNOUNCE:
            self.counters["announce"] += 1
            if self.master is None:       # first master heard; a BMCA is beyond a measuring slave
                self.master = m.source_port
        elif m.msg_type == ptp.SYNC:
            self.counters["sync"] += 1
            if not self._from_master(m):
                return
            if t_rx is None:
                self.counters["no_rx_stamp"] += 1
                return
            if m.two_step:
                self._pending_sync[m.sequence_id] = (t_rx, -1, m.correction)
                if len(self._pending_sync) > 16:
                    self._pending_sync.pop(next(iter(self._pending_sync)))
            else:
                self._sync_complete(m.sequence_id, m.body["origin_timestamp"] + (m.correction >> 16), t_rx)
        elif m.msg_type == ptp.FOLLOW_UP:
            self.counters["follow_up"] += 1
            if not self._from_master(m):
                return
            p = self._pending_sync.pop(m.sequence_id, None)
            if p is not None:
                t2, _, sync_corr = p
                t1 = m.body["precise_origin_timestamp"] + ((sync_corr + m.correction) >> 16)
                self._sync_complete(m.sequence_id, t1, t2)
        elif m.msg_type == ptp.DELAY_RESP:
            if m.body["requesting_port"] != (self.clock_identity, self.port_number) or not self._from_master(m):
                return
            self.counters["delay_resp"] += 1
            if m.log_interval != LOG_INTERVAL_UNSPECIFIED and -7 <= m.log_interval <= 7:
                self.log_min_delay_req = m.log_interval    # the master's logMinDelayReqInterval
            t3 = self._t3.pop(m.sequence_id, None)
            if t3 is None or self._t1t2 is None:
                return
            t4 = m.body["receive_timestamp"] - (m.correction >> 16)
            t1, t2 = self._t1t2
            raw_delay = ((t2 - t1) + (t4 - t3)) // 2
            self._last_raw_delay = raw_delay
            self._delays.append(raw_delay)
        else:
            self.counters["other"] += 1

    def _sync_complete(self, seq: int, t1: int, t2: int) -> None:
        self._t1t2 = (t1, t2)
        if not self._delays:
            return
        delay = int(statistics.median(self._delays))
        self.samples.append(Sample(t2, seq, (t2 - t1) - delay, delay, self._last_raw_delay))

    def run(self, duration: float, stop_after_samples: int | None = None) -> list[Sample]:
        """Receive, answer with Delay_Req every ``delay_req_interval`` s, collect samples."""
        if not self._socks:
            self.open()
        end = time.monotonic() + duration
        next_req = 0.0
        while True:
            now = time.monotonic()
            if now >= end or (stop_after_samples and len(self.samples) >= stop_after_samples):
                break
            if self.master is not None and self._t1t2 is not None and now >= next_req:
                self._send_delay_req()
                period = self.delay_req_period()
                if self.delay_req_interval is not None and period > self.delay_req_interval:
                    self.counters["delay_req_clamped"] += 1
                next_req = now + period
            r, _, _ = select.select(self._socks, [], [], min(0.05, max(0.0, end - now)))
            for s in r:
                while True:
                    try:
                        data, anc, _, _ = s.recvmsg(2048, 1024)
                    except BlockingIOError:
                        break
                    self._on_message(data, _stamp(anc))
        return self.samples

    def summary(self) -> dict:
        offs = [s.offset_ns for s in self.samples]
        dels = [s.path_delay_ns for s in self.samples]
        return {
            "iface": self.iface, "domain": self.domain,
            "master": None if self.master is None else f"{self.master[0]:016x}-{self.master[1]}",
            "samples": len(offs),
            "offset_ns_median": int(statistics.median(offs)) if offs else None,
            "offset_ns_mean": int(statistics.fmean(offs)) if offs else None,
            "offset_ns_stdev": int(statistics.pstdev(offs)) if len(offs) > 1 else None,
            "path_delay_ns_median": int(statistics.median(dels)) if dels else None,
            "delay_req_interval_s": self.delay_req_period(),
            "master_log_min_delay_req_interval": self.log_min_delay_req,
            "counters": dict(self.counters),
        }


def _domain(text: str) -> int:
    """A PTP domainNumber (one octet on the wire)."""
    return parse_number(text, int, "a PTP domain number", lambda n: 0 <= n <= 255,
                        "{value} is not a PTP domain number (0..255)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="feedhandler ptp-slave",
        description="Measure this host's clock offset and path delay to a PTP (IEEE 1588) master on an "
                    "interface, as an ordinary-clock slave that never steers the clock (software time stamps, "
                    "UDP/IPv4 end-to-end delay mechanism).")
    p.add_argument("--iface", required=True, help="interface the master is reached on")
    p.add_argument("--domain", type=_domain, default=0, help="PTP domain number 0..255 (default 0)")
    p.add_argument("--duration", type=positive_seconds, default=10.0, help="seconds to measure (default 10)")
    p.add_argument("--delay-req-interval", type=positive_seconds, default=None, metavar="S",
                   help="wanted seconds between Delay_Req messages; never below the master's "
                        "logMinDelayReqInterval (default: the master's)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--samples", action="store_true", help="include every sample in the JSON")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return p


def slave_main(argv: Sequence[str] | None = None) -> int:
    """``feedhandler ptp-slave --iface IF [--duration S] [--json]``: measure and print.

    Exit codes as every feedhandler command: 0 ok, 2 usage or an unknown interface, 1 a runtime failure
    (a socket error, or no sample measured: no master answered), 130 interrupted.
    """
    from feedhandler.exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE

    p = build_parser()
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if not os.path.exists(f"/sys/class/net/{a.iface}"):
        print(f"feedhandler ptp-slave: error: no interface {a.iface!r}", file=sys.stderr)
        return EXIT_USAGE
    if a.delay_req_interval is not None and not a.delay_req_interval > 0:
        print("feedhandler ptp-slave: error: --delay-req-interval must be > 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        with PtpSlave(a.iface, a.domain, a.delay_req_interval) as s:
            s.run(a.duration)
            out = s.summary()
            if a.samples:
                out["sample_list"] = [asdict(x) for x in s.samples]
    except KeyboardInterrupt:
        print("feedhandler ptp-slave: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        print(f"feedhandler ptp-slave: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if a.json:
        print(json.dumps(out))
    else:
        print(f"master {out['master']}: {out['samples']} samples, offset median {out['offset_ns_median']} ns "
              f"(stdev {out['offset_ns_stdev']}), mean path delay median {out['path_delay_ns_median']} ns, "
              f"Delay_Req every {out['delay_req_interval_s']:g} s")
    if out["samples"] == 0:     # nothing measured: the command could not do its job (exit 1), and says why
        heard = "no Sync from a PTP master" if out["master"] is None else "no complete Sync/Delay_Resp exchange"
        print(f"feedhandler ptp-slave: error: {heard} on {a.iface} in domain {a.domain} within {a.duration:g} s "
              f"(is a master such as ptp4l running on that network, UDP/IPv4, ports 319/320?)", file=sys.stderr)
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(slave_main())
