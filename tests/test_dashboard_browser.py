"""The exchange's trader page in a real headless Chromium (Selenium): log in with the venue's JWT, place an order
from the form, see it in the ladder and among the open orders, cancel it; the ladder shows what GET
/api/v1/depth says. Screenshots are saved as test artifacts (see _browser_support.artifact_dir)."""
from __future__ import annotations

import pytest

from _browser_support import artifact_dir, chromium, login as _login, require_browser, wait_for
from _http_support import Signed, httpx, running_exchange


@pytest.fixture
def browser():
    require_browser()
    drv = chromium()
    try:
        yield drv
    finally:
        drv.quit()


def _ladder(drv) -> list[tuple[str, str, str]]:
    """(side, price, qty) of each ladder row, in page order (asks high to low, then bids high to low)."""
    rows = drv.execute_script(
        "return [...document.querySelectorAll('#ladder tbody tr[data-side]')]"
        ".map(r => [r.dataset.side, r.dataset.price, r.dataset.qty]);")
    return [tuple(r) for r in rows]


def _depth_rows(url: str, symbol: str = "AAPL") -> list[tuple[str, str, str]]:
    d = httpx.get(f"{url}/api/v1/depth/{symbol}?levels=10").json()["data"]
    return [("ask", p, q) for p, q in reversed(d["asks"])] + [("bid", p, q) for p, q in d["bids"]]


