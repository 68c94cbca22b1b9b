"""Bounds of the numbers a user hands to colorizing, shared by the CLI and the API.

Torch-free on purpose: the CLI builds its parser from these, and building the
parser must stay fast (``autocolor --help`` imports no torch). The library's
own constants (``imageio.DEFAULT_MAX_PIXELS``, ``pipeline.DEFAULT_RENDER_SIZE``,
``imageio.OUTPUT_FORMATS``, ``color.GRAY_WEIGHTS``) are checked against the copies here by a test.

>>> check_number("saturation", 1.5, SATURATION)
1.5
>>> check_number("saturation", float("nan"), SATURATION)
Traceback (most recent call last):
...
ValueError: saturation must be a number from 0 to 4, got nan
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple


class Bounds(NamedTuple):
    low: float
    high: float
    integer: bool = False


# The global attention at 1/16 of the working size grows with the square of its
# token count: 1024 needs about 0.3 GB there, 3000 over 7 GB.
RENDER_SIZE = Bounds(32, 1024, integer=True)
SATURATION = Bounds(0.0, 4.0)  # below 0 inverts hues; far above 2 only clips
QUALITY = Bounds(1, 100, integer=True)  # Pillow's JPEG/WebP scale
BATCH_SIZE = Bounds(1, 256, integer=True)
WORKERS = Bounds(0, 64, integer=True)  # 0: one thread
THREADS = Bounds(0, 1024, integer=True)
MAX_PIXELS = Bounds(1, 2_000_000_000, integer=True)
SUGGESTIONS = Bounds(1, 1000, integer=True)  # colors Colorizer.suggest lists (its k)
PORT = Bounds(1, 65535, integer=True)  # autocolor serve --port

DEFAULT_RENDER_SIZE = 256  # == pipeline.DEFAULT_RENDER_SIZE
DEFAULT_MAX_PIXELS = 100_000_000  # == imageio.DEFAULT_MAX_PIXELS
OUTPUT_FORMATS = ("png", "jpg", "webp", "tiff", "bmp")  # == tuple(imageio.OUTPUT_FORMATS)


GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # == color.GRAY_WEIGHTS (Rec. 601 luma), for the torch-free imageio
INPUT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif")  # == imageio's
SUFFIX_FORMATS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff",
                  ".bmp": "bmp"}  # what an output file's name asks for


def describe(bounds: Bounds) -> str:
    """``"an integer from 1 to 100"``"""
    return f"{'an integer' if bounds.integer else 'a number'} from {_show(bounds.low)} to {_show(bounds.high)}"


def _show(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_number(name: str, value, bounds: Bounds):
    """``value`` if it is a finite number within ``bounds`` (an int where
    ``bounds.integer``), else ``ValueError`` naming ``name`` and the range."""
    low, high, integer = bounds
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if (not number or not math.isfinite(value) or not low <= value <= high
            or (integer and not float(value).is_integer())):
        raise ValueError(f"{name} must be {describe(bounds)}, got {value!r}")
    return int(value) if integer else float(value)


# `autocolor tune`'s grid and rule (see autocolor.tune), here so the parser stays torch-free.
TUNE_TEMPERATURES = (0.3, 0.38, 0.5, 0.7)
TUNE_SCALES = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
TUNE_CONFIDENCE_POWERS = (0.0, 2.0, 4.0)  # Decoding.confidence_power
# Decoding.fusion_size (0: off). Fusion costs a second forward pass (256 px photos: 0.73x the images
# a second), so by default tune leaves it off; --fusion-sizes 0,128 lets the rule choose it.
TUNE_FUSION_SIZES = (0,)
TUNE_BAND = (0.8, 1.2)
TUNE_HINT_SCALES = (0.6, 0.8, 1.0, 1.25)  # with points the colors are given: the automatic boost may overshoot

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".ogv", ".mpg", ".mpeg", ".wmv", ".flv")
# Video: x264's constant rate factor (0 lossless .. 51); 18 keeps chroma crisp.
CRF = Bounds(0, 51, integer=True)
DEFAULT_CRF = 18
