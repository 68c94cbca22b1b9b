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
import json
import os
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

# Torch-free at import: the onnxruntime path (autocolor.ort_runner) runs the
# batch machinery here without PyTorch, so torch, the pipeline, hints and video
# are imported where they are used.
from autocolor import settings
from autocolor.errors import SetupError, printable
from autocolor.imageio import (
    DEFAULT_MAX_PIXELS,
    INPUT_EXTENSIONS,
    OUTPUT_FORMATS,
    ImageError,
    Metadata,
    Pixels,
    array_to_pil,
    as_given_dtype,
    encode_image,
    join_alpha,
    output_format_for,
    pil_to_array,
    read_image,
    kept_image_bytes,
    read_photo,
    split_pixels,
)
from autocolor.ort_runner import onnx_cache_dir  # noqa: F401 - part of this module's API
from autocolor.settings import DEFAULT_CRF, DEFAULT_RENDER_SIZE, VIDEO_EXTENSIONS, check_number

if TYPE_CHECKING:  # annotations only: importing them here would pull in torch
    import torch

    from autocolor.guide import Hints

BACKENDS = ("torch", "onnxruntime")
BATCH_PIXELS = 4_000_000  # images are batched while their pixels add up to no more than this


def default_model_dir() -> Path:
    return Path(__file__).parent / "weights" / "default"


# The pipeline and video modules import torch: these stand-ins import them when first called.


def colorize_gray(*args, **kwargs) -> np.ndarray:
    """:func:`autocolor.pipeline.colorize_gray`."""
    from autocolor.pipeline import colorize_gray

    return colorize_gray(*args, **kwargs)


