"""The web demo, tested as a visitor uses it: a real server, a real headless Chromium.

The server runs ``autocolor serve`` in a subprocess with a tiny chroma model
whose head is set to one strong constant color, so "the result is colored"
is a meaningful check without trained weights. Browser tests are marked
``browser`` and skip only when /usr/bin/chromium is absent (CI installs it
with scripts/install-browser.sh).
"""

from __future__ import annotations

import io
import re
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor
from webserver import REPO, Server, constant_color_model, running_server

from autocolor.metrics import colorfulness

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
    """A gray photo from the bundled samples when the checkout has one, else a structured gray image."""
    samples = sorted((REPO / "src" / "autocolor" / "samples").glob("*.jpg"))
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
    options = ["--max-file-size", f"{MAX_FILE_SIZE_MB}mb", "--max-pixels", str(MAX_PIXELS), "--model", "levin"]
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
    strip = tmp_path / "strip.png"
    Image.new("L", (4000, 20)).save(strip)
    files = [("gray.png", good), ("notes.png", text), ("large.png", large), ("strip.png", strip)]
    outcomes = colorize_files(colorizer, files, tmp_path / "out", render_size=64, max_pixels=MAX_PIXELS)
    assert [o.error is None for o in outcomes] == [True, False, False, False]
    with Image.open(outcomes[0].result) as result:
        assert result.size == (90, 70) and colorfulness_of(result) > 20
        assert outcomes[0].result.name == "gray-color.png"
    assert Image.open(outcomes[0].before).mode == "L"
    for outcome in outcomes[1:]:
        assert outcome.error.startswith(outcome.name + ": ") and "\n" not in outcome.error
        assert "--max-pixels" not in outcome.error  # a visitor cannot pass server flags
    assert "2000x1001 is 2.0 MP; this demo takes photos up to 2 MP" in outcomes[2].error
    assert "strip" in outcomes[3].error


def test_a_color_upload_is_said_to_be_converted_and_the_download_keeps_its_format(tmp_path):
    from autocolor.inference import Colorizer
    from autocolor.web import colorize_files

    colorizer = Colorizer.load(constant_color_model(tmp_path / "model"))
    photo = tmp_path / "sepia.jpg"
    Image.new("RGB", (64, 48), (150, 120, 80)).save(photo)
    (outcome,) = colorize_files(colorizer, [("sepia.jpg", photo)], tmp_path / "out", render_size=64)
    assert outcome.result.name == "sepia-color.jpg"
    assert Image.open(outcome.result).format == "JPEG"
    assert any("had color" in note for note in outcome.notes)


def test_a_saturation_change_remerges_cached_chroma_without_the_model(tmp_path, monkeypatch):
    from autocolor import webedit
    from autocolor.inference import Colorizer
    from autocolor.web import Render, colorize_photos, open_photos
    from autocolor.webguard import FairGate

    calls = []
    real = webedit.predict_chroma
    monkeypatch.setattr(webedit, "predict_chroma", lambda *a, **k: calls.append(1) or real(*a, **k))
    colorizer = Colorizer.load(constant_color_model(tmp_path / "model"))
    path = tmp_path / "gray.png"
    Image.new("L", (80, 60), 120).save(path)
    photos, cache, gate = open_photos([("gray.png", path)], MAX_PIXELS), webedit.ChromaCache(), FairGate()
    results = []
    for saturation in (1.0, 0.5, 1.0):
        (outcome,) = colorize_photos(colorizer, photos, {}, Render("m", 128, saturation), tmp_path / str(saturation),
                                     cache, gate)
        with Image.open(outcome.result) as result:
            results.append(colorfulness_of(result))
    assert len(calls) == 1, "only the first render should run the model"
    assert results[1] < 0.7 * results[0] and abs(results[2] - results[0]) < 0.5


