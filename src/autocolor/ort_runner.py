"""Colorizing photos through onnxruntime without importing PyTorch.

``autocolor colorize photo.jpg --backend onnxruntime`` takes this path when
nothing asks for PyTorch. It is the automatic mode of
:func:`autocolor.pipeline.colorize_gray`, step for step, in numpy, Pillow and
onnxruntime::

    gray (uint16) -> L (a table) -> working size (Pillow, bilinear, antialiased)
                  -> the exported network (onnxruntime) -> ab -> x saturation
                  -> merged with the full-resolution L (:func:`merge_gray_ab`) -> RGB

Its outputs agree with the PyTorch pipeline's within one 8-bit level (tested).
Importing PyTorch alone costs a few seconds of CPU; without it one small photo
takes well under a second of CPU from the shell (``benchmarks/bench_shell.py``).

The network comes from an ONNX graph exported with PyTorch the first time a
model is used and cached (:func:`onnx_cache_dir`) under a digest of the model
folder's weights, config and decoding (:func:`content_key`), with what the
runner needs to know about the model (its stride, whether it takes hints) in
the graph's metadata. Later runs read the cache and never import torch.

What still loads PyTorch: the export itself (a model's first run, or after its
files changed), color hints, ``--model levin``, videos and torchrun; the
command (``autocolor.cli``) then runs the PyTorch pipeline with the network on
onnxruntime, and says so in one note line. With the ``faces`` extra installed, a photo in which
a face is found loads PyTorch for its skin-tone correction (``--no-faces``
skips the face prior and keeps every photo torch-free).
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from autocolor.errors import SetupError
from autocolor.settings import DEFAULT_RENDER_SIZE

# The model folder's files that decide the exported graph (== checkpoint's WEIGHTS_NAME,
# CONFIG_NAME, DECODING_NAME; checkpoint imports torch, so a test checks the copies).
MODEL_FILES = ("model.safetensors", "config.json", "decoding.json")
# Salt of the cache key: bump it when the export itself changes (v2: graphs carry metadata).
CACHE_VERSION = b"autocolor-onnx-v3"
META_PREFIX = "autocolor."
ONNX_EXTRA = "pip install 'autocolor[onnx]'"


# ---------------------------------------------------------------- the cached graph


def onnx_cache_dir() -> Path:
    """Where exported ONNX graphs are kept: ``$AUTOCOLOR_CACHE``, else the user's
    cache folder. Model folders are inputs and are never written to."""
    if os.environ.get("AUTOCOLOR_CACHE"):
        return Path(os.environ["AUTOCOLOR_CACHE"]) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autocolor" / "onnx"


def content_key(folder: Path) -> str:
    """A digest of what decides the exported graph: weights, config and decoding."""
    digest = hashlib.sha256(CACHE_VERSION)
    for name in MODEL_FILES:
        digest.update(name.encode())
        path = Path(folder) / name
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:24]


def cached_graph_path(folder: Path) -> Path:
    return onnx_cache_dir() / f"{content_key(folder)}.onnx"


def exported_graph(net) -> bytes:
    """The ONNX graph of a loaded chroma model (PyTorch), with the runner's facts
    about it in the graph's metadata (:class:`OrtChroma` reads them back).

    Raises:
        ValueError: the model predicts RGB (only chroma models export).
    """
    import onnx

    from autocolor.guide import OUTPUT_STRIDE
    from autocolor.onnx_export import export_onnx_bytes

    model = onnx.load_model_from_string(export_onnx_bytes(net))
    facts = {"stride": net.stride, "guided": int(bool(net.guided)), "bins": int(net.bins.shape[0]),
             "output_stride": OUTPUT_STRIDE, "fusion_size": int(net.decoding.fusion_size)}
    for key, value in facts.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, str(value)
    return model.SerializeToString()


def export_to_cache(folder: Path, cached: Path, net=None) -> bytes:
    """Export the folder's model (``net`` if it is already loaded) with PyTorch, once per
    content, and cache it at ``cached`` where writable; the graph's bytes."""
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
    except ImportError:
        raise SetupError(f"--backend onnxruntime exports the model with onnx once: {ONNX_EXTRA}") from None
    from autocolor.atomic import atomic_write_bytes
    from autocolor.checkpoint import CheckpointError, load_model

    net = net if net is not None else load_model(folder).eval()
    try:
        graph = exported_graph(net)
    except ValueError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    try:
        atomic_write_bytes(cached, graph)
    except OSError:
        pass  # no writable cache: export again next time
    return graph


