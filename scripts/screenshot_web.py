#!/usr/bin/env python
"""Take the README's screenshot of the web demo: docs/web-demo.png.

Starts ``autocolor serve`` on a free loopback port, uploads a sample photo in
headless Chromium (scripts/install-browser.sh installs it), waits for the
before/after slider and saves the page, squeezed under the size limit.

    python scripts/screenshot_web.py                      # default weights
    python scripts/screenshot_web.py --model runs/x/checkpoints/step-000005000

Without default weights and without --model it uses an untrained model, so
the colors are meaningless: re-run it once trained weights are installed.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="model folder (default: the installed default weights)")
    p.add_argument("--photo", type=Path, default=REPO / "samples" / "mountains.jpg", help="photo to colorize")
    p.add_argument("--render-size", type=int, default=256, help="render size chosen in the page")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "web-demo.png", help="where the PNG goes")
    p.add_argument("--window", default="1280,1000", help="browser window size WIDTH,HEIGHT")
    p.add_argument("--max-kb", type=int, default=400, help="largest PNG written, in KB")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def untrained_model(folder: Path) -> Path:
    from autocolor.checkpoint import save_model
    from autocolor.models import create_model

    print("warning: no default weights and no --model: using an UNTRAINED model", file=sys.stderr)
    save_model(create_model("chroma-unet", width=48), folder)
    return folder


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: autocolor serve exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"error: autocolor serve did not answer at {url} within {timeout:.0f} s")


def squeeze_png(png: bytes, max_bytes: int) -> bytes:
    """The screenshot as PNG under ``max_bytes``: lossless if it fits, else with a
    shrinking palette (photos in a page survive 256 colors well)."""
    if len(png) <= max_bytes:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colors in (256, 192, 128, 96, 64):
        buffer = io.BytesIO()
        image.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
            buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise SystemExit(f"error: cannot fit the screenshot in {max_bytes // 1024} KB; try a smaller --window")


def screenshot(url: str, photo: Path, render_size: int, window: str) -> bytes:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--hide-scrollbars", f"--window-size={window}"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            wait = WebDriverWait(driver, 180, poll_frequency=0.25)
            driver.get(url)
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#uploads input[type=file]")).send_keys(str(photo))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#uploads [aria-label="{photo.name}"]'))
            driver.find_element(By.CSS_SELECTOR, "#render-size input").click()
            wait.until(lambda d: d.find_element(
                By.CSS_SELECTOR, f'#render-size li[role=option][aria-label="{render_size}"]')).click()
            driver.find_element(By.ID, "colorize").click()
            wait.until(lambda d: "Colorized" in d.find_element(By.ID, "status").text)
            slider = driver.find_element(By.ID, "slider-0")
            wait.until(lambda d: len(images := slider.find_elements(By.TAG_NAME, "img")) == 2 and all(
                img.get_attribute("complete") == "true" and int(img.get_attribute("naturalWidth")) > 0
                for img in images))
            driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
            time.sleep(1.0)  # let the toast-free page settle (fonts, transitions)
            return driver.get_screenshot_as_png()
        finally:
            driver.quit()


def main() -> int:
    args = parse_args()
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not Path(tool).exists():
            raise SystemExit(f"error: {tool} is missing; run scripts/install-browser.sh")
    if not args.photo.is_file():
        raise SystemExit(f"error: {args.photo} is not a file; pass --photo")
    from autocolor.web import default_model_available

    with tempfile.TemporaryDirectory(prefix="autocolor-shot-") as tmp:
        model = args.model or ("default" if default_model_available() else str(untrained_model(Path(tmp) / "untrained")))
        port = free_port()
        command = [sys.executable, "-m", "autocolor", "serve", "--port", str(port)]
        if model != "default":
            command += ["--model", model]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        process = subprocess.Popen(command, cwd=REPO, env=env)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for_server(url, process)
            png = screenshot(url, args.photo.resolve(), args.render_size, args.window)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    data = squeeze_png(png, args.max_kb * 1024)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data) // 1024} KB, model {model})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
