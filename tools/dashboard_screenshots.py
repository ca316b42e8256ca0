"""Screenshots of the dashboards for the README (docs/img/), taken in headless Chromium during a `feedhandler bot`
run against `feedhandler exchange --http-port`, and during a paced replay served with `--serve`.

    python tools/dashboard_screenshots.py [--out docs/img] [--bot-seconds 40]

Needs Debian's chromium + chromium-driver and selenium (the test extra). PNGs are palette-quantized with Pillow or
ImageMagick when one is installed (smaller files)."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--hide-scrollbars"):
        o.add_argument(a)
    return webdriver.Chrome(options=o, service=Service(shutil.which("chromedriver")))


def shrink(path: Path) -> None:
    """A 64-colour palette PNG (Pillow, else ImageMagick's convert; else left as it is)."""
    try:
        from PIL import Image
    except ImportError:
        if shutil.which("convert"):
            r = subprocess.run(["convert", str(path), "-colors", "64", f"PNG8:{path}"], capture_output=True)
            if r.returncode:
                print(f"{path}: left unquantized (convert failed: {r.stderr.decode()[:100].strip()})")
        return
    im = Image.open(path).convert("RGB").quantize(colors=64)
    im.save(path, optimize=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "img"), help="where the PNGs go (default docs/img)")
    p.add_argument("--bot-seconds", type=float, default=40.0, help="length of the bot run (default 40)")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fh = [sys.executable, "-m", "feedhandler"]
    gw, md, http = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        ex = subprocess.Popen(fh + ["exchange", "--data-dir", os.path.join(tmp, "data"), "--port", str(gw),
                                    "--md-port", str(md), "--http-port", str(http), "--symbols", "AAPL,MSFT"],
                              stdout=subprocess.DEVNULL)
        bot = None
        drv = None
        try:
            base = f"http://127.0.0.1:{http}"
            wait_http(base + "/health")
            bot = subprocess.Popen(fh + ["bot", "--port", str(gw), "--md-port", str(md), "--duration",
                                         str(a.bot_seconds), "--quiet"], stdout=subprocess.DEVNULL)
            time.sleep(min(20.0, a.bot_seconds / 2))          # trades for the chart and the tape
            from selenium.webdriver.common.by import By
            drv = browser(1400, 860)
            drv.get(base + "/")
            time.sleep(1.0)
            drv.find_element(By.ID, "login-key").send_keys("demo-mm")
            drv.find_element(By.ID, "login-secret").send_keys("demo-mm-secret")
            drv.find_element(By.ID, "login-btn").click()
            time.sleep(1.0)
            drv.execute_script("document.getElementById('interval').value='5s';"
                               "document.getElementById('interval').dispatchEvent(new Event('change'));")
            time.sleep(3.0)
            drv.save_screenshot(str(out / "dashboard_trader.png"))
            drv.set_window_size(1400, 900)
            drv.get(base + "/operator")
            time.sleep(3.0)
            drv.save_screenshot(str(out / "dashboard_operator.png"))
            bot.wait(a.bot_seconds + 60)
        finally:
            if drv is not None:
                drv.quit()
            for proc in (bot, ex):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    port = free_port()
    rp = subprocess.Popen(fh + ["replay", str(ROOT / "pcaps" / "itch50_sample.pcap"), "--pace", "1000", "--serve",
                                f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL)
    drv = None
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        time.sleep(12.0)
        drv = browser(1400, 900)
        drv.get(f"http://127.0.0.1:{port}/")
        time.sleep(4.0)
        drv.save_screenshot(str(out / "feed_marketdata.png"))
    finally:
        if drv is not None:
            drv.quit()
        if rp.poll() is None:
            rp.send_signal(signal.SIGINT)
            rp.wait(30)
    for name in ("dashboard_trader.png", "dashboard_operator.png", "feed_marketdata.png"):
        shrink(out / name)
        print(f"{out / name}: {(out / name).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
