"""FIX benchmark: messages/s from a TCP capture to records, next to ``simplefix`` (pure Python, the
baseline) parsing the same messages in the same run.

    python bench/bench_fix.py [--messages 100000] [--baseline-messages 20000] [--repeat 5] [--json]

The capture is made by the project's own synth mode (``feedhandler.protocols.fix_stream.synth``): one
FIX 4.4 session with orders, acks, fills, cancels, replaces, rejects and market data (W snapshots,
X incrementals with MBO and MBP entries), in TCP segments of up to 1460 bytes. Timed:

* ``native (streams)``: ``FixStreamDecoder.decode_pair`` over the two reassembled byte streams:
  framing with BodyLength/CheckSum validation, the nogil field scan, sequencing, market data ticks
  and order events (records out);
* ``native (capture)``: ``fix_stream.replay_stream(path)``: reading the pcap, TCP reassembly and the
  above;
* ``simplefix``: ``FixParser.append_buffer`` (1460-byte chunks) + ``get_message`` over the same bytes, reading MsgType
  and MsgSeqNum of every message (it does not validate BodyLength/CheckSum, nor build records). It
  parses a prefix (``--baseline-messages``) because it is slow; rates are per message either way.

The ratio printed is native / simplefix messages per second (required >= 20x). Best of ``--repeat``
runs; single-threaded, numbers are the host's (shared 2-core VM, hypervisor steal).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from feedhandler.framing.tcp import Reassembler, pair_streams
from feedhandler.protocols import fix_stream as fs


def _version(dist):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def best(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--baseline-messages", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import simplefix

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fix.pcap"
        msgs = fs.synth(path, args.messages, seed=args.seed)
        n = len(msgs)
        r = Reassembler()
        r.feed_file(path)
        pairs = [fs._fix_direction(p, None) for p in pair_streams(r.finish())]

        def native_streams():
            dec = fs.FixStreamDecoder()
            k = 0
            for i, (c, s) in enumerate(pairs):
                k += len(dec.decode_pair(c, s, i))
            assert dec.stats["messages"] == n, dec.stats
            return k

        def native_capture():
            recs, st = fs.replay_stream(path)
            assert st["fix"]["messages"] == n
            return len(recs)

        base = [m for _, _, m in msgs[: args.baseline_messages]]
        blob = b"".join(base)

        chunks = [blob[i:i + 1460] for i in range(0, len(blob), 1460)]    # as TCP delivers it

        def baseline():
            p = simplefix.FixParser()
            k = 0
            for c in chunks:
                p.append_buffer(c)
                while True:
                    m = p.get_message()
                    if m is None:
                        break
                    m.get(35)
                    m.get(34)
                    k += 1
            assert k == len(base)
            return k

        fs.FixStreamDecoder()                    # load the dictionaries once, outside the timing
        t_streams, nrec = best(native_streams, args.repeat)
        t_capture, _ = best(native_capture, args.repeat)
        t_base, _ = best(baseline, max(1, min(args.repeat, 3)))
    res = {
        "messages": n,
        "records": nrec,
        "bytes_per_message": round(sum(len(m) for _, _, m in msgs) / n, 1),
        "native_streams_msgs_per_s": n / t_streams,
        "native_capture_msgs_per_s": n / t_capture,
        "simplefix_msgs_per_s": len(base) / t_base,
    }
    res["ratio_streams"] = res["native_streams_msgs_per_s"] / res["simplefix_msgs_per_s"]
    res["ratio_capture"] = res["native_capture_msgs_per_s"] / res["simplefix_msgs_per_s"]
    res["machine"] = {"python": sys.version.split()[0], "platform": platform.platform(),
                      "simplefix": _version("simplefix")}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"FIX 4.4, {n} messages ({res['bytes_per_message']} bytes avg), {nrec} records")
        print(f"  native (streams)   {res['native_streams_msgs_per_s'] / 1e6:8.3f} M msg/s")
        print(f"  native (capture)   {res['native_capture_msgs_per_s'] / 1e6:8.3f} M msg/s")
        print(f"  simplefix          {res['simplefix_msgs_per_s'] / 1e6:8.3f} M msg/s")
        print(f"  ratio streams {res['ratio_streams']:.1f}x, capture {res['ratio_capture']:.1f}x (required >= 20x)")
    return res


if __name__ == "__main__":
    main()
