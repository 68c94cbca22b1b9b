"""Video benchmark: flicker, color error and speed of per-frame vs stabilized colorization.

Test clips are made from held-out photos (src/autocolor/samples/*.jpg by default): a
640x360 window pans or zooms over the photo by a known sub-pixel amount per
frame, the gray version gets fresh film grain and a few percent exposure
flicker per frame, and it is encoded as H.264 (CRF 12, so the input is
barely touched). Since the true motion is known, flicker is the warping
error of Lai et al. 2018 with the exact motion: the mean |delta ab| between
each output frame and the previous output moved by the known motion, over
pixels visible in both. CIEDE2000 is measured against the color truth.
Each method runs in a fresh process so that its peak RSS is its own; the
"copy" row decodes and re-encodes the clip with the same encoder settings
and no colorization, the floor for end-to-end speed.

    python benchmarks/bench_video.py                       # all samples, 48 frames each
    python benchmarks/bench_video.py --frames 24 --photos src/autocolor/samples/bear.jpg
    python benchmarks/bench_video.py --baseline /path/to/main/src   # each run also with main's package
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 640, 360


def motion(kind: str, t: int) -> np.ndarray:
    """2x3 affine from frame pixels to photo pixels at frame ``t`` (on a photo
    resized to 1.25x the frame, centered)."""
    cx, cy = WIDTH * 1.25 / 2, HEIGHT * 1.25 / 2
    if kind == "pan":
        scale, dx, dy = 1.0, -30 + 1.7 * t, -10 + 0.6 * t
    else:  # zoom in by 0.4% a frame, drifting slightly
        scale, dx, dy = 1.12 / (1.004**t), 0.3 * t, 0.1 * t
    return np.array([[scale, 0, cx - scale * WIDTH / 2 + dx], [0, scale, cy - scale * HEIGHT / 2 + dy]], np.float64)


def truth_frames(photo: Path, kind: str, frames: int):
    import cv2
    from PIL import Image

    rgb = np.asarray(Image.open(photo).convert("RGB"))
    base = cv2.resize(rgb, (round(WIDTH * 1.25), round(HEIGHT * 1.25)), interpolation=cv2.INTER_AREA)
    for t in range(frames):
        yield cv2.warpAffine(base, motion(kind, t), (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)


def make_clip(photo: Path, kind: str, frames: int, path: Path, seed: int = 0) -> None:
    import av

    from autocolor.color import GRAY_WEIGHTS

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "12", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for rgb in truth_frames(photo, kind, frames):
            gray = rgb.astype(np.float32) @ np.asarray(GRAY_WEIGHTS, np.float32)
            gray = gray * rng.uniform(0.97, 1.03) + rng.normal(0, 4.0, gray.shape)  # exposure flicker, grain
            gray8 = np.clip(gray + 0.5, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.repeat(gray8[..., None], 3, axis=2), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def decode_rgb(path: Path):
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def known_motion(kind: str):
    """Maps from each frame's pixels to where the previous frame showed the same point, from the exact motion."""
    import cv2

    ones = np.ones((HEIGHT, WIDTH), np.uint8)

    def maps(t: int, before: np.ndarray, now: np.ndarray):
        # frame t at x shows the photo at M_t x, which frame t-1 showed at M_{t-1}^-1 M_t x
        m_prev, m_now = (np.vstack([motion(kind, k), [0, 0, 1]]) for k in (t - 1, t))
        to_prev = (np.linalg.inv(m_prev) @ m_now)[:2]
        gx, gy = np.meshgrid(np.arange(WIDTH, dtype=np.float32), np.arange(HEIGHT, dtype=np.float32))
        map_x = (to_prev[0, 0] * gx + to_prev[0, 1] * gy + to_prev[0, 2]).astype(np.float32)
        map_y = (to_prev[1, 0] * gx + to_prev[1, 1] * gy + to_prev[1, 2]).astype(np.float32)
        valid = cv2.remap(ones, map_x, map_y, cv2.INTER_NEAREST, borderValue=0)
        return map_x, map_y, cv2.erode(valid, np.ones((3, 3), np.uint8)).astype(bool)

    return maps


