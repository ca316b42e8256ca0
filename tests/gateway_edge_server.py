"""A gateway exchange process for tests/test_gateway_durability.py (engine + journal + pipeline + ZeroMQ).

    python tests/gateway_edge_server.py CONFIG_JSON

Prints one JSON line ``{"endpoint": ...}`` when it serves. SIGTERM: stops the gateway, prints
``{"state_hash": ...}`` (the live state hash of the pipeline: books, risk, retry memory, names) and closes
the engine (journal fsynced). SIGKILL is the point of the suite.
"""
from __future__ import annotations

import json
import signal
import sys


def main() -> int:
    cfg = json.loads(sys.argv[1])
    from engine.auth import Authenticator, KeyStore
    from engine.gateway import Gateway, OrderPipeline
    from engine.manager import EngineManager
    from engine.risk import RiskLimits, RiskManager

    eng = EngineManager(cfg["symbols"], journal_dir=cfg["journal_dir"], fsync="batch")
    pipe = OrderPipeline(eng, RiskManager(RiskLimits(**cfg["risk"])), dedup_size=cfg.get("dedup_size", 100_000))
    keys = KeyStore({k: (s, a) for k, s, a in cfg["keys"]})
    gw = Gateway(pipe, Authenticator(keys), cfg["endpoint"], workers=2).start()
    from engine.signals import SignalSafeEvent
    stop = SignalSafeEvent()        # set from the handler: threading.Event.set() there can deadlock wait()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print(json.dumps({"endpoint": gw.endpoint, "rebuilt": pipe.rebuilt}), flush=True)
    stop.wait()
    gw.stop()
    print(json.dumps({"state_hash": pipe.state_hash()}), flush=True)
    eng.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