def _two_region_photo(tmp_path):
    """A 128x96 gray photo of two regions split by an edge: light on the left, dark on the right."""
    from autocolor.webedit import open_photo

    path = tmp_path / "two.png"
    gray = np.full((96, 128), 200, np.uint8)
    gray[:, 64:] = 60
    Image.fromarray(gray, "L").save(path)
    return open_photo("two.png", path, MAX_PIXELS)


@pytest.mark.parametrize("hint", ["point", "stroke"])
def test_a_hint_colors_its_region_towards_its_color(tmp_path, hint):
    """A clicked point, or a stroke painted on the editor's canvas (at half the photo's
    size), is spread by Levin's method over the region it lies in, and the cached path
    (chroma, then a merge at preview size) shows it: away from the hint, the region is
    clearly colored, with the hue of the hint's color."""
    from autocolor.color import rgb_to_lab
    from autocolor.inference import Colorizer
    from autocolor.webedit import (
        ChromaCache,
        Edit,
        chroma_for,
        preview_image,
        scribble_from_layer,
    )

    photo = _two_region_photo(tmp_path)
    edit = Edit()
    if hint == "point":
        color = (0x30, 0x60, 0xE0)  # blue
        edit.add(20, 40, "#3060e0")  # x = column, y = row
    else:
        color = (200, 60, 40)  # red
        layer = np.zeros((48, 64, 4), np.uint8)
        layer[10:40, 5:25] = (*color, 255)  # rows 20-80, columns 10-50 of the photo
        edit.scribble, edit.scribble_key = scribble_from_layer(layer, photo)
    model, cache = Colorizer.load("levin").model, ChromaCache()
    image = np.asarray(preview_image(photo, chroma_for(model, photo, 128, edit, cache), 1.0))
    lab = rgb_to_lab(torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255)  # (3, H, W)
    ab = lab[1:, 84:96, 2:62].mean(dim=(1, 2))  # the hint's (left) region, away from the hint
    wanted = rgb_to_lab(torch.tensor(color).float().view(3, 1, 1) / 255)[1:, 0, 0]
    assert ab.norm() > 15, f"the region should be clearly colored, ab {ab.tolist()}"
    assert torch.cosine_similarity(ab, wanted, dim=0) > 0.94, (
        f"the region's hue should be within 20 degrees of the hint's: ab {ab.tolist()}, hint's {wanted.tolist()}")
    assert chroma_for(model, photo, 128, edit, cache) is chroma_for(model, photo, 128, edit, cache)


@pytest.mark.skipif(not __import__("autocolor.faces").faces.available(), reason="needs the faces extra (OpenCV)")
def test_faces_are_looked_for_once_a_photo_and_kept_for_every_edit(monkeypatch):
    """The face detector took half of an edit's time: the demo runs it on a photo's first
    render only, and every edit gets the same skin-tone prior the CLI gives."""
    from autocolor import faces
    from autocolor.color import gray16_to_l
    from autocolor.demo import samples_dir
    from autocolor.inference import Colorizer
    from autocolor.pipeline import predict_chroma
    from autocolor.webedit import ChromaCache, Edit, chroma_for, open_photo

    photo = open_photo("portrait.jpg", samples_dir() / "portrait.jpg", MAX_PIXELS)
    calls, detect = [], faces.detect_faces
    monkeypatch.setattr(faces, "detect_faces", lambda *a, **k: calls.append(1) or detect(*a, **k))
    model, cache = Colorizer.load().model, ChromaCache()
    automatic = chroma_for(model, photo, 128, Edit(), cache)
    edit = Edit()
    edit.add(10, 10, "#3060e0")
    chroma_for(model, photo, 128, edit, cache)
    edit.add(300, 20, "#e03030")
    chroma_for(model, photo, 128, edit, cache)
    assert len(calls) == 1 and len(photo.faces) == 1, (calls, photo.faces)
    lightness = gray16_to_l(photo.pixels.gray[None])
    assert torch.equal(automatic, predict_chroma(model, lightness, 128, None, faces=True))
    assert not torch.equal(automatic, predict_chroma(model, lightness, 128, None, faces=False)), "the prior acts"


