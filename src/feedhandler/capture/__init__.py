"""Capture sources.

File sources (pcap, pcapng, NASDAQ BinaryFILE, gzip; format from the bytes) are native
(csrc/pcap.c, ``fh/pcap.h``) and driven by :class:`feedhandler.pipeline.Feed`;
:mod:`feedhandler.capture.pcapwriter` writes such files for tests and synthetic data.
"""
