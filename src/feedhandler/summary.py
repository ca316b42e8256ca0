"""One summary of a feed run, for every protocol: common counters, then a section per protocol.

``replay`` (every protocol) and ``run`` (live, or a capture file through the live path) build their
summaries here; the same dict is printed as JSON (``--json``) or as text (:func:`format_summary`).

- Common counters (``COMMON_KEYS``, :func:`common`): the input (file, format, size), packets, messages
  and records (by type / kind), sequencing (gaps, duplicates), damage (malformed, unknown, bad length,
  truncated; the capture file's damage with offsets, :func:`file_damage`), books (order books and
  their error counters, :func:`book_counts`), time and rate, the --symbols selection, the BBO table
  and the output.
- A section per protocol adds what only that protocol has: :func:`itch50_section` (MoldUDP64
  packets, heartbeats, sessions, missing ranges, the trading day), :func:`mdp3_section` (schema versions
  and fallbacks, channels, A/B arbitration, RptSeq, recoveries, MBP books, TCP frames not decoded),
  :func:`tcp_section` (TCP reassembly, FIX or SoupBinTCP sessions, order events).
- Text: :func:`format_summary` prints the protocol's text (``SECTION_TEXT``): MDP3, FIX and OUCH put
  their section lines between the common head and tail (``_head_lines``, ``_tail_lines``); ITCH keeps
  its own order of the same lines (its layout predates the others and tests and users read it);
  ``run`` (feedhandler.live) prints its live head (backend, latency, drops) with the same pieces
  (damage lines, book errors, the BBO table).
"""
from __future__ import annotations

__all__ = ["COMMON_KEYS", "SUMMARY_KEYS", "common", "build", "file_damage", "sequencing_warnings", "book_counts",
           "mbp_counts", "itch50_section", "mdp3_section", "tcp_section", "format_summary", "format_bbo_table",
           "file_damage_lines", "book_errors_text", "interrupted_lines", "mdp3_schema_lines", "printable",
           "BOOK_ERRORS", "FILE_DAMAGE_TEXT", "SECTION_TEXT"]

# Top-level keys of an ITCH replay summary (the ``--json`` schema); tests check them.
SUMMARY_KEYS = (
    "file", "protocol", "format", "gzip", "mode", "date", "midnight_ns", "file_bytes", "packets", "moldudp64_packets",
    "heartbeats", "end_of_session", "sessions", "messages", "messages_by_type", "records", "gaps",
    "lost_messages", "missing_ranges", "duplicates", "out_of_order", "malformed", "malformed_by_reason",
    "unknown", "bad_length", "truncated", "file_damage", "file_events", "file_bytes_skipped", "link_rejects",
    "live_orders", "books", "stale_books",
    "book_counters", "elapsed_s", "messages_per_s", "symbols", "bbo", "output",
)
# Keys every protocol's summary has (:func:`common`); the sections add their own.
COMMON_KEYS = (
    "file", "protocol", "format", "gzip", "mode", "file_bytes", "packets", "messages", "messages_by_type",
    "records", "records_by_kind", "gaps", "duplicates", "malformed", "unknown", "bad_length", "truncated",
    "file_damage", "file_events", "file_bytes_skipped", "elapsed_s", "messages_per_s", "symbols", "bbo", "output",
)


# ---- the dict: common counters ---------------------------------------------------------------------
def file_damage(st: dict) -> dict:
    """The capture file's damage in a summary: ``file_damage`` {reason: n} (non-zero), ``file_events``
    [{reason, offset, skipped, resumed, compressed}] (where, how many bytes skipped, whether reading went
    on), ``file_bytes_skipped``. Every protocol's summary has these keys; ``--strict`` fails on any."""
    return {"file_damage": {k: int(v) for k, v in (st.get("file_damage") or {}).items() if v},
            "file_events": list(st.get("file_events") or []),
            "file_events_total": int(st.get("file_events_total", len(st.get("file_events") or []))),
            "file_bytes_skipped": int(st.get("file_bytes_skipped", 0))}


