"""The order gateway, by responsibility:

- :mod:`engine.gateway.front`: :class:`Gateway`, the ZeroMQ front (sockets, workers, size limit, auth);
- :mod:`engine.gateway.codec`: the JSON codec of the protocol (:func:`dumpb`, :func:`loads`);
- :mod:`engine.gateway.validation`: stateless checks of one request (strict types, documented sizes);
- :mod:`engine.gateway.pipeline`: :class:`OrderPipeline`, the transport-independent path and its engine
  thread (also used by the FIX and OUCH acceptors);
- :mod:`engine.gateway.state`: the gateway's part of the state machine (retry memory, name map, risk),
  rebuilt from the journal.

Risk checks are in :mod:`engine.risk`; sequencing and the journal in :mod:`engine.shard_core` and
:mod:`engine.manager`; the documented limits in :mod:`engine.limits`.
"""
from engine.gateway.codec import dumpb, loads
from engine.gateway.front import Gateway
from engine.gateway.pipeline import (EXIT_ENGINE_FAILURE, EngineFailed, GatewayStats, OrderPipeline,
                                     exit_on_engine_failure)
from engine.gateway.state import DedupMemory, OrderState
from engine.gateway.validation import SIDES, BadRequest, validate

__all__ = ["Gateway", "OrderPipeline", "GatewayStats", "dumpb", "loads", "SIDES", "BadRequest", "validate",
           "DedupMemory", "OrderState", "EXIT_ENGINE_FAILURE", "EngineFailed", "exit_on_engine_failure"]
