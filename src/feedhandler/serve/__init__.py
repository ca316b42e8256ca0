"""The feed handler's market-data page: ``feedhandler replay CAPTURE --pace recorded --serve 8081`` and
``feedhandler run ... --serve 8081`` show the BBO and depth of chosen symbols and the feed's counters (packets,
gaps, drops, latency) live in a browser while the capture plays or the live feed runs.

``sampler``  :class:`BookSampler`: called on the consumer thread (the thread that applies records to the books)
             after each batch; at most ``hz`` times a second it copies the chosen symbols' BBO and depth and the
             feed's counters into an immutable snapshot. Between samples a call costs one clock read: the
             books are never read from another thread and the hot loop never waits for the web server.
``server``   :class:`MarketDataServer`: a small stdlib HTTP server on its own thread: the page, the latest
             snapshot as JSON, a Server-Sent-Events stream of snapshots, and the choice of symbols.
``pace``     :class:`Pacer`: plays a capture at its recorded pace (or a multiple) for ``replay --pace``.

It does not import the ``engine`` package (the books it samples are handed to it).
"""
from feedhandler.serve.pace import Pacer
from feedhandler.serve.sampler import BookSampler
from feedhandler.serve.server import MarketDataServer, serve_address
from feedhandler.serve.feeds import LiveCounters, ReplayCounters, open_page

__all__ = ["BookSampler", "LiveCounters", "MarketDataServer", "Pacer", "ReplayCounters", "open_page", "serve_address"]