def sequencing_warnings(st: dict, sequencing: bool) -> list[str]:
    """What the user must hear about MoldUDP64 sequencing (ITCH): sequence numbers that are 0."""
    zero = int(st.get("zero_sequence_packets", 0))
    if not zero:
        return []
    packets = int(st.get("moldudp64_packets", 0)) - int(st.get("heartbeats", 0)) - int(st.get("end_of_session", 0))
    every = "every" if zero >= packets else f"{zero:,} of {packets:,}"
    if sequencing:
        return [f"{every} MoldUDP64 packet with messages carries sequence number 0 (MoldUDP64 numbers "
                f"messages from 1): the stream is not sequenced, so {int(st['duplicates']):,} messages were "
                "dropped as duplicates; pass --no-sequencing to decode every message in arrival order"]
    return [f"sequencing off (--no-sequencing): {every} MoldUDP64 packet with messages carries sequence number 0; "
            "messages are decoded in arrival order, gaps and duplicates cannot be seen"]


def book_counts(books) -> dict:
    """The order books (feedhandler.books.mbo.BookSet): instruments, live orders, counters."""
    return {"books": int(books.instrument_count), "live_orders": int(books.live_orders),
            "book_counters": {k: int(v) for k, v in books.counters().items()}}


def mbp_counts(mbp, stale: bool = True, counters: bool = True) -> dict:
    """The price-level books (feedhandler.books.mbp.MbpBookSet)."""
    out = {"mbp_books": len(mbp.instruments())}
    if stale:
        out["mbp_stale"] = [int(i) for i in mbp.stale_instruments()]
    if counters:
        out["mbp_book_counters"] = {k: int(v) for k, v in mbp.counters().items()}
    return out


def common(*, file, protocol, fmt, gzip, mode, file_bytes, packets, messages, messages_by_type, records_,
           records_by_kind, gaps, duplicates, malformed_by_reason, unknown, bad_length, truncated, damage_stats,
           books, elapsed, symbols, bbo, output, interrupted=None) -> dict:
    """The counters every protocol's summary has (``COMMON_KEYS`` and a few more)."""
    return {
        "interrupted": interrupted,
        "file": file, "protocol": protocol, "format": fmt, "gzip": bool(gzip), "mode": mode,
        "file_bytes": int(file_bytes), "packets": int(packets),
        "messages": int(messages), "messages_by_type": messages_by_type,
        "records": int(records_), "records_by_kind": records_by_kind,
        "gaps": int(gaps), "duplicates": int(duplicates),
        "malformed": sum(malformed_by_reason.values()), "malformed_by_reason": malformed_by_reason,
        "unknown": int(unknown), "bad_length": int(bad_length), "truncated": int(truncated),
        **file_damage(damage_stats),
        **book_counts(books),
        "elapsed_s": round(elapsed, 6),
        "messages_per_s": round(messages / elapsed, 1) if elapsed > 0 else None,
        "symbols": symbols, "bbo": bbo, "output": output,
    }


def build(base: dict, section: dict) -> dict:
    """A summary: the common counters, then the protocol's section (its keys win where both have one)."""
    missing = [k for k in COMMON_KEYS if k not in base]
    if missing:
        raise ValueError(f"summary: common counters missing: {missing}")
    return {**base, **section}


def _link_rejects(rejects: dict) -> dict:
    nz = {k: int(v) for k, v in rejects.items() if v}
    return {"link_rejects": sum(nz.values()), "link_rejects_by_reason": nz}


