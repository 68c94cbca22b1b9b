"""How fast the web demo answers an edit, against a plain colorize (a benchmark, not a test).

    python benchmarks/bench_web_edit.py [--threads 2] [--repeat 7] [--out benchmarks/RESULTS-web-edit.md]

An "edit" is what the server does between a click on the photo and the new
result in the page: the chroma for the new hints (the model at the working
size, hints spread by Levin's method), a merge with the L at preview size
(at most 1280 px), the point markers, and the preview JPEG. A saturation
change is a cache hit: only the merge and the JPEG. The full-resolution file
for download is written after the preview is shown; it is timed too. Each is
compared with ``Colorizer.colorize`` of the whole photo at the same render
size, which is what every edit cost before the chroma cache.

The model is the shipped default (hint-aware chroma-unet width 48, with its
decoding and hint refinement, and the face prior as the demo applies it); an
untrained one of the same architecture stands in if no default is installed.
Photos: a sample (640x480) and a synthetic 12 MP one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIG = (3000, 4000)  # 12 MP


def timed(fn, repeat: int) -> tuple[float, float, float]:
    """(median wall, fastest wall, median CPU) seconds of ``fn()`` over ``repeat`` runs,
    after one warm-up. On a shared machine the wall times include waiting for the
    other processes; the CPU time (all threads of this process) does not, and
    bounds the wall time an idle machine would need from above."""
    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def photos(root: Path) -> list[Path]:
    from PIL import Image

    h, w = BIG
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    big = (np.sin(xx / 150.0) * np.cos(yy / 90.0) * 100 + 128 + rng.normal(0, 12, (h, w))).clip(0, 255)
    Image.fromarray(big.astype(np.uint8)).save(root / "big-12mp.jpg", quality=90)
    return [REPO / "src" / "autocolor" / "samples" / "mountains.jpg", root / "big-12mp.jpg"]


def measure(photo_path: Path, render_size: int, repeat: int, root: Path) -> dict:
    import torch

    from autocolor.inference import Colorizer
    from autocolor.models import create_model
    from autocolor.webedit import (
        ChromaCache,
        Edit,
        chroma_for,
        open_photo,
        preview_image,
        save_full,
    )

    torch.manual_seed(0)
    try:
        colorizer = Colorizer.load("default")
    except Exception:  # noqa: BLE001 - no weights installed: the same architecture, untrained
        colorizer = Colorizer(create_model("chroma-unet", width=48, guided=True).eval())
    photo = open_photo(photo_path.name, photo_path, 100_000_000)
    w, h = photo.size
    cache = ChromaCache()
    edit = Edit()
    clicks = iter(range(10_000))

    def plain() -> None:
        colorizer.colorize(photo.pixels.gray, render_size=render_size, hints=[(w / 3, h / 3, "#3a7bd5")])

    def click() -> None:  # a new point each time: always a cache miss
        k = next(clicks)
        edit.add((k * 37) % w, (k * 53) % h, "#3a7bd5")
        ab = chroma_for(colorizer.model, photo, render_size, edit, cache)
        preview_image(photo, ab, 1.0, edit).save(root / "edit.jpg", quality=90)
        edit.undo()  # the next click has as many points as this one: a fair median

    edit.add(w / 3, h / 3, "#3a7bd5")
    ab = chroma_for(colorizer.model, photo, render_size, edit, cache)

    def saturation() -> None:  # the same hints: a cache hit
        preview_image(photo, chroma_for(colorizer.model, photo, render_size, edit, cache), 0.8, edit).save(
            root / "edit.jpg", quality=90)

    def download() -> None:
        save_full(photo, ab, 1.0, root)

    return {"photo": f"{photo_path.name} ({w}x{h})", "plain": timed(plain, repeat), "click": timed(click, repeat),
            "saturation": timed(saturation, repeat), "download": timed(download, max(1, repeat // 2))}


def table(rows: list[dict], render_size: int, threads: int, repeat: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [(f"Web demo edits at render size {render_size}: {threads} torch threads on {os.cpu_count()} cores "
              f"(load average {load:.1f} when it finished), Python {platform.python_version()}. "
              f"Wall time: median (fastest) of {repeat} runs after a warm-up; CPU: median CPU time "
              "of this process (all threads), the compute itself, without waiting for other processes."), "",
             ("| photo | plain colorize | edit: new point | edit: saturation | point / plain (CPU) | "
              "full-res download file |"), "|---|---:|---:|---:|---:|---:|"]

    def ms(t: tuple[float, float, float]) -> str:
        return f"{t[0] * 1000:.0f} ({t[1] * 1000:.0f}) ms, CPU {t[2] * 1000:.0f} ms"

    for r in rows:
        lines.append(f"| {r['photo']} | {ms(r['plain'])} | {ms(r['click'])} | {ms(r['saturation'])} | "
                     f"{r['click'][2] / r['plain'][2]:.2f} | {ms(r['download'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (the target is 2 cores)")
    p.add_argument("--render-size", type=int, default=256, help="render size of every case")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per case, after a warm-up")
    p.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        root = Path(tmp)
        rows = [measure(path, args.render_size, args.repeat, root) for path in photos(root)]
    text = table(rows, args.render_size, args.threads, args.repeat)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