def is_video(path: str | os.PathLike) -> bool:
    """:func:`autocolor.video.is_video`."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def output_suffix(source: str | os.PathLike) -> str:
    """:func:`autocolor.video.output_suffix`."""
    from autocolor.video import output_suffix

    return output_suffix(source)


def colorize_video_jobs(colorizer, jobs, **kwargs):
    """:func:`autocolor.video.colorize_video_jobs` (nothing to import for no videos)."""
    if not jobs:
        return iter(())
    from autocolor.video import colorize_video_jobs

    return colorize_video_jobs(colorizer, jobs, **kwargs)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA, then MPS, then CPU) or a device that exists here.

    Raises:
        SetupError: one line saying what is missing and what to pass instead.
    """
    import torch

    from autocolor.distributed import pick_device

    try:
        device = pick_device(str(name))
    except (RuntimeError, ValueError):
        raise SetupError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "" if torch.version.cuda else " (this PyTorch is built without CUDA)"
            raise SetupError(f"--device {name}: no CUDA GPU is visible{built}; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SetupError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPUs here (cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SetupError(f"--device {name}: Apple's MPS is not available here; use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise SetupError(f"--device {name}: not supported; use auto, cpu, cuda or mps")
    return device


def _onnx_runner(folder: Path, net):
    """An onnxruntime runner for ``net``, from the folder's cached graph when its
    content key matches, else exported now (and cached where writable)."""
    from autocolor.checkpoint import CheckpointError

    try:
        import onnxruntime  # noqa: F401

        from autocolor.onnx_export import OnnxChromaNet
        from autocolor.ort_runner import cached_graph_path, export_to_cache
    except ImportError:
        raise SetupError("--backend onnxruntime needs onnxruntime: pip install 'autocolor[onnx]'") from None
    cached = cached_graph_path(folder)
    if cached.is_file():
        try:
            return OnnxChromaNet(cached, net)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt below
            cached.unlink(missing_ok=True)
    graph = export_to_cache(folder, cached, net)
    try:
        return OnnxChromaNet(graph, net)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are not RuntimeError
        raise CheckpointError(f"{folder}: onnxruntime cannot run the exported model ({_one_line(exc)})") from None


class Colorizer:
    """A loaded model and the one way to colorize with it.

    Args:
        model: a registered model (:class:`autocolor.models.base.ChromaModel`
            or ``RGBModel``), or an :class:`autocolor.onnx_export.OnnxChromaNet`.
        device: where a PyTorch model runs.
        name: what to call the model in messages.
        faces: give detected faces skin-tone corrections (:mod:`autocolor.faces`;
            needs the ``faces`` extra, else nothing happens); ``c.faces = False`` turns them off.
    """

    def __init__(self, model, device: str = "cpu", name: str = "model", faces: bool = True) -> None:
        import torch

        self.model = model
        self.device = torch.device(device)
        self.name = name
        self.faces = faces  # skin-tone corrections on detected faces (autocolor.faces), where a detector is installed
        self._warned_color = False

    @classmethod
    def load(cls, model: str | os.PathLike = "default", device: str = "cpu", backend: str = "torch") -> "Colorizer":
        """Load a model folder (``model.safetensors`` + ``config.json``), its
        safetensors file, ``"default"`` (the shipped weights) or ``"levin"``
        (Levin et al.'s optimization: hints only, no weights).

        ``device`` is a torch device name or ``"auto"`` (CUDA, then MPS, then
        CPU). ``backend="onnxruntime"`` runs the network through onnxruntime
        on the CPU; the exported graph is cached (:func:`onnx_cache_dir`) under
        a digest of the folder's weights and settings, so a changed
        ``config.json`` or ``decoding.json`` is never run through a stale graph.

        Raises:
            CheckpointError: the folder cannot be used (one line: file and reason).
            SetupError: the device or the backend is not available here.
        """
        from autocolor.checkpoint import WEIGHTS_NAME, CheckpointError, load_model
        from autocolor.models.base import for_inference

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend == "onnxruntime":
            if str(device) not in ("cpu", "auto"):
                raise SetupError("the onnxruntime backend runs on the CPU; use --device cpu, or --backend torch "
                                 f"for {device}")
            device = "cpu"
        device = str(resolve_device(device))
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
            return cls(for_inference(net).to(device), device=device, name=str(folder))
        return cls(_onnx_runner(folder, net), device="cpu", name=str(folder))

    # -- arrays

    def colorize_pixels(
        self, batch: list[Pixels], render_size: int | None = None, saturation: float = 1.0,
        hints: Hints | None = None,
    ) -> list[np.ndarray]:
        """Colorize same-sized, same-dtype :class:`Pixels`; alpha is reattached."""
        check_colorize_settings(render_size, saturation)
        gray = batch[0].gray[None] if len(batch) == 1 else np.stack([p.gray for p in batch])  # (B, H, W) uint16
        alpha = all(p.alpha is not None for p in batch)  # then the color is laid into RGBA directly, not copied
        rgbs = colorize_gray(self.model, gray, batch[0].dtype, render_size, saturation, hints, faces=self.faces,
                             channels=4 if alpha else 3)
        results = []
        for rgb, p in zip(rgbs, batch):
            if rgb.shape[-1] == 4:
                rgb[..., 3] = p.alpha
                results.append(rgb)
            else:
                results.append(join_alpha(rgb, p.alpha))
        return results

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

        Raises:
            ValueError: a setting out of its bounds (:mod:`autocolor.settings`),
                such as a NaN or negative saturation; ``HintError`` for bad hints.
        """
        check_colorize_settings(render_size, saturation, max_pixels=max_pixels)
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
        pixel's lightness. Needs a classification head (the default). ``k`` is
        an integer from 1 to 1000 (``settings.SUGGESTIONS``), else ``ValueError``."""
        import torch

        from autocolor.color import gray16_to_l, gray_tables, lab_to_rgb
        from autocolor.guide import Hints
        from autocolor.pipeline import resize, working_size

        check_colorize_settings(render_size, max_pixels=max_pixels)
        k = check_number("k", k, settings.SUGGESTIONS)
        _, pixels = self._pixels(img, max_pixels)
        h, w = pixels.gray.shape
        guide = self._hints(hints, None, None, pixels)
        Hints.build([(x, y, (0, 0, 0))]).check(h, w)  # x and y checked as numbers, as hints are
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
        from autocolor.guide import Hints

        built = hints if isinstance(hints, Hints) else Hints.build(hints or (), scribble, reference)
        if built.empty:
            return None
        built.check(*pixels.gray.shape)
        return built

    def colorize_video(self, src: str | os.PathLike, dst: str | os.PathLike, **kwargs) -> int:
        """Colorize a video file into ``dst``; see :func:`autocolor.video.colorize_video`."""
        from autocolor.video import colorize_video

        return colorize_video(self, src, dst, **kwargs)


# ---------------------------------------------------------------- which files go where


RECORD_NAME = ".autocolor-record.jsonl"  # beside the outputs: which input each finished output came from


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    fmt: str
    root: Path | None = None  # the output folder, where the record lives; None: the target's own folder

    @property
    def record(self) -> Path:
        return (self.root if self.root is not None else self.target.parent) / RECORD_NAME

    @property
    def record_key(self) -> str:
        root = self.root if self.root is not None else self.target.parent
        return self.target.relative_to(root).as_posix()


@dataclass
class FileResult:
    """One file's outcome, as ``--json`` reports it."""

    input: str
    output: str | None
    status: str  # "done", "skipped" or "failed"
    reason: str | None = None
    seconds: float | None = None  # from the start of reading to the output written (overlaps other files)


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    converted: int = 0  # color inputs colorized from their gray version
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C: what was written is whole, the rest not begun
    files: list[FileResult] = field(default_factory=list)

    def line(self) -> str:
        rate = f" in {self.seconds:.1f} s ({self.done / self.seconds:.1f} images/s)" if self.seconds and self.done else ""
        return f"done {self.done}, skipped {self.skipped} (already written), failed {len(self.failed)}{rate}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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


def _walk_images(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``folder``, following linked subfolders (each real
    folder once, so a link loop ends), and the links that lead nowhere."""
    found: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        try:
            info = os.stat(top)
        except OSError:
            dirs[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []
            problems.append((Path(top), "a linked folder already scanned (a link loop?): skipped"))
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs.sort()
        for name in sorted(files):
            path = Path(top) / name
            if path.suffix.lower() not in INPUT_EXTENSIONS + VIDEO_EXTENSIONS:
                continue
            if path.is_symlink() and not path.exists():
                problems.append((path, f"a link to {os.readlink(path)}, which does not exist"))
            elif path.is_file():
                found.append(path)
    return found, problems


def read_record(path: Path) -> dict[str, list[dict]]:
    """The entries of an output record, by output (relative path); unreadable lines are ignored."""
    entries: dict[str, list[dict]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return entries
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            entries.setdefault(entry["output"], []).append(entry)
        except (ValueError, KeyError, TypeError):
            continue
    return entries


def _source_stamp(path: Path) -> dict:
    info = path.stat()
    return {"source": str(path.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _is_recorded(job: Job, entries: dict[str, list[dict]]) -> bool:
    """The target is the output this input gave: the record names this very
    source (path, size, mtime) and this very file (size, mtime)."""
    try:
        source = _source_stamp(job.source)
        out = job.target.stat()
    except OSError:
        return False
    return any(
        {k: e.get(k) for k in source} == source
        and e.get("output_size") == out.st_size and e.get("output_mtime_ns") == out.st_mtime_ns
        for e in entries.get(job.record_key, ())
    )


def plan_jobs(
    inputs: list[str], outdir: str | os.PathLike, fmt: str | None = None
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Map files, folders (recursively, through linked subfolders) and globs to
    output paths under ``outdir``.

    A folder's files keep their layout relative to it; a glob's, relative to
    its part before the first wildcard; a file lands directly in ``outdir``.
    The output folder is never scanned for inputs, and no output may be an
    input file, including the files of an input folder that lie inside the
    output folder and that autocolor did not write.

    Returns:
        jobs, and (path, reason) for inputs that could not be planned.

    Raises:
        ImageError: ``outdir`` is one of the input folders.
    """
    outdir = Path(outdir)
    pairs: list[tuple[Path, Path]] = []  # (source, path relative to outdir)
    problems: list[tuple[Path, str]] = []
    inside_output: set[Path] = set()  # input-folder files within outdir: inputs too, unless written by us
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            pairs.extend(_folder_pairs(path, outdir, problems, inside_output))
        elif path.is_file():
            pairs.append((path, Path(path.name)))
        elif path.is_symlink():
            problems.append((path, f"a link to {os.readlink(path)}, which does not exist"))
        elif glob.has_magic(text):
            pairs.extend(_glob_pairs(text, outdir, problems))
        else:
            problems.append((path, "no such file or folder"))
    jobs = _jobs_for_pairs(pairs, outdir, fmt, inside_output, problems)
    return jobs, problems


def _folder_pairs(
    folder: Path, outdir: Path, problems: list[tuple[Path, str]], inside_output: set[Path]
) -> list[tuple[Path, Path]]:
    """An input folder's images with their paths relative to it; those inside ``outdir`` go to ``inside_output``."""
    if outdir.exists() and outdir.resolve() == folder.resolve():
        raise ImageError(f"{outdir}: the output folder is the input folder; choose another one "
                         "(inputs are never overwritten)")
    found, trouble = _walk_images(folder)
    problems.extend(trouble)
    kept = [f for f in found if not _is_within(f, outdir)]
    inside_output.update(f.resolve() for f in found if _is_within(f, outdir))
    if found and not kept:
        reason = (f"all its {len(found)} images lie inside the output folder {outdir}, which is never "
                  "scanned for inputs; choose an output folder outside it")
        problems.append((folder, reason))
    return [(f, f.relative_to(folder)) for f in kept]


def _glob_pairs(pattern: str, outdir: Path, problems: list[tuple[Path, str]]) -> list[tuple[Path, Path]]:
    """A glob's files outside ``outdir``, with their paths relative to its part before the first wildcard."""
    base = _glob_base(pattern)
    matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
    if not matches:
        problems.append((Path(pattern), "no files match this pattern"))
    pairs = []
    for found_path in matches:
        if not _is_within(found_path, outdir):
            relative = found_path.relative_to(base) if _is_within(found_path, base) else Path(found_path.name)
            pairs.append((found_path, relative))
    return pairs


def _jobs_for_pairs(
    pairs: list[tuple[Path, Path]], outdir: Path, fmt: str | None, inside_output: set[Path],
    problems: list[tuple[Path, str]],
) -> list[Job]:
    """One job per (source, relative path); a target that is an input or another job's is a problem."""
    record = read_record(outdir / RECORD_NAME) if inside_output else {}
    ours = {(outdir / key).resolve() for key in record}
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    sources = {p.resolve() for p, _ in pairs} | (inside_output - ours)
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
            jobs.append(Job(source, target, out_fmt, outdir))
    return jobs


def check_colorize_settings(render_size: int | None = None, saturation: float = 1.0, **others) -> None:
    """``ValueError`` (one line) for a setting out of its bounds (:mod:`autocolor.settings`):
    NaN, infinite, negative or huge values never reach the model."""
    if render_size is not None:
        check_number("render_size", render_size, settings.RENDER_SIZE)
    check_number("saturation", saturation, settings.SATURATION)
    for name, value in others.items():
        check_number(name, value, getattr(settings, name.upper()))


# ---------------------------------------------------------------- batch runs

# Decoded images held ahead of the model (beyond the few being decoded): ten
# 40 MP scans decoded at once would need gigabytes.
LOOKAHEAD_BYTES = 512_000_000


@dataclass
class _Decoded:
    job: Job
    pixels: Pixels | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    metadata: Metadata | None = None  # None: write none (--strip-metadata)
    started: float = 0.0

    @property
    def nbytes(self) -> int:
        p = self.pixels
        if p is None:
            return 0
        return p.gray.nbytes + (p.alpha.nbytes if p.alpha is not None else 0) + (p.rgb.nbytes if p.rgb is not None else 0)


def _decode(job: Job, max_pixels: int, keep_metadata: bool = True, keep_rgb: bool = True) -> _Decoded:
    started = time.perf_counter()
    try:
        photo = read_photo(job.source, max_pixels)
        pixels = split_pixels(photo.samples)
        if not keep_rgb:
            pixels.rgb = None  # the input's own colors (3-6 bytes a pixel) serve only --keep-color
        return _Decoded(job, pixels, list(photo.notes), metadata=photo.metadata if keep_metadata else None,
                        started=started)
    except ImageError as exc:
        return _Decoded(job, error=str(exc), started=started)
    except MemoryError:
        return _Decoded(job, error="out of memory while decoding", started=started)
    except Exception as exc:  # noqa: BLE001 - a per-file problem must never end the batch
        return _Decoded(job, error=f"cannot decode ({type(exc).__name__}: {_one_line(exc)})", started=started)


class _Recorder:
    """Appends to the output records: one JSON line per finished output,
    written before the output takes its name (so a record never names a
    file that is not the one it describes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, job: Job, finished: Path) -> None:
        out = finished.stat()
        entry = {"output": job.record_key, **_source_stamp(job.source),
                 "output_size": out.st_size, "output_mtime_ns": out.st_mtime_ns}
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode()
        with self.lock:
            fd = os.open(job.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line)  # one write with O_APPEND: whole lines, even from several processes
                os.fsync(fd)
            finally:
                os.close(fd)


def _encode(job: Job, array: np.ndarray, quality: int, recorder: _Recorder, metadata: Metadata | None = None,
            kept: bool = False) -> None:
    """Encode (or, for a kept color input, copy) and write one output with its record."""
    from autocolor.atomic import atomic_write_bytes

    if kept:
        data = kept_image_bytes(job.source, array, job.fmt, quality, metadata)
    else:
        data = encode_image(array, job.fmt, quality, metadata)
    try:
        atomic_write_bytes(job.target, data, before_replace=lambda tmp: recorder(job, tmp))
    except OSError as exc:
        raise ImageError(f"cannot write {job.target} ({exc.strerror or exc})") from exc


def _triage(jobs: list[Job], overwrite: bool, summary: Summary, fail) -> list[Job]:
    """The jobs to do: a target this input already gave (by the record) is
    skipped; any other file or folder in the way is refused unless ``overwrite``."""
    records: dict[Path, dict[str, list[dict]]] = {}
    todo = []
    for job in jobs:
        target = job.target
        if target.is_dir():
            fail(job, f"a folder is in the way at {target}; move it or choose another output")
        elif overwrite or not (target.exists() or target.is_symlink()):
            todo.append(job)
        else:
            if job.record not in records:
                records[job.record] = read_record(job.record)
            if _is_recorded(job, records[job.record]):
                summary.skipped += 1
                summary.files.append(FileResult(str(job.source), str(target), "skipped", "already written"))
            else:
                fail(job, f"{target} exists and is not this input's output (another photo of that name, "
                          "or changed since); --overwrite replaces it")
    return todo


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
    crf: int = DEFAULT_CRF,
) -> Summary:
    """Colorize ``jobs``, skipping outputs this very input already gave.

    An output counts as done when the record beside the outputs
    (``.autocolor-record.jsonl``) says it was written from this source (path,
    size and modification time) and it is still that file; any other file
    at a target is left alone and reported unless ``overwrite``. Outputs
    are written whole or not at all, and flushed to disk before they count.

    ``workers`` threads decode ahead of the model (at most about
    ``LOOKAHEAD_BYTES`` of decoded images wait) and encode behind it
    (Pillow, numpy and torch release the GIL, so threads overlap on a CPU
    without pickling images between processes). Consecutive images of one
    size and sample type are batched. Videos (``fmt`` "video") follow the
    photos, one at a time. Each failure, whatever it is, is logged as
    ``path: reason`` and the run goes on; Ctrl-C stops it with
    ``summary.interrupted`` set. ``hints`` apply to every photo (a reference
    photo for a whole album; points must fit each photo). Each output
    carries its input's metadata (:class:`autocolor.imageio.Metadata`)
    unless ``strip_metadata``.

    Raises:
        ValueError: a setting out of its bounds (see :mod:`autocolor.settings`).
    """
    check_colorize_settings(render_size, saturation, quality=quality, batch_size=batch_size, workers=workers,
                            max_pixels=max_pixels)
    run = _BatchRun(colorizer, render_size=render_size, saturation=saturation, keep_color=keep_color,
                    max_pixels=max_pixels, quality=quality, batch_size=batch_size, workers=workers, progress=progress,
                    say=log or _write_above_bar, hints=hints, strip_metadata=strip_metadata, crf=crf)
    todo = _triage(jobs, overwrite, run.summary, run.fail)
    _remove_stale_temporaries(todo)
    start = time.perf_counter()
    run.run(todo)
    run.summary.seconds = time.perf_counter() - start
    return run.summary


def _write_above_bar(text: str) -> None:
    """Print a line to stderr above the progress bar."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


def _remove_stale_temporaries(todo: list[Job]) -> None:
    """Remove the temporary files that killed runs left in the output folders of ``todo``."""
    from autocolor.atomic import remove_stale_temporaries

    for folder in sorted({job.target.parent for job in todo}):
        remove_stale_temporaries(folder, legacy_names={job.target.name for job in todo if job.target.parent == folder})


@dataclass
class _BatchRun:
    """One :func:`colorize_files` run: threads decode ahead of the model and encode behind it,
    and every outcome is counted in ``summary``."""

    colorizer: Colorizer
    render_size: int | None
    saturation: float
    keep_color: bool
    max_pixels: int
    quality: int
    batch_size: int
    workers: int
    progress: bool
    say: Callable[[str], None]
    hints: Hints | None
    strip_metadata: bool
    crf: int
    summary: Summary = field(default_factory=Summary)
    recorder: _Recorder = field(default_factory=_Recorder)
    bar: object = None  # the progress bar, once the jobs to do are known
    pool: ThreadPoolExecutor | None = None
    queue: Iterator[Job] = field(default_factory=lambda: iter(()))  # photos not yet submitted for decoding
    reads: deque[Future] = field(default_factory=deque)  # decodes submitted, in order
    writes: deque[tuple[_Decoded, Future, int]] = field(default_factory=deque)  # (item, future, bytes of its result)
    held: int = 0  # bytes of decoded images taken from `reads` and not yet colorized

    def run(self, todo: list[Job]) -> None:
        """The photos, then the videos one at a time; Ctrl-C stops with ``summary.interrupted`` set."""
        from tqdm import tqdm

        self.bar = tqdm(total=len(todo), unit="img", disable=not self.progress, dynamic_ncols=True, smoothing=0.1)
        self.pool = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="autocolor-io")
        videos = [job for job in todo if job.fmt == "video"]
        photos = [job for job in todo if job.fmt != "video"]
        try:
            self.photos(photos)
            self.videos(videos)
        except KeyboardInterrupt:
            self.interrupt()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.bar.close()

    def fail(self, job: Job, reason: str, started: float | None = None) -> None:
        """Count one file's failure and say ``path: reason``."""
        self.summary.failed.append((job.source, reason))
        seconds = time.perf_counter() - started if started else None
        self.summary.files.append(FileResult(str(job.source), str(job.target), "failed", reason, seconds))
        self.say(printable(f"{job.source}: {reason}"))
        if self.bar is not None:
            self.bar.update(1)

    def count_done(self, job: Job, seconds: float | None) -> None:
        """Count one output written."""
        self.summary.done += 1
        self.summary.files.append(FileResult(str(job.source), str(job.target), "done", None, seconds))

    def held_bytes(self) -> int:
        """Bytes of decoded images waiting for the model and of results waiting to be encoded."""
        ready = sum(f.result().nbytes for f in self.reads if f.done() and not f.cancelled())
        return ready + self.held + sum(n for _, _, n in self.writes)

    def refill(self) -> None:
        """Submit decodes: at most ``workers`` at a time, none while the bytes waiting pass the budget."""
        while len(self.reads) < max(2 * self.batch_size, 2 * self.workers):
            if self.reads and (sum(not f.done() for f in self.reads) >= max(1, self.workers)
                               or self.held_bytes() >= LOOKAHEAD_BYTES):
                return
            job = next(self.queue, None)
            if job is None:
                return
            self.reads.append(self.pool.submit(_decode, job, self.max_pixels, not self.strip_metadata, self.keep_color))

    def settle_writes(self, keep: int) -> None:
        """Wait for the oldest encodes until ``keep`` at most (and under the byte budget) are under way."""
        while len(self.writes) > keep or (self.writes and sum(n for _, _, n in self.writes) > LOOKAHEAD_BYTES):
            item, future, _ = self.writes.popleft()
            try:
                future.result()
            except ImageError as exc:
                self.fail(item.job, str(exc), item.started)
            except Exception as exc:  # noqa: BLE001 - a per-file problem must never end the batch
                self.fail(item.job, f"cannot encode ({type(exc).__name__}: {_one_line(exc)})", item.started)
            else:
                self.count_done(item.job, time.perf_counter() - item.started)
                self.bar.update(1)

    def write(self, item: _Decoded, rgb: np.ndarray, kept: bool = False) -> None:
        """Submit the encoding and writing of one output."""
        future = self.pool.submit(_encode, item.job, rgb, self.quality, self.recorder, item.metadata, kept)
        self.writes.append((item, future, rgb.nbytes))

    def usable(self, item: _Decoded) -> bool:
        """Whether a decoded item can be colorized; say its notes, or fail it."""
        if item.error is not None:
            self.fail(item.job, item.error, item.started)
            return False
        for note in item.notes:
            self.say(printable(f"{item.job.source}: {note}"))
        if item.pixels.color:
            self.summary.converted += 1
            if self.summary.converted == 1 and not self.keep_color:
                self.say(printable(f"{item.job.source}: in color; colorizing its gray version (--keep-color leaves "
                                   "color images as they are; further color inputs are counted, not listed)"))
        return True

    def photos(self, jobs: list[Job]) -> None:
        """Decode, colorize in batches and encode the photos ``jobs``."""
        self.queue = iter(jobs)
        carry: _Decoded | None = None
        self.refill()
        while carry is not None or self.reads:
            batch, carry = self.next_batch(carry)
            if not batch:
                self.refill()
                continue
            self.colorize_batch(batch, carry)
            self.settle_writes(keep=2 * max(1, self.workers))
            self.refill()
        self.settle_writes(keep=0)

    def next_batch(self, carry: _Decoded | None) -> tuple[list[_Decoded], _Decoded | None]:
        """Decoded images of one size and type for one batch, from ``carry`` on, and the first
        that did not fit (carried to the next batch); kept color inputs go straight to the encoders."""
        batch: list[_Decoded] = [] if carry is None else [carry]
        while self.reads and len(batch) < self.batch_size:
            item = self.reads.popleft().result()
            if not self.usable(item):
                self.refill()
                continue
            if self.keep_color and item.pixels.color:
                self.write(item, join_alpha(item.pixels.rgb, item.pixels.alpha), kept=True)
                self.refill()
                continue
            if batch and not _batchable(batch, item):
                self.held += item.nbytes
                return batch, item
            batch.append(item)
            self.held += item.nbytes
            self.refill()
        return batch, None

    def colorize_batch(self, batch: list[_Decoded], carry: _Decoded | None) -> None:
        """Colorize one batch and submit its outputs; any error fails this batch only."""
        try:
            results = self.colorizer.colorize_pixels([b.pixels for b in batch], self.render_size, self.saturation,
                                                     self.hints)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors, MemoryError, ...: this batch only
            results = None
            for item in batch:
                self.fail(item.job, f"colorizing failed ({type(exc).__name__}: {_one_line(exc)})", item.started)
        self.held = carry.nbytes if carry is not None else 0
        for item, rgb in zip(batch, results or ()):
            self.write(item, rgb)

    def videos(self, jobs: list[Job]) -> None:
        """Colorize the videos ``jobs`` one at a time, each recorded once it has its name."""
        for job, error in colorize_video_jobs(self.colorizer, jobs, render_size=self.render_size,
                                              saturation=self.saturation, crf=self.crf, progress=self.progress,
                                              hints=self.hints):
            if error is not None:
                self.fail(job, error)
                continue
            self.recorder(job, job.target)  # after the rename: a crash just before leaves an unrecorded file, reported
            self.count_done(job, None)
            self.bar.update(1)

    def interrupt(self) -> None:
        """After Ctrl-C: cancel the decodes, let the encodes under way finish whole and count them."""
        self.summary.interrupted = True
        for future in self.reads:
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)  # writes under way finish whole
        for item, future, _ in self.writes:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.count_done(item.job, time.perf_counter() - item.started)


def _batchable(batch: list[_Decoded], item: _Decoded) -> bool:
    first = batch[0].pixels
    pixels = item.pixels
    return (
        pixels.gray.shape == first.gray.shape
        and pixels.dtype == first.dtype
        and (len(batch) + 1) * pixels.gray.size <= BATCH_PIXELS
    )