# ---- the dict: a section per protocol -------------------------------------------------------------------
def itch50_section(st: dict, feed, *, date, date_source, sequencing: bool) -> dict:
    """NASDAQ ITCH 5.0 over MoldUDP64 (or BinaryFILE): the Feed's framing counters and the trading day."""
    return {
        "warnings": sequencing_warnings(st, sequencing),
        "date": date.isoformat() if date else None,
        "date_source": date_source,
        "midnight_ns": int(feed.midnight_ns or 0),
        "moldudp64_packets": int(st["moldudp64_packets"]),
        "heartbeats": int(st["heartbeats"]),
        "end_of_session": int(st["end_of_session"]),
        "sessions": list(st["sessions"]),
        "lost_messages": int(st["lost_messages"]),
        "missing_ranges": [list(r) for r in feed.missing_ranges()],
        "out_of_order": int(st["out_of_order"]),
        **_link_rejects(st["link_rejects"]),
    }


MDP3_MESSAGE_TYPES = ("book", "order_book", "trade_summary", "volume", "session_stats", "daily_stats", "limits",
                      "status", "definitions", "snapshots", "snapshot_order_books", "heartbeats", "channel_resets")


def mdp3_counts(c: dict, reject_counters) -> dict:
    """The common counters of an MDP3 decoder's counters ``c``: messages by type, malformed by reason,
    unknown / bad length / truncated."""
    return {"messages": int(c["messages"]),
            "messages_by_type": {k: int(c[k]) for k in MDP3_MESSAGE_TYPES if c.get(k)},
            "malformed_by_reason": {k: int(c[k]) for k in reject_counters if c.get(k)},
            "unknown": int(c["msg_unknown_template"]) + int(c["msg_unknown_schema"]),
            "bad_length": int(c["msg_bad_size"]) + int(c["msg_bad_block_length"]),
            "truncated": int(c["packet_truncated"]) + int(c["msg_truncated"])}


def mdp3_section(c: dict, st: dict, dec, channels: dict, mbp) -> dict:
    """CME MDP 3.0: schema versions and fallbacks, channels, A/B arbitration, RptSeq and recoveries,
    the MBP books, and TCP frames that were not decoded (MDP3 over TCP is not supported)."""
    usage = dec.schema_usage()
    return {
        "bytes_read": int(st["bytes_read"]),
        "schema_versions": {str(v): u for v, u in sorted(usage.items())},
        "schema_fallbacks": [{"wire": v, "decoded_as": u["decoded_as"], "messages": u["messages"]}
                             for v, u in sorted(usage.items()) if u["decoded_as"] != v],
        "tcp_frames": int(st.get("tcp_frames", 0)),
        "frames": int(st["frames"]),
        "channels": {str(p): ch for p, ch in sorted(channels.items())},
        "lost_messages": int(c["packet_missing"]), "late": int(c["packet_late"]),
        "out_of_order": int(c["packet_reordered"]), "rptseq_gaps": int(c["rptseq_gaps"]),
        "recoveries": int(c["recoveries"]) + int(c["mbo_recoveries"]),
        "stale_instruments": [int(i) for i in dec.stale_instruments()],
        **_link_rejects(st["link_rejects"]),
        "mdp3": {k: int(v) for k, v in c.items()},
        **mbp_counts(mbp),
    }


def tcp_section(st: dict, tcp: dict, extra: dict, sessions, order_events: dict, mbp) -> dict:
    """FIX or OUCH over TCP: reassembly, sessions, order events (and the protocol's own block ``extra``)."""
    return {"connections": int(tcp.get("connections", 0)), "sessions": sessions, "order_events": order_events,
            "tcp_holes": int(tcp.get("holes", 0)), "tcp": tcp, **extra,
            "mbp_books": len(mbp.instruments())}


# ---- text ---------------------------------------------------------------------------------------------
def _n(x) -> str:
    return f"{x:,}"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def printable(name: str) -> str:
    """A session name for a terminal: bytes outside printable ASCII as \\xNN (real feeds send NULs; a
    damaged capture sends anything)."""
    return "".join(c if 32 <= ord(c) < 127 else f"\\x{ord(c):02x}" for c in name)


def _px(p) -> str:
    return "-" if p is None else f"{p:,.4f}"


