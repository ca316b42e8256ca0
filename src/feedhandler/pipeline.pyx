# distutils: sources = csrc/pcap.c
"""The Feed: a capture file in, normalized tick records out (into numpy batches or a Ring).

One packet's way, through the feed core (feedhandler.core.producer): ``fh_filesrc`` (csrc/pcap.c:
pcap / pcapng / BinaryFILE, gzip, format from the bytes) -> the protocol's framer -> its decoder ->
records, all in one ``nogil`` loop; Python is entered once per :meth:`Feed.read` call, or never while
the native producer thread started by :meth:`Feed.start` runs.

- ``itch50``: ``framing.moldudp64`` (Ethernet/VLAN/IPv4/UDP, MoldUDP64 sequencing with a reorder
  window, gap records) -> ``Itch50Decoder``.
- ``mdp3``: ``framing.cme_packets`` (one message per UDP payload, A/B ports sharing a channel) ->
  ``Mdp3Decoder`` (packet sequencing with A/B arbitration, RptSeq per instrument).
- ``fix``, ``ouch42``, ``ouch50``, ``ouch`` (version told from the first messages): TCP sessions.
  ``framing.tcp.TcpSessionFramer`` reassembles the connections packet by packet and, at the end of
  the input, decodes them (``fix_stream.decode_streams``: FIX framing, sequencing, market data and
  order events; ``ouch_events.decode_streams``: SoupBinTCP framing and OUCH order events); the
  producer then hands the records out in batches like any other protocol's. The records are those
  of ``replay_stream``, byte for byte; they come out only once the capture is read, because those
  decoders need whole-capture state (see TcpSessionFramer).

Time (ITCH): ITCH timestamps are nanoseconds since midnight (US/Eastern). ``ts_event = midnight_ns +
stamp`` where ``midnight_ns`` is, in order of precedence, the ``midnight_ns`` argument, midnight of
``date`` in America/New_York, midnight (America/New_York) of the day of the first captured packet, or 0
for a BinaryFILE without a date (so ``ts_event`` is then nanoseconds since midnight). MDP3 messages
carry their own epoch time stamps.
"""
from libc.stdint cimport uint64_t

from feedhandler.core.producer cimport PRODUCER_FILE, Producer, fh_source_next_fn
from feedhandler.includes.pcap cimport (
    FH_SRC_EEMPTY, FH_SRC_EFORMAT, FH_SRC_N_DAMAGE, FH_PKT_TS_NONE, fh_file_format_name, filesrc_damage,
    fh_filesrc, fh_filesrc_close, fh_filesrc_damage_name, fh_filesrc_next, fh_filesrc_open,
    fh_filesrc_stats, fh_filesrc_stats_get, fh_pkt,
)

import os

from feedhandler.errors import CaptureError, CaptureFormatError
from feedhandler.framing.moldudp64 import DEFAULT_REORDER_WINDOW

PROTOCOLS = ("itch50", "mdp3", "fix", "ouch42", "ouch50", "ouch")
TCP_PROTOCOLS = ("fix", "ouch42", "ouch50", "ouch")   # sessions over TCP (framing.tcp.TcpSessionFramer)


cdef size_t _filesrc_next(void *src, fh_pkt *pkts, size_t cap, int timeout_ms) noexcept nogil:
    return fh_filesrc_next(<fh_filesrc *>src, pkts, cap)


def _midnight_ny_ns(year, month, day):
    from datetime import datetime
    from zoneinfo import ZoneInfo
    return int(datetime(year, month, day, tzinfo=ZoneInfo("America/New_York")).timestamp()) * 1_000_000_000


def midnight_ns_for_date(date):
    """Midnight of ``date`` ("YYYY-MM-DD" or a datetime.date) in America/New_York, ns since the epoch."""
    import datetime as _dt
    if isinstance(date, str):
        date = _dt.date.fromisoformat(date)
    return _midnight_ny_ns(date.year, date.month, date.day)