def test_a_painted_canvas_layer_is_a_full_size_scribble(tmp_path):
    """The editor's canvas (here at half the photo's size) becomes a scribble of the
    photo's size, painted where the canvas is; an empty canvas is no scribble."""
    from autocolor.webedit import scribble_from_layer

    photo = _two_region_photo(tmp_path)
    layer = np.zeros((48, 64, 4), np.uint8)
    assert scribble_from_layer(layer, photo) == (None, None), "nothing painted"
    layer[10:40, 5:25] = (200, 60, 40, 255)
    scribble, key = scribble_from_layer(layer, photo)
    assert scribble.shape == (96, 128, 4) and key
    painted = scribble[..., 3] > 127
    assert painted[20:80, 10:50].all() and painted.sum() == 60 * 40
    assert (scribble[20:80, 10:50, :3] == (200, 60, 40)).all()


class FakeRequest:
    """What the handlers read of a gr.Request."""

    def __init__(self, session: str, host: str = "127.0.0.1") -> None:
        self.session_hash = session
        self.client = type("Client", (), {"host": host})()


class FakeSelect:
    def __init__(self, index) -> None:
        self.index = index


def test_handlers_edit_suggest_compare_and_remerge_without_a_server(tmp_path, monkeypatch):
    """The page's handlers as plain calls: colorize an upload, click a point, get
    swatches, compare render sizes; a saturation change runs no model."""
    import autocolor.webedit as webedit
    from autocolor.checkpoint import save_model
    from autocolor.models import create_model
    from autocolor.web import COMPARED_SIZES, SWATCHES, Handlers, WebConfig, WebState

    torch.manual_seed(0)
    model = create_model("chroma-unet", width=16, guided=True)
    with torch.no_grad():
        model.spread_in.weight.normal_(0, 2.0)
    save_model(model, tmp_path / "guided")
    config = WebConfig(models={"guided": str(tmp_path / "guided")}, samples=[], max_pixels=MAX_PIXELS)
    handlers = Handlers(WebState(config, tmp_path / "work"))
    upload = handlers.state.uploads.new_path("photo.png")
    Image.open(test_photo(tmp_path)).save(upload)
    request = FakeRequest("s1")
    status, downloads, editor, points, *_ = handlers.colorize([str(upload)], "guided", 128, 1.0, request)
    assert "Colorized 1 of 1" in status and downloads[0].endswith("photo-color.png") and Path(editor).is_file()
    editor2, points, _ = handlers.click("#3060e0", "guided", 128, 1.0, FakeSelect([30, 40]), request)
    assert editor2 != editor and "#3060e0" in points
    *buttons, style = handlers.suggest("guided", 128, request)
    shown = [b for b in buttons if b.visible]
    assert len(shown) == SWATCHES and all(re.fullmatch(r"#[0-9a-f]{6}", b.value) for b in shown)
    assert shown[0].value in style
    strip = handlers.compare("guided", 1.0, request)
    assert [caption for _, caption in strip] == [f"render size {s}" for s in COMPARED_SIZES]
    calls = []
    real = webedit.predict_chroma
    monkeypatch.setattr(webedit, "predict_chroma", lambda *a, **k: calls.append(1) or real(*a, **k))
    handlers.settings_changed([str(upload)], "guided", 128, 0.4, request)
    assert not calls, "a saturation change should re-merge cached chroma"
    handlers.undo("guided", 128, 1.0, request)
    assert not calls, "undo goes back to a cached state"
    handlers.end(request)
    assert not upload.exists()


@pytest.mark.slow
def test_app_queue_is_bounded(tmp_path, monkeypatch):
    from autocolor.web import WebConfig, build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    config = WebConfig(models={"m": str(tmp_path)}, concurrency=2, workers=3, queue_size=5, samples=[])
    demo = build_app(config, tmp_path)
    assert demo._queue.max_size == 5
    colorize = next(fn for fn in demo.fns.values() if fn.api_name == "colorize")
    assert colorize.concurrency_limit == 3
    assert demo.autocolor_state.gate.slots == 2