# Order-book counters that mean the stream and the book disagreed (feedhandler.books.mbo.BookSet.counters()).
BOOK_ERRORS = ("unknown_order", "duplicate_add", "size_underflow", "zero_size_add", "bad_price", "bad_side",
               "replace_without_delete", "instrument_mismatch", "crossed", "bad_action", "no_memory")


def book_errors_text(counters: dict | None) -> str:
    """``"; book errors: unknown order 3, crossed 1"`` or ``""`` when the books saw none."""
    errs = [(k, int(v)) for k, v in (counters or {}).items() if k in BOOK_ERRORS and v]
    return ("; book errors: " + ", ".join(f"{k.replace('_', ' ')} {_n(v)}" for k, v in errs)) if errs else ""


def format_bbo_table(rows: list[dict]) -> list[str]:
    """The BBO table of ``replay`` and ``run`` (rows as ``replay.summary["bbo"]``; ``run`` keeps no
    per-instrument record counts: its ``records`` are None, shown as ``-``)."""
    if not rows:
        return []
    lines = ["", f"  {'symbol':<10} {'id':>8} {'book':>4} {'records':>8} {'bid size':>10} {'bid':>12} {'ask':>12} "
                 f"{'ask size':>10} {'spread':>8}"]
    for r in rows:
        spread = "-" if r["bid"] is None or r["ask"] is None else f"{r['ask'] - r['bid']:.4f}"
        lines.append(f"  {(r['symbol'] or '?'):<10} {r['instrument_id']:>8} {r.get('book', 'mbo'):>4} "
                     f"{'-' if r['records'] is None else _n(r['records']):>8} {_n(r['bid_sz']):>10} {_px(r['bid']):>12} {_px(r['ask']):>12} "
                     f"{_n(r['ask_sz']):>10} {spread:>8}" + ("  STALE" if r["stale"] else ""))
    return lines


def interrupted_lines(s: dict) -> list[str]:
    """The line that marks a partial summary (the replay was stopped by a signal)."""
    if not s.get("interrupted"):
        return []
    done, total = s.get("bytes_read"), s.get("file_bytes")
    where = f" after {100.0 * done / total:.1f}% of the file" if done is not None and total else ""
    out = s.get("output")
    kept = (f"; {out['path']} is complete and readable, with the {_n(out['records'])} records up to there"
            if out else "")
    return [f"  INTERRUPTED by {s['interrupted']}{where}: partial summary{kept}"]


def _head_lines(s: dict) -> list[str]:
    fmt = s["format"] + (" (gzip)" if s["gzip"] else "")
    rate = s["messages_per_s"]
    return interrupted_lines(s) + [f"{s['file']}: {s['protocol']}, {fmt}, {_bytes(s['file_bytes'])}",
            f"  packets {_n(s['packets'])}; messages {_n(s['messages'])} -> records {_n(s['records'])} in "
            f"{s['elapsed_s']:.3f} s" + (f" ({rate / 1e6:.3f} M msg/s)" if rate else "")]


# What each file-damage reason (fh/pcap.h) means, for the summary.
FILE_DAMAGE_TEXT = {
    "truncated_header": "the file ends inside its header",
    "truncated_record": "a record cut short",
    "bad_caplen": "an impossible pcap record length",
    "caplen_gt_origlen": "pcap records longer than their wire length (kept)",
    "bad_block_length": "an impossible pcapng block length",
    "bad_block": "pcapng blocks too short for their fields",
    "no_interface": "pcapng packets of an undeclared interface",
    "bad_section": "a damaged pcapng section header",
    "bad_timestamp": "pcap time stamps with a fraction of 1 s or more (kept)",
    "gzip_truncated": "the gzip stream ends early",
    "gzip_corrupt": "corrupt gzip data",
    "io_error": "a read error",
}
MAX_DAMAGE_LINES = 8