def model_folder(model: str | os.PathLike) -> Path:
    """``"default"`` (the shipped weights), a model folder or its safetensors file, as a folder."""
    from autocolor.inference import default_model_dir

    folder = default_model_dir() if str(model) == "default" else Path(model)
    return folder.parent if folder.suffix == ".safetensors" else folder


def load_runner(model: str | os.PathLike = "default", threads: int | None = None) -> "OrtChroma":
    """An :class:`OrtChroma` for a model folder, from the cache when its content
    matches (torch-free), else exported now with PyTorch and cached.

    Raises:
        SetupError: onnxruntime (or, to export, onnx) is not installed.
        CheckpointError: the folder cannot be used (one line: file and reason).
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SetupError(f"--backend onnxruntime needs onnxruntime: {ONNX_EXTRA}") from None
    folder = model_folder(model)
    cached = cached_graph_path(folder)
    if cached.is_file():
        try:
            return OrtChroma(cached, threads)
        except Exception:  # noqa: BLE001 - a damaged or older cache entry is rebuilt below
            cached.unlink(missing_ok=True)
    graph = export_to_cache(folder, cached)
    try:
        return OrtChroma(graph, threads)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are not RuntimeError
        from autocolor.checkpoint import CheckpointError

        text = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{folder}: onnxruntime cannot run the exported model ({text})") from None


class OrtChroma:
    """An onnxruntime session of an exported chroma network, numpy in and out.

    ``predict_ab`` takes L ``(B, 1, H, W)`` at the working size (sides multiples
    of ``stride``) and gives ab ``(B, 2, H/4, W/4)`` in Lab units, the model's
    own decoding included; a hint-aware graph is fed empty hints.
    """

    def __init__(self, graph: bytes | str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's choice (the physical cores)
        # Waiting threads do not spin: spinning steals the cores the I/O threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = graph if isinstance(graph, bytes) else str(graph)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        facts = self.session.get_modelmeta().custom_metadata_map
        try:
            self.stride = int(facts[META_PREFIX + "stride"])
            self.guided = bool(int(facts[META_PREFIX + "guided"]))
            self.bins = int(facts[META_PREFIX + "bins"])
            self.output_stride = int(facts[META_PREFIX + "output_stride"])
            self.fusion_size = int(facts[META_PREFIX + "fusion_size"])  # the decoding's, applied by the colorizer
        except (KeyError, ValueError):
            raise ValueError("the ONNX graph lacks autocolor's metadata (exported by an older version)") from None

    def predict_ab(self, lightness: np.ndarray) -> np.ndarray:
        lightness = np.ascontiguousarray(lightness, dtype=np.float32)
        b, _, h, w = lightness.shape
        feed = {"lightness": lightness}
        if self.guided:  # no hints: zero points, zero spread, a zero reference (none)
            s = self.output_stride
            feed.update(hint_ab=np.zeros((b, 2, h, w), np.float32), hint_mask=np.zeros((b, 1, h, w), np.float32),
                        spread=np.zeros((b, 2, h // s, w // s), np.float32),
                        reference=np.zeros((b, self.bins), np.float32))
        (ab,) = self.session.run(["ab"], feed)
        return ab


# ---------------------------------------------------------------- gray, L and ab to RGB in numpy
# The same conversion as autocolor.color's (kornia's Lab, D65, clipped to the
# gamut), from the same tables of the 16-bit gray level, in float32.

TILE_PIXELS = 1 << 15  # pixels per merged tile: its float temporaries stay in cache
_WHITE = (0.95047, 1.0, 1.08883)  # D65
_SRGB_STEPS = (1 << 18) - 1  # linear values are quantized to 18 bits for the 8-bit sRGB table
# Linear sRGB from CIE XYZ (D65), rows R, G, B: the sRGB standard's matrix, as kornia's xyz_to_rgb uses it.
XYZ_TO_LINEAR_RGB = (
    (3.2404813432005266, -1.5371515162713185, -0.4985363261688878),
    (-0.9692549499965682, 1.8759900014898907, 0.0415559265582928),
    (0.0556466391351772, -0.2040413383665112, 1.0573110696453443),
)


def working_size(h: int, w: int, render_size: int, multiple: int = 16) -> tuple[int, int]:
    """:func:`autocolor.pipeline.working_size` without torch (a test checks they agree)."""
    scale = render_size / math.sqrt(h * w)
    cap = max(multiple, render_size * render_size // multiple // multiple * multiple)
    return (
        min(cap, max(multiple, round(h * scale / multiple) * multiple)),
        min(cap, max(multiple, round(w * scale / multiple) * multiple)),
    )


@lru_cache(maxsize=1)
def gray_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each 16-bit gray level: L in [0, 100], Lab's f(Y) = (L + 16) / 116 and
    the relative luminance Y (as :func:`autocolor.color.gray_tables`)."""
    g = np.arange(65536, dtype=np.float64) / 65535.0
    linear = np.where(g > 0.04045, ((g + 0.055) / 1.055) ** 2.4, g / 12.92)
    eps, kappa = 216.0 / 24389.0, 24389.0 / 27.0
    lightness = np.where(linear > eps, 116.0 * np.maximum(linear, eps) ** (1.0 / 3.0) - 16.0, kappa * linear)
    fy = (lightness + 16.0) / 116.0
    return lightness.astype(np.float32), fy.astype(np.float32), _finv(fy).astype(np.float32)