def test_login_place_see_in_ladder_and_orders_cancel(browser, tmp_path, request):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    drv = browser
    with running_exchange(tmp_path) as ex:
        url = ex.http.url
        # a resting ask from another account, so the ladder has both sides
        assert Signed(url, "TAKER").post("/api/v1/create_order", {"symbol": "AAPL", "side": "SELL", "type": "LIMIT",
                                                                   "price": "101", "qty": "3"}).status_code == 202
        drv.get(url + "/")
        wait_for(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", what="page ready")
        assert drv.find_element(By.ID, "o-submit").get_attribute("disabled")           # not logged in yet
        _login(drv, "demo-mm", "demo-mm-secret", "MM")
        Select(drv.find_element(By.ID, "o-side")).select_by_visible_text("BUY")
        Select(drv.find_element(By.ID, "o-type")).select_by_visible_text("LIMIT")
        Select(drv.find_element(By.ID, "o-tif")).select_by_visible_text("GTC")
        qty, price = drv.find_element(By.ID, "o-qty"), drv.find_element(By.ID, "o-price")
        qty.clear(), qty.send_keys("12")
        price.clear(), price.send_keys("99.5")
        drv.find_element(By.ID, "o-submit").click()
        msg = wait_for(lambda: (t := drv.find_element(By.ID, "order-msg").text).startswith("accepted") and t,
                       what="the order's 202")
        oid = msg.rsplit(" ", 1)[1]
        # in the ladder (from the depth channel) and among the open orders (order_updates / GET orders)
        wait_for(lambda: ("bid", "99.5", "12") in _ladder(drv), what="the bid in the ladder")
        row = wait_for(lambda: drv.find_element(By.CSS_SELECTOR, f'#open-orders tr[data-order-id="{oid}"]'),
                       what="the order among the open orders")
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[:6] == [oid, "AAPL", "BUY", "99.5", "12", "ACCEPTED"]
        assert _ladder(drv) == _depth_rows(url)
        o = Signed(url, "MM").get(f"/api/v1/order/{oid}").json()["data"]
        assert o["status"] == "ACCEPTED" and o["price"] == "99.5" and o["qty"] == "12"
        shots = artifact_dir(request)
        drv.save_screenshot(str(shots / "trader_order_open.png"))
        # cancel from the page
        row.find_element(By.CSS_SELECTOR, "button.cancel-btn").click()
        wait_for(lambda: not drv.find_elements(By.CSS_SELECTOR, f'#open-orders tr[data-order-id="{oid}"]'),
                 what="the order to leave the open orders")
        wait_for(lambda: ("bid", "99.5", "12") not in _ladder(drv), what="the bid to leave the ladder")
        assert Signed(url, "MM").get(f"/api/v1/order/{oid}").json()["data"]["status"] == "CANCELED"
        assert _ladder(drv) == [("ask", "101", "3")]
        drv.save_screenshot(str(shots / "trader_order_canceled.png"))
        assert (shots / "trader_order_canceled.png").stat().st_size > 10_000
        # no script error (network answers such as balances' 501 UNSUPPORTED without [accounts] are expected)
        logs = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE" and e.get("source") != "network"]
        assert not logs, logs


def test_ladder_shows_the_levels_of_get_depth(browser, tmp_path, request):
    from selenium.webdriver.common.by import By

    drv = browser
    with running_exchange(tmp_path) as ex:
        url = ex.http.url
        mm, tk = Signed(url, "MM"), Signed(url, "TAKER")

        def post(who, side, price, qty, sym="AAPL"):
            r = who.post("/api/v1/create_order", {"symbol": sym, "side": side, "type": "LIMIT", "price": price,
                                                  "qty": qty})
            assert r.status_code == 202, r.text

        # 12 ask levels (the ladder shows the best 10), bids on 3 levels, two orders on one level
        for i in range(12):
            post(mm, "SELL", f"{101 + i * 0.25:.2f}", str(5 + i))
        post(tk, "BUY", "99.75", "4")
        post(tk, "BUY", "99.75", "6")
        post(tk, "BUY", "99", "1")
        post(mm, "BUY", "98.125", "30")
        post(mm, "SELL", "50", "7", sym="MSFT")           # another symbol: not on this ladder
        drv.get(url + "/?symbol=AAPL")
        want = _depth_rows(url)
        assert len(want) == 13 and ("bid", "99.75", "10") in want
        wait_for(lambda: _ladder(drv) == want, what="the ladder to equal GET /api/v1/depth")
        # live: a trade takes an ask level, a new bid appears; the ladder follows the depth channel
        post(tk, "BUY", "101", "5")
        post(tk, "BUY", "100.5", "2")
        want = _depth_rows(url)
        assert ("ask", "101", "5") not in want and ("bid", "100.5", "2") in want
        wait_for(lambda: _ladder(drv) == want, what="the ladder to follow the depth updates")
        # the trade is on the tape
        wait_for(lambda: "101" in drv.find_element(By.ID, "tape").text, what="the trade on the tape")
        drv.save_screenshot(str(artifact_dir(request) / "trader_ladder.png"))


def test_operator_page_shows_latency_and_sessions(browser, tmp_path):
    from selenium.webdriver.common.by import By

    drv = browser
    with running_exchange(tmp_path) as ex:
        url = ex.http.url
        mm = Signed(url, "MM")
        for i in range(5):
            assert mm.post("/api/v1/create_order", {"symbol": "AAPL", "side": "BUY", "type": "LIMIT",
                                                    "price": f"{90 + i}", "qty": "1"}).status_code == 202
        drv.get(url + "/operator")
        box = wait_for(lambda: drv.find_element(By.CSS_SELECTOR, '.histbox[data-name="http.create_order"]'),
                       what="the create_order histogram")
        assert "n 5" in box.text
        wait_for(lambda: drv.find_element(By.ID, "total-requests").text.startswith("5"), what="request counter")
        assert drv.find_element(By.CSS_SELECTOR, '.histbox[data-name="engine.total"]')
        # the history writer catches up: lag 0 (the value above its label)
        wait_for(lambda: drv.find_element(By.ID, "history-lag").text.lower().split("\n") == ["0", "history lag (seq)"],
                 what="history lag 0")


def test_balances_and_pnl_follow_orders_and_fills(browser, tmp_path):
    """With [accounts]: the balances table follows balance_updates (a buy locks USD, a fill moves it), the PnL
    table shows the position and its PnL as GET /api/v1/pnl does."""
    from selenium.webdriver.common.by import By
    from test_http_balances import _bal, _exchange, _fund

    drv = browser
    ex = _exchange(tmp_path).start()
    try:
        url = ex.http.url
        _fund(url)                  # TAKER: 10000 USD; MM: 100 AAPL

        def table():
            return {r.get_attribute("data-asset"): tuple(td.text for td in r.find_elements(By.TAG_NAME, "td")[1:])
                    for r in drv.find_elements(By.CSS_SELECTOR, "#balances tbody tr[data-asset]")}

        drv.get(url + "/")
        wait_for(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", what="page ready")
        _login(drv, "demo-taker", "demo-taker-secret", "TAKER")
        wait_for(lambda: table().get("USD") == _bal(url, "TAKER")["USD"], what="USD balance")
        # a buy from the form locks its notional (and the fee it could pay)
        qty, price = drv.find_element(By.ID, "o-qty"), drv.find_element(By.ID, "o-price")
        qty.clear(), qty.send_keys("10")
        price.clear(), price.send_keys("50")
        drv.find_element(By.ID, "o-submit").click()
        wait_for(lambda: drv.find_element(By.ID, "order-msg").text.startswith("accepted"), what="the 202")
        locked = _bal(url, "TAKER")["USD"]
        assert locked[1] != "0"
        wait_for(lambda: table().get("USD") == locked, what="the lock in the balances table")
        # MM sells into it: TAKER gets AAPL, pays USD; the PnL table shows the position at the mark
        r = Signed(url, "MM").post("/api/v1/create_order", {"symbol": "AAPL", "side": "SELL", "type": "LIMIT",
                                                            "price": "50", "qty": "4"})
        assert r.status_code == 202, r.text
        want = _bal(url, "TAKER")
        wait_for(lambda: table() == want, what="balances after the fill")
        pnl = Signed(url, "TAKER").get("/api/v1/pnl").json()["data"]["symbols"][0]
        assert pnl["position"] == "4" and pnl["mark"] == "50"
        cells = "return [...document.querySelectorAll('#pnl tr[data-symbol=\"AAPL\"] td')].map(td => td.textContent);"
        wait_for(lambda: drv.execute_script(cells) ==
                 ["AAPL", "4", pnl["avg_price"], "50", pnl["realized"], pnl["unrealized"]], what="PnL values")
    finally:
        ex.stop()
