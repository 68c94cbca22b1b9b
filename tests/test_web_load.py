"""The web demo under load: 20 visitors at once, through Gradio's queue API on loopback.

Each visitor uploads a photo of its own size and gray level and asks for it to be
colorized a fixed number of times. The queue is kept small, so some requests are
turned away while it is full; such a visitor is told so (HTTP 503, "Queue is
full") and tries again after a pause, a bounded number of times. The test checks
that every request is answered, that no answer carries another visitor's photo,
that the server never crashes and that its memory stays under a bound.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from PIL import Image

from autocolor.color import gray_to_l, rgb_to_lab
from webserver import Server, final_event, running_server

pytestmark = pytest.mark.slow  # twenty simulated visitors against a real server

USERS = 20
REQUESTS_PER_USER = 3
QUEUE_SIZE = 6  # smaller than the crowd, so the refusal path is exercised too
ATTEMPTS = 80  # per request, refusals included; with the pauses below about a minute at most
SERVER_RSS_LIMIT_MB = 2000  # measured: ~640 MB idle, ~810 MB peak; the margin is for other torch builds
TEST_SECONDS = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    options = ["--queue-size", str(QUEUE_SIZE), "--max-pixels", "2000000", "--max-file-size", "2mb"]
    try:
        with running_server(tmp_path_factory.mktemp("web-load"), options) as srv:
            yield srv
    except RuntimeError as exc:
        pytest.fail(str(exc))


def user_photo(user: int) -> tuple[bytes, tuple[int, int], int]:
    """A PNG whose size and gray level belong to ``user`` alone: (bytes, (w, h), level)."""
    size = (640 + 8 * user, 480 + 4 * user)  # a small photo each, no two of one size
    level = 40 + 7 * user  # mid tones: the constant orange stays in gamut, so L comes back unchanged
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    gray = np.full((size[1], size[0]), level, np.uint8)
    gray[(yy // 8 + xx // 8) % 2 == 0] += 2  # a faint checker: the model sees structure, the mean barely moves
    buffer = io.BytesIO()
    Image.fromarray(gray, "L").save(buffer, "PNG")
    return buffer.getvalue(), size, level


def mean_lightness(image: Image.Image) -> float:
    rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255  # (3, H, W)
    return rgb_to_lab(rgb)[0].mean().item()


def expected_lightness(user: int) -> float:
    level = user_photo(user)[2]
    return gray_to_l(torch.tensor([[[level / 255]]])).item()


def _post(url: str, data: bytes, content_type: str, timeout: float = 30) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def upload(server: Server, name: str, data: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    code, reply = _post(server.url + "/gradio_api/upload", body, f"multipart/form-data; boundary={boundary}")
    assert code == 200, (code, reply[:300])
    return json.loads(reply)[0]


def read_events(server: Server, event_id: str, timeout: float) -> tuple[str, object]:
    """Follow the server-sent events of one call to its end: ("complete" | "error", data)."""
    url = f"{server.url}/gradio_api/call/colorize/{event_id}"
    with urllib.request.urlopen(url, timeout=timeout) as stream:
        return final_event(stream)


@dataclass
class Visitor:
    user: int
    answered: int = 0
    refused: int = 0  # "queue full", then tried again
    failures: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def visit(server: Server, visitor: Visitor, deadline: float) -> None:
    data, size, level = user_photo(visitor.user)
    rng = random.Random(visitor.user)
    expected_l = expected_lightness(visitor.user)
    for _ in range(REQUESTS_PER_USER):
        started = time.monotonic()
        path = upload(server, f"user{visitor.user}.png", data)
        payload = {"data": [[{"path": path, "orig_name": f"user{visitor.user}.png",
                              "meta": {"_type": "gradio.FileData"}}], "constant-orange", 256, 1.0]}
        for _ in range(ATTEMPTS):
            code, reply = _post(f"{server.url}/gradio_api/call/colorize", json.dumps(payload).encode(),
                                "application/json")
            if code == 503 and b"Queue is full" in reply:
                visitor.refused += 1
                time.sleep(rng.uniform(0.3, 0.9))
                if time.monotonic() > deadline:
                    break
                continue
            break
        else:
            code, reply = 0, b"gave up"
        if code != 200:
            visitor.failures.append(f"call: HTTP {code} {reply[:200]!r}")
            return
        event, outputs = read_events(server, json.loads(reply)["event_id"], max(5.0, deadline - time.monotonic()))
        if event != "complete":
            visitor.failures.append(f"{event}: {outputs!r}"[:300])
            return
        status, downloads = outputs[0], outputs[1]
        if not downloads or "Colorized 1 of 1" not in status:
            visitor.failures.append(f"no result: {status!r}")
            return
        with urllib.request.urlopen(downloads[0]["url"], timeout=30) as response:
            result = Image.open(io.BytesIO(response.read()))
            result.load()
        if downloads[0].get("orig_name") != f"user{visitor.user}-color.png":
            visitor.failures.append(f"got {downloads[0].get('orig_name')}")
        if result.size != size:
            visitor.failures.append(f"got a {result.size} result for a {size} photo")
        lightness = mean_lightness(result)
        nearest = min(range(USERS), key=lambda other: abs(lightness - expected_lightness(other)))
        if nearest != visitor.user or abs(lightness - expected_l) > 1.0:  # neighbours are 2+ L apart
            visitor.failures.append(f"result lightness {lightness:.1f}, photo's {expected_l:.1f}")
        visitor.answered += 1
        visitor.seconds.append(time.monotonic() - started)


def test_twenty_visitors_at_once(server):
    started = time.monotonic()
    deadline = started + TEST_SECONDS - 10
    baseline_mb = server.rss_mb()
    peak = [baseline_mb]
    stop = threading.Event()

    def watch_memory() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], server.rss_mb())

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    visitors = [Visitor(user) for user in range(USERS)]
    threads = [threading.Thread(target=visit, args=(server, v, deadline), daemon=True) for v in visitors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, started + TEST_SECONDS - time.monotonic()))
    stop.set()
    watcher.join()
    elapsed = time.monotonic() - started
    answered = sum(v.answered for v in visitors)
    refused = sum(v.refused for v in visitors)
    slowest = max((s for v in visitors for s in v.seconds), default=0.0)
    print(f"\n{USERS} visitors, {answered} of {USERS * REQUESTS_PER_USER} requests answered, {refused} refusals "
          f"(queue full, retried) in {elapsed:.1f} s; slowest request {slowest:.1f} s; server RSS "
          f"{baseline_mb:.0f} -> max {peak[0]:.0f} MB")
    assert not any(t.is_alive() for t in threads), "visitors still waiting at the deadline"
    assert server.process.poll() is None, "the server died"
    failures = [f"user {v.user}: {f}" for v in visitors for f in v.failures]
    assert not failures, failures
    assert answered == USERS * REQUESTS_PER_USER
    assert peak[0] < SERVER_RSS_LIMIT_MB
    assert "Traceback" not in server.log.read_text(errors="replace")
