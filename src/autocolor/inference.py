"""Colorizing real photos: the :class:`Colorizer` API and batch runs over files.

>>> c = Colorizer.load()                     # the shipped default weights
>>> photo = c.colorize("old.jpg")            # path in, PIL image out
>>> arr = c.colorize(gray_uint8_array)       # (H, W) in, (H, W, 3) uint8 out

Chroma models run at a working size and their ab is laid over the
full-resolution L, as :func:`autocolor.predict.predict_ab` does; the merge
is done here in row tiles with lookup tables, so a 12-megapixel photo costs
a fraction of a second and bounded memory. :func:`colorize_files` is what the
CLI runs: threads decode and encode while the model works, outputs already
written are skipped, and one bad file is reported and passed over.
"""

from __future__ import annotations

import glob
import itertools
import os
import sys
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.color import linear_rgb_to_rgb, xyz_to_rgb
from PIL import Image

from autocolor.color import gray_to_l, normalize_l, unnormalize_ab
from autocolor.imageio import (
    DEFAULT_MAX_PIXELS,
    INPUT_EXTENSIONS,
    OUTPUT_FORMATS,
    ImageError,
    Pixels,
    array_to_pil,
    join_alpha,
    output_format_for,
    pil_to_array,
    read_image,
    save_image,
    split_pixels,
)
from autocolor.predict import DEFAULT_RENDER_SIZE, predict_rgb, resize, working_size
from autocolor.video import (
    DEFAULT_CRF,
    VIDEO_EXTENSIONS,
    colorize_video_jobs,
    is_video,
    output_suffix,
)

BACKENDS = ("torch", "onnxruntime")
TILE_PIXELS = 1 << 15  # pixels per merged tile: below torch's grain size, and its temporaries stay in cache
BATCH_PIXELS = 4_000_000  # images are batched while their pixels add up to no more than this


def default_model_dir() -> Path:
    return Path(__file__).parent / "weights" / "default"


# ---------------------------------------------------------------- L and ab to RGB, fast


_WHITE = (0.95047, 1.0, 1.08883)  # D65, as kornia's lab_to_rgb uses
_SRGB_STEPS = (1 << 18) - 1  # linear values are quantized to 18 bits for the sRGB table


