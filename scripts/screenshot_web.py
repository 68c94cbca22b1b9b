#!/usr/bin/env python
"""Take the README's screenshot of the web demo: docs/web-demo.png.

Starts ``autocolor serve`` on a free loopback port, uploads a sample photo in
headless Chromium (scripts/install-browser.sh installs it), colorizes it,
drops a few color points (``--points``: x and y as fractions of the photo,
and a color) and saves the page, squeezed under the size limit.

    python scripts/screenshot_web.py                      # default weights, if they take hints
    python scripts/screenshot_web.py --model levin        # Levin et al.'s optimization
    python scripts/screenshot_web.py --window 390,1400 --out test-artifacts/web-demo-phone.png

Without hint-aware default weights and without --model it uses ``levin``
(colors only where points are): re-run it once the hint-aware default is installed.
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
    p.add_argument("--photo", type=Path, default=REPO / "src" / "autocolor" / "samples" / "mountains.jpg", help="photo to colorize")
    p.add_argument("--render-size", type=int, default=256, help="render size chosen in the page")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "web-demo.png", help="where the PNG goes")
    p.add_argument("--window", default="1280,1000", help="browser window size WIDTH,HEIGHT")
    p.add_argument("--max-kb", type=int, default=400, help="largest PNG written, in KB")
    p.add_argument("--points", nargs="*", default=["0.55:0.12:#6d9ed8", "0.3:0.85:#6f8f3a", "0.75:0.45:#8a7560"],
                   help="color points X:Y:#rrggbb, X and Y as fractions of the photo's width and height")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guided_default() -> bool:
    """The installed default weights take color hints."""
    import json

    from autocolor.inference import default_model_dir

    config = default_model_dir() / "config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("kwargs", {}).get("guided"))


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


def set_point_color(driver, wait, color: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.CSS_SELECTOR, "#point-color button.dialog-button").click()
    field = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#point-color .color-picker input[type=text]"))
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(color, Keys.ENTER)
    driver.find_element(By.TAG_NAME, "h1").click()  # close the dialog


def screenshot(url: str, photo: Path, render_size: int, window: str, model: str, points: list[str]) -> bytes:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
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
            for elem_id, label in (("model", model), ("render-size", str(render_size))):
                wait.until(lambda d, e=elem_id: d.find_element(By.CSS_SELECTOR, f"#{e} input")).click()
                wait.until(lambda d, e=elem_id, v=label: d.find_element(
                    By.CSS_SELECTOR, f'#{e} li[role=option][aria-label="{v}"]')).click()
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#uploads input[type=file]")).send_keys(str(photo))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#uploads [aria-label="{photo.name}"]'))
            driver.find_element(By.ID, "colorize").click()
            wait.until(lambda d: "Colorized" in d.find_element(By.ID, "status").text)
            for n, point in enumerate(points, start=1):
                fx, fy, color = point.split(":")
                set_point_color(driver, wait, color)
                editor = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#editor img"))
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", editor)
                box = driver.execute_script(  # the drawn image inside the element (object-fit: contain)
                    "const i = arguments[0], s = Math.min(i.clientWidth / i.naturalWidth, i.clientHeight / i.naturalHeight);"
                    "return [i.naturalWidth * s, i.naturalHeight * s, i.clientWidth, i.clientHeight];", editor)
                dx = (float(fx) - 0.5) * box[0]
                dy = (float(fy) - 0.5) * box[1]
                ActionChains(driver).move_to_element_with_offset(editor, int(dx), int(dy)).click().perform()
                wait.until(lambda d, n=n: len(d.find_elements(By.CSS_SELECTOR, "#points li")) == n)
            time.sleep(2.0)  # the last render and the downloads
            driver.execute_script("document.activeElement && document.activeElement.blur();"
                                  "document.getElementById('editor').scrollIntoView({block: 'start'});"
                                  "window.scrollBy(0, -60)")
            time.sleep(1.0)  # let the page settle (fonts, transitions, toasts)
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
    model = args.model or ("default" if guided_default() else "levin")
    if model == "levin" and not args.model:
        print("note: the default weights take no hints yet: using levin (colors only where the points are)",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="autocolor-shot-"):
        port = free_port()
        command = [sys.executable, "-m", "autocolor", "serve", "--port", str(port)]
        if model != "default":
            command += ["--model", model]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        process = subprocess.Popen(command, cwd=REPO, env=env)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for_server(url, process)
            label = model if model in ("default", "levin") else Path(model).resolve().name
            png = screenshot(url, args.photo.resolve(), args.render_size, args.window, label, args.points)
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
