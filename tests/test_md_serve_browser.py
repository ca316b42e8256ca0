"""The feed handler's market-data page in a real headless Chromium during a paced replay: the BBO it shows is
the replay's books at the record count it shows (checked against an independent replay of the same records)."""
from __future__ import annotations

import signal
import time

from _browser_support import artifact_dir, chromium, require_browser, wait_for
from test_md_serve import PCAP, _dec, _fh, _page_url, reference_bbo

from feedhandler import records


def test_served_page_shows_the_replays_books(request):
    require_browser()
    from selenium.webdriver.common.by import By

    # the sample is 17 h of capture time: at 2000x a 30 s replay (ended by SIGINT once checked)
    proc = _fh("replay", str(PCAP), "--pace", "2000", "--serve", "127.0.0.1:0")
    drv = None
    try:
        url = _page_url(proc)
        drv = chromium(1300, 900)
        drv.get(url)
        shown = []

        def grab():
            # one script: the BBO attributes and the record count of the same snapshot
            return drv.execute_script(
                "return [...document.querySelectorAll('section.book .bbo-line')].map(e => ({"
                "symbol: e.closest('section.book').dataset.symbol, bid: e.dataset.bid, bid_sz: e.dataset.bidSz,"
                "ask: e.dataset.ask, ask_sz: e.dataset.askSz, records: e.dataset.records,"
                "final: document.body.dataset.final === '1'}));")

        end = time.monotonic() + 60
        while time.monotonic() < end and len({s[0]["records"] for s in shown}) < 3:
            rows = grab()
            if rows and not rows[0]["final"] and (not shown or rows[0]["records"] != shown[-1][0]["records"]):
                shown.append(rows)
            if rows and rows[0]["final"]:
                break
            time.sleep(0.15)
        assert len(shown) >= 2, "the page showed fewer than two snapshots during the replay"
        drv.save_screenshot(str(artifact_dir(request) / "feed_page.png"))
        counters = drv.find_element(By.ID, "counters").text.lower()
        assert "packets" in counters and "schedule lag" in counters
        known = drv.execute_script("return JSON.parse(JSON.stringify([...document.querySelectorAll('section.book')]"
                                   ".map(s => s.dataset.symbol)));")
        assert known
        # the instrument ids: from the page's symbols endpoint (the feed's stock directory)
        import json
        import urllib.request
        with urllib.request.urlopen(url + "api/symbols", timeout=5) as r:
            ids = {x["symbol"]: x["instrument_id"] for x in json.loads(r.read())["data"]}
        checked = 0
        for rows in shown[:3]:
            for row in rows:
                n = int(row["records"])
                bid_px, bid_sz, _, ask_px, ask_sz, _ = reference_bbo(PCAP, n, ids[row["symbol"]])
                want_bid = "" if bid_px == records.UNDEF_PRICE else _dec(bid_px)
                want_ask = "" if ask_px == records.UNDEF_PRICE else _dec(ask_px)
                assert (row["bid"], int(row["bid_sz"]), row["ask"], int(row["ask_sz"])) == \
                    (want_bid, int(bid_sz), want_ask, int(ask_sz)), (row, n)
                checked += 1
        assert checked >= 2
        # choosing a symbol from the page: its book is shown from the next snapshot on
        sym = sorted(ids)[0]
        box = drv.find_element(By.ID, "symbols")
        box.send_keys(sym)
        drv.find_element(By.CSS_SELECTOR, "#choose button").click()
        wait_for(lambda: [s.get_attribute("data-symbol") for s in drv.find_elements(By.CSS_SELECTOR, "section.book")]
                 == [sym], timeout=20, what="the chosen symbol's book")
        assert proc.poll() is None, "the replay ended before the checks"
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        assert proc.returncode == 130
    finally:
        if drv is not None:
            drv.quit()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