@lru_cache(maxsize=1)
def _gray_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each 16-bit gray level: L in [0, 100] (by :func:`gray_to_l`), Lab's
    f(Y) = (L + 16) / 116, and the relative luminance Y itself."""
    levels = torch.arange(65536, dtype=torch.float64) / 65535.0
    lightness = gray_to_l(levels.view(1, 1, -1)).view(-1)
    fy = (lightness + 16.0) / 116.0
    return lightness.float().numpy(), fy.float().numpy(), _finv(fy).float().numpy()


@lru_cache(maxsize=1)
def _xyz_to_linear_rgb_matrix() -> list[list[float]]:
    # Read kornia's matrix back from it, so there is one definition of the conversion.
    basis = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)  # three 1x1 images: X, Y, Z
    return xyz_to_rgb(basis)[:, :, 0, 0].T.tolist()  # rows: R, G, B


@lru_cache(maxsize=1)
def _srgb8_table() -> torch.Tensor:
    """8-bit sRGB of each quantized linear value (the transfer curve's steepest
    slope, 12.92, keeps the quantization error far below one 8-bit level)."""
    linear = torch.linspace(0.0, 1.0, _SRGB_STEPS + 1).view(1, 1, -1).expand(3, 1, -1)
    return (linear_rgb_to_rgb(linear)[0, 0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def _finv(t: torch.Tensor) -> torch.Tensor:
    """Inverse of Lab's companding function f, with kornia's constants."""
    return torch.where(t > 0.2068966, t * t * t, (t - 4.0 / 29.0) / 7.787)


def lab_tile_to_rgb(gray: np.ndarray, ab: torch.Tensor, out: np.ndarray) -> None:
    """Write RGB for ``(B, h, W)`` uint16 gray and ``(B, 2, h, W)`` ab (Lab units)
    into ``out`` ``(B, h, W, 3)`` (uint8, uint16 or float32).

    The conversion of :func:`autocolor.color.lab_to_rgb` (kornia's, D65, clipped),
    with L, f(Y) and Y read from tables of the gray level and, for 8-bit
    output, the sRGB curve read from a table: a few passes over small tiles.
    """
    _, fy_table, y_table = _gray_tables()
    fy = torch.from_numpy(fy_table[gray])
    xyz = (
        _finv(torch.add(fy, ab[:, 0], alpha=1.0 / 500.0)).mul_(_WHITE[0]),
        torch.from_numpy(y_table[gray]),
        _finv(torch.sub(fy, ab[:, 1], alpha=1.0 / 200.0).clamp_(min=0.0)).mul_(_WHITE[2]),
    )
    for channel, row in enumerate(_xyz_to_linear_rgb_matrix()):
        linear = torch.mul(xyz[0], row[0]).add_(xyz[1], alpha=row[1]).add_(xyz[2], alpha=row[2]).clamp_(0.0, 1.0)
        if out.dtype == np.uint8:
            index = linear.mul_(_SRGB_STEPS).add_(0.5).to(torch.int32)
            out[..., channel] = torch.index_select(_srgb8_table(), 0, index.view(-1)).view(index.shape).numpy()
            continue
        srgb = linear_rgb_to_rgb(linear.unsqueeze(-3).expand(*linear.shape[:-2], 3, *linear.shape[-2:]))[..., 0, :, :]
        srgb = srgb.clamp_(0.0, 1.0)
        out[..., channel] = srgb.mul_(65535.0).add_(0.5).numpy() if out.dtype == np.uint16 else srgb.numpy()


def merge_to_rgb(gray: np.ndarray, ab: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """Lay ``(B, 2, h, w)`` ab (Lab units) over the L of ``(B, H, W)`` uint16 gray:
    ``(B, H, W, 3)`` samples of ``dtype``.

    ab is upsampled bilinearly as in :func:`autocolor.color.merge_l_ab`; the
    conversion runs in row tiles, so its float temporaries stay small (the
    whole-image ab, 8 bytes a pixel, is the one large one).
    """
    b, h, w = gray.shape
    ab_full = F.interpolate(ab.float(), size=(h, w), mode="bilinear", align_corners=False)  # (B, 2, H, W)
    out = np.empty((b, h, w, 3), dtype=dtype)
    step = max(1, TILE_PIXELS // (w * b))
    tiles = [slice(top, min(h, top + step)) for top in range(0, h, step)]
    threads = min(len(tiles), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if threads <= 1:
        for rows in tiles:
            lab_tile_to_rgb(gray[:, rows], ab_full[:, :, rows], out[:, rows])
        return out
    # Tiles this small run single-threaded inside torch; spreading them over our
    # own threads (torch releases the GIL) uses the cores without OpenMP's
    # barriers, which stall badly when other processes share the CPU.
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda rows: lab_tile_to_rgb(gray[:, rows], ab_full[:, :, rows], out[:, rows]), tiles))
    return out



# ---------------------------------------------------------------- the colorizer


class Colorizer:
    """A loaded model and the one way to colorize with it.

    Args:
        model: a registered model (``predicts`` "ab" or "rgb"), or an
            :class:`autocolor.onnx_export.OnnxChromaNet`.
        device: where a PyTorch model runs.
        name: what to call the model in messages.
    """

    def __init__(self, model, device: str = "cpu", name: str = "model") -> None:
        self.model = model
        self.device = torch.device(device)
        self.name = name
        self._warned_color = False

    @classmethod
    def load(cls, model: str | os.PathLike = "default", device: str = "cpu", backend: str = "torch") -> "Colorizer":
        """Load a model folder (``model.safetensors`` + ``config.json``), its
        safetensors file, or ``"default"`` (the shipped weights).

        ``backend="onnxruntime"`` runs the network through onnxruntime on the
        CPU: a ``model.onnx`` next to the weights is used when it is newer,
        otherwise the model is exported in memory.
        """
        from autocolor.checkpoint import WEIGHTS_NAME, CheckpointError, load_model

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        folder = default_model_dir() if str(model) == "default" else Path(model)
        if folder.suffix == ".safetensors":
            folder = folder.parent
        if str(model) == "default" and not (folder / WEIGHTS_NAME).is_file():
            raise CheckpointError(
                f"{folder / WEIGHTS_NAME}: the default weights are not installed; "
                "pass a model folder (model.safetensors + config.json) instead"
            )
        net = load_model(folder).eval()
        if backend == "torch":
            return cls(net.to(device), device=device, name=str(folder))
        from autocolor.onnx_export import OnnxChromaNet, export_onnx_bytes

        if str(device) != "cpu":
            raise ValueError("the onnxruntime backend runs on the CPU; use backend='torch' for other devices")
        cached = folder / "model.onnx"
        fresh = cached.is_file() and cached.stat().st_mtime >= (folder / WEIGHTS_NAME).stat().st_mtime
        graph = cached if fresh else export_onnx_bytes(net)
        return cls(OnnxChromaNet(graph, stride=getattr(net, "stride", 16)), device="cpu", name=str(folder))

    # -- arrays

    @torch.no_grad()
    def colorize_gray(
        self, grays: list[np.ndarray], dtype: np.dtype, render_size: int | None = None, saturation: float = 1.0
    ) -> list[np.ndarray]:
        """Colorize same-sized ``(H, W)`` uint16 gray images (see :class:`Pixels`)
        into ``(H, W, 3)`` samples of ``dtype`` (uint8, uint16 or float32)."""
        if self.model.predicts != "ab":
            gray = torch.from_numpy(np.stack(grays)).unsqueeze(1).float().div_(65535.0)  # (B, 1, H, W)
            rgb = predict_rgb(self.model, gray, render_size, saturation).cpu().permute(0, 2, 3, 1).numpy()
            return [_from_unit(image, dtype) for image in rgb]
        gray = np.stack(grays)  # (B, H, W) uint16
        lightness = torch.from_numpy(_gray_tables()[0][gray]).unsqueeze(1)  # (B, 1, H, W)
        h, w = gray.shape[-2:]
        size = working_size(h, w, render_size or DEFAULT_RENDER_SIZE, getattr(self.model, "stride", 16))
        l_work = normalize_l(resize(lightness, size))
        if isinstance(self.model, nn.Module):
            l_work = l_work.to(self.device)
        ab = unnormalize_ab(self.model.predict_ab(l_work).float().cpu()) * saturation  # (B, 2, h/4, w/4)
        return list(merge_to_rgb(gray, ab, dtype))

    def colorize_pixels(
        self, batch: list[Pixels], render_size: int | None = None, saturation: float = 1.0
    ) -> list[np.ndarray]:
        """Colorize same-sized, same-dtype :class:`Pixels`; alpha is reattached."""
        rgbs = self.colorize_gray([p.gray for p in batch], batch[0].dtype, render_size, saturation)
        return [join_alpha(rgb, p.alpha) for rgb, p in zip(rgbs, batch)]

    def colorize(
        self,
        img: Image.Image | np.ndarray | str | os.PathLike,
        render_size: int | None = None,
        saturation: float = 1.0,
        keep_color: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        """Colorize a PIL image, a numpy array or an image file.

        Arrays may be ``(H, W)``, ``(H, W, 1|2|3|4)`` (alpha last), uint8,
        uint16 or float in [0, 1]; the result is ``(H, W, 3|4)`` of the same
        type. A PIL image or a path gives an 8-bit RGB(A) PIL image. Color
        input is colorized from its gray version (with a warning), or
        returned untouched with ``keep_color``.

        Args:
            render_size: working resolution (about that many pixels squared);
                None for the model's default.
            saturation: chroma scale, 1 = as predicted.
        """
        if isinstance(img, (str, os.PathLike)):
            img = read_image(img, max_pixels)[0]
        as_pil = isinstance(img, Image.Image)
        pixels = split_pixels(pil_to_array(img) if as_pil else img)
        if pixels.color and keep_color:
            return img
        if pixels.color and not self._warned_color:
            warnings.warn("the input has color: colorizing its gray version (keep_color=True returns it untouched)",
                          stacklevel=2)
            self._warned_color = True
        (result,) = self.colorize_pixels([pixels], render_size, saturation)
        return array_to_pil(result) if as_pil else result

    def colorize_video(self, src: str | os.PathLike, dst: str | os.PathLike, **kwargs) -> int:
        """Colorize a video file into ``dst``; see :func:`autocolor.video.colorize_video`."""
        from autocolor.video import colorize_video

        return colorize_video(self, src, dst, **kwargs)


def _from_unit(rgb: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype) == np.uint8:
        return (rgb * 255.0 + 0.5).astype(np.uint8)
    if np.dtype(dtype) == np.uint16:
        return (rgb * 65535.0 + 0.5).astype(np.uint16)
    return rgb.astype(np.float32)


# ---------------------------------------------------------------- which files go where


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    fmt: str


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    converted: int = 0  # color inputs colorized from their gray version
    seconds: float = 0.0

    def line(self) -> str:
        rate = f" in {self.seconds:.1f} s ({self.done / self.seconds:.1f} images/s)" if self.seconds and self.done else ""
        return f"done {self.done}, skipped {self.skipped} (already written), failed {len(self.failed)}{rate}"


def _glob_base(pattern: str) -> Path:
    """The folder a glob's matches are laid out relative to: its parts before the first wildcard."""
    base = list(itertools.takewhile(lambda part: not glob.has_magic(part), Path(pattern).parts))
    return Path(*base) if base else Path(".")


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def plan_jobs(
    inputs: list[str], outdir: str | os.PathLike, fmt: str | None = None
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Map files, folders (recursively) and globs to output paths under ``outdir``.

    A folder's files keep their layout relative to it; a glob's, relative to
    its part before the first wildcard; a file lands directly in ``outdir``.
    The output folder is never scanned for inputs, and no output may be an
    input file.

    Returns:
        jobs, and (path, reason) for inputs that could not be planned.

    Raises:
        ImageError: ``outdir`` is one of the input folders.
    """
    outdir = Path(outdir)
    pairs: list[tuple[Path, Path]] = []  # (source, path relative to outdir)
    problems: list[tuple[Path, str]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            if outdir.exists() and outdir.resolve() == path.resolve():
                raise ImageError(f"{outdir}: the output folder is the input folder; choose another one "
                                 "(inputs are never overwritten)")
            for found in sorted(path.rglob("*")):
                planned = found.suffix.lower() in INPUT_EXTENSIONS + VIDEO_EXTENSIONS
                if planned and found.is_file() and not _is_within(found, outdir):
                    pairs.append((found, found.relative_to(path)))
        elif path.is_file():
            pairs.append((path, Path(path.name)))
        elif glob.has_magic(text):
            base = _glob_base(text)
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                problems.append((path, "no files match this pattern"))
            for found in matches:
                if not _is_within(found, outdir):
                    pairs.append((found, found.relative_to(base) if _is_within(found, base) else Path(found.name)))
        else:
            problems.append((path, "no such file or folder"))
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    sources = {p.resolve() for p, _ in pairs}
    for source, relative in pairs:
        out_fmt = "video" if is_video(source) else output_format_for(source, fmt)
        suffix = output_suffix(source) if out_fmt == "video" else OUTPUT_FORMATS[out_fmt][0]
        target = outdir / relative.with_suffix(suffix)
        key = target.resolve()
        if key in sources:
            problems.append((source, f"its output {target} would overwrite an input; choose another output folder"))
        elif key in claimed:
            problems.append((source, f"its output {target} is already the output of {claimed[key]}"))
        else:
            claimed[key] = source
            jobs.append(Job(source, target, out_fmt))
    return jobs, problems


# ---------------------------------------------------------------- batch runs


@dataclass
class _Decoded:
    job: Job
    pixels: Pixels | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _decode(job: Job, max_pixels: int) -> _Decoded:
    try:
        image, notes = read_image(job.source, max_pixels)
        return _Decoded(job, split_pixels(pil_to_array(image)), notes)
    except ImageError as exc:
        return _Decoded(job, error=str(exc))
    except MemoryError:
        return _Decoded(job, error="out of memory while decoding")


def _encode(job: Job, array: np.ndarray, quality: int) -> None:
    save_image(array, job.target, job.fmt, quality)


def colorize_files(
    colorizer: Colorizer,
    jobs: list[Job],
    *,
    render_size: int | None = None,
    saturation: float = 1.0,
    keep_color: bool = False,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    quality: int = 92,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    crf: int = DEFAULT_CRF,
) -> Summary:
    """Colorize ``jobs``, skipping targets that exist unless ``overwrite``.

    ``workers`` threads decode ahead of the model and encode behind it
    (Pillow, numpy and torch release the GIL, so threads overlap on a CPU
    without pickling images between processes). Consecutive images of one
    size and sample type are batched. Videos (``fmt`` "video") follow the
    photos, one at a time. Each failure is logged as ``path: reason`` and the
    run goes on.
    """
    from tqdm import tqdm

    summary = Summary()
    todo = []
    for job in jobs:
        if not overwrite and job.target.exists():
            summary.skipped += 1
        else:
            todo.append(job)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True, smoothing=0.1)
    say = log or (lambda text: tqdm.write(text, file=sys.stderr))

    def fail(job: Job, reason: str) -> None:
        summary.failed.append((job.source, reason))
        say(f"{job.source}: {reason}")
        bar.update(1)

    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="autocolor-io")
    reads: deque[Future] = deque()
    writes: deque[tuple[Job, Future]] = deque()
    videos = [job for job in todo if job.fmt == "video"]
    queue = iter([job for job in todo if job.fmt != "video"])
    lookahead = max(2 * batch_size, 2 * workers)

    def refill() -> None:
        while len(reads) < lookahead:
            job = next(queue, None)
            if job is None:
                return
            reads.append(pool.submit(_decode, job, max_pixels))

    def settle_writes(keep: int) -> None:
        while len(writes) > keep:
            job, future = writes.popleft()
            try:
                future.result()
                summary.done += 1
                bar.update(1)
            except (ImageError, OSError, ValueError) as exc:
                fail(job, str(exc) if isinstance(exc, ImageError) else f"cannot encode ({exc})")

    def usable(item: _Decoded) -> bool:
        if item.error is not None:
            fail(item.job, item.error)
            return False
        for note in item.notes:
            say(f"{item.job.source}: {note}")
        if item.pixels.color:
            summary.converted += 1
            if summary.converted == 1 and not keep_color:
                say(f"{item.job.source}: in color; colorizing its gray version (--keep-color leaves color "
                    "images as they are; further color inputs are counted, not listed)")
        return True

    try:
        carry: _Decoded | None = None
        refill()
        while carry is not None or reads:
            batch: list[_Decoded] = []
            if carry is not None:
                batch.append(carry)
                carry = None
            while reads and len(batch) < batch_size:
                item = reads.popleft().result()
                refill()
                if not usable(item):
                    continue
                if keep_color and item.pixels.color:
                    rgb = join_alpha(item.pixels.rgb, item.pixels.alpha)
                    writes.append((item.job, pool.submit(_encode, item.job, rgb, quality)))
                    continue
                if batch and not _batchable(batch, item):
                    carry = item
                    break
                batch.append(item)
            if not batch:
                continue
            try:
                results = colorizer.colorize_pixels([b.pixels for b in batch], render_size, saturation)
            except (RuntimeError, ValueError, MemoryError) as exc:
                for item in batch:
                    fail(item.job, f"colorizing failed ({type(exc).__name__}: {exc})")
                continue
            for item, rgb in zip(batch, results):
                writes.append((item.job, pool.submit(_encode, item.job, rgb, quality)))
            batch.clear()
            settle_writes(keep=2 * max(1, workers))
        settle_writes(keep=0)
        for job, error in colorize_video_jobs(colorizer, videos, render_size=render_size, saturation=saturation,
                                              crf=crf, progress=progress):
            if error is not None:
                fail(job, error)
                continue
            summary.done += 1
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _batchable(batch: list[_Decoded], item: _Decoded) -> bool:
    first = batch[0].pixels
    pixels = item.pixels
    return (
        pixels.gray.shape == first.gray.shape
        and pixels.dtype == first.dtype
        and (len(batch) + 1) * pixels.gray.size <= BATCH_PIXELS
    )