def file_damage_lines(s: dict) -> list[str]:
    """The summary lines about a damaged capture file: what, where (byte offset) and what was skipped."""
    dmg = s.get("file_damage") or {}
    if not dmg:
        return []
    what = ", ".join(f"{FILE_DAMAGE_TEXT.get(k, k)} x{_n(v)}" for k, v in dmg.items())
    skipped = s.get("file_bytes_skipped", 0)
    lines = [f"  FILE DAMAGE: {what}; {_n(skipped)} bytes skipped"]
    events = s.get("file_events") or []
    for e in events[:MAX_DAMAGE_LINES]:
        where = "compressed byte" if e.get("compressed") else "byte"
        after = (f"skipped {_n(e['skipped'])} bytes, resumed at {where} {_n(e['offset'] + e['skipped'])}"
                 if e["resumed"] else
                 "nothing after it could be read" + (f" ({_n(e['skipped'])} bytes)" if e["skipped"] else ""))
        what = FILE_DAMAGE_TEXT.get(e["reason"], e["reason"])
        if e.get("checksum"):
            what += (" (its check sum did not match: the damage is earlier in the member; what was read before "
                     "it may be wrong where it did not parse)")
        lines.append(f"    at {where} {_n(e['offset'])}: {what}; {after}")
    total = s.get("file_events_total", len(events))
    if total > min(len(events), MAX_DAMAGE_LINES):
        lines.append(f"    ... {_n(total - min(len(events), MAX_DAMAGE_LINES))} more (--json lists the first {len(events)})")
    return lines


def _symbols_lines(s: dict, where: str) -> list[str]:
    """The --symbols line: what was asked for, and what ``where`` (the reference data) did not have."""
    if s["symbols"] is None:
        return []
    nf = s["symbols"]["not_found"]
    return [f"  symbols: {', '.join(s['symbols']['requested'])}" + (f" (not in {where}: {', '.join(nf)})" if nf else "")]


def _tail_lines(s: dict) -> list[str]:
    lines = [f"  WARNING: {w}" for w in s.get("warnings") or ()]
    if s["records_by_kind"]:
        lines.append("  records: " + "  ".join(f"{k} {_n(v)}" for k, v in s["records_by_kind"].items()))
    lines += _symbols_lines(s, "the reference data")
    if s["output"]:
        o = s["output"]
        files = ", ".join(f"{k} {v}" for k, v in o.get("files", {}).items())
        lines.append(f"  output: {o['path']} ({o['format']}, {_n(o['records'])} records" + (f"; {files}" if files else "")
                     + ")")
        if o.get("not_written"):
            lines.append("    not representable in this format (use .parquet or .npy): "
                         + ", ".join(f"{k} {_n(v)}" for k, v in o["not_written"].items()))
    lines += format_bbo_table(s["bbo"])
    return lines


def mdp3_schema_lines(s: dict) -> list[str]:
    """Which MDP3 schema versions the capture holds and what decoded them (fallbacks said plainly), and
    TCP frames that were not decoded."""
    lines = []
    vers = s.get("schema_versions") or {}
    if vers:
        parts = []
        for v, u in vers.items():
            d = u["decoded_as"]
            if d is None:
                parts.append(f"{v} ({_n(u['messages'])} messages: NO compiled-in schema can decode it, skipped)")
            elif str(d) != str(v):
                parts.append(f"{v} ({_n(u['messages'])} messages) DECODED WITH VERSION {d}'s layout (no schema {v} "
                             f"compiled in: fields added after {d} are skipped)")
            else:
                parts.append(f"{v} ({_n(u['messages'])} messages)")
        lines.append("  schema: version " + "; ".join(parts))
    if s.get("tcp_frames"):
        lines.append(f"  TCP: {_n(s['tcp_frames'])} TCP frames NOT decoded: MDP3 over TCP (CME's TCP replay and "
                     "recovery) is not supported by replay; only the UDP feeds were read")
    return lines