def midnight_ns_for_ts(ts_ns):
    """Midnight (America/New_York) of the trading day that contains ``ts_ns`` (ns since the epoch)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo
    d = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=ZoneInfo("America/New_York")).date()
    return _midnight_ny_ns(d.year, d.month, d.day)


def mdp3_stats(framer_stats, dec):
    """The common feed counters (packets, messages, gaps, lost_messages, duplicates, out_of_order,
    resets) of an MDP3 feed, from its framer's and decoder's counters, with both in full."""
    c = dec.counters() if dec is not None else {}
    return {
        "udp_datagrams": framer_stats["udp"], "moldudp64_packets": 0, "heartbeats": c.get("heartbeats", 0),
        "end_of_session": 0, "messages": c.get("messages", 0), "duplicates": c.get("packet_duplicate", 0),
        "duplicate_packets": c.get("packet_duplicate", 0), "out_of_order": c.get("packet_reordered", 0),
        "reordered": c.get("packet_reordered", 0), "late": c.get("packet_late", 0),
        "gaps": c.get("packet_gaps", 0), "gaps_filled": 0, "gaps_lost": c.get("packet_gaps", 0),
        "lost_messages": c.get("packet_missing", 0), "resets": c.get("packet_resets", 0),
        "zero_sequence_packets": 0, "framing": dict(framer_stats),
    }


def _tcp_session_framer(protocol, symbols, dictionary_dir, max_ooo_segments, max_ooo_bytes):
    """The TCP session framer of a FIX or OUCH capture, with the session decoder replay_stream uses."""
    from functools import partial
    from feedhandler.framing.tcp import TcpSessionFramer
    if protocol == "fix":
        from feedhandler.protocols.fix_stream import decode_streams
        decode = partial(decode_streams, symbols=symbols, dictionary_dir=dictionary_dir)
    else:
        if dictionary_dir is not None:
            raise ValueError("dictionary_dir (FIX data dictionaries) applies to fix only")
        from feedhandler.protocols.ouch_events import decode_streams
        decode = partial(decode_streams, protocol=protocol, symbols=symbols)
    return TcpSessionFramer(decode, max_ooo_segments=max_ooo_segments, max_ooo_bytes=max_ooo_bytes)


cdef class Feed(Producer):
    """A capture file (pcap, pcapng, NASDAQ BinaryFILE; gzip or not; format from the bytes) decoded into
    normalized tick records.

    Parameters
    ----------
    path : str or os.PathLike
        The capture file.
    protocol : str or None
        ``"itch50"`` (default; MoldUDP64 framing), ``"mdp3"`` (CME MDP 3.0 over UDP), ``"fix"``,
        ``"ouch42"``, ``"ouch50"``, ``"ouch"`` (TCP sessions; "ouch": the version is told from the first
        messages), or None to frame and sequence MoldUDP64 only (records are then gap records).
    date : str, optional
        ITCH: trading day "YYYY-MM-DD"; ``ts_event`` = its midnight in America/New_York + the ITCH stamp.
    midnight_ns : int, optional
        Overrides ``date``: ns since the epoch of the trading day's midnight.
    reorder_window : int
        Packets held while waiting for a hole to fill (0..4096); a hole not filled when the window
        overflows (or at end of input) is reported lost. MDP3: packets ahead of their channel's
        MsgSeqNum wait for the other line's copy (``framing.cme_packets``; 0: only the decoder's
        look-ahead within a batch, so the result depends on the batching).
    sequencing : bool
        False: no MoldUDP64 sequencing (every message in arrival order, numbered on per session), for
        streams whose sequence numbers carry nothing (e.g. all 0; ``stats()["zero_sequence_packets"]``).
    reorder_window_messages : int, optional
        Also bound the window by the messages held (whichever bound is hit first).
    udp_port : int, optional
        Keep only UDP datagrams to this destination port.
    group : str, optional
        Keep only UDP datagrams to this destination IPv4 address (multicast group).
    channel_filter : iterable of int or str, optional
        Keep only these MoldUDP64 channels: channel indices (sessions numbered in order of appearance)
        or session names.
    channels : {udp_port: channel}, optional
        MDP3: fixed sequencing channels of ports (see ``framing.cme_packets``).
    ab_offset : int
        MDP3: ports that differ by this share a channel (A/B lines; default 1000, 0: off).
    publisher_id : int
        DBN publisher id written into every record.
    decoder : object, optional
        A ready decoder (``Itch50Decoder``, ``Mdp3Decoder``) to use instead of a new one (its counters
        then include this feed's).
    symbols : {symbol: instrument_id}, optional
        FIX / OUCH: fixed instrument ids (see ``fix_stream.replay_stream``, ``ouch_events.replay_stream``).
    dictionary_dir : str, optional
        FIX: directory of FIX42.xml / FIX44.xml (repeating groups); default as ``replay_stream``.
    max_ooo_segments, max_ooo_bytes : int
        FIX / OUCH: out-of-order TCP segments / bytes buffered per direction before a hole is declared.

    Notes
    -----
    Either :meth:`read` or :meth:`start` drives a feed, never both. FIX and OUCH records come out once
    the whole capture is read (in capture-time order, as ``replay_stream`` makes them); ``stats()``
    then holds the decoder's statistics too (``decoded`` True). ITCH records come out in sequence
    order with ``fh_gap`` records (rtype 0xE0) at the position where a gap opened, was filled, was lost,
    or the session ended/restarted; MDP3 records in the order the decoder's channel sequencing applies
    the packets, with gap records for packets lost, reset channels and stale instruments.
    """

    def __init__(self, path, protocol="itch50", *, date=None, midnight_ns=None,
                 reorder_window=DEFAULT_REORDER_WINDOW, reorder_window_messages=None, udp_port=None,
                 group=None, channel_filter=None, publisher_id=0, decoder=None, sequencing=True,
                 channels=None, ab_offset=1000, symbols=None, dictionary_dir=None, max_ooo_segments=1024,
                 max_ooo_bytes=4 << 20):
        cdef char err[512]
        cdef int rc
        cdef bytes bpath = os.fsencode(path)
        cdef size_t n
        cdef uint64_t first_ts = 0
        self.path = path
        if protocol not in PROTOCOLS and protocol is not None:
            raise ValueError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)} or None")
        self.protocol = protocol
        if protocol not in TCP_PROTOCOLS and (symbols is not None or dictionary_dir is not None):
            raise ValueError("symbols and dictionary_dir apply to the TCP protocols (fix, ouch*) only")
        if protocol in TCP_PROTOCOLS:
            if (channel_filter is not None or not sequencing or reorder_window_messages is not None
                    or channels is not None or udp_port is not None or group is not None
                    or reorder_window != DEFAULT_REORDER_WINDOW or decoder is not None):
                raise ValueError(f"{protocol} is a TCP session: reorder_window, reorder_window_messages, "
                                 "sequencing, udp_port, group, channel_filter, channels and decoder apply to "
                                 "UDP feeds only (TCP reassembly: max_ooo_segments, max_ooo_bytes)")
            framer = _tcp_session_framer(protocol, symbols, dictionary_dir, max_ooo_segments, max_ooo_bytes)
        elif protocol == "mdp3":
            if channel_filter is not None or not sequencing or reorder_window_messages is not None:
                raise ValueError("channel_filter, sequencing and reorder_window_messages are MoldUDP64 "
                                 "options: the MDP3 decoder sequences its channels itself")
            from feedhandler.framing.cme_packets import CmePacketFramer
            framer = CmePacketFramer(channels=channels, ab_offset=ab_offset, udp_port=udp_port, group=group,
                                     window=reorder_window)
        else:
            if channels is not None:
                raise ValueError("channels (port -> channel) applies to mdp3 only")
            from feedhandler.framing.moldudp64 import MoldUdp64Framer
            framer = MoldUdp64Framer(reorder_window=reorder_window,
                                     reorder_window_messages=reorder_window_messages, sequencing=sequencing,
                                     udp_port=udp_port, group=group, channel_filter=channel_filter,
                                     publisher_id=publisher_id)
        rc = fh_filesrc_open(&self.src, bpath, err, sizeof(err))
        if rc != 0:
            msg = err.decode("utf-8", "replace")
            if rc == FH_SRC_EFORMAT or rc == FH_SRC_EEMPTY:
                raise CaptureFormatError(f"{os.fspath(path)}: {msg}")
            if rc < 0 and rc > -10000:
                raise CaptureError(-rc, msg, os.fspath(path))
            raise CaptureError(msg)
        self.core.src_next = _filesrc_next
        self.core.src_ctx = self.src
        if protocol in TCP_PROTOCOLS:
            framer._attach_source(<size_t>self.src)
        self._plug(framer, None, PRODUCER_FILE)
        # The first batch: it also gives the first capture time for the default trading day.
        n = fh_filesrc_next(self.src, self.core.pkts, self.core.pkt_cap)
        if n == 0:
            self.core.src_eof = 1
        else:
            self.core.fr.set_input(self.core.fr.fr, self.core.pkts, n)
            for i in range(n):
                if self.core.pkts[i].flags != FH_PKT_TS_NONE:
                    first_ts = self.core.pkts[i].ts_ns
                    break
        if midnight_ns is not None:
            self._midnight_ns = int(midnight_ns)
        elif date is not None:
            self._midnight_ns = midnight_ns_for_date(date)
        elif first_ts:
            # (a capture clock before 1970-01-02 New York time is no trading day: keep 0)
            self._midnight_ns = max(0, midnight_ns_for_ts(first_ts))
        else:
            self._midnight_ns = 0
        if not 0 <= self._midnight_ns < 2**64:
            raise ValueError(f"midnight_ns must be 0..2**64-1 ns since the epoch, not {self._midnight_ns}")
        if decoder is None:
            if protocol == "itch50":
                from feedhandler.protocols.itch50 import Itch50Decoder
                decoder = Itch50Decoder(self._midnight_ns, publisher_id, 0)
            elif protocol == "mdp3":
                from feedhandler.protocols.mdp3 import Mdp3Decoder
                decoder = Mdp3Decoder()
        self._plug(framer, decoder, PRODUCER_FILE)

    def __dealloc__(self):
        # (Producer.__dealloc__ runs after this one: stop and join the thread before the file goes)
        self._stop_and_join()
        if self.src != NULL:
            fh_filesrc_close(self.src)
            self.src = NULL

    @property
    def midnight_ns(self):
        """ns since the epoch of the trading day's midnight used for ITCH ``ts_event``."""
        return self._midnight_ns

    def progress(self):
        """(bytes_read, total_bytes) of the file (compressed bytes for gzip), for a progress bar."""
        cdef const fh_filesrc_stats *s = fh_filesrc_stats_get(self.src)
        return (s.bytes_read, s.total_bytes)

    def channels(self):
        """MDP3: {udp_port: channel} of the ports seen or fixed so far ({} for ITCH)."""
        get = getattr(self.framer_obj, "channels", None)
        return get() if get is not None else {}

    def stats(self):
        """Counters of every stage (a snapshot; safe while the producer thread runs).

        Keys: ``format``, ``gzip``, ``linktype``, ``bytes_read``, ``total_bytes``, ``bytes`` (decoded file
        bytes), ``packets``, ``truncated``, ``file_damage`` {reason: n}, ``file_events``,
        ``file_bytes_skipped``, ``link_rejects`` {reason: n}, ``udp_datagrams``, ``messages``,
        ``duplicates``, ``out_of_order``, ``gaps``, ``lost_messages``, ``resets``, ``sessions``,
        ``records``, ``decoder`` (the decoder's counters). ITCH adds the MoldUDP64 framer's counters
        (``moldudp64_packets``, ``heartbeats``, ``end_of_session``, ``duplicate_packets``, ``reordered``,
        ``gaps_filled``, ``gaps_lost``, ``filled_messages``, ``resets``, ``after_end_of_session``,
        ``filtered_sessions``, ``malformed`` {reason: n}, ``gap_records``, ...); MDP3 adds ``framing``
        (the UDP framer's counters: frames, udp, kept, other_port, tcp_frames, ...) and ``channels``.
        FIX / OUCH add ``tcp`` (the reassembly counters so far), ``decoded`` (the capture has been read
        and decoded) and then the decoder's statistics (those of ``replay_stream``: ``protocol``,
        ``fix`` or ``soupbintcp`` / ``ouch`` / ``sessions`` / ``logins``, ``symbols``, ...).
        """
        cdef const fh_filesrc_stats *s = fh_filesrc_stats_get(self.src)
        damage = {fh_filesrc_damage_name(i).decode(): s.damage[i] for i in range(FH_SRC_N_DAMAGE)}
        fs = self.framer_obj.stats()
        d = {
            "format": fh_file_format_name(s.format).decode(),
            "gzip": bool(s.gzip),
            "linktype": s.linktype,
            "big_endian": bool(s.big_endian),
            "bytes_read": s.bytes_read,
            "total_bytes": s.total_bytes,
            "bytes": s.data_bytes,
            "pcapng_blocks_skipped": s.blocks_skipped,
            "truncated": damage["truncated_header"] + damage["truncated_record"] + damage["gzip_truncated"],
            "file_damage": damage,
            # where damage was and what was skipped (file_events, file_bytes_skipped, ...)
            **{k: v for k, v in filesrc_damage(s).items() if k != "file_damage"},
        }
        if self.protocol in TCP_PROTOCOLS:
            d["tcp"] = fs
            res = self.framer_obj.result
            d["decoded"] = res is not None
            if res is not None:
                d.update({k: v for k, v in res.items() if k != "records"})
        elif self.protocol == "mdp3":
            d.update(mdp3_stats(fs, self.dec))
            d["link_rejects"] = fs["link_rejects"]
            d["channels"] = self.channels()
        else:
            d.update(fs)
        d["packets"] = s.packets
        d["sessions"] = self.sessions()
        d["records"] = self.core.records
        d["decoder"] = self.dec.counters() if self.dec is not None else {}
        return d