def _finv(t: np.ndarray) -> np.ndarray:
    """Inverse of Lab's companding function f (kornia's constants)."""
    return np.where(t > 0.2068966, t * t * t, (t - t.dtype.type(4.0 / 29.0)) / t.dtype.type(7.787))


def _srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve of linear values in [0, 1] (float32)."""
    threshold = np.float32(0.0031308)
    curved = np.float32(1.055) * np.power(np.maximum(linear, threshold), np.float32(1 / 2.4)) - np.float32(0.055)
    return np.where(linear > threshold, curved, np.float32(12.92) * linear)


@lru_cache(maxsize=1)
def _srgb8_table() -> np.ndarray:
    linear = np.linspace(0.0, 1.0, _SRGB_STEPS + 1, dtype=np.float32)
    return (np.clip(_srgb(linear), 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def lab_tile_to_rgb(gray: np.ndarray, ab: np.ndarray, out: np.ndarray) -> None:
    """Write RGB for ``(B, h, W)`` uint16 gray and ``(B, 2, h, W)`` float32 ab (Lab
    units) into ``out`` ``(B, h, W, 3)`` (uint8, uint16 or float32)."""
    _, fy_table, y_table = gray_tables()
    fy = fy_table[gray]
    xyz = (
        _finv(fy + ab[:, 0] * np.float32(1.0 / 500.0)) * np.float32(_WHITE[0]),
        y_table[gray],
        _finv(np.maximum(fy - ab[:, 1] * np.float32(1.0 / 200.0), np.float32(0.0))) * np.float32(_WHITE[2]),
    )
    for channel, row in enumerate(XYZ_TO_LINEAR_RGB):
        linear = xyz[0] * np.float32(row[0]) + xyz[1] * np.float32(row[1]) + xyz[2] * np.float32(row[2])
        np.clip(linear, 0.0, 1.0, out=linear)
        if out.dtype == np.uint8:
            index = (linear * np.float32(_SRGB_STEPS) + np.float32(0.5)).astype(np.int32)
            out[..., channel] = _srgb8_table()[index]
            continue
        srgb = np.clip(_srgb(linear), 0.0, 1.0)
        out[..., channel] = srgb * np.float32(65535.0) + np.float32(0.5) if out.dtype == np.uint16 else srgb


def _linear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear source indices and weights along one axis (half-pixel centers, as
    PyTorch's interpolate with align_corners=False): ``i0, i1, w1``."""
    scale = np.float32(size_in) / np.float32(size_out)
    src = scale * (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, size_in - 1)
    i1 = np.minimum(i0 + 1, size_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return i0, i1, w1


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def merge_gray_ab(gray: np.ndarray, ab: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Lay ``(B, 2, h, w)`` ab (Lab units) over the L of ``(B, H, W)`` uint16 gray:
    ``(B, H, W, 3)`` samples of ``dtype`` (:func:`autocolor.color.merge_gray_ab`
    in numpy; ab is upsampled bilinearly, in row tiles over threads)."""
    b, h, w = gray.shape
    ab = np.asarray(ab, dtype=np.float32)
    x0, x1, wx = _linear_taps(ab.shape[3], w)
    y0, y1, wy = _linear_taps(ab.shape[2], h)
    wide = ab[..., x0] * (np.float32(1.0) - wx) + ab[..., x1] * wx  # (B, 2, h, W): columns done once
    out = np.empty((b, h, w, 3), dtype=dtype)
    step = max(1, TILE_PIXELS // (w * b))
    tiles = [slice(top, min(h, top + step)) for top in range(0, h, step)]

    def tile(rows: slice) -> None:
        weight = wy[rows][:, None]
        ab_rows = wide[:, :, y0[rows]] * (np.float32(1.0) - weight) + wide[:, :, y1[rows]] * weight
        lab_tile_to_rgb(gray[:, rows], ab_rows, out[:, rows])

    threads = min(len(tiles), _threads())
    if threads <= 1:
        for rows in tiles:
            tile(rows)
    else:
        with ThreadPoolExecutor(threads) as pool:  # numpy releases the GIL in its loops
            list(pool.map(tile, tiles))
    return out


def resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a float32 ``(H, W)`` plane to ``size`` (rows, columns)."""
    if plane.shape == tuple(size):
        return plane
    from PIL import Image

    return np.asarray(Image.fromarray(plane, mode="F").resize((size[1], size[0]), Image.BILINEAR))


# ---------------------------------------------------------------- the colorizer


class OrtColorizer:
    """Photos in the automatic mode through onnxruntime: what
    :func:`autocolor.inference.colorize_files` needs of a
    :class:`autocolor.inference.Colorizer` (``colorize_pixels``), torch-free.

    ``faces``: skin-tone corrections on detected faces, as the PyTorch pipeline
    gives them (a photo with a face found loads PyTorch for it).
    """

    def __init__(self, runner: OrtChroma, name: str = "model", faces: bool = True) -> None:
        self.model = runner
        self.name = name
        self.faces = faces

    @classmethod
    def load(cls, model: str | os.PathLike = "default", threads: int | None = None) -> "OrtColorizer":
        """The model folder's network from the ONNX cache (exported with PyTorch if missing)."""
        return cls(load_runner(model, threads), name=str(model_folder(model)))

    def colorize_pixels(self, batch, render_size: int | None = None, saturation: float = 1.0, hints=None):
        """Colorize same-sized, same-dtype :class:`autocolor.imageio.Pixels`; alpha is reattached."""
        from autocolor.imageio import join_alpha
        from autocolor.inference import check_colorize_settings

        if hints is not None and not hints.empty:
            raise ValueError("the torch-free onnxruntime path takes no color hints")
        check_colorize_settings(render_size, saturation)
        gray = np.stack([p.gray for p in batch])
        rgbs = self.colorize_gray(gray, batch[0].dtype, render_size, saturation)
        return [join_alpha(rgb, p.alpha) for rgb, p in zip(rgbs, batch)]

    def colorize_gray(self, gray: np.ndarray, dtype=np.uint8, render_size: int | None = None,
                      saturation: float = 1.0) -> np.ndarray:
        """``(B, H, W)`` uint16 gray to ``(B, H, W, 3)`` samples of ``dtype``
        (:func:`autocolor.pipeline.colorize_gray` without hints)."""
        lightness = gray_tables()[0][gray]  # (B, H, W) float32
        h, w = gray.shape[1:]
        size = working_size(h, w, render_size or DEFAULT_RENDER_SIZE, self.model.stride)
        l_work = np.stack([resize_plane(plane, size) for plane in lightness])[:, None]
        ab = self.model.predict_ab(l_work)
        small = working_size(*size, self.model.fusion_size, self.model.stride) if self.model.fusion_size else None
        if small is not None and small[0] * small[1] < size[0] * size[1]:  # as autocolor.pipeline.automatic_chroma
            coarse = self.model.predict_ab(np.stack([resize_plane(plane[0], small) for plane in l_work])[:, None])
            ab = 0.5 * (ab + np.stack([[resize_plane(c, ab.shape[-2:]) for c in image] for image in coarse]))
        if self.faces:
            ab = _face_prior(lightness, l_work, size, ab)
        return merge_gray_ab(gray, ab * np.float32(saturation), dtype)


def _face_prior(lightness: np.ndarray, l_work: np.ndarray, size: tuple[int, int], ab: np.ndarray) -> np.ndarray:
    """The pipeline's skin-tone correction, where a face is found (PyTorch only then)."""
    from autocolor import faces

    if not faces.available():
        return ab
    # The gray the pipeline's face_guide looks for faces on, from the same L.
    gray8 = (np.clip(lightness, 0.0, 100.0) * np.float32(2.55) + np.float32(0.5)).astype(np.uint8)
    if not any(faces.detect_faces(image) for image in gray8):
        return ab
    import torch

    from autocolor.guide import refine_with_hints

    skin = faces.face_guide(torch.from_numpy(lightness).unsqueeze(1), size)
    if skin is None:
        return ab
    return refine_with_hints(torch.from_numpy(ab), torch.from_numpy(l_work), skin, faces.FACE_DECAY).numpy()