def estimated_motion(t: int, before: np.ndarray, now: np.ndarray):
    """The same maps for real footage: DIS flow between the true frames' L at
    full resolution, keeping pixels where forward and backward flow agree (non-occluded)."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    g0, g1 = (np.clip(x * 2.55 + 0.5, 0, 255).astype(np.uint8) for x in (before, now))
    back, forth = dis.calc(g1, g0, None), dis.calc(g0, g1, None)
    h, w = g1.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = gx + back[..., 0], gy + back[..., 1]
    returned = cv2.remap(forth, map_x, map_y, cv2.INTER_LINEAR)
    miss = np.square(back + returned).sum(-1)
    valid = miss < 0.5 + 0.01 * (np.square(back).sum(-1) + np.square(returned).sum(-1))
    valid &= (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return map_x, map_y, valid


def lab_frames(frames):
    """``(H, W, 3)`` uint8 RGB frames to ``(3, H, W)`` Lab tensors."""
    import torch

    from autocolor.color import rgb_to_lab

    for rgb in frames:
        yield rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0))


def score(outputs, truths: list, maps) -> dict:
    """Flicker (Lai et al. 2018 warping error on ab) and CIEDE2000 to the truth.

    ``outputs`` and ``truths`` are Lab frames; scoring the truth itself gives
    the flicker floor that the motion maps allow (0 up to resampling for known motion)."""
    import cv2

    from autocolor.metrics import mean_ciede2000_lab

    flicker, errors, previous, count = [], [], None, 0
    for t, (out, truth) in enumerate(zip(outputs, truths)):
        count += 1
        errors.append(mean_ciede2000_lab(out, truth).item())
        ab = out[1:].permute(1, 2, 0).numpy()  # (H, W, 2)
        if previous is not None:
            map_x, map_y, valid = maps(t, truths[t - 1][0].numpy(), truth[0].numpy())
            warped = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR)
            flicker.append(float(np.abs(ab - warped)[valid].mean()))
        previous = ab
    assert count == len(truths), f"{count} frames out, {len(truths)} true"
    return {"flicker": float(np.mean(flicker)), "ciede2000": float(np.mean(errors))}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's ru_maxrss also counts the parent's RSS at
    fork time, so it is read from /proc (VmHWM, reset by exec) where there is one."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(method: str, clip: Path, output: Path, threads: int) -> dict:
    """One method in this process: frames/s (wall), CPU ms per frame, peak RSS.

    Loading the model and one warm-up batch at the clip's size (PyTorch's
    first calls at a new size are several times slower) are not timed; the
    warm-up's seconds are returned beside.
    """
    import av
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    warmup = 0.0
    if method == "copy":
        from autocolor.video import DEFAULT_CRF, X264_PRESET

        start, cpu = time.perf_counter(), cpu_seconds()
        with av.open(str(clip)) as src, av.open(str(output), "w") as out:
            source = src.streams.video[0]
            stream = out.add_stream("libx264", rate=source.average_rate,
                                    options={"crf": str(DEFAULT_CRF), "preset": X264_PRESET})
            stream.width, stream.height = source.width, source.height
            stream.pix_fmt = "yuv420p" if source.width % 2 == 0 and source.height % 2 == 0 else "yuv444p"
            n = 0
            for frame in src.decode(video=0):
                rgb = frame.to_ndarray(format="rgb24")
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
                n += 1
            for packet in stream.encode():
                out.mux(packet)
    else:
        from autocolor.inference import Colorizer
        from autocolor.video import (
            BATCH_FRAMES,
            StabilizerConfig,
            colorize_video,
            merge_frames,
            predict_frames_ab,
        )

        colorizer = Colorizer.load()
        with av.open(str(clip)) as src:
            size = (src.streams.video[0].height, src.streams.video[0].width)
        start = time.perf_counter()
        gray = np.zeros((BATCH_FRAMES, *size), np.uint16)
        merge_frames(gray, predict_frames_ab(colorizer, gray))
        warmup = time.perf_counter() - start
        stabilize = {"per-frame": False, "stabilized": True}.get(method)
        if stabilize is None:  # e.g. "keep=0.6"
            fields = (item.split("=") for item in method.split(","))
            stabilize = StabilizerConfig(**{key: json.loads(value) for key, value in fields})
        start, cpu = time.perf_counter(), cpu_seconds()
        n = colorize_video(colorizer, clip, output, stabilize=stabilize, progress=False)
    seconds = time.perf_counter() - start
    return {"fps": n / seconds, "cpu_ms": 1000 * (cpu_seconds() - cpu) / n, "warmup_s": warmup,
            "rss_mb": peak_rss_mb()}


def run_method(method: str, clip: Path, output: Path, threads: int, package: Path | None = None) -> dict:
    """:func:`run_one` in a fresh process (its own peak RSS), with the package under ``package`` if given."""
    env = dict(os.environ)
    if package is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(package.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--run", method, str(clip), str(output)],
                         capture_output=True, text=True, env=env, check=False)
    if run.returncode:
        raise SystemExit(f"{method} on {clip} failed:\n{run.stderr}")
    return json.loads(run.stdout)


def clips(args, tmp: Path):
    """(name, clip, truth frames factory, motion maps) for each test clip."""
    for photo in map(Path, args.photos):
        for kind in args.kinds.split(","):
            clip = tmp / f"{photo.stem}-{kind}.mp4"
            make_clip(photo, kind, args.frames, clip)
            yield f"{photo.name} {kind}", clip, lambda photo=photo, kind=kind: truth_frames(photo, kind, args.frames), \
                known_motion(kind)
    for path in map(Path, args.real):
        yield path.name, path, lambda path=path: itertools.islice(decode_rgb(path), args.frames), estimated_motion


def rss_by_length(lengths: list[int], photo: Path, threads: int) -> int:
    print(f"| frames ({WIDTH}x{HEIGHT}, {photo.name} pan) | frames/s | peak RSS MB |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            clip, output = Path(tmp) / f"pan-{n}.mp4", Path(tmp) / f"out-{n}.mp4"
            make_clip(photo, "pan", n, clip)
            row = run_method("stabilized", clip, output, threads)
            print(f"| {n} | {row['fps']:.1f} | {row['rss_mb']:.0f} |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", nargs="*", default=sorted(glob.glob("src/autocolor/samples/*.jpg")), help="held-out photos")
    p.add_argument("--frames", type=int, default=48, help="frames per clip")
    p.add_argument("--kinds", default="pan,zoom", help="motions: pan, zoom")
    p.add_argument("--real", nargs="*", default=[], metavar="VIDEO",
                   help="real color footage: colorized from its gray version, scored against its own colors, "
                        "flicker measured along DIS flow of the true frames (the first --frames frames)")
    p.add_argument("--methods", default="copy,per-frame,stabilized",
                   help="copy, per-frame, stabilized (the defaults), or StabilizerConfig fields such as "
                        "predict_every=1,keep=0.6 (separate methods by ';' then)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    p.add_argument("--baseline", type=Path, metavar="SRC",
                   help="also run each method (but copy) with the autocolor package under SRC (such as "
                        "another checkout's src/), right after the current one, so both see the same load")
    p.add_argument("--json", type=Path, help="also write the per-clip rows here")
    p.add_argument("--rss-frames", default="", metavar="N,N,...",
                   help="instead: peak RSS of the stabilized path on pans of these lengths (memory must stay flat)")
    p.add_argument("--run", nargs=3, metavar=("METHOD", "CLIP", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run[0], Path(args.run[1]), Path(args.run[2]), args.threads)))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.rss_frames:
        return rss_by_length([int(n) for n in args.rss_frames.split(",")], Path(args.photos[0]), args.threads)
    methods = args.methods.split(";") if "=" in args.methods else args.methods.split(",")
    runs = [(method, None) for method in methods]
    if args.baseline:
        runs = [run for method in methods for run in [(method, None)] + [(method, args.baseline)] * (method != "copy")]
    rows, load_before = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name, clip, truths, maps in clips(args, Path(tmp)):
            truth = list(lab_frames(truths()))
            rows.append({"clip": name, "method": "truth", **score(truth, truth, maps)})
            for k, (method, package) in enumerate(runs):
                output = Path(tmp) / f"out-{k}.mp4"
                row = {"clip": name, "method": method + (" [baseline]" if package else ""),
                       **run_method(method, clip, output, args.threads, package)}
                if method != "copy":
                    row.update(score(lab_frames(decode_rgb(output)), truth, maps))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"{len(args.photos)} photos x {args.kinds} ({args.frames} frames of {WIDTH}x{HEIGHT}), {len(args.real)} "
          f"real clips (first {args.frames} frames scored); {args.threads} torch threads (colorize_video runs the network "
          f"on at most half the cores: {max(1, min(args.threads, len(os.sched_getaffinity(0)) // 2))}), "
          f"{os.cpu_count()} cores, load average {load_before:.1f} at "
          f"the start and {os.getloadavg()[0]:.1f} at the end; means over clips\n")
    print("| method | flicker (mean abs d-ab) | vs per-frame | CIEDE2000 | vs per-frame | frames/s | vs copy "
          "| CPU ms/frame | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")

    def mean(method, key):
        values = [r[key] for r in rows if r["method"] == method and key in r]
        return float(np.mean(values)) if values else float("nan")

    for method in ["truth"] + list(dict.fromkeys(row["method"] for row in rows if row["method"] != "truth")):
        fl, de, fps, cpu = (mean(method, key) for key in ("flicker", "ciede2000", "fps", "cpu_ms"))
        rss = max((r["rss_mb"] for r in rows if r["method"] == method and "rss_mb" in r), default=float("nan"))
        print(f"| {method} | {fl:.3f} | {fl / mean('per-frame', 'flicker'):.2f}x | {de:.3f} | "
              f"{de / mean('per-frame', 'ciede2000'):.3f}x | {fps:.1f} | {fps / mean('copy', 'fps'):.2f}x "
              f"| {cpu:.0f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
