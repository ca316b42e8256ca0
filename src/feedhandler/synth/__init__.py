"""Synthetic NASDAQ TotalView-ITCH 5.0 days for tests, benchmarks and the sample captures.

    from feedhandler.synth import generate_day
    day = generate_day(messages=1_000_000, symbols=500, seed=7)
    day.write_pcap("day.pcap")            # MoldUDP64 over UDP multicast, nanosecond pcap
    day.write_binaryfile("day.bin.gz", gzip=True)

Command line: ``feedhandler synth OUT --messages N --symbols K --seed S --format pcap|pcapng|binaryfile
[--concentration S] [--depth-profile shallow|normal|deep]``.
"""
from feedhandler.synth.day import (DEFAULT_CONCENTRATION, DEFAULT_DEPTH_PROFILE, DEFAULT_MIX, DEPTH_PROFILES, SynthDay,
                                   encode_columns, generate_day, midnight_ns_of, wire_dtype)

__all__ = ["DEFAULT_CONCENTRATION", "DEFAULT_DEPTH_PROFILE", "DEFAULT_MIX", "DEPTH_PROFILES", "SynthDay",
           "encode_columns", "generate_day", "midnight_ns_of", "wire_dtype"]