def _format_mdp3(s: dict) -> str:
    lines = _head_lines(s)
    lines += mdp3_schema_lines(s)
    lines.append(f"  channels (udp port=channel): {', '.join(f'{p}={c}' for p, c in s['channels'].items()) or '-'}")
    if s["messages_by_type"]:
        lines.append("  by type: " + "  ".join(f"{k} {_n(v)}" for k, v in s["messages_by_type"].items()))
    lines.append(f"  sequencing: gaps {_n(s['gaps'])} (lost {_n(s['lost_messages'])} packets), A/B duplicates "
                 f"{_n(s['duplicates'])}, late {_n(s['late'])}, reordered {_n(s['out_of_order'])}, RptSeq gaps "
                 f"{_n(s['rptseq_gaps'])}, recoveries {_n(s['recoveries'])}, stale {len(s['stale_instruments'])}")
    lines.append(f"  damage: malformed {_n(s['malformed'])}{(' ' + str(s['malformed_by_reason'])) if s['malformed_by_reason'] else ''}, link rejects "
                 f"{_n(s['link_rejects'])}")
    lines += file_damage_lines(s)
    lines.append(f"  books: MBO {_n(s['books'])} instruments, {_n(s['live_orders'])} live orders; MBP "
                 f"{_n(s['mbp_books'])} instruments, {len(s['mbp_stale'])} stale"
                 + book_errors_text(s.get("book_counters")))
    return "\n".join(lines + _tail_lines(s))


def tcp_session_lines(t: dict, gaps: int, duplicates: int, sequencing: str = "sequencing") -> list[str]:
    """The FIX / OUCH session lines of a summary (``t``: replay's summary, or a run's ``tcp_session``
    section): connections and TCP damage, sessions, messages by type, order events, order -> ack
    latency, session sequencing and damage. ``sequencing`` names that line ("session sequencing" in a
    run, whose feed-level sequencing line comes first)."""
    lines = [f"  tcp: {_n(t['connections'])} connections, holes {_n(t['tcp_holes'])}, retransmitted segments "
             f"{_n(t['tcp'].get('retrans_segments', 0))}, out of order {_n(t['tcp'].get('ooo_segments', 0))}"]
    skipped = t["tcp"].get("not_tcp") or {}
    if skipped:     # frames that carry no TCP segment (other traffic, or a link type not read)
        lines.append(f"  frames without a TCP segment: {_n(sum(skipped.values()))} "
                     + "  ".join(f"{k} {_n(v)}" for k, v in skipped.items()))
    if t.get("sessions"):
        lines.append("  sessions: " + ", ".join(f"{k} (last seq {v.get('last_seq')}, logins {v.get('logins')}, "
                                                f"gaps {len(v.get('gaps', []))})" for k, v in t["sessions"].items()))
    if t["messages_by_type"]:
        names = t.get("message_type_names") or {}   # FIX: MsgType -> name from the FIX dictionary
        lines.append("  by type: " + "  ".join(f"{k} {names[k]} {_n(v)}" if names.get(k) else f"{k} {_n(v)}"
                                               for k, v in t["messages_by_type"].items()))
    oe = t["order_events"]
    if oe["events"]:
        lines.append(f"  order events {_n(oe['events'])} (client {_n(oe['from_client'])}, exchange "
                     f"{_n(oe['from_exchange'])}): " + "  ".join(f"{k} {_n(v)}" for k, v in oe["by_kind"].items()))
    else:
        lines.append("  order events: none")
    lat = oe["latency_ns"]
    if lat:
        lines.append(f"  order->ack latency (us, {_n(lat['count'])}): min {lat['min'] / 1e3:.1f}  p50 "
                     f"{lat['p50'] / 1e3:.1f}  p90 {lat['p90'] / 1e3:.1f}  p99 {lat['p99'] / 1e3:.1f}  max "
                     f"{lat['max'] / 1e3:.1f}")
    extra = f", bad checksums {_n(t['bad_checksums'])}" if "bad_checksums" in t else ""
    reasons = (" " + str(t["malformed_by_reason"])) if t["malformed_by_reason"] else ""
    lines.append(f"  {sequencing}: gaps {_n(gaps)}, duplicates {_n(duplicates)}{extra}; damage: "
                 f"malformed {_n(t['malformed'])}{reasons}, truncated {_n(t['truncated'])}")
    return lines


