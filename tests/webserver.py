"""Starting ``autocolor serve`` in a subprocess for tests: a free loopback port, a TMPDIR
of its own (to see that it leaves nothing behind), and a tiny model of one constant color."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from collections.abc import Iterator

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


@contextlib.contextmanager
def running_server(root: Path, options: list[str], start_timeout_s: float = 120) -> Iterator[Server]:
    """``autocolor serve --model <constant model> *options`` on a free loopback port;
    on exit it is stopped with SIGTERM and must have deleted every file it kept."""
    model = constant_color_model(root / "constant-orange")
    tmpdir = root / "server-tmp"
    tmpdir.mkdir()
    port = free_port()
    log = root / "server.log"
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
    try:
        yield srv
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    left = list(tmpdir.iterdir())
    assert not left, f"the server left files behind: {left}"
