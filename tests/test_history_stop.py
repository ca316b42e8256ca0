"""The exchange stops its history writer promptly whatever state the writer is in (a writer that died while
waiting must not leave the exchange's stop blocked: a multiprocessing.Event did exactly that in CI)."""
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.history.rows import Rows  # noqa: E402
from engine.history.service import HistoryService  # noqa: E402
from test_history import make_data_dir  # noqa: E402


def _stop_returns(svc: HistoryService, within_s: float) -> bool:
    t = threading.Thread(target=svc.stop, kwargs={"timeout": 5.0}, daemon=True)
    t.start()
    t.join(within_s)
    return not t.is_alive()


def test_stop_after_the_writer_was_killed_while_waiting(tmp_path):
    d = tmp_path / "data"
    make_data_dir(d, 3)
    svc = HistoryService(str(d), {}, 1).start()
    time.sleep(0.3)                         # the writer is idle, waiting for more journal
    os.kill(svc.proc.pid, signal.SIGKILL)
    svc.proc.join(5)
    assert _stop_returns(svc, 15), "stop() blocked on a writer that died while waiting"


def test_stop_of_a_live_writer_stores_and_returns(tmp_path):
    d = tmp_path / "data"
    make_data_dir(d, 3)
    svc = HistoryService(str(d), {}, 1).start()
    assert _stop_returns(svc, 30)
    assert svc.proc is None and svc.stored[0] > 0


def test_events_that_are_not_about_an_order_are_skipped():
    rows = Rows()
    rows.add(0, [{"type": "request", "seq": 1, "account": "A", "client_order_id": "x"},
                 {"type": "admin", "seq": 2, "account": "A", "op": "deposit", "asset": "USD", "amount": 5},
                 {"type": "balance", "seq": 2, "account": "A", "asset": "USD", "available": 5, "locked": 0}])
    assert rows.events == 0 and not rows.order_events
