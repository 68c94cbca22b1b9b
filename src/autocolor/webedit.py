"""Guided editing for the web demo, as plain functions (no Gradio here).

A visitor's photo is decoded once into a :class:`Photo`. Each edit (a color
point, undo, a reference photo, a new saturation) re-renders it through the
one pipeline's two halves: :func:`autocolor.pipeline.predict_chroma` (the
model, at the working size) and :func:`autocolor.color.merge_gray_ab` (the
full-resolution L). The chroma is cached per (photo, model, render size,
hints), so a saturation change, or going back to an earlier state, only
re-merges; the page shows a merge at preview size, and the full-resolution
file is written for download only when asked.
"""

from __future__ import annotations

import hashlib
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from autocolor.color import gray16_to_l, merge_gray_ab
from autocolor.faces import Face, faces_in_lightness
from autocolor.guide import Hints, parse_color
from autocolor.imageio import (
    ImageError,
    Pixels,
    join_alpha,
    output_format_for,
    pil_to_array,
    read_image,
    save_image,
    split_pixels,
    to_uint8,
)
from autocolor.pipeline import FACE_MIN_SIDE, predict_chroma, resize

PREVIEW_SIDE = 1280  # the page shows previews; downloads keep the full resolution
MAX_ASPECT = 50  # a 1 x 40,000,000 strip is a few kB and would need gigabytes
MARKER_RADIUS = 7  # in preview pixels
_MARKUP = set("\\`*_{}[]<>#|~&")  # what Markdown or HTML would act on in a name


def display_name(name: str, limit: int = 80) -> str:
    """A file name safe to put in a message: control characters (escape
    sequences, newlines) shown as ``\\x1b``-style escapes, Markdown and HTML
    punctuation escaped, long names shortened.

    >>> print(display_name("a\\x1b]0;pwned\\x07\\nb*c*.png"))
    a\\\\x1b\\]0;pwned\\\\x07\\\\nb\\*c\\*.png
    """
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in name)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "".join("\\" + ch if ch in _MARKUP else ch for ch in text)


@dataclass
class Photo:
    """One decoded photo of a visitor: its gray at full and at preview size."""

    name: str  # as uploaded (escape with display_name before showing it)
    pixels: Pixels = field(repr=False)  # full resolution
    fmt: str  # the download's format: the input's own
    preview_gray: np.ndarray = field(repr=False)  # (h, w) uint16, at most PREVIEW_SIDE on the long side
    notes: list[str] = field(default_factory=list)  # for the visitor: converted from color, first frame only
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    faces: list[Face] | None = field(default=None, repr=False)  # found on the first render, kept for every edit

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) at full resolution."""
        h, w = self.pixels.gray.shape
        return w, h

    @property
    def preview_size(self) -> tuple[int, int]:
        h, w = self.preview_gray.shape
        return w, h

    def to_full(self, x: float, y: float) -> tuple[float, float]:
        """Preview pixel (column, row) to full-resolution pixel, clamped inside."""
        (w, h), (pw, ph) = self.size, self.preview_size
        return min(w - 1.0, max(0.0, (x + 0.5) * w / pw - 0.5)), min(h - 1.0, max(0.0, (y + 0.5) * h / ph - 0.5))

    def to_preview(self, x: float, y: float) -> tuple[float, float]:
        (w, h), (pw, ph) = self.size, self.preview_size
        return (x + 0.5) * pw / w - 0.5, (y + 0.5) * ph / h - 0.5


def limit_message(name: str, width: int, height: int, max_pixels: int) -> str | None:
    """Why the demo refuses a ``width`` x ``height`` photo, in the visitor's words; None if it takes it."""
    shown = display_name(name)
    if width * height > max_pixels:
        return (f"{shown}: {width}x{height} is {width * height / 1e6:.1f} MP; this demo takes photos up to "
                f"{max_pixels / 1e6:g} MP. Please upload a smaller copy.")
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (f"{shown}: {width}x{height} is a strip, not a photo; this demo takes sides up to "
                f"{MAX_ASPECT}:1. Please crop it.")
    return None


