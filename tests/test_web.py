"""The web demo, tested as a visitor uses it: a real server, a real headless Chromium.

The server runs ``autocolor serve`` in a subprocess with a tiny chroma model
whose head is set to one strong constant color, so "the result is colored"
is a meaningful check without trained weights. Browser tests are marked
``browser`` and skip only when /usr/bin/chromium is absent (CI installs it
with scripts/install-browser.sh).
"""

from __future__ import annotations

import io
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from autocolor.metrics import colorfulness
from webserver import REPO, Server, constant_color_model, running_server

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MAX_FILE_SIZE_MB = 2
MAX_PIXELS = 2_000_000

needs_browser = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (run scripts/install-browser.sh)",
)


def colorfulness_of(image: Image.Image) -> float:
    return colorfulness(pil_to_tensor(image.convert("RGB")).float() / 255).item()


def test_photo(tmp_dir: Path) -> Path:
    """A gray photo from samples/ when the checkout has one, else a structured gray image."""
    samples = sorted((REPO / "samples").glob("*.jpg"))
    if samples:
        return samples[0]
    yy, xx = np.mgrid[0:241, 0:323]
    gray = 128 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + 40 * ((xx - 160) ** 2 + (yy - 120) ** 2 < 60**2)
    path = tmp_dir / "structured.png"
    Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L").save(path)
    return path


test_photo.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    """``autocolor serve`` on a free loopback port, with its TMPDIR in a folder of its own
    (so the test can see that it leaves nothing behind)."""
    options = ["--max-file-size", f"{MAX_FILE_SIZE_MB}mb", "--max-pixels", str(MAX_PIXELS)]
    try:
        with running_server(tmp_path_factory.mktemp("web"), options) as srv:
            yield srv
    except RuntimeError as exc:
        pytest.fail(str(exc))


# ---------------------------------------------------------------- without a browser


def test_colorize_files_colors_good_images_and_explains_bad_ones(tmp_path):
    from autocolor.inference import Colorizer
    from autocolor.web import colorize_files

    colorizer = Colorizer.load(constant_color_model(tmp_path / "model"))
    good = tmp_path / "gray.png"
    Image.new("L", (90, 70), 128).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image at all\n")
    large = tmp_path / "large.png"
    Image.new("L", (2000, 1001)).save(large)
    files = [("gray.png", good), ("notes.png", text), ("large.png", large)]
    outcomes = colorize_files(colorizer, files, tmp_path / "out", render_size=64, max_pixels=MAX_PIXELS)
    assert [o.error is None for o in outcomes] == [True, False, False]
    with Image.open(outcomes[0].result) as result:
        assert result.size == (90, 70) and colorfulness_of(result) > 20
    assert Image.open(outcomes[0].before).mode == "L"
    for outcome in outcomes[1:]:
        assert outcome.error.startswith(outcome.name + ": ") and "\n" not in outcome.error
    assert "MP" in outcomes[2].error


@pytest.mark.slow
def test_app_queue_is_bounded(tmp_path, monkeypatch):
    from autocolor.web import WebConfig, build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    config = WebConfig(models={"m": str(tmp_path)}, concurrency=2, queue_size=5, samples=[])
    demo = build_app(config, tmp_path)
    assert demo._queue.max_size == 5
    colorize = next(fn for fn in demo.fns.values() if fn.api_name == "colorize")
    assert colorize.concurrency_limit == 2


def test_model_choices_labels_folders(tmp_path):
    from autocolor.web import model_choices

    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    choices = model_choices([str(a), str(b / "model.safetensors")])
    assert list(choices) == ["run", "run'"]
    assert choices["run'"] == str(b / "model.safetensors")


@pytest.mark.slow  # starts a real server
def test_server_refuses_paths_outside_its_folder(server):
    for path in ("/file=/etc/passwd", "/gradio_api/file=/etc/passwd", "/gradio_api/file=../../../etc/passwd",
                 f"/gradio_api/file={REPO / 'pyproject.toml'}", f"/gradio_api/file={tempfile.gettempdir()}"):
        assert server.get(path) in (403, 404), path


