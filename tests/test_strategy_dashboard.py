"""The issue's end to end, seen in a browser: the shipped ITCH capture replayed at (a multiple of) its recorded pace
drives a breakout strategy -> executor -> exchange (as in test_strategy_e2e), the exchange also serves the dashboard
(``--http-port``); after the run headless Chromium logs in as the executor's account (TAKER) and the trader page
shows the strategy's fills: the trades tape of each traded symbol holds the history database's trades (price, qty,
taker side, newest first) and the PnL table the account's position per symbol that the history's fills add up to.
A screenshot of the page is saved as a test artifact (see _browser_support.artifact_dir)."""
from __future__ import annotations

import sqlite3
from collections import defaultdict

from _browser_support import artifact_dir, chromium, login, require_browser, wait_for
from test_strategy_e2e import _check, _feed, _finish, _setup, _start_trading, procs  # noqa: F401 (fixture)

TAPE_ROWS = 50       # the page loads the last 50 trades of a symbol (GET /api/v1/trades?limit=50)
SIDE = {"B": "BUY", "S": "SELL", "BUY": "BUY", "SELL": "SELL"}


def _free_port() -> int:
    from _durability_support import free_port   # below the ephemeral range (see there)
    return free_port()


def _history_trades(data) -> dict[str, list[tuple[str, str, str]]]:
    """The history's trades of the executor's account per symbol, oldest first, as the tape prints them."""
    from engine.http.codec import price_str

    db = sqlite3.connect(str(data / "history.sqlite"))
    try:
        rows = db.execute("SELECT symbol, price, qty, aggressor_side FROM trades WHERE buyer = 'TAKER' OR "
                          "seller = 'TAKER' ORDER BY trade_id").fetchall()
        pos = dict(db.execute("SELECT symbol, sum(CASE WHEN buyer = 'TAKER' THEN qty ELSE -qty END) FROM trades "
                              "WHERE buyer = 'TAKER' OR seller = 'TAKER' GROUP BY symbol").fetchall())
    finally:
        db.close()
    out = defaultdict(list)
    for sym, px, q, side in rows:
        out[sym].append((price_str(px), str(q), SIDE[side]))
    return dict(out), pos


def _tape(drv) -> list[tuple[str, str, str]]:
    rows = drv.execute_script("return [...document.querySelectorAll('#tape tbody tr')]"
                              ".map(r => [...r.cells].slice(1, 4).map(c => c.textContent));")
    return [tuple(r) for r in rows]


def _pnl_row(drv, symbol: str) -> list[str]:
    return drv.execute_script("return [...document.querySelectorAll('#pnl tr[data-symbol=\"' + arguments[0] + "
                              "'\"] td')].map(td => td.textContent);", symbol)


def test_strategy_fills_appear_on_the_dashboard(procs, tmp_path, request):  # noqa: F811 (the fixture)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    require_browser()
    ranges, span_s, syms, p, cfg = _setup(tmp_path)
    http = _free_port()
    data = _start_trading(procs, tmp_path, ranges, syms, p, cfg, exchange_args=("--http-port", str(http)))
    _feed(procs, p, span_s, len(syms))
    _finish(procs, exchange=False)                     # the exchange stays up for the browser
    st, outcomes = _check(procs, tmp_path, data, ["executor"])
    tape_want, pos_want = _history_trades(data)
    assert tape_want and sum(len(v) for v in tape_want.values()) > 0
    url = f"http://127.0.0.1:{http}"
    drv = chromium()
    try:
        drv.get(url + "/?symbol=" + syms[0])
        wait_for(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", what="page ready")
        login(drv, "demo-taker", "demo-taker-secret", "TAKER")
        shots = artifact_dir(request)
        seen = 0
        for sym in syms:
            Select(drv.find_element(By.ID, "symbol")).select_by_visible_text(sym)
            want = list(reversed(tape_want.get(sym, [])))[:TAPE_ROWS]          # newest first
            wait_for(lambda: _tape(drv) == want, timeout=30,
                     what=f"the {sym} tape to show the history's trades ({len(want)})")
            seen += len(want)
            # the PnL table (polled every 2 s): the position the history's fills add up to
            pos = pos_want.get(sym, 0)
            wait_for(lambda: _pnl_row(drv, sym)[:2] == [sym, str(pos)] or (not pos and not _pnl_row(drv, sym)),
                     timeout=30, what=f"the {sym} position {pos} in the PnL table")
            if want:
                drv.save_screenshot(str(shots / f"strategy_run_{sym}.png"))
        assert seen > 0 and any(pos_want.values())
        png = shots / f"strategy_run_{max(tape_want, key=lambda s: len(tape_want[s]))}.png"
        assert png.stat().st_size > 10_000
        logs = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE" and e.get("source") != "network"]
        assert not logs, logs
    finally:
        drv.quit()
    assert procs.stop("exchange") == 0, procs.read("exchange", "err")
