"""Headless Chromium for the dashboard tests: Debian's ``chromium`` and ``chromium-driver`` driven by Selenium.
Tests skip with the reason when one of them is missing."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def require_browser():
    pytest.importorskip("selenium", reason="selenium (test extra) is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    if CHROMEDRIVER is None:
        pytest.skip("no chromedriver on PATH (Debian: apt-get install chromium-driver)")


def chromium(width: int = 1400, height: int = 950):
    """A headless Chromium session (the caller quits it)."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    drv.set_page_load_timeout(30)
    return drv


def wait_for(fn, timeout: float = 20.0, what: str = "condition", interval: float = 0.05):
    """Poll ``fn()`` until it returns something truthy; AssertionError naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < end:
        try:
            v = fn()
        except Exception as e:       # noqa: BLE001 - the DOM changes under us: retry
            last_exc = e
            v = None
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def login(drv, key: str, secret: str, account: str):
    """Log in on the trader page (the header's form) and wait until the page and its WebSocket say so."""
    from selenium.webdriver.common.by import By
    drv.find_element(By.ID, "login-key").send_keys(key)
    drv.find_element(By.ID, "login-secret").send_keys(secret)
    drv.find_element(By.ID, "login-btn").click()
    wait_for(lambda: drv.find_element(By.ID, "account").text == f"account {account}", what="login")
    wait_for(lambda: drv.find_element(By.ID, "ws-status").text == "live", what="WebSocket")


def artifact_dir(request) -> Path:
    """Where screenshots go: $FH_ARTIFACTS, else <pytest basetemp>/artifacts (kept after the run)."""
    d = os.environ.get("FH_ARTIFACTS")
    p = Path(d) if d else request.config._tmp_path_factory.getbasetemp() / "artifacts"
    p.mkdir(parents=True, exist_ok=True)
    return p