def test_model_choices_labels_folders(tmp_path):
    from autocolor.web import model_choices

    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    choices = model_choices([str(a), str(b / "model.safetensors")])
    assert list(choices) == ["run", "run'"]
    assert choices["run'"] == str(b / "model.safetensors")


def test_zip_of_all_results_keeps_every_file(tmp_path):
    import zipfile

    from autocolor.web import zip_results

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "photo-color.jpg").write_bytes(folder.encode())
    target = zip_results([tmp_path / "a" / "photo-color.jpg", tmp_path / "b" / "photo-color.jpg"], tmp_path / "all.zip")
    with zipfile.ZipFile(target) as archive:
        assert archive.namelist() == ["photo-color.jpg", "photo-color-2.jpg"]
        assert archive.read("photo-color-2.jpg") == b"b"


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


def _upload_and_colorize(driver, server: Server, paths: list[Path], model: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server.url)  # a fresh session
    file_input = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#uploads input[type=file]"), 60)
    if model:
        _choose(driver, "model", model)
    file_input.send_keys("\n".join(str(p) for p in paths))
    listed = ", ".join(f'#uploads [aria-label="{p.name}"]' for p in paths)
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, listed)) == len(paths), 60)
    driver.find_element(By.ID, "colorize").click()
    _wait(driver, lambda d: "Colorized" in d.find_element(By.ID, "status").text)


def _choose(driver, elem_id: str, label: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
    option = f'#{elem_id} li[role=option][aria-label="{label}"]'
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, option), 30).click()
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"#{elem_id} input").get_attribute("value") == label, 30)


def _image_at(url: str) -> Image.Image:
    with urllib.request.urlopen(url, timeout=30) as response:
        image = Image.open(io.BytesIO(response.read()))
        image.load()
    return image.convert("RGB")


def _mean_ab_around(image: Image.Image, x: float, y: float, inner: int, outer: int) -> np.ndarray:
    """Mean a*, b* in a ring around (x, y): outside the marker drawn on the point, near it."""
    from autocolor.color import rgb_to_lab

    lab = rgb_to_lab(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255)  # (3, H, W)
    yy, xx = np.mgrid[0:image.height, 0:image.width]
    ring = torch.from_numpy(((xx - x) ** 2 + (yy - y) ** 2 >= inner**2) & ((xx - x) ** 2 + (yy - y) ** 2 <= outer**2))
    return lab[1:, ring].mean(dim=1).numpy()