def header_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 -- anything unreadable is reported by read_image, in its own words
        return None


def open_photo(name: str, path: Path, max_pixels: int) -> Photo:
    """Decode an upload into a :class:`Photo`, with notes for the visitor (a
    color photo converted to gray, an animation's first frame).

    Raises:
        ImageError: a one-line, visitor-facing reason (``name: ...``).
    """
    size = header_size(path)
    if size is not None and (refusal := limit_message(name, *size, max_pixels)):
        raise ImageError(refusal)
    try:
        image, notes = read_image(path, max_pixels=max_pixels)
        pixels = split_pixels(pil_to_array(image))
    except ImageError as exc:
        reason = str(exc).split(" (a decompression bomb?")[0]
        raise ImageError(f"{display_name(name)}: {reason}") from None
    if refusal := limit_message(name, *image.size, max_pixels):
        raise ImageError(refusal)
    shown = display_name(name)
    notes = [f"{shown}: {note}" for note in notes]
    if pixels.color:
        notes.append(f"{shown} had color: it was colorized from its gray version (the colors you see are new).")
    return Photo(name, pixels, output_format_for(Path(name)), preview_gray(pixels.gray), notes)


def preview_gray(gray: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """``(H, W)`` uint16 gray shrunk (antialiased) to at most ``side`` on the long side."""
    h, w = gray.shape
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return gray
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = resize(torch.from_numpy(gray.astype(np.float32))[None, None], size)[0, 0]
    return small.round().clamp(0, 65535).numpy().astype(np.uint16)


# ---------------------------------------------------------------- what the visitor said


@dataclass(frozen=True)
class ColorPoint:
    x: float  # column in the photo's full-resolution pixels
    y: float  # row
    color: str  # "#rrggbb"


@dataclass
class Edit:
    """The visitor's guidance for one photo."""

    points: list[ColorPoint] = field(default_factory=list)
    reference: np.ndarray | None = None  # (h, w, 3) uint8 RGB
    reference_key: str | None = None  # what identifies it in the chroma cache
    scribble: np.ndarray | None = None  # (H, W, 4) uint8 RGBA at the photo's size
    scribble_key: str | None = None

    def add(self, x: float, y: float, color: str) -> None:
        r, g, b = parse_color(color)
        self.points.append(ColorPoint(float(x), float(y), f"#{r:02x}{g:02x}{b:02x}"))

    def recolor_last(self, color: str) -> bool:
        if not self.points:
            return False
        last = self.points.pop()
        self.add(last.x, last.y, color)
        return True

    def undo(self) -> None:
        if self.points:
            self.points.pop()

    def clear(self) -> None:
        self.points.clear()

    def hints(self, exclude_last: bool = False) -> Hints:
        points = self.points[:-1] if exclude_last else self.points
        return Hints.build([(p.x, p.y, p.color) for p in points], self.scribble, self.reference)

    def key(self) -> tuple:
        return tuple(self.points), self.reference_key, self.scribble_key


# ---------------------------------------------------------------- rendering


class ChromaCache:
    """Least-recently-used chroma, ``(1, 2, h, w)`` ab at the model's output size, by key."""

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
        ab = compute()  # outside the lock: other photos keep rendering meanwhile
        with self._lock:
            self.misses += 1
            self._entries[key] = ab
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return ab

    def drop(self, photo_key: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == photo_key]:
                del self._entries[key]


def chroma_for(model, photo: Photo, render_size: int, edit: Edit | None, cache: ChromaCache,
               model_label: str = "model", turn: Callable[[], AbstractContextManager] = nullcontext) -> torch.Tensor:
    """The photo's ab under ``edit`` at ``render_size``, from the cache or, inside
    ``turn()`` (a fair share of the server), the model."""
    edit = edit or Edit()
    key = (photo.key, model_label, int(render_size), edit.key())

    def compute() -> torch.Tensor:
        hints = edit.hints()
        with turn():
            lightness = gray16_to_l(photo.pixels.gray[None])  # (1, 1, H, W)
            # The face prior, as the CLI and the API apply it by default (autocolor.faces), with the
            # faces looked for once a photo: the detector took half of an edit's time.
            if photo.faces is None:
                photo.faces = faces_in_lightness(lightness[0, 0]) if min(photo.pixels.gray.shape) >= FACE_MIN_SIDE else []
            return predict_chroma(model, lightness, render_size, None if hints.empty else hints, faces=[photo.faces])

    return cache.get(key, compute)


def merge(gray: np.ndarray, ab: torch.Tensor, saturation: float, dtype=np.uint8) -> np.ndarray:
    """``(H, W)`` uint16 gray with chroma ``ab`` times ``saturation``: ``(H, W, 3)`` of ``dtype``."""
    if not (math.isfinite(saturation) and 0.0 <= saturation <= 4.0):
        raise ValueError(f"saturation {saturation!r} must be a number in 0-4")
    return merge_gray_ab(gray[None], ab * saturation, dtype)[0]


def preview_image(photo: Photo, ab: torch.Tensor, saturation: float, edit: Edit | None = None) -> Image.Image:
    """The result at preview size, with the edit's points drawn on it."""
    image = Image.fromarray(merge(photo.preview_gray, ab, saturation), "RGB")
    if edit is not None and edit.points:
        draw_points(image, photo, edit.points)
    return image


def draw_points(image: Image.Image, photo: Photo, points: list[ColorPoint]) -> None:
    """Each point as a disc of its color in a black and white ring, the last one larger."""
    draw = ImageDraw.Draw(image)
    for i, point in enumerate(points):
        x, y = photo.to_preview(point.x, point.y)
        r = MARKER_RADIUS + (2 if i == len(points) - 1 else 0)
        draw.ellipse((x - r - 2, y - r - 2, x + r + 2, y + r + 2), fill="black")
        draw.ellipse((x - r - 1, y - r - 1, x + r + 1, y + r + 1), fill="white")
        draw.ellipse((x - r + 1, y - r + 1, x + r - 1, y + r - 1), fill=point.color)


def gray_image(photo: Photo) -> Image.Image:
    return Image.fromarray(to_uint8(photo.preview_gray), "L")


def save_full(photo: Photo, ab: torch.Tensor, saturation: float, folder: Path) -> Path:
    """The result at full resolution, in the input's format and sample depth, alpha kept."""
    rgb = merge(photo.pixels.gray, ab, saturation, photo.pixels.dtype)
    stem = Path(photo.name).stem or "image"
    suffix = {"jpg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp"}[photo.fmt]
    path = folder / f"{stem}-color{suffix}"
    try:
        save_image(join_alpha(rgb, photo.pixels.alpha), path, photo.fmt)
    except ImageError:  # e.g. JPEG of 16-bit samples: fall back to a PNG, which holds anything
        path = path.with_suffix(".png")
        save_image(join_alpha(rgb, photo.pixels.alpha), path, "png")
    return path


def scribble_from_layer(layer: np.ndarray | None, photo: Photo) -> tuple[np.ndarray | None, str | None]:
    """A painted layer (RGBA at any size of the photo's aspect, e.g. the editor's canvas)
    as the photo's scribble at full size, with a key for the chroma cache; (None, None)
    when nothing is painted."""
    if layer is None or layer.ndim != 3 or layer.shape[2] != 4 or not (layer[..., 3] > 127).any():
        return None, None
    full = Image.fromarray(np.ascontiguousarray(layer.astype(np.uint8)), "RGBA").resize(photo.size, Image.NEAREST)
    return np.asarray(full), hashlib.sha1(layer.tobytes()).hexdigest()


def points_html(points: list[ColorPoint]) -> str:
    """The list of points for the page (only numbers and validated hex colors in it)."""
    if not points:
        return "<p class='points-empty'>Click on the photo to put a color point there.</p>"
    rows = "".join(
        f"<li><span class='swatch' style='background:{p.color}'></span> "
        f"x {p.x:.0f}, y {p.y:.0f} &nbsp;<code>{p.color}</code></li>"
        for p in points
    )
    return f"<ol class='points'>{rows}</ol>"
