"""Colorizing speed and memory on this machine's CPU (a benchmark, not a test).

    python benchmarks/bench_colorize.py [--out benchmarks/RESULTS-colorize.md]

Every case runs in its own subprocess, so its peak RSS is its own. Each
measures the whole path a user gets from ``autocolor colorize``: decode,
colorize, encode and an atomic write. Cases: ``cae`` (at 32x32),
``unet-rgb`` (at full size) and the default model with the PyTorch and
onnxruntime backends (untrained chroma-unet width 48 weights stand in when
the default weights are not installed: speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FOLDER_IMAGES = 96
BIG = (3000, 4000)  # 12 MP


def make_inputs(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "small").mkdir(parents=True)
    yy, xx = np.mgrid[0:256, 0:256]
    for i in range(FOLDER_IMAGES):
        img = (xx * (i % 7 + 1) + yy * 3) % 256 * 0.7 + rng.normal(0, 10, (256, 256))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "small" / f"{i:03d}.jpg", quality=90)
    h, w = BIG
    yy, xx = np.mgrid[0:h, 0:w]
    big = (np.sin(xx / 150.0) * np.cos(yy / 90.0) * 100 + 128 + rng.normal(0, 12, (h, w))).clip(0, 255)
    (root / "big").mkdir()
    Image.fromarray(big.astype(np.uint8)).save(root / "big" / "photo.jpg", quality=90)


def model_folder(name: str, root: Path) -> Path:
    from autocolor.checkpoint import save_model
    from autocolor.inference import default_model_dir
    from autocolor.models import create_model

    if name == "default" and (default_model_dir() / "model.safetensors").is_file():
        return default_model_dir()
    folder = root / f"model-{name}"
    if not folder.exists():
        model = create_model("chroma-unet", width=48) if name == "default" else create_model(name)
        save_model(model, folder)
    return folder


def run_case(model: str, backend: str, root: Path) -> dict:

    from autocolor.inference import Colorizer, colorize_files, plan_jobs

    colorizer = Colorizer.load(model_folder(model, root), backend=backend)
    render = None if model != "default" else 256
    result = {}
    jobs, _ = plan_jobs([str(root / "small")], root / f"out-{model}-{backend}-small")
    colorize_files(colorizer, jobs[:8], render_size=render, progress=False, overwrite=True)  # warm-up
    summary = colorize_files(colorizer, jobs, render_size=render, progress=False, overwrite=True)
    result["small_ips"] = summary.done / summary.seconds
    jobs, _ = plan_jobs([str(root / "big")], root / f"out-{model}-{backend}-big")
    times = []
    for _ in range(3):
        summary = colorize_files(colorizer, jobs, render_size=render, progress=False, overwrite=True)
        assert summary.done == 1, summary.failed
        times.append(summary.seconds)
    result["big_s"] = min(times)
    result["big_ms_per_mp"] = 1000 * min(times) / (BIG[0] * BIG[1] / 1e6)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


CASES = [("cae", "torch", "32x32"), ("unet-rgb", "torch", "full size"),
         ("default", "torch", "256"), ("default", "onnxruntime", "256")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-colorize.md"))
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per case")
    parser.add_argument("--case", nargs=3, metavar=("MODEL", "BACKEND", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1], Path(args.case[2]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_inputs(root)
        for model, backend, size in CASES:
            cmd = [sys.executable, __file__, "--case", model, backend, str(root)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                res = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
                note = "" if res else f"failed: {proc.stderr.strip().splitlines()[-1][:80]}"
            except subprocess.TimeoutExpired:
                res, note = None, f"over {args.timeout:.0f} s"
            label = f"{model} ({backend})"
            if res:
                rows.append(f"| {label} | {size} | {res['small_ips']:.1f} | {res['big_ms_per_mp']:.0f} "
                            f"| {res['big_s']:.2f} | {res['peak_rss_mb']:.0f} |")
            else:
                rows.append(f"| {label} | {size} | {note} | | | |")
            print(rows[-1], flush=True)
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    table = "\n".join([
        "| model (backend) | working size | 256x256 images/s | ms per MP (12 MP JPEG) | 12 MP end to end, s | peak RSS, MB |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    text = (
        "# Colorize benchmark\n\n"
        f"`python benchmarks/bench_colorize.py` on {platform.processor() or platform.machine()}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores, load average {' '.join(load)} at the end. "
        f"Folder: {FOLDER_IMAGES} gray 256x256 JPEGs; big: one 4000x3000 gray JPEG. End to end: decode, "
        "colorize, encode (same format), atomic write; 2 I/O threads, PyTorch on all cores (the CLI's default); best of 3 for 12 MP.\n\n"
        + table + "\n"
    )
    args.out.write_text(text)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
