"""Reading and writing photos: every odd file a user may hand us, and atomic writes.

:func:`read_image` turns any supported file into an upright Pillow image in a
small set of modes ("L", "LA", "RGB", "RGBA", "I;16", "F"), or raises
:class:`ImageError` with a one-line reason. :func:`split_pixels` turns such an
image (or a numpy array) into what the colorizer needs: Rec. 601 gray in
[0, 1], the alpha channel, and the sample type to write back.
:func:`save_image` writes to a temporary name and renames, so an interrupted
run never leaves half an image under the final name; 16-bit results stay
16-bit in PNG and TIFF.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from autocolor.color import rgb_to_gray
from autocolor.errors import AutocolorError

# 100 MP is a 12,000 x 8,000 scan; decoding and colorizing it needs a few GB.
# Anything larger is far more likely a decompression bomb than a photo.
DEFAULT_MAX_PIXELS = 100_000_000

INPUT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif")
# Output format name -> (file suffix, Pillow format name).
OUTPUT_FORMATS = {
    "png": (".png", "PNG"),
    "jpg": (".jpg", "JPEG"),
    "webp": (".webp", "WEBP"),
    "tiff": (".tif", "TIFF"),
    "bmp": (".bmp", "BMP"),
}
_FORMAT_OF_SUFFIX = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".tif": "tiff",
                     ".tiff": "tiff", ".bmp": "bmp", ".gif": "png"}  # GIF's palette would ruin color
SIXTEEN_BIT_FORMATS = ("png", "tiff")

# A JPEG of a gray photo saved as RGB wobbles by a level or two between channels.
_COLOR_TOLERANCE = 3 / 255


class ImageError(AutocolorError, ValueError):
    """A file that cannot be used as an image (or written as one), with the reason."""


def output_format_for(path: Path, requested: str | None = None) -> str:
    """The output format name: ``requested``, else the input's own (PNG for GIF)."""
    if requested is not None:
        if requested not in OUTPUT_FORMATS:
            raise ImageError(f"unknown output format {requested!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
        return requested
    return _FORMAT_OF_SUFFIX.get(Path(path).suffix.lower(), "png")


# ---------------------------------------------------------------- reading


def _allow_pixels(max_pixels: int) -> None:
    # Pillow's own bomb guard raises at twice its limit inside Image.open, before
    # we can apply ours; lift it (never lower it) so our limit is the one that counts.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """Decode ``path`` into an upright image plus notes worth telling the user.

    The pixel count is checked from the header, before decoding. EXIF
    orientation is applied; an animated file gives its first frame; palette,
    CMYK and other modes become "L", "LA", "RGB" or "RGBA"; 16-bit gray stays
    "I;16"; float TIFFs stay "F".

    Raises:
        ImageError: the file is missing, empty, not an image, truncated,
            corrupt, or has more than ``max_pixels`` pixels.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read ({exc.strerror or exc})") from exc
    if path.is_dir():
        raise ImageError("is a folder, not an image")
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    _allow_pixels(max_pixels)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(
                        f"{w}x{h} is {w * h / 1e6:.1f} MP, over the limit of {max_pixels / 1e6:g} MP "
                        "(a decompression bomb? raise --max-pixels if the image is genuine)"
                    )
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    notes.append(f"animated ({frames} frames): colorizing the first frame only")
                im.seek(0)
                im.load()
                image = ImageOps.exif_transpose(im) or im.copy()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: over the pixel limit of {max_pixels / 1e6:g} MP, a decompression bomb? ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not an image Pillow can identify (wrong extension, or not an image at all)") from exc
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, Warning) as exc:
        # Warning: Pillow warns about corrupt metadata, and ``-W error`` makes that an exception.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if "truncated" in reason:
            raise ImageError(f"truncated file ({reason})") from exc
        raise ImageError(f"corrupt or unsupported image ({reason})") from exc
    return _normalize_mode(image, notes), notes


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """:func:`read_image` without the notes: an upright image ready for colorizing."""
    return read_image(path, max_pixels)[0]


