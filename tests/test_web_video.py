"""The web demo's video tab: a short clip in, the same colorize_video as the CLI, a clip out.

The server runs ``autocolor serve`` on loopback with the tiny constant-color
model of :mod:`webserver`; the clips are the tiny generated ones of test_video.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("cv2")

import test_web
from test_video import make_clip, probe
from test_web import ARTIFACTS, _wait, needs_browser
from webserver import (
    Server,
    call,
    constant_color_model,
    file_data,
    running_server,
    upload,
)

browser = test_web.browser  # the headless Chromium fixture, shared

MODEL_LABEL = "constant-orange"  # the folder name start_server gives the constant model


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    try:
        with running_server(tmp_path_factory.mktemp("web-video"), []) as srv:
            yield srv
    except RuntimeError as exc:
        pytest.fail(str(exc))


def test_an_uploaded_clip_comes_back_colorized_with_every_frame(server, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=10)
    status, stored = upload(server, [("clip.mp4", clip.read_bytes())])
    assert status == 200, stored
    state, outputs = call(server, "colorize_video", [file_data(stored[0], "clip.mp4"), MODEL_LABEL, 1.0])
    assert state == "complete", outputs
    video, download, text = outputs
    assert "Colorized 10 frames of clip.mp4" in text
    assert video["url"] and download["url"]
    result = tmp_path / "result.mp4"
    with urllib.request.urlopen(video["url"], timeout=60) as response:
        result.write_bytes(response.read())
    before, after = probe(clip), probe(result)
    assert after["frames"] == before["frames"] == 10 and after["size"] == before["size"]
    assert after["audio"] == "aac"
    assert np.ptp(after["rgb"][5].astype(int), axis=2).mean() > 20  # the constant model's orange


def test_a_clip_over_the_limits_or_not_a_video_gets_a_message_for_the_visitor(server, tmp_path):
    large = make_clip(tmp_path / "large.mp4", frames=2, w=656, h=496, audio_codec=None)
    status, stored = upload(server, [("large.mp4", large.read_bytes()), ("notes.mp4", b"not a film at all")])
    assert status == 200, stored
    for path, name, expected in [(stored[0], "large.mp4", "656x496 is larger than this demo colorizes"),
                                 (stored[1], "notes.mp4", "not a readable video")]:
        state, outputs = call(server, "colorize_video", [file_data(path, name), MODEL_LABEL, 1.0])
        assert state == "complete", outputs
        video, download, text = outputs
        assert video is None and download is None
        assert text.startswith(f"- {name}: ") and expected in text, text
        assert str(server.tmpdir) not in text and "\n" not in text  # no server path, one line


def test_colorize_clip_refuses_long_clips_and_charges_the_visitors_share(tmp_path):
    from autocolor.inference import Colorizer
    from autocolor.web import WebConfig, colorize_clip
    from autocolor.webguard import FairGate

    colorizer = Colorizer.load(constant_color_model(tmp_path / "model"))
    config = WebConfig(models={"m": "default"}, max_video_seconds=0.3, max_video_frames=8)
    gate = FairGate()
    long = make_clip(tmp_path / "long.mp4", frames=12)  # 0.5 s at 24 frames/s
    outcome = colorize_clip(colorizer, "long.mp4", long, tmp_path / "out", config, gate)
    assert outcome.result is None and "0.5 s is longer than this demo colorizes (0.3 s)" in outcome.error
    config = WebConfig(models={"m": "default"})
    outcome = colorize_clip(colorizer, "long.mp4", long, tmp_path / "out", config, gate)
    assert outcome.error is None and outcome.frames == 12 and probe(outcome.result)["frames"] == 12
    assert gate.used("anonymous") == 64 * 48 * 12  # charged its pixels: the visitor's fair share counts video


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_browser_colorizes_a_clip_in_the_video_tab(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    clip = make_clip(tmp_path / "visitor-clip.mp4", frames=12, w=128, h=96)
    browser.get(server.url)
    tab = _wait(browser, lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                         if b.text.strip() == "Video"), None), 60)
    tab.click()
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#video-upload input[type=file]"), 30).send_keys(str(clip))
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#video-upload video"), 60)  # uploaded, shown
    browser.find_element(By.ID, "colorize-video").click()
    _wait(browser, lambda d: "Colorized 12 frames" in d.find_element(By.ID, "video-status").text)
    video = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#video-result video"), 30)
    _wait(browser, lambda d: d.execute_script("return arguments[0].readyState >= 2 && arguments[0].videoWidth",
                                              video) == 128, 30)  # the browser plays what it got
    link = browser.find_element(By.CSS_SELECTOR, "#video-download a[download]")
    assert link.get_attribute("download") == "visitor-clip-color.mp4"
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-demo-video-test.png"))
    assert "Traceback" not in browser.page_source
