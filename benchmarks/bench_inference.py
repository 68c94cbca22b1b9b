"""The default model's colorize speed in-process: as loaded against
:func:`autocolor.models.base.for_inference` (batch norms folded, channels-last),
with render fusion off and at two fusion sizes (a benchmark, not a test).

    python benchmarks/bench_inference.py [--repeat 5] [--out benchmarks/RESULTS-inference.md]

Every variant colorizes the same 256x256 gray photos one at a time
(``pipeline.colorize_gray`` at render size 256, no face detection: the
network, the decoding and the merge) and one 12 MP photo. The variants take
turns within each repeat, so the machine's drifting load falls on all of them;
the table gives medians and the ratio to the model as loaded without fusion,
the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

PHOTOS = 8


def _variants():
    from autocolor.inference import default_model_dir
    from autocolor.checkpoint import load_model
    from autocolor.models.base import for_inference

    loaded = load_model(default_model_dir()).eval()
    fast = for_inference(copy.deepcopy(loaded))
    for name, model in (("as loaded", loaded), ("for_inference", fast)):
        for fusion in (0, 96, 128):
            yield f"{name}, fusion {fusion or 'off'}", model, dataclasses.replace(loaded.decoding, fusion_size=fusion)


def _photos() -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    small = [((xx * (i + 1) + yy * 3) % 256 * 180 + rng.normal(0, 2000, (256, 256))).clip(0, 65535).astype(np.uint16)[None]
             for i in range(PHOTOS)]
    yy, xx = np.mgrid[0:3000, 0:4000]
    big = ((np.sin(xx / 150.0) * np.cos(yy / 90.0) * 0.4 + 0.5) * 65535).astype(np.uint16)[None]
    return small, big


def main() -> None:
    from autocolor.pipeline import colorize_gray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-inference.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    small, big = _photos()
    variants = list(_variants())
    rate: dict[str, list[float]] = {}
    big_s: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for name, model, decoding in variants:
            model.decoding = decoding
            colorize_gray(model, small[0], np.uint8, 256)  # warm-up
            start = time.perf_counter()
            for gray in small * 2:
                colorize_gray(model, gray, np.uint8, 256)
            rate.setdefault(name, []).append(2 * PHOTOS / (time.perf_counter() - start))
            start = time.perf_counter()
            colorize_gray(model, big, np.uint8, 256)
            big_s.setdefault(name, []).append(time.perf_counter() - start)
    base_rate, base_big = np.median(rate[variants[0][0]]), np.median(big_s[variants[0][0]])
    rows = [f"| {name} | {np.median(rate[name]):.1f} ({min(rate[name]):.1f}-{max(rate[name]):.1f}) | "
            f"{np.median(rate[name]) / base_rate:.2f} | {np.median(big_s[name]):.3f} | "
            f"{np.median(big_s[name]) / base_big:.2f} |" for name, _, _ in variants]
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    text = "\n".join([
        "# In-process colorize speed of the default model",
        "",
        f"`python benchmarks/bench_inference.py --repeat {args.repeat} --threads {args.threads}`; "
        f"load average {' '.join(load)} at the end. Median (range) over the repeats.",
        "",
        "| variant | 256x256 photos/s | x as loaded, fusion off | 12 MP photo, s | x as loaded, fusion off |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ])
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
