"""CME MDP 3.0 benchmark: messages/s from UDP payloads to records (and to MBP books), next to the
``sbedecoder`` package (pure Python, the baseline) decoding the same packets in the same run.

    python bench/bench_mdp3.py [--messages 200000] [--baseline-messages 20000] [--repeat 5] [--json]

The capture is made by the project's own synth mode (feedhandler.protocols.mdp3.synth, schema 9):
book updates with order entries, order-book updates, trade summaries with fills, volume and session
statistics. Timed:

* ``native``: ``Mdp3Decoder.decode_buffer`` over every payload (one call, one nogil loop) -> records;
* ``native+books``: the same, then ``MbpBookSet.apply`` and the L3 ``feedhandler.books.mbo.BookSet.apply``;
* ``sbedecoder``: ``SBEParser.parse`` over each payload, touching every field of every group entry
  (``.value`` of each field: what a consumer needs). It decodes a prefix of the packets
  (``--baseline-messages``) because it is slow; rates are per message either way.

The ratio printed is native / sbedecoder messages per second (required >= 20x). Best of ``--repeat``
runs; single-threaded, numbers are the host's (shared machine, hypervisor steal; see bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from feedhandler.protocols.mdp3 import Mdp3Decoder
from feedhandler.protocols.mdp3.synth import INCREMENTAL_A, generate, read_pcap

SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mdp3" / "schema" / "Cme.Futures.Mdp3.Sbe.v1.9.xml"


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--baseline-messages", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-l3", action="store_true", help="leave out feedhandler.books.mbo (the L3 books)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.pcap"
        generate(path, messages=args.messages, seed=args.seed)
        pk = [p for _, port, p in read_pcap(path) if port == INCREMENTAL_A[1]]
    lengths = np.array([len(p) for p in pk], dtype=np.uint32)
    offsets = np.zeros(len(pk), dtype=np.uint64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    buf = b"".join(pk)
    probe = Mdp3Decoder()
    probe.decode_buffer(buf, offsets, lengths)
    nmsg = probe.counters()["messages"]

    def native():
        dec = Mdp3Decoder()
        return dec.decode_buffer(buf, offsets, lengths)

    t_native, ticks = best(native, args.repeat)

    from feedhandler.books import MbpBookSet

    BookSet = None
    if not args.no_l3:
        try:
            from feedhandler.books import BookSet
        except ImportError:  # the L3 books are another module; measure what exists
            BookSet = None

    mbp = MbpBookSet(max_instruments=64)

    def native_books():
        dec = Mdp3Decoder()
        t = dec.decode_buffer(buf, offsets, lengths)
        mbp.clear()
        mbp.apply(t)
        if BookSet is not None:
            BookSet().apply(t)
        return t

    t_books, _ = best(native_books, args.repeat)

    result = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "packets": len(pk), "messages": nmsg, "records": int(len(ticks)), "bytes": len(buf),
        "native_msgs_per_s": nmsg / t_native, "native_ns_per_msg": t_native / nmsg * 1e9,
        "native_books_msgs_per_s": nmsg / t_books, "l3_books": BookSet is not None,
    }
    try:
        import sbedecoder
    except ImportError:
        sbedecoder = None
    if sbedecoder is not None and SCHEMA.exists():
        schema = sbedecoder.MDPSchema()
        schema.parse(str(SCHEMA))
        parser = sbedecoder.SBEParser(sbedecoder.MDPMessageFactory(schema))
        base, n = [], 0
        for p in pk:
            if n >= args.baseline_messages:
                break
            base.append(p)
            n += sum(1 for _ in parser.parse(p, 12))

        def baseline():
            count = 0
            for p in base:
                for m in parser.parse(p, 12):
                    count += 1
                    for f in m.fields:
                        f.value
                    for g in m.groups:
                        for e in g.repeating_groups:
                            for f in e.fields:
                                f.value
            return count

        t_base, nb = best(baseline, max(1, min(args.repeat, 3)))
        result.update({"sbedecoder_version": getattr(sbedecoder, "__version__", "0.1.10"),
                       "baseline_messages": nb, "sbedecoder_msgs_per_s": nb / t_base,
                       "ratio": result["native_msgs_per_s"] / (nb / t_base),
                       "ratio_with_books": result["native_books_msgs_per_s"] / (nb / t_base)})
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"capture: {len(pk)} packets, {nmsg} messages, {len(buf)} bytes -> {len(ticks)} records")
        print(f"native            {result['native_msgs_per_s'] / 1e6:8.2f} M msgs/s  "
              f"({result['native_ns_per_msg']:.0f} ns/msg)")
        print(f"native + books    {result['native_books_msgs_per_s'] / 1e6:8.2f} M msgs/s  "
              f"(MBP{' + L3' if BookSet else ''})")
        if "ratio" in result:
            print(f"sbedecoder        {result['sbedecoder_msgs_per_s'] / 1e3:8.1f} k msgs/s  "
                  f"({result['baseline_messages']} messages)")
            print(f"ratio native / sbedecoder: {result['ratio']:.0f}x "
                  f"(with books {result['ratio_with_books']:.0f}x; required >= 20x)")
        else:
            print("sbedecoder (pip install sbedecoder) or the schema XML is missing: no baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
