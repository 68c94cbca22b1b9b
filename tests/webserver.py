"""Starting ``autocolor serve`` in a subprocess for tests: a free loopback port, a TMPDIR
of its own (to see that it leaves nothing behind), and a tiny model of one constant color."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch

from autocolor.checkpoint import save_model
from autocolor.models import create_model

REPO = Path(__file__).resolve().parents[1]
CONSTANT_AB = (0.3, 0.3)  # normalized ab: a strong orange-red


def constant_color_model(folder: Path) -> Path:
    """A small untrained chroma-unet whose output is ``CONSTANT_AB`` everywhere."""
    model = create_model("chroma-unet", width=16, head="regression")
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(CONSTANT_AB))
    save_model(model, folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    def __init__(self, url: str, process: subprocess.Popen, tmpdir: Path, log: Path) -> None:
        self.url, self.process, self.tmpdir, self.log = url, process, tmpdir, log

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def rss_mb(self) -> float:
        """Resident memory of the server process, from /proc (0 once it has exited)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0.0
        return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)


def start_server(root: Path, options: list[str], tmpdir: Path | None = None, start_timeout_s: float = 120) -> Server:
    """``autocolor serve --model <constant model> *options`` on a free loopback port,
    its TMPDIR ``tmpdir`` (default ``root/server-tmp``), answering when this returns."""
    model = root / "constant-orange"
    if not model.exists():
        constant_color_model(model)
    tmpdir = tmpdir or root / "server-tmp"
    tmpdir.mkdir(exist_ok=True)
    port = free_port()
    log = root / f"server-{port}.log"
    env = {**os.environ, "TMPDIR": str(tmpdir), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "autocolor", "serve", "--model", str(model), "--port", str(port), *options]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", process, tmpdir, log)
    deadline = time.monotonic() + start_timeout_s
    while not (port_open(port) and srv.get("/") == 200):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return srv


@contextlib.contextmanager
def running_server(root: Path, options: list[str], start_timeout_s: float = 120) -> Iterator[Server]:
    """:func:`start_server`; on exit it is stopped with SIGTERM and must have deleted every file it kept."""
    srv = start_server(root, options, start_timeout_s=start_timeout_s)
    try:
        yield srv
    finally:
        srv.process.send_signal(signal.SIGTERM)
        try:
            srv.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.process.kill()
            raise
    left = list(srv.tmpdir.iterdir())
    assert not left, f"the server left files behind: {left}"


# ---------------------------------------------------------------- talking to it as a client would


def request(server: Server, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            source: str = "127.0.0.1", timeout: float = 120) -> tuple[int, bytes]:
    """One HTTP request from the loopback address ``source`` (127.0.0.x: a visitor of its own)."""
    port = int(server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def upload(server: Server, files: list[tuple[str, bytes]], source: str = "127.0.0.1") -> tuple[int, object]:
    """POST files to the upload endpoint: (status, the stored paths or the refusal text)."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
         "Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n" for name, data in files
    ) + f"--{boundary}--\r\n".encode()
    status, reply = request(server, "POST", "/gradio_api/upload", body,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"}, source)
    return status, json.loads(reply) if status == 200 else reply.decode(errors="replace")


def file_data(path: str, name: str) -> dict:
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def call(server: Server, api_name: str, data: list, source: str = "127.0.0.1", timeout: float = 120):
    """Run an API event to its end: ("complete" | "error" | HTTP status, outputs)."""
    status, reply = request(server, "POST", f"/gradio_api/call/{api_name}", json.dumps({"data": data}).encode(),
                            {"Content-Type": "application/json"}, source)
    if status != 200:
        return status, reply
    event_id = json.loads(reply)["event_id"]
    port = int(server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", f"/gradio_api/call/{api_name}/{event_id}")
        return final_event(conn.getresponse())
    finally:
        conn.close()


def final_event(stream) -> tuple[str, object]:
    """Read Gradio's server-sent events to the call's end: ("complete" | "error", data), or ("closed", None)."""
    event = None
    for raw in stream:
        line = raw.decode().strip()
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            text = line.split(":", 1)[1].strip()
            return event, json.loads(text) if text and text != "null" else None
    return "closed", None
