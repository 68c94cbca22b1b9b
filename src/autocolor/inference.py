"""Colorizing real photos: the :class:`Colorizer` API and batch runs over files.

>>> c = Colorizer.load()                     # the shipped default weights
>>> photo = c.colorize("old.jpg")            # path in, PIL image out
>>> arr = c.colorize(gray_uint8_array)       # (H, W) in, (H, W, 3) uint8 out
>>> c.colorize("old.jpg", hints=[(120, 40, "#6d9ed8")], reference="summer.jpg")

Every colorization goes through :func:`autocolor.pipeline.colorize_gray`.
:func:`colorize_files` is what the CLI runs: threads decode and encode while
the model works, outputs already written are skipped, and one bad file is
reported and passed over.
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
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from autocolor.color import gray16_to_l
from autocolor.guide import Hints, Point
from autocolor.imageio import (
    DEFAULT_MAX_PIXELS,
    INPUT_EXTENSIONS,
    OUTPUT_FORMATS,
    ImageError,
    Metadata,
    Pixels,
    array_to_pil,
    as_given_dtype,
    join_alpha,
    keep_image,
    output_format_for,
    pil_to_array,
    read_image,
    read_photo,
    save_image,
    split_pixels,
)
from autocolor.pipeline import DEFAULT_RENDER_SIZE, colorize_gray, resize, working_size

BACKENDS = ("torch", "onnxruntime")
BATCH_PIXELS = 4_000_000  # images are batched while their pixels add up to no more than this


def default_model_dir() -> Path:
    return Path(__file__).parent / "weights" / "default"


class Colorizer:
    """A loaded model and the one way to colorize with it.

    Args:
        model: a registered model (:class:`autocolor.models.base.ChromaModel`
            or ``RGBModel``), or an :class:`autocolor.onnx_export.OnnxChromaNet`.
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
        safetensors file, ``"default"`` (the shipped weights) or ``"levin"``
        (Levin et al.'s optimization: hints only, no weights).

        ``backend="onnxruntime"`` runs the network through onnxruntime on the
        CPU: a ``model.onnx`` next to the weights is used when it is newer,
        otherwise the model is exported in memory.
        """
        from autocolor.checkpoint import WEIGHTS_NAME, CheckpointError, load_model

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if str(model) == "levin":
            from autocolor.models import create_model

            return cls(create_model("levin"), device="cpu", name="levin")
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
        return cls(OnnxChromaNet(graph, net), device="cpu", name=str(folder))

    # -- arrays

    def colorize_pixels(
        self, batch: list[Pixels], render_size: int | None = None, saturation: float = 1.0,
        hints: Hints | None = None,
    ) -> list[np.ndarray]:
        """Colorize same-sized, same-dtype :class:`Pixels`; alpha is reattached."""
        gray = np.stack([p.gray for p in batch])  # (B, H, W) uint16
        rgbs = colorize_gray(self.model, gray, batch[0].dtype, render_size, saturation, hints)
        return [join_alpha(rgb, p.alpha) for rgb, p in zip(rgbs, batch)]

    def colorize(
        self,
        img: Image.Image | np.ndarray | str | os.PathLike,
        render_size: int | None = None,
        saturation: float = 1.0,
        keep_color: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        hints: Sequence | Hints | None = None,
        scribble=None,
        reference=None,
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
            hints: color points ``[(x, y, color), ...]``: x the column and y
                the row in the input's pixels, color ``(r, g, b)`` in 0-255 or
                ``"#rrggbb"``. ``[]`` gives exactly the automatic result.
            scribble: an RGBA image of the input's size (path, PIL or array)
                whose opaque pixels give colors to spread.
            reference: a photo (path, PIL or array) whose colors to use
                ("make it look like this").
        """
        img, pixels = self._pixels(img, max_pixels, warn=not keep_color)
        if pixels.color and keep_color:
            return img
        guide = self._hints(hints, scribble, reference, pixels)
        (result,) = self.colorize_pixels([pixels], render_size, saturation, guide)
        return array_to_pil(result) if isinstance(img, Image.Image) else as_given_dtype(result, pixels)

    def suggest(self, img, x: float, y: float, k: int = 5, hints: Sequence | Hints | None = None,
                render_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[tuple[str, float]]:
        """The model's ``k`` likeliest colors at pixel ``(x, y)`` (column, row):
        ``[("#rrggbb", probability), ...]``, likeliest first, each at that
        pixel's lightness. Needs a classification head (the default)."""
        from autocolor.color import gray_tables, lab_to_rgb

        _, pixels = self._pixels(img, max_pixels)
        h, w = pixels.gray.shape
        guide = self._hints(hints, None, None, pixels)
        Hints((Point(x, y, (0, 0, 0)),)).check(h, w)
        model = self.model
        if not hasattr(model, "probabilities"):
            raise ValueError(f"{self.name}: only a classification model suggests colors")
        lightness = gray16_to_l(pixels.gray[None])
        size = working_size(h, w, render_size or DEFAULT_RENDER_SIZE, model.stride)
        l_work = resize(lightness, size)
        device = next(model.parameters()).device
        g = guide.guide(l_work, (h, w), model.bins).to(device) if guide is not None and model.guided else None
        with torch.no_grad():
            probs = model.probabilities(model(l_work.to(device), g))[0].cpu()  # (Q, h/4, w/4)
        row = min(probs.shape[1] - 1, int(y * probs.shape[1] / h))
        col = min(probs.shape[2] - 1, int(x * probs.shape[2] / w))
        top = probs[:, row, col].topk(min(k, probs.shape[0]))
        level = float(gray_tables()[0][pixels.gray[int(y), int(x)]])
        lab = torch.cat([torch.full((1, top.indices.numel()), level), model.bins[top.indices].T.cpu()])
        rgb = (lab_to_rgb(lab.view(3, 1, -1))[:, 0].T * 255 + 0.5).to(torch.uint8).tolist()
        return [("#%02x%02x%02x" % tuple(c), float(p)) for c, p in zip(rgb, top.values)]

    def _pixels(self, img, max_pixels: int, warn: bool = True):
        """The image (a path read into a PIL image) and its :class:`Pixels`."""
        if isinstance(img, (str, os.PathLike)):
            img = read_image(img, max_pixels)[0]
        pixels = split_pixels(pil_to_array(img) if isinstance(img, Image.Image) else img, max_pixels)
        if pixels.color and warn and not self._warned_color:
            warnings.warn("the input has color: colorizing its gray version (keep_color=True returns it untouched)",
                          stacklevel=3)
            self._warned_color = True
        return img, pixels

    @staticmethod
    def _hints(hints, scribble, reference, pixels: Pixels) -> Hints | None:
        built = hints if isinstance(hints, Hints) else Hints.build(hints or (), scribble, reference)
        if built.empty:
            return None
        built.check(*pixels.gray.shape)
        return built


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
                if found.suffix.lower() in INPUT_EXTENSIONS and found.is_file() and not _is_within(found, outdir):
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
        out_fmt = output_format_for(source, fmt)
        target = outdir / relative.with_suffix(OUTPUT_FORMATS[out_fmt][0])
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
    metadata: Metadata | None = None  # None: write none (--strip-metadata)


def _decode(job: Job, max_pixels: int, keep_metadata: bool = True) -> _Decoded:
    try:
        photo = read_photo(job.source, max_pixels)
        return _Decoded(job, split_pixels(photo.samples), list(photo.notes),
                        metadata=photo.metadata if keep_metadata else None)
    except ImageError as exc:
        return _Decoded(job, error=str(exc))
    except MemoryError:
        return _Decoded(job, error="out of memory while decoding")


def _encode(job: Job, array: np.ndarray, quality: int, metadata: Metadata | None = None) -> None:
    save_image(array, job.target, job.fmt, quality, metadata)


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
    hints: Hints | None = None,
    strip_metadata: bool = False,
) -> Summary:
    """Colorize ``jobs``, skipping targets that exist unless ``overwrite``.

    ``workers`` threads decode ahead of the model and encode behind it
    (Pillow, numpy and torch release the GIL, so threads overlap on a CPU
    without pickling images between processes). Consecutive images of one
    size and sample type are batched. Each failure is logged as
    ``path: reason`` and the run goes on. ``hints`` apply to every photo
    (a reference photo for a whole album; points must fit each photo). Each
    output carries its input's metadata (:class:`autocolor.imageio.Metadata`)
    unless ``strip_metadata``.
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
    queue = iter(todo)
    lookahead = max(2 * batch_size, 2 * workers)

    def refill() -> None:
        while len(reads) < lookahead:
            job = next(queue, None)
            if job is None:
                return
            reads.append(pool.submit(_decode, job, max_pixels, not strip_metadata))

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
                    writes.append((item.job, pool.submit(keep_image, item.job.source, rgb, item.job.target,
                                                         item.job.fmt, quality, item.metadata)))
                    continue
                if batch and not _batchable(batch, item):
                    carry = item
                    break
                batch.append(item)
            if not batch:
                continue
            try:
                results = colorizer.colorize_pixels([b.pixels for b in batch], render_size, saturation, hints)
            except (RuntimeError, ValueError, MemoryError) as exc:
                for item in batch:
                    fail(item.job, f"colorizing failed ({type(exc).__name__}: {exc})")
                continue
            for item, rgb in zip(batch, results):
                writes.append((item.job, pool.submit(_encode, item.job, rgb, quality, item.metadata)))
            batch.clear()
            settle_writes(keep=2 * max(1, workers))
        settle_writes(keep=0)
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