@pytest.mark.slow  # starts a real server
def test_server_refuses_oversized_uploads(server):
    boundary = "autocolorboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\0" * (MAX_FILE_SIZE_MB + 1) * 2**20
    body += f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(server.url + "/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == 413


# ---------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver (run scripts/install-browser.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,900"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)


def _upload_and_colorize(driver, server: Server, paths: list[Path]) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server.url)  # a fresh session
    file_input = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#uploads input[type=file]"), 60)
    file_input.send_keys("\n".join(str(p) for p in paths))
    listed = ", ".join(f'#uploads [aria-label="{p.name}"]' for p in paths)
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, listed)) == len(paths), 60)
    driver.find_element(By.ID, "colorize").click()
    _wait(driver, lambda d: "Colorized" in d.find_element(By.ID, "status").text)


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_browser_colorizes_a_photo_and_downloads_it_full_size(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    photo = test_photo(tmp_path)
    with Image.open(photo) as original:
        size, gray_colorfulness = original.size, colorfulness_of(original)
    started = time.monotonic()
    _upload_and_colorize(browser, server, [photo])
    slider = _wait(browser, lambda d: d.find_element(By.ID, "slider-0"))
    _wait(browser, lambda d: all(
        img.get_attribute("complete") == "true" and int(img.get_attribute("naturalWidth")) > 0
        for img in slider.find_elements(By.TAG_NAME, "img")) and len(slider.find_elements(By.TAG_NAME, "img")) == 2)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-demo-test.png"))

    link = browser.find_element(By.CSS_SELECTOR, "#downloads a[download]")
    name = link.get_attribute("download")
    link.click()
    target = browser.downloads / name
    _wait(browser, lambda d: target.is_file() and not list(browser.downloads.glob("*.crdownload")), 60)
    with Image.open(target) as result:
        assert result.size == size
        result_colorfulness = colorfulness_of(result)
    print(f"browser round trip {time.monotonic() - started:.1f} s; colorfulness "
          f"{gray_colorfulness:.1f} -> {result_colorfulness:.1f}")
    assert gray_colorfulness < 5 and result_colorfulness > gray_colorfulness + 20
    assert "Traceback" not in browser.page_source

    def kept(d) -> list[Path]:
        return [p for p in server.tmpdir.rglob("*") if p.is_file() and p.name.startswith(photo.stem)]

    assert kept(browser), "the upload and its results should exist while the tab is open"
    browser.get("about:blank")  # the visitor closes the tab
    _wait(browser, lambda d: not kept(d), 60)


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_browser_explains_a_bad_upload_without_a_traceback(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    fake = tmp_path / "holiday.png"
    fake.write_text("Dear diary, this is text with an image's name.\n")
    huge = tmp_path / "huge.png"
    Image.new("L", (2000, 1500)).save(huge)  # 3 MP over the server's 2 MP limit, a small file
    _upload_and_colorize(browser, server, [fake, huge])
    status = browser.find_element(By.ID, "status").text
    assert "Colorized 0 of 2 images" in status
    assert "holiday.png: not an image" in status
    assert "huge.png: 2000x1500" in status
    assert "Traceback" not in browser.page_source and "Error" not in status
    assert not browser.find_elements(By.CSS_SELECTOR, "#downloads a[download]")


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_browser_colorizes_a_chosen_sample_at_a_chosen_render_size(server, browser):
    from selenium.webdriver.common.by import By

    samples = sorted(p for p in (REPO / "samples").glob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not samples:
        pytest.skip("the checkout has no samples/ folder")

    def choose(elem_id: str, label: str) -> None:
        browser.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
        option = f'#{elem_id} li[role=option][aria-label="{label}"]'
        _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, option), 30).click()
        _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"#{elem_id} input").get_attribute("value") == label, 30)

    browser.get(server.url)
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#sample input"), 60)
    choose("sample", samples[-1].name)
    choose("render-size", "128")
    browser.find_element(By.ID, "colorize").click()
    _wait(browser, lambda d: "Colorized 1 of 1 image." in d.find_element(By.ID, "status").text)
    link = browser.find_element(By.CSS_SELECTOR, "#downloads a[download]")
    assert link.get_attribute("download") == f"{samples[-1].stem}-color.png"
    with urllib.request.urlopen(link.get_attribute("href"), timeout=30) as response:
        result = Image.open(io.BytesIO(response.read()))
    with Image.open(samples[-1]) as sample:
        assert result.size == sample.size
    assert colorfulness_of(result) > 20