def _format_tcp(s: dict) -> str:
    lines = _head_lines(s) + tcp_session_lines(s, s["gaps"], s["duplicates"])
    lines += file_damage_lines(s)
    if s["protocol"] == "fix" or s["books"] or s["mbp_books"]:
        # OUCH carries a firm's orders, not market data: no books to speak of
        lines.append(f"  books: MBO {_n(s['books'])} instruments, {_n(s['live_orders'])} live orders; MBP "
                     f"{_n(s['mbp_books'])} instruments" + book_errors_text(s.get("book_counters")))
    return "\n".join(lines + _tail_lines(s))


def _format_itch(s: dict) -> str:
    lines = []
    fmt = s["format"] + (" (gzip)" if s["gzip"] else "")
    src = f" (from the {s['date_source']})" if s.get("date_source") and s.get("date") else ""
    lines += interrupted_lines(s)
    lines.append(f"{s['file']}: {fmt}, {_bytes(s['file_bytes'])}, trading day {s['date'] or 'unknown'}{src}")
    if s["format"] != "binaryfile":
        lines.append(f"  packets {_n(s['packets'])}: MoldUDP64 {_n(s['moldudp64_packets'])}, heartbeats "
                     f"{_n(s['heartbeats'])}, end of session {_n(s['end_of_session'])}; sessions "
                     f"{', '.join(map(printable, s['sessions'])) or '-'}")
    rate = s["messages_per_s"]
    lines.append(f"  messages {_n(s['messages'])} -> records {_n(s['records'])} in {s['elapsed_s']:.3f} s"
                 + (f" ({rate / 1e6:.2f} M msg/s, mode {s['mode']})" if rate else f" (mode {s['mode']})"))
    by = s["messages_by_type"]
    if by:
        items = sorted(by.items(), key=lambda kv: -kv[1])
        lines.append("  by type: " + "  ".join(f"{k} {_n(v)}" for k, v in items))
    lines.append(f"  sequencing: gaps {_n(s['gaps'])} (lost {_n(s['lost_messages'])} messages), duplicates "
                 f"{_n(s['duplicates'])}, out of order {_n(s['out_of_order'])}")
    for w in s.get("warnings") or ():
        lines.append(f"  WARNING: {w}")
    for sess, first, last in s["missing_ranges"][:10]:
        lines.append(f"    missing {sess} {first}..{last}")
    if len(s["missing_ranges"]) > 10:
        lines.append(f"    ... {len(s['missing_ranges']) - 10} more ranges")
    lines.append(f"  damage: malformed {_n(s['malformed'])}, unknown {_n(s['unknown'])}, bad length "
                 f"{_n(s['bad_length'])}, truncated {_n(s['truncated'])}, link rejects {_n(s['link_rejects'])}")
    lines += file_damage_lines(s)
    lines.append(f"  books: {_n(s['books'])} instruments, {_n(s['live_orders'])} live orders, "
                 f"{_n(s['stale_books'])} stale" + book_errors_text(s["book_counters"]))
    lines += _symbols_lines(s, "the stock directory")
    if s["output"]:
        o = s["output"]
        lines.append(f"  output: {o['path']} ({o['format']}, {_n(o['records'])} records)")
    lines += format_bbo_table(s["bbo"])
    return "\n".join(lines)


def format_summary(s: dict) -> str:
    """The human-readable summary of a replay (any protocol): its protocol's text section."""
    return SECTION_TEXT.get(s.get("protocol", "itch50"), _format_itch)(s)


SECTION_TEXT = {"itch50": _format_itch, "mdp3": _format_mdp3, "fix": _format_tcp, "ouch42": _format_tcp,
                "ouch50": _format_tcp}