def _normalize_mode(image: Image.Image, notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA", "I;16", "F"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in ("I;16B", "I;16L", "I;16N"):
        return Image.fromarray(np.asarray(image).astype(np.uint16))
    if mode == "I":
        values = np.asarray(image)
        if values.min() >= 0 and values.max() <= 65535:
            return Image.fromarray(values.astype(np.uint16))
        return Image.fromarray((values.astype(np.float64) / max(1, values.max())).astype(np.float32))
    if mode == "La":
        return image.convert("LA")
    if mode == "RGBa":
        return image.convert("RGBA")
    if mode == "CMYK":
        notes.append("CMYK: converted to RGB")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


# ---------------------------------------------------------------- pixels


@dataclass
class Pixels:
    """An image taken apart for colorizing.

    gray: ``(H, W)`` uint16, Rec. 601 luma of the input times 65535 (16 bits
        hold any 8- or 16-bit input exactly and index lookup tables directly).
    alpha: ``(H, W)`` in ``dtype``, or None.
    dtype: the sample type results are written in (uint8, uint16 or float32).
    color: the input had color (its gray was computed here).
    rgb: the input's own RGB ``(H, W, 3)`` in ``dtype`` when it had color.
    """

    gray: np.ndarray
    alpha: np.ndarray | None
    dtype: np.dtype
    color: bool
    rgb: np.ndarray | None = field(default=None, repr=False)


def pil_to_array(image: Image.Image) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` samples of a normalized image, uint8/uint16/float32."""
    image = _normalize_mode(image, [])
    array = np.asarray(image)
    if image.mode == "I;16":
        array = array.astype(np.uint16, copy=False)
    return array


def _scale(dtype: np.dtype) -> float:
    return {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(dtype), 1.0)


def split_pixels(array: np.ndarray) -> Pixels:
    """Split ``(H, W)``, ``(H, W, 1|2|3|4)`` uint8, uint16 or float ([0, 1]) samples.

    Two and four channels carry alpha last. Color inputs are turned into gray
    with :func:`autocolor.color.rgb_to_gray`, the one definition of gray.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"expected an (H, W) or (H, W, 1|2|3|4) array, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"empty image of shape {array.shape}")
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        dtype = array.dtype
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        dtype = np.dtype(np.float32)
        array = array.astype(np.float32, copy=False)
    else:
        raise ImageError(f"unsupported sample type {array.dtype} (use uint8, uint16 or float in [0, 1])")
    channels = array.shape[2]
    alpha = array[:, :, -1].copy() if channels in (2, 4) else None
    color_part = array[:, :, :3] if channels >= 3 else array[:, :, :1]
    if color_part.shape[2] == 1:
        return Pixels(to_uint16(color_part[:, :, 0]), alpha, dtype, False)
    scale = 1.0 / _scale(dtype)
    rgb = torch.from_numpy(np.require(color_part, requirements=["C", "W"])).permute(2, 0, 1).float() * scale  # (3, H, W)
    spread = (rgb.amax(dim=0) - rgb.amin(dim=0)).max().item()
    gray = to_uint16(rgb_to_gray(rgb)[0].numpy())
    if spread <= _COLOR_TOLERANCE:
        return Pixels(gray, alpha, dtype, False)
    return Pixels(gray, alpha, dtype, True, rgb=np.ascontiguousarray(color_part))


def join_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``(H, W, 3)`` plus optional ``(H, W)`` alpha of the same dtype -> ``(H, W, 3|4)``."""
    if alpha is None:
        return rgb
    return np.concatenate([rgb, alpha[:, :, None].astype(rgb.dtype, copy=False)], axis=2)


def to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # float TIFFs may hold NaN


def to_uint16(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint16:
        return array
    if array.dtype == np.uint8:
        return array.astype(np.uint16) * 257
    return (np.clip(np.nan_to_num(array), 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


def array_to_pil(array: np.ndarray) -> Image.Image:
    """8-bit RGB or RGBA image of ``(H, W, 3|4)`` samples (Pillow has no 16-bit color)."""
    return Image.fromarray(to_uint8(array), "RGBA" if array.shape[2] == 4 else "RGB")


# ---------------------------------------------------------------- writing


def _png16(array: np.ndarray) -> bytes:
    """A 16-bit RGB(A) PNG: Pillow cannot write one, and the format is short."""
    h, w, c = array.shape
    rows = np.ascontiguousarray(array.astype(">u2")).reshape(h, w * c).view(np.uint8)  # (H, W*C*2)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 6 if c == 4 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")


def _tiff16(array: np.ndarray) -> bytes:
    """A 16-bit RGB(A) baseline TIFF, uncompressed, one strip."""
    h, w, c = array.shape
    data = np.ascontiguousarray(array.astype("<u2")).tobytes()
    entries = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, c, None), (259, 3, 1, 1), (262, 3, 1, 2),
        (273, 4, 1, None), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1),
    ]
    if c == 4:
        entries.append((338, 3, 1, 2))  # extra sample: unassociated alpha
    ifd_size = 2 + 12 * len(entries) + 4
    bits_offset = 8 + ifd_size
    data_offset = bits_offset + 2 * c
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = bits_offset if c > 2 else 16 | (16 << 16)
        elif tag == 273:
            value = data_offset
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I", 0) + struct.pack(f"<{c}H", *([16] * c))
    return bytes(out) + data


def encode_image(array: np.ndarray, fmt: str, quality: int = 92) -> bytes:
    """Encode ``(H, W, 3|4)`` samples in format ``fmt`` (a key of OUTPUT_FORMATS).

    uint16 stays 16-bit in PNG and TIFF; other formats get 8 bits. JPEG has
    no alpha, so alpha is dropped there.
    """
    import io

    if fmt not in OUTPUT_FORMATS:
        raise ImageError(f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    if fmt == "jpg" and array.shape[2] == 4:
        array = array[:, :, :3]
    if fmt in SIXTEEN_BIT_FORMATS and array.dtype != np.uint8:
        return _png16(to_uint16(array)) if fmt == "png" else _tiff16(to_uint16(array))
    image = array_to_pil(array)
    options: dict = {}
    if fmt == "jpg":
        options = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
    elif fmt == "webp":
        options = {"quality": quality, "method": 4}
    elif fmt == "png":
        options = {"compress_level": 6}
    elif fmt == "tiff":
        options = {"compression": "tiff_deflate"}
    buffer = io.BytesIO()
    image.save(buffer, format=OUTPUT_FORMATS[fmt][1], **options)
    return buffer.getvalue()


def save_image(array: np.ndarray, path: str | os.PathLike, fmt: str | None = None, quality: int = 92) -> None:
    """Write ``array`` to ``path`` under a temporary name, then rename it into place.

    Raises:
        ImageError: the folder cannot be created or written.
    """
    path = Path(path)
    fmt = fmt or output_format_for(path)
    data = encode_image(array, fmt, quality)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise ImageError(f"cannot write to {path.parent} ({exc.strerror or exc})") from exc
    try:
        # No fsync: the rename alone protects against a killed run, which is
        # the case that matters for a batch, and fsync per image is slow.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ImageError(f"cannot write {path} ({exc.strerror or exc})") from exc
        raise
