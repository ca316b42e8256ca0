"""Strategies as processes: market data in over ZeroMQ SUB, signals out over PUSH to an executor.

- :mod:`engine.strategy.base`: :class:`Strategy` (a small class with ``on_tick``) and :class:`Tick`;
- :mod:`engine.strategy.breakout`: the support/resistance breakout strategy;
- :mod:`engine.strategy.runner`: ``feedhandler strategy`` (the strategy process; no credentials);
- :mod:`engine.strategy.signals`: the msgpack signal and acknowledgement messages;
- :mod:`engine.strategy.outbox`: the strategy's unacknowledged signals (bounded, resent);
- :mod:`engine.strategy.outbox_file`: the same on disk (``--outbox``): a killed strategy resends them;
- :mod:`engine.strategy.executor`: ``feedhandler executor`` (orders to the exchange, exactly once);
- :mod:`engine.strategy.ledger`: the executor's durable record of handled signals.

This package imports neither the client library nor the executor: a strategy process never loads them.
"""
from engine.strategy.base import Strategy, Tick, ticks_of

__all__ = ["Strategy", "Tick", "ticks_of"]
