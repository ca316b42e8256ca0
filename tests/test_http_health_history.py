"""/health and /metrics report the history writer (issue 11: "a metrics endpoint ... lags"): its lag, whether
it runs, its restarts; /health says DEGRADED while it is down (orders are still served) and UP again once
the exchange has started it again."""
from __future__ import annotations

import time

from _http_support import Signed, httpx, running_exchange


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_history_writer_in_health_and_metrics(tmp_path):
    with running_exchange(tmp_path) as ex:
        c = httpx.Client(base_url=ex.http.url, timeout=10)
        mm = Signed(ex.http.url, "MM")
        for i in range(3):
            r = mm.post("/api/v1/create_order", {"symbol": "AAPL", "side": "SELL", "type": "LIMIT", "qty": "1",
                                                 "price": str(150 + i)})
            assert r.status_code == 202, r.text
        assert _wait(lambda: c.get("/health").json()["data"]["history"]["lag"] == 0)
        h = c.get("/health").json()["data"]
        assert h["status"] == "UP" and h["history"]["alive"] is True and h["history"]["restarts"] == 0
        m = c.get("/metrics").text
        assert "exchange_history_lag 0" in m and "exchange_history_writer_up 1" in m
        assert "exchange_history_writer_restarts_total 0" in m

        ex.history.restart_delay_s = 3600.0       # the supervisor leaves it down while we look
        ex.history.proc.kill()                    # e.g. its Redis went away and it exited
        ex.history.proc.join(10)
        h = c.get("/health").json()["data"]
        assert h["status"] == "DEGRADED" and h["history"]["alive"] is False
        assert "exchange_history_writer_up 0" in c.get("/metrics").text
        r = mm.post("/api/v1/create_order", {"symbol": "AAPL", "side": "SELL", "type": "LIMIT", "qty": "1",
                                             "price": "160"})
        assert r.status_code == 202, r.text      # orders do not wait for history

        ex.history.restart_delay_s = 0.0          # the service's supervisor thread starts it again
        assert _wait(lambda: c.get("/health").json()["data"]["status"] == "UP")
        assert _wait(lambda: c.get("/health").json()["data"]["history"]["lag"] == 0)
        assert "exchange_history_writer_restarts_total 1" in c.get("/metrics").text
