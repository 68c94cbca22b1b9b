"""The web demo's defences (issue 17, items 13-17), end to end on loopback.

A real ``autocolor serve`` in a subprocess; clients speak HTTP to it from
different loopback addresses (127.0.0.x), which the server counts as
different visitors. Each test states a property a hostile or careless visitor
must not be able to break.
"""

from __future__ import annotations

import io
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image
from webserver import Server, call, file_data, running_server, start_server, upload

MAX_PIXELS = 2_000_000
REQUEST_PIXELS = 5_000_000
MAX_IMAGES = 8
UPLOAD_FILES = 12  # per visitor and window


def png(width: int, height: int, level: int = 128, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-40, 40, width)[None, :] + np.linspace(-20, 20, height)[:, None]
    gray = np.clip(level + ramp + rng.normal(0, 2, (height, width)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray, "L").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    options = ["--max-pixels", str(MAX_PIXELS), "--max-request-pixels", str(REQUEST_PIXELS),
               "--max-images", str(MAX_IMAGES), "--upload-files", str(UPLOAD_FILES), "--max-file-size", "8mb"]
    try:
        with running_server(tmp_path_factory.mktemp("web-security"), options) as srv:
            yield srv
    except RuntimeError as exc:
        pytest.fail(str(exc))


def colorize(server: Server, paths: list[str], names: list[str], source: str, render_size: int = 128):
    return call(server, "colorize", [[file_data(p, n) for p, n in zip(paths, names)], "constant-orange",
                                     render_size, 1.0], source)


def test_identical_uploads_of_two_visitors_are_two_files(server):
    """Item 13: the same bytes under the same name from two visitors must not share one
    stored file (one visitor's tab closing would delete the other's upload)."""
    data = png(64, 48, seed=13)
    status_a, (path_a,) = upload(server, [("same.png", data)], source="127.0.0.11")
    status_b, (path_b,) = upload(server, [("same.png", data)], source="127.0.0.12")
    assert status_a == status_b == 200
    assert path_a != path_b
    event, outputs = colorize(server, [path_b], ["same.png"], "127.0.0.12")
    assert event == "complete" and "Colorized 1 of 1" in outputs[0]


def test_an_upload_request_with_too_many_files_is_refused(server):
    """Item 14: Gradio's own endpoint takes 1,000 files in one request."""
    tiny = png(8, 8)
    status, reply = upload(server, [(f"f{i}.png", tiny) for i in range(MAX_IMAGES + 1)], source="127.0.0.21")
    assert status == 413, (status, reply)
    assert not [p for p in server.tmpdir.rglob("f*.png")], "a refused request left files"
    status, paths = upload(server, [(f"g{i}.png", tiny) for i in range(MAX_IMAGES)], source="127.0.0.21")
    assert status == 200 and len(paths) == MAX_IMAGES


def test_one_visitor_cannot_fill_the_disk(server):
    """Item 14: uploads are counted per visitor and window; past the quota they are refused
    with a message for the visitor, and other visitors can still upload."""
    tiny = png(8, 8)
    for i in range(UPLOAD_FILES):
        status, _ = upload(server, [(f"q{i}.png", tiny)], source="127.0.0.31")
        assert status == 200
    status, reply = upload(server, [("one-more.png", tiny)], source="127.0.0.31")
    assert status == 429 and "try again in" in reply
    status, _ = upload(server, [("other.png", tiny)], source="127.0.0.32")
    assert status == 200


def test_work_per_request_is_capped_in_pixels(server):
    """Item 15: three 1.9 MP images are 5.7 MP, over the 5 MP a request may colorize."""
    side = (1600, 1187)  # 1.9 MP, under the per-image limit
    files = [(f"big{i}.png", png(*side, seed=i)) for i in range(3)]
    status, paths = upload(server, files, source="127.0.0.41")
    assert status == 200
    event, outputs = colorize(server, paths, [n for n, _ in files], "127.0.0.41")
    assert event == "complete"
    status_text = outputs[0]
    assert "Colorized 2 of 3 images" in status_text, status_text
    assert "big2.png: not colorized" in status_text and "5 MP" in status_text


def test_a_small_visitor_does_not_wait_for_a_big_request(server):
    """Item 15: while one visitor's four big images are colorized, another visitor's
    small photo is served in a fraction of that time (fair share, not first come)."""
    big = [(f"heavy{i}.png", png(1280, 960, seed=20 + i)) for i in range(4)]
    _, big_paths = upload(server, big, source="127.0.0.51")
    _, (small_path,) = upload(server, [("small.png", png(96, 64, seed=3))], source="127.0.0.52")
    seconds = {}

    def visit(name, paths, names, source):
        started = time.monotonic()
        event, outputs = colorize(server, paths, names, source)
        seconds[name] = time.monotonic() - started
        assert event == "complete", outputs

    heavy = threading.Thread(target=visit, args=("heavy", big_paths, [n for n, _ in big], "127.0.0.51"))
    heavy.start()
    time.sleep(0.8)  # the big request is under way
    visit("small", [small_path], ["small.png"], "127.0.0.52")
    heavy.join()
    print(f"\nbig request {seconds['heavy']:.1f} s, small request beside it {seconds['small']:.1f} s")
    assert seconds["small"] < 0.5 * seconds["heavy"], seconds


def test_file_names_are_escaped_in_messages(server):
    """Item 17: a name must not inject Markdown or HTML (a link, an image) into the page."""
    name = "[click me](javascript:alert(1))_x_.png"
    status, (path,) = upload(server, [(name, b"not a picture")], source="127.0.0.61")
    assert status == 200
    event, outputs = colorize(server, [path], [name], "127.0.0.61")
    assert event == "complete"
    assert "[click me](javascript" not in outputs[0]
    assert r"\[click me\](javascript" in outputs[0], outputs[0]  # ":" is dropped by the upload


def test_a_killed_servers_files_are_removed_on_the_next_start(tmp_path):
    """Item 16: after a SIGKILL the server cannot clean up; the next one does."""
    tmpdir = tmp_path / "shared-tmp"
    first = start_server(tmp_path, [], tmpdir=tmpdir)
    status, _ = upload(first, [("visitor.png", png(32, 32))])
    assert status == 200
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=30)
    left = sorted(tmpdir.glob("autocolor-web-*"))
    assert left and list(left[0].rglob("visitor.png")), "the killed server should have left its folder"
    second = start_server(tmp_path, [], tmpdir=tmpdir)
    try:
        assert not any(folder.exists() for folder in left), "the next start should delete the killed one's files"
    finally:
        second.process.send_signal(signal.SIGTERM)
        second.process.wait(timeout=30)
    assert not list(tmpdir.iterdir())
