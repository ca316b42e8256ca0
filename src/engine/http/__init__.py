"""The HTTP/WebSocket front door of the exchange (``feedhandler exchange --http-port 8080``).

A thin gateway on aiohttp feeding the same :class:`engine.gateway.OrderPipeline` as the ZeroMQ gateway and
the FIX/OUCH acceptors: one engine, one sequencer, several doors. Modules:

``config``   the ``[http]`` table (HttpConfig)
``codec``    JSON envelope, error codes, decimal string <-> fixed-point integer conversion, enums
``auth``     X-User-ID (dev only), API key + HMAC-SHA256 (timestamp, window, nonce), JWT; rate limits
``views``    orders and trades as the engine's events describe them (for the GET endpoints)
``ws``       WebSocket hub: channels, per-connection bounded queues, depth/bbo with sequence numbers
``metrics``  Prometheus text exposition
``openapi``  the routes, and the OpenAPI description served at /docs
``server``   the aiohttp application, its handlers and the thread that runs its event loop
"""
from engine.http.config import HttpConfig


def __getattr__(name):
    if name == "HttpGateway":      # imports aiohttp: only when the gateway is wanted
        from engine.http.server import HttpGateway
        return HttpGateway
    raise AttributeError(name)


__all__ = ["HttpConfig", "HttpGateway"]