def _in_view(driver, element) -> bool:
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.top >= -1 && r.top < window.innerHeight - 120 && r.height > 100;", element)


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_browser_colorizes_a_photo_and_downloads_it_full_size(server, browser, tmp_path):
    """Also item 13 of the hardening issue: another visitor who uploaded the very same
    bytes keeps the upload when this visitor closes the tab."""
    from selenium.webdriver.common.by import By
    from webserver import upload

    photo = tmp_path / f"visitor-photo{test_photo(tmp_path).suffix}"  # not a sample's name: samples stay cached
    photo.write_bytes(test_photo(tmp_path).read_bytes())
    with Image.open(photo) as original:
        size, gray_colorfulness = original.size, colorfulness_of(original)
    status, (other_visitors_copy,) = upload(server, [(photo.name, photo.read_bytes())], source="127.0.0.9")
    assert status == 200
    started = time.monotonic()
    _upload_and_colorize(browser, server, [photo])
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#previews img")) == 1, 30)  # a thumbnail
    slider = _wait(browser, lambda d: d.find_element(By.ID, "slider-0"))
    _wait(browser, lambda d: all(
        img.get_attribute("complete") == "true" and int(img.get_attribute("naturalWidth")) > 0
        for img in slider.find_elements(By.TAG_NAME, "img")) and len(slider.find_elements(By.TAG_NAME, "img")) == 2)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-demo-test.png"))

    link = browser.find_element(By.CSS_SELECTOR, "#downloads a[download]")
    name = link.get_attribute("download")
    assert name == f"{photo.stem}-color{photo.suffix}"  # the input's format
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
        return [p for p in server.tmpdir.rglob("*") if p.is_file() and p.name.startswith(photo.stem)
                and str(p) != other_visitors_copy]

    assert kept(browser), "the upload and its results should exist while the tab is open"
    browser.get("about:blank")  # the visitor closes the tab
    _wait(browser, lambda d: not kept(d), 60)
    assert Path(other_visitors_copy).is_file(), "closing one tab deleted another visitor's upload"


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
    assert "huge.png: 2000x1500 is 3.0 MP; this demo takes photos up to 2 MP" in status
    assert "--max-pixels" not in status and "Traceback" not in browser.page_source and "Error" not in status
    assert not browser.find_elements(By.CSS_SELECTOR, "#downloads a[download]")


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_browser_colorizes_a_clicked_sample_thumbnail(server, browser):
    from selenium.webdriver.common.by import By

    samples = sorted(p for p in (REPO / "src" / "autocolor" / "samples").glob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not samples:
        pytest.skip("the checkout has no src/autocolor/samples/ folder")
    browser.get(server.url)
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#samples img"), 60)
    _choose(browser, "render-size", "128")
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#samples button.thumbnail-item")
    assert len(thumbnails) == len(samples)
    thumbnails[-1].click()
    _wait(browser, lambda d: "Colorized 1 of 1 image." in d.find_element(By.ID, "status").text)
    link = browser.find_element(By.CSS_SELECTOR, "#downloads a[download]")
    assert link.get_attribute("download") == f"{samples[-1].stem}-color{samples[-1].suffix}"
    result = _image_at(link.get_attribute("href"))
    with Image.open(samples[-1]) as sample:
        assert result.size == sample.size
    assert colorfulness_of(result) > 20


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize("width", [1280, 390])
def test_browser_click_adds_a_point_and_colors_towards_it(server, browser, tmp_path, width):
    """At desktop and phone width: the result is in view without scrolling, and a
    click on it adds a point whose neighbourhood turns towards the point's color."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from autocolor.web import DEFAULT_POINT_COLOR
    from autocolor.webedit import MARKER_RADIUS

    browser.set_window_size(width, 900)
    try:
        _upload_and_colorize(browser, server, [test_photo(tmp_path)], model="levin")
        editor = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#editor img"))
        _wait(browser, lambda d: _in_view(d, editor), 10)
        first_src = editor.get_attribute("src")
        before = _image_at(first_src)
        ActionChains(browser).move_to_element_with_offset(
            editor, -editor.size["width"] // 5, editor.size["height"] // 6).click().perform()
        point = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#points li"), 30).text
        after_src = _wait(browser, lambda d: (src := d.find_element(By.CSS_SELECTOR, "#editor img")
                                              .get_attribute("src")) != first_src and src, 30)
        assert _in_view(browser, browser.find_element(By.CSS_SELECTOR, "#editor img"))
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / f"web-point-{width}.png"))
    finally:
        browser.set_window_size(1280, 900)
    after = _image_at(after_src)
    x, y = (float(v) for v in re.search(r"x (\d+), y (\d+)", point).groups())
    assert DEFAULT_POINT_COLOR in point
    chosen = _mean_ab_around(Image.new("RGB", (3, 3), DEFAULT_POINT_COLOR), 1, 1, 0, 2)
    ring = (MARKER_RADIUS + 6, 45)
    ab_before, ab_after = _mean_ab_around(before, x, y, *ring), _mean_ab_around(after, x, y, *ring)
    print(f"a*b* near the point: {ab_before.round(1)} -> {ab_after.round(1)}; chosen {chosen.round(1)}")
    assert np.linalg.norm(ab_before) < 3, "levin colors nothing before a point"
    towards = float(ab_after @ chosen) / float(np.linalg.norm(chosen))
    assert towards > 0.5 * np.linalg.norm(chosen), "the neighbourhood should take on the chosen color"
