"""Reading and writing photos: every odd file a user may hand us, their metadata, and atomic writes.

:func:`read_image` turns any supported file into an upright Pillow image in a
small set of modes ("L", "LA", "RGB", "RGBA", "I;16", "F"), or raises
:class:`ImageError` with a one-line reason; :func:`read_photo` gives numpy
samples at the file's own depth (16-bit color too) with its :class:`Metadata`
(EXIF, ICC profile, dpi, XMP, IPTC). :func:`split_pixels` turns samples (or a
caller's array) into what the colorizer needs: Rec. 601 gray, the alpha
channel, and the sample type to write back. :func:`save_image` writes the
metadata back where the format has room, to a temporary name then renamed,
so an interrupted run never leaves half an image under the final name;
16-bit results stay 16-bit in PNG and TIFF. Nothing here changes Pillow's
settings for the rest of the process.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import sys
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from xml.etree import ElementTree
from xml.sax.saxutils import escape as xml_escape

import numpy as np
from PIL import Image, ImageFile, ImageOps, IptcImagePlugin, PngImagePlugin, TiffImagePlugin, TiffTags, UnidentifiedImageError

from autocolor import __version__
from autocolor.errors import AutocolorError
from autocolor.settings import GRAY_WEIGHTS

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


# ---------------------------------------------------------------- opening


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read ({exc.strerror or exc})") from exc
    if path.is_dir():
        raise ImageError("is a folder, not an image")
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    return path


def _identify(path: Path) -> ImageFile.ImageFile:
    """:func:`PIL.Image.open` without its bomb check: Pillow's plugins, tried in its order.

    That check compares against ``Image.MAX_IMAGE_PIXELS``, a setting of the
    whole process that an application importing us may have chosen; we apply
    our own limit instead of changing it.
    """
    with open(path, "rb") as f:
        prefix = f.read(16)
    tried: set[str] = set()
    for register in (Image.preinit, Image.init):
        register()
        for name in [n for n in Image.ID if n not in tried]:
            tried.add(name)
            factory, accept = Image.OPEN[name]
            verdict = accept(prefix) if accept else True
            if not verdict or isinstance(verdict, str):  # a string says why it is not this format
                continue
            try:
                return factory(path, None)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all, as Image.open does
    raise UnidentifiedImageError(str(path))


def _open(path: Path, max_pixels: int) -> ImageFile.ImageFile:
    """The opened, not yet decoded file, refused from its header when over ``max_pixels``."""
    im = _identify(path)
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(
            f"{w}x{h} is {w * h / 1e6:.1f} MP, over the limit of {max_pixels / 1e6:g} MP "
            "(a decompression bomb? raise --max-pixels if the image is genuine)"
        )
    return im


class _PillowLimit:
    """Lifts Pillow's own pixel limit while an image we have already checked decodes.

    Pillow checks the size again inside TIFF and GIF decoding, against
    ``Image.MAX_IMAGE_PIXELS``; an image between that and our limit would warn
    or fail there. The decodes that need more hold the limit lifted together,
    and the last one out puts back the value it had, so nothing outlives a
    read and threads cannot leave it changed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._saved: int | None = None

    @contextmanager
    def allowing(self, pixels: int) -> Iterator[None]:
        with self._lock:
            limit = self._saved if self._holders else Image.MAX_IMAGE_PIXELS
            lift = limit is not None and pixels > limit
            if lift:
                if not self._holders:
                    self._saved = Image.MAX_IMAGE_PIXELS
                self._holders += 1
                Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, pixels)
        try:
            yield
        finally:
            if lift:
                with self._lock:
                    self._holders -= 1
                    if not self._holders:
                        Image.MAX_IMAGE_PIXELS = self._saved


_PILLOW_LIMIT = _PillowLimit()


@contextmanager
def _as_image_errors(max_pixels: int) -> Iterator[None]:
    """Pillow's many ways of saying a file is bad, as one-line :class:`ImageError`."""
    try:
        yield
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


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Photo:
    """A decoded file.

    samples: ``(H, W)`` or ``(H, W, 2|3|4)`` (alpha last), upright, at the
        file's own depth: uint8, uint16 (16-bit gray, 48-bit RGB, 64-bit RGBA,
        32-bit LA) or float32 (float TIFFs).
    metadata: what the file says about itself, to be written into the outputs.
    notes: things worth telling the user (first frame of an animation, CMYK).
    """

    samples: np.ndarray
    metadata: "Metadata"
    notes: tuple[str, ...]


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """Decode ``path`` into an upright image plus notes worth telling the user.

    The pixel count is checked from the header, before decoding. EXIF
    orientation is applied; an animated file gives its first frame; palette,
    CMYK and other modes become "L", "LA", "RGB" or "RGBA"; 16-bit gray stays
    "I;16"; float TIFFs stay "F". Pillow holds 8 bits per color channel, so
    48- and 64-bit color comes out at 8 bits here; :func:`read_photo` keeps 16.

    Raises:
        ImageError: the file is missing, empty, not an image, truncated,
            corrupt, or has more than ``max_pixels`` pixels.
    """
    path = _check_file(path)
    notes: list[str] = []
    with _as_image_errors(max_pixels):
        with _open(path, max_pixels) as im, _PILLOW_LIMIT.allowing(im.width * im.height):
            image = _load_upright(im, notes)
    return _normalize_mode(image, notes), notes


def read_photo(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode ``path`` into samples at its own depth, its metadata and notes.

    As :func:`read_image`, but 48-bit RGB, 64-bit RGBA and 32-bit LA files give
    16-bit samples, a transparent color (PNG's tRNS, GIF's) becomes an alpha
    channel, and the metadata that outputs can carry is read (see
    :class:`Metadata`). Unreadable metadata is left behind with a note; it
    never costs the pixels.

    Raises:
        ImageError: as :func:`read_image`.
    """
    path = _check_file(path)
    notes: list[str] = []
    with _as_image_errors(max_pixels):
        with _open(path, max_pixels) as im, _PILLOW_LIMIT.allowing(im.width * im.height):
            halves = _DEEP_RAWMODES.get(_rawmode(im))
            if halves is None:
                samples = pil_to_array(_normalize_mode(_load_upright(im, notes, copy=False), notes))
            else:
                high = _load_upright(im, notes, halves[0], copy=False)
                samples, transparency = np.asarray(high), high.info.get("transparency")
            metadata = read_metadata(im, notes)
            im.close()  # leaving `with` closes only the file: the decoded pixels would live on
        if halves is not None:  # the low bytes, decoded once the first decode is freed
            low = samples
            if halves[1] != halves[0]:
                with _open(path, max_pixels) as again, _PILLOW_LIMIT.allowing(again.width * again.height):
                    low = np.asarray(_load_upright(again, [], halves[1], copy=False))
                    again.close()
            samples = _with_transparent_color(_join_bytes(samples, low, halves), transparency)
    return Photo(samples, metadata, tuple(notes))


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """:func:`read_image` without the notes: an upright image ready for colorizing."""
    return read_image(path, max_pixels)[0]


def _load_upright(im: ImageFile.ImageFile, notes: list[str], rawmode: str | None = None,
                  copy: bool = True) -> Image.Image:
    """Decode the first frame (unpacking it as ``rawmode`` if given) and apply its EXIF orientation.

    Without ``copy``, an image already upright is ``im`` itself, to be read
    before ``im`` is closed (a copy of a 10,000,000-row strip costs 80 MB of
    Pillow's row pointers alone).
    """
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"animated ({frames} frames): colorizing the first frame only")
    im.seek(0)
    if rawmode is not None:
        im.tile = [_with_rawmode(tile, rawmode) for tile in im.tile]
    im.load()
    if not copy and im.getexif().get(_ORIENTATION, 1) not in (2, 3, 4, 5, 6, 7, 8):  # as exif_transpose reads it
        return im
    return ImageOps.exif_transpose(im) or im.copy()


# Pillow's unpackers for 16-bit color keep one byte of each sample. Its decoders
# still undo the PNG filters and TIFF compression on whole samples, so unpacking
# the same file twice, once keeping each byte, loses nothing. 32-bit LA is
# unpacked once as "RGBA": its four bytes as they are.
# rawmode read from the file -> (rawmode giving the high bytes, rawmode giving the low bytes)
_NATIVE = "L" if sys.byteorder == "little" else "B"
_DEEP_RAWMODES: dict[str, tuple[str, str]] = {
    f"{base};16{order}": (f"{base};16{order}", f"{base};16{'B' if order == 'L' else 'L'}")
    for base in ("RGB", "RGBA")
    for order in ("B", "L")
}
_DEEP_RAWMODES.update({f"{base};16N": _DEEP_RAWMODES[f"{base};16{_NATIVE}"] for base in ("RGB", "RGBA")})
_DEEP_RAWMODES["LA;16B"] = ("RGBA", "RGBA")


def _rawmode(im: ImageFile.ImageFile) -> str | None:
    rawmodes = {tile[3] if isinstance(tile[3], str) else tile[3][0] for tile in im.tile if tile[3]}
    return rawmodes.pop() if len(rawmodes) == 1 else None


def _with_rawmode(tile: tuple, rawmode: str) -> tuple:
    args = tile[3]
    args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


def _join_bytes(high: np.ndarray, low: np.ndarray, halves: tuple[str, str]) -> np.ndarray:
    """``(H, W, C)`` uint16 samples from the two 8-bit unpackings of one file."""
    if halves == ("RGBA", "RGBA"):  # 32-bit LA: (L high, L low, A high, A low)
        deep = high.astype(np.uint16)
        return np.stack([deep[..., 0] << 8 | deep[..., 1], deep[..., 2] << 8 | deep[..., 3]], axis=-1)
    deep = high.astype(np.uint16)  # the one 16-bit array: shifted and joined in place
    deep <<= 8
    deep |= low
    return deep


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


def _with_transparent_color(samples: np.ndarray, color) -> np.ndarray:
    """Gray or RGB samples whose file names one color transparent (PNG's tRNS,
    GIF's transparent index) gain an alpha channel: 0 there, opaque elsewhere."""
    if color is None or samples.dtype not in (np.uint8, np.uint16):
        return samples
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    key = np.atleast_1d(np.asarray(color))
    if channels not in (1, 3) or key.shape != (channels,) or not np.issubdtype(key.dtype, np.integer):
        return samples
    match = samples == key[0] if samples.ndim == 2 else (samples == key).all(axis=2)
    alpha = np.where(match, 0, np.iinfo(samples.dtype).max).astype(samples.dtype)
    return np.dstack([samples, alpha])


# ---------------------------------------------------------------- metadata

SOFTWARE = f"autocolor {__version__}"

_ORIENTATION, _SOFTWARE, _EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x0112, 0x0131, 0x8769, 0x8825, 0xA005
_X_RESOLUTION, _Y_RESOLUTION, _RESOLUTION_UNIT = 282, 283, 296
_PIXEL_X, _PIXEL_Y, _MAKER_NOTE = 0xA002, 0xA003, 0x927C
_XMP_TAG, _IPTC_TAG, _PHOTOSHOP_TAG, _ICC_TAG = 700, 33723, 34377, 34675
# Tags that describe how a file lays out its own pixels (a TIFF's first IFD is
# also its EXIF), or that are carried on their own: never copied as EXIF.
_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 269, 273, 277, 278, 279, 280, 281, 284, 290, 291,
     292, 293, 296, 297, 301, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347,
     512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531, 532, 282, 283,
     _XMP_TAG, _IPTC_TAG, _PHOTOSHOP_TAG, _ICC_TAG, 37724}  # 37724: Photoshop's layers of the old pixels
)
_JPEG_SEGMENT = 65533  # bytes a JPEG marker segment holds after its length
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XMP_MM = "http://ns.adobe.com/xap/1.0/mm/"
_ST_EVT = "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"


@dataclass(frozen=True)
class Metadata:
    """What a photo says about itself, carried from the file read into the files written.

    exif: EXIF as :meth:`PIL.Image.Exif.tobytes` writes it, without the tags
        that describe the input file's own layout; b"" if none.
    icc_profile: an RGB ICC profile; b"" if none (a gray or CMYK profile
        cannot describe the RGB output, which is then sRGB, as untagged files are taken to be).
    dpi: (x, y) dots per inch, or None.
    xmp: the XMP packet (UTF-8 XML); b"" if none.
    iptc: IPTC-IIM datasets (caption, keywords, credit, ...), as JPEG's
        Photoshop block and TIFF's tag 33723 hold them; b"" if none.

    ``Metadata()`` is an input that had none; writing ``metadata=None`` writes
    none at all, not even autocolor's own Software tag.
    """

    exif: bytes = b""
    icc_profile: bytes = b""
    dpi: tuple[float, float] | None = None
    xmp: bytes = b""
    iptc: bytes = b""


def read_metadata(im: Image.Image, notes: list[str] | None = None) -> Metadata:
    """The :class:`Metadata` of an opened (and loaded) Pillow image.

    A kind that cannot be read is left out, with a note in ``notes``.
    """
    found: dict[str, object] = {}
    for kind, reader in (("exif", _read_exif), ("icc_profile", _read_icc), ("dpi", _read_dpi),
                         ("xmp", _read_xmp), ("iptc", _read_iptc)):
        try:
            value = reader(im)
        except Exception:  # noqa: BLE001 - corrupt metadata of any kind costs only itself (Warning under -W error too)
            value = None
            if notes is not None:
                notes.append(f"unreadable {kind.upper().replace('_PROFILE', ' profile')}: not copied")
        if value:
            found[kind] = value
    return Metadata(**found)


def _read_exif(im: Image.Image) -> bytes:
    exif = im.getexif()
    for tag in [t for t in exif if t in _LAYOUT_TAGS]:
        del exif[tag]
    for ifd in (_EXIF_IFD, _GPS_IFD):
        if ifd in exif and not exif.get_ifd(ifd):
            del exif[ifd]  # a pointer to nothing readable
    return exif.tobytes() if len(exif) else b""


def _read_icc(im: Image.Image) -> bytes:
    profile = im.info.get("icc_profile") or b""
    return profile if isinstance(profile, bytes) and profile[16:20] == b"RGB " else b""


def _read_dpi(im: Image.Image) -> tuple[float, float] | None:
    dpi = im.info.get("dpi")
    if isinstance(im, TiffImagePlugin.TiffImageFile) and _X_RESOLUTION not in im.tag_v2:
        return None  # Pillow says (1, 1) for a TIFF that gives none
    if not isinstance(dpi, tuple) or len(dpi) != 2:
        return None
    x, y = (round(float(v), 2) for v in dpi)  # PNG stores dots per metre: 600 dpi reads back as 599.9988
    return (x, y) if all(math.isfinite(v) and 0 < v < 1e6 for v in (x, y)) else None


def _read_xmp(im: Image.Image) -> bytes:
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or b""
    if isinstance(im, TiffImagePlugin.TiffImageFile) and not xmp:
        xmp = im.tag_v2.get(_XMP_TAG, b"")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    return xmp.rstrip(b"\x00 ") if isinstance(xmp, bytes) else b""


def _read_iptc(im: Image.Image) -> bytes:
    raw = im.info.get("Raw profile type iptc")  # PNG, as ImageMagick and ExifTool write it
    if isinstance(raw, str):
        data = _from_raw_profile(raw)
        return data if data[:1] == b"\x1c" else b""
    records = IptcImagePlugin.getiptcinfo(im) or {}
    out = bytearray()
    for (record, dataset), values in records.items():
        for value in values if isinstance(values, list) else [values]:
            if len(value) < 0x8000:  # longer ones need IIM's extended length, and no caption is that long
                out += struct.pack(">BBBH", 0x1C, record, dataset, len(value)) + value
    return bytes(out)


def _raw_profile(name: str, data: bytes) -> str:
    """ImageMagick's text form of a binary profile, for PNG text chunks."""
    digits = data.hex()
    return f"\n{name}\n{len(data):8d}\n" + "\n".join(digits[i:i + 72] for i in range(0, len(digits), 72)) + "\n"


def _from_raw_profile(text: str) -> bytes:
    parts = text.split(None, 2)
    return bytes.fromhex("".join(parts[2].split()))[: int(parts[1])] if len(parts) == 3 else b""


def _output_exif(metadata: Metadata, size: tuple[int, int]) -> Image.Exif:
    """The EXIF to write: the input's, upright (orientation 1, as the pixels
    now are), with this image's size and dpi and autocolor as its Software."""
    exif = Image.Exif()
    if metadata.exif:
        exif.load(metadata.exif)
    exif[_ORIENTATION] = 1
    exif[_SOFTWARE] = SOFTWARE
    if metadata.dpi:
        exif[_X_RESOLUTION], exif[_Y_RESOLUTION], exif[_RESOLUTION_UNIT] = *metadata.dpi, 2
    if _EXIF_IFD in exif:
        ifd = exif.get_ifd(_EXIF_IFD)
        if _PIXEL_X in ifd or _PIXEL_Y in ifd:
            ifd[_PIXEL_X], ifd[_PIXEL_Y] = size
    return exif


def _exif_bytes(metadata: Metadata, size: tuple[int, int], limit: int | None = None) -> bytes:
    exif = _output_exif(metadata, size)
    data = exif.tobytes()
    if limit is not None and len(data) > limit and _EXIF_IFD in exif:
        exif.get_ifd(_EXIF_IFD).pop(_MAKER_NOTE, None)  # the usual bulk, and private to the camera
        data = exif.tobytes()
    return data if limit is None or len(data) <= limit else b""


def _xmp_with_history(xmp: bytes, parameters: str) -> bytes:
    """``xmp`` upright (tiff:Orientation 1) with an xmpMM:History event for
    this write; unchanged where it is not XML we can edit safely."""
    try:
        text = xmp.decode("utf-8")
    except UnicodeDecodeError:
        return xmp
    if len(text) > 4_000_000 or "<!DOCTYPE" in text or "<!ENTITY" in text or f'xmlns:rdf="{_RDF}"' not in text:
        return xmp
    upright = re.sub(r'(tiff:Orientation(?:="|>))\s*\d+', r"\g<1>1", text)
    when = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    event = (f'<rdf:li rdf:parseType="Resource" xmlns:stEvt="{_ST_EVT}"><stEvt:action>converted</stEvt:action>'
             f"<stEvt:parameters>{xml_escape(parameters)}</stEvt:parameters>"
             f"<stEvt:softwareAgent>{xml_escape(SOFTWARE)}</stEvt:softwareAgent>"
             f"<stEvt:when>{when}</stEvt:when></rdf:li>")
    history = re.search(r"<xmpMM:History>\s*<rdf:Seq>", upright)
    end = upright.rfind("</rdf:RDF>")
    if history:
        edited = upright[: history.end()] + event + upright[history.end():]
    elif "xmpMM:History" not in upright and end >= 0:
        edited = (upright[:end] + f'<rdf:Description rdf:about="" xmlns:xmpMM="{_XMP_MM}"><xmpMM:History><rdf:Seq>'
                  + event + "</rdf:Seq></xmpMM:History></rdf:Description>" + upright[end:])
    else:
        edited = upright
    for candidate in (edited, upright):
        try:
            ElementTree.fromstring(candidate)
        except ElementTree.ParseError:
            continue
        return candidate.encode("utf-8")
    return xmp


def _tiff_tags(metadata: Metadata, size: tuple[int, int], history: str) -> TiffImagePlugin.ImageFileDirectory_v2:
    """The metadata of a TIFF output as tags (EXIF's own among them: a TIFF's first IFD is its EXIF)."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    exif = _output_exif(metadata, size)
    for tag in exif:
        if tag in (_EXIF_IFD, _GPS_IFD):
            ifd[tag] = {k: v for k, v in exif.get_ifd(tag).items() if k != _INTEROP_IFD}  # interop is JPEG's
        else:
            ifd[tag] = exif[tag]
    if metadata.icc_profile:
        ifd[_ICC_TAG] = metadata.icc_profile
    if metadata.xmp:
        ifd[_XMP_TAG] = _xmp_with_history(metadata.xmp, history)
    if metadata.iptc:
        ifd.tagtype[_IPTC_TAG] = TiffTags.UNDEFINED
        ifd[_IPTC_TAG] = metadata.iptc
    return ifd


def _save_options(fmt: str, metadata: Metadata | None, size: tuple[int, int], history: str) -> dict:
    """Keyword arguments for Pillow's ``save`` that write ``metadata`` in ``fmt``."""
    if metadata is None:
        return {}
    xmp = _xmp_with_history(metadata.xmp, history) if metadata.xmp else b""
    if fmt == "jpg":
        # Pillow writes EXIF and ICC; XMP and IPTC go in as ready-made marker segments.
        extra = b""
        if xmp and len(xmp) + 29 <= _JPEG_SEGMENT:
            extra += b"\xff\xe1" + struct.pack(">H", len(xmp) + 31) + b"http://ns.adobe.com/xap/1.0/\x00" + xmp
        if metadata.iptc:
            block = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(metadata.iptc)) + metadata.iptc
            block += b"\x00" * (len(block) % 2)
            if len(block) + 14 <= _JPEG_SEGMENT:
                extra += b"\xff\xed" + struct.pack(">H", len(block) + 16) + b"Photoshop 3.0\x00" + block
        options = {"exif": _exif_bytes(metadata, size, limit=_JPEG_SEGMENT), "extra": extra}
    elif fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", SOFTWARE)
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
        if metadata.iptc:
            info.add_text("Raw profile type iptc", _raw_profile("iptc", metadata.iptc), zip=True)
        options = {"exif": _exif_bytes(metadata, size), "pnginfo": info}
    elif fmt == "webp":
        options = {"exif": _exif_bytes(metadata, size), "xmp": xmp}  # WebP has no place for IPTC or dpi but EXIF's
    elif fmt == "tiff":
        return {"tiffinfo": _tiff_tags(metadata, size, history)}  # its ICC profile and dpi are tags too
    else:  # bmp
        return {"dpi": metadata.dpi} if metadata.dpi else {}
    if metadata.icc_profile:
        options["icc_profile"] = metadata.icc_profile
    if metadata.dpi:
        options["dpi"] = metadata.dpi
    return options


# ---------------------------------------------------------------- pixels


@dataclass
class Pixels:
    """An image taken apart for colorizing.

    gray: ``(H, W)`` uint16, C-ordered, Rec. 601 luma of the input times
        65535 (16 bits hold any 8- or 16-bit input exactly and index lookup
        tables directly).
    alpha: ``(H, W)`` in ``dtype``, or None.
    dtype: the sample type results are computed and written in (uint8, uint16 or float32).
    color: the input had color (its gray was computed here).
    rgb: the input's own RGB ``(H, W, 3)`` in ``dtype`` when it had color.
    given: the caller's own sample type (float64, bool, big-endian uint16, ...),
        which :func:`as_given_dtype` turns results back into.
    """

    gray: np.ndarray
    alpha: np.ndarray | None
    dtype: np.dtype
    color: bool
    rgb: np.ndarray | None = field(default=None, repr=False)
    given: np.dtype | None = None


def pil_to_array(image: Image.Image) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` samples of a normalized image, uint8/uint16/float32.

    A transparent color (PNG's tRNS, GIF's transparent index) becomes an alpha channel.
    """
    image = _normalize_mode(image, [])
    array = np.asarray(image)
    if image.mode == "I;16":
        array = array.astype(np.uint16, copy=False)
    return _with_transparent_color(array, image.info.get("transparency"))


def _scale(dtype: np.dtype) -> float:
    return {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(dtype), 1.0)


def split_pixels(array: np.ndarray, max_pixels: int | None = None) -> Pixels:
    """Split ``(H, W)``, ``(H, W, 1|2|3|4)`` uint8, uint16 (either byte order),
    float ([0, 1]) or bool samples, of any memory layout.

    Two and four channels carry alpha last. Color inputs are turned into gray
    by the weights of :func:`autocolor.color.rgb_to_gray`, the one definition of
    gray, in numpy (torch-free; the same float32 values, tested).
    Floats above 1 (0..255 values, most likely) are clipped to white, with a warning.

    Raises:
        ImageError: another shape or sample type, no pixels, or more than
            ``max_pixels`` pixels (checked before anything is copied).
    """
    array = np.asarray(array)
    given = array.dtype
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"expected an (H, W) or (H, W, 1|2|3|4) array, got shape {array.shape}")
    h, w = array.shape[:2]
    if h < 1 or w < 1:
        raise ImageError(f"empty image of shape {array.shape}")
    if max_pixels is not None and h * w > max_pixels:
        raise ImageError(f"{w}x{h} is {h * w / 1e6:.1f} MP, over the limit of {max_pixels / 1e6:g} MP "
                         "(pass a larger max_pixels if the image is genuine)")
    if given.kind == "u" and given.itemsize in (1, 2):
        array = array.astype(given.newbyteorder("="), copy=False)  # big-endian samples in native order
        dtype = array.dtype
    elif given.kind == "f" or given == bool:
        dtype = np.dtype(np.float32)
        array = array.astype(np.float32, copy=False)
        peak = float(np.fmax.reduce(array, axis=None))  # NaN-blind, without a copy
        if peak == np.inf:  # infinities are clipped like NaN; only finite values say what scale was meant
            peak = float(np.fmax.reduce(array[np.isfinite(array)], initial=0.0))
        if peak > 1.0:
            warnings.warn(f"float samples go up to {peak:g}, but floats are read in [0, 1]: values above 1 "
                          "come out white (divide 0..255 values by 255 first)", stacklevel=3)
    else:
        raise ImageError(f"unsupported sample type {given} (use uint8, uint16, bool or float in [0, 1])")
    channels = array.shape[2]
    alpha = np.ascontiguousarray(array[:, :, -1]) if channels in (2, 4) else None
    color_part = array[:, :, :3] if channels >= 3 else array[:, :, :1]
    if color_part.shape[2] == 1:
        return Pixels(np.ascontiguousarray(to_uint16(color_part[:, :, 0])), alpha, dtype, False, given=given)
    scale = 1.0 / _scale(dtype)
    weights = [np.float32(weight) for weight in GRAY_WEIGHTS]
    gray = np.empty((h, w), np.uint16)
    spreads = []
    for rows, cols in _tiles(h, w, _SPLIT_TILE):  # float copies of a tile at a time, not of the image
        rgb = color_part[rows, cols].astype(np.float32) * np.float32(scale)  # (h, w, 3)
        spreads.append(float((rgb.max(axis=2) - rgb.min(axis=2)).max()))
        gray[rows, cols] = to_uint16(rgb[..., 0] * weights[0] + rgb[..., 1] * weights[1] + rgb[..., 2] * weights[2])
    spread = np.max(spreads)  # NaN if any sample is: color then, as a whole-image maximum says
    if spread <= _COLOR_TOLERANCE:
        return Pixels(gray, alpha, dtype, False, given=given)
    return Pixels(gray, alpha, dtype, True, rgb=np.ascontiguousarray(color_part), given=given)


_SPLIT_TILE = 1 << 18  # pixels turned to gray at a time


def _tiles(h: int, w: int, pixels: int) -> list[tuple[slice, slice]]:
    """Bands of whole rows of about ``pixels``, or pieces of one row where a row is longer."""
    step = max(1, pixels // w)
    width = w if step > 1 or w <= pixels else pixels
    return [(slice(top, min(h, top + step)), slice(left, min(w, left + width)))
            for top in range(0, h, step) for left in range(0, w, width)]


def as_given_dtype(samples: np.ndarray, pixels: Pixels) -> np.ndarray:
    """Results ``(H, W, C)`` of ``pixels`` in the sample type the caller gave
    (bool is True from 0.5 up); samples already in it are returned as they are."""
    given = pixels.given
    if given is None or given == samples.dtype:
        return samples
    if given == bool:
        return samples >= 0.5
    return samples.astype(given)


def join_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``(H, W, 3)`` plus optional ``(H, W)`` alpha of the same dtype -> ``(H, W, 3|4)``."""
    if alpha is None:
        return rgb
    return np.concatenate([rgb, alpha[:, :, None].astype(rgb.dtype, copy=False)], axis=2)


_CONVERT_CHUNK = 1 << 20  # samples converted at a time: the temporaries stay this small


def _chunked(array: np.ndarray, dtype, convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``convert(array)`` as a new ``dtype`` array, computed a chunk of samples at a time."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype)
    for start in range(0, flat.size, _CONVERT_CHUNK):
        out[start:start + _CONVERT_CHUNK] = convert(flat[start:start + _CONVERT_CHUNK])
    return out.reshape(array.shape)


def _float_to(peak: float) -> Callable[[np.ndarray], np.ndarray]:
    """Floats in [0, 1] (NaN as 0: float TIFFs may hold it) to levels up to ``peak``, rounded."""
    return lambda x: np.clip(np.nan_to_num(x), 0.0, 1.0) * peak + 0.5


def to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return _chunked(array, np.uint8, lambda x: (x.astype(np.uint32) * 255 + 32767) // 65535)
    return _chunked(array, np.uint8, _float_to(255.0))


def to_uint16(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint16:
        return array
    if array.dtype == np.uint8:
        return _chunked(array, np.uint16, lambda x: x.astype(np.uint16) * 257)
    return _chunked(array, np.uint16, _float_to(65535.0))


def array_to_pil(array: np.ndarray) -> Image.Image:
    """8-bit RGB or RGBA image of ``(H, W, 3|4)`` samples (Pillow has no 16-bit color)."""
    return Image.fromarray(to_uint8(array), "RGBA" if array.shape[2] == 4 else "RGB")


# ---------------------------------------------------------------- writing


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_PIECE_BYTES = 1 << 22  # raw bytes compressed at a time by the writers below


def _pieces(array: np.ndarray, dtype: str, filter_byte: bytes | None = None) -> Iterator[bytes | memoryview]:
    """The samples of ``(H, W, C)`` ``array`` as 8- or 16-bit ``dtype`` bytes
    (converted by :func:`to_uint8` or :func:`to_uint16`), row after row, in
    pieces of about ``_PIECE_BYTES`` (a PNG's filter byte before each row):
    nothing as large as the image is made, and a row of 10,000,000 pixels is
    cut into pieces."""
    h, w, c = array.shape
    size = np.dtype(dtype).itemsize
    levels = to_uint16 if size == 2 else to_uint8
    step = _PIECE_BYTES // max(1, w * c * size)
    if step >= 2:  # several rows at a time
        for top in range(0, h, step):
            block = np.ascontiguousarray(levels(array[top:top + step]), dtype=dtype)
            block = block.view(np.uint8).reshape(-1, w * c * size)
            if filter_byte is not None:
                block = np.concatenate([np.full((len(block), 1), filter_byte[0], np.uint8), block], axis=1)
            yield memoryview(block).cast("B")
        return
    width = max(1, _PIECE_BYTES // size)
    for top in range(h):
        row = array[top].reshape(-1)
        if filter_byte is not None:
            yield filter_byte
        for left in range(0, len(row), width):
            yield memoryview(np.ascontiguousarray(levels(row[left:left + width]), dtype=dtype)).cast("B")


def _deflate(pieces: Iterator[bytes | memoryview], level: int = 6) -> bytes:
    packer = zlib.compressobj(level)
    out = [packer.compress(piece) for piece in pieces]
    out.append(packer.flush())
    return b"".join(out)


def _png_raw(array: np.ndarray, bits: int, options: dict) -> bytes:
    """An 8- or 16-bit RGB(A) PNG (no filtering), compressed piece by piece: for
    16-bit color, which Pillow cannot write, and for images as thin as a strip,
    whose very long rows (or very many) Pillow's writer holds several copies of.

    The metadata chunks are Pillow's own, taken from a 1 x 1 PNG it writes with ``options``.
    """
    h, w, c = array.shape
    header = struct.pack(">IIBBBBB", w, h, bits, 6 if c == 4 else 2, 0, 0, 0)
    ancillary = b""
    if options:
        buffer = io.BytesIO()
        Image.new("RGB", (1, 1)).save(buffer, format="PNG", **options)
        data, at = buffer.getvalue(), 8
        while at < len(data):
            length, kind = struct.unpack(">I4s", data[at:at + 8])
            if kind not in (b"IHDR", b"IDAT", b"IEND"):
                ancillary += data[at:at + 12 + length]
            at += 12 + length
    idat = _deflate(_pieces(array, ">u2" if bits == 16 else "u1", filter_byte=b"\x00"))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + ancillary
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


_STRIP_SIDE, _STRIP_PIXELS = 16, 1 << 20


def _is_strip(array: np.ndarray) -> bool:
    """Thinner than any photo (a side under 16 pixels) and over a megapixel:
    images for which Pillow's writers cost several times the pixels (row
    buffers as long as a row, a pointer per row)."""
    h, w = array.shape[:2]
    return min(h, w) < _STRIP_SIDE and h * w >= _STRIP_PIXELS


def _tiff(array: np.ndarray, bits: int, tags: TiffImagePlugin.ImageFileDirectory_v2 | None) -> bytes:
    """An RGB(A) baseline TIFF in one strip, with the metadata ``tags``: 8 bits
    deflated, 16 bits uncompressed.

    Pillow cannot write 16-bit color, and its libtiff writer (the one that
    compresses) cannot write the EXIF sub-IFD, so the tags go through its
    IFD writer here.
    """
    h, w, c = array.shape
    if bits == 8:
        data = [_deflate(_pieces(array, "u1"))]
        length = len(data[0])
    else:  # joined with the header once, from pieces: no whole-image copy beside the result
        data, length = _pieces(array, "<u2"), h * w * c * 2
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    for tag in tags or ():
        ifd.tagtype[tag] = tags.tagtype[tag]
        ifd[tag] = tags[tag]
    for tag in (256, 257, 273, 278, 279):  # sizes and offsets as LONG, so no width overflows a SHORT
        ifd.tagtype[tag] = TiffTags.LONG
    ifd[256], ifd[257], ifd[258], ifd[259], ifd[262] = w, h, (bits,) * c, 8 if bits == 8 else 1, 2
    ifd[273] = 0  # the IFD writer adds where its own data ends: the pixels follow it
    ifd[277], ifd[278], ifd[279], ifd[284] = c, h, length, 1
    if c == 4:
        ifd[338] = 2  # extra sample: unassociated alpha
    return b"".join([b"II*\x00" + struct.pack("<I", 8) + ifd.tobytes(8), *data])


def encode_image(array: np.ndarray, fmt: str, quality: int = 92, metadata: Metadata | None = None,
                 history: str = "colorized") -> bytes:
    """Encode ``(H, W, 3|4)`` samples in format ``fmt`` (a key of OUTPUT_FORMATS).

    uint16 stays 16-bit in PNG and TIFF; other formats get 8 bits. JPEG has
    no alpha, so alpha is dropped there. ``metadata`` (see :class:`Metadata`)
    is written where ``fmt`` has room for it, with autocolor as the Software
    and, in XMP, a history event whose parameters are ``history``; None
    writes no metadata at all.
    """
    if fmt not in OUTPUT_FORMATS:
        raise ImageError(f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    try:
        return _encode(array, fmt, quality, metadata, history)
    except (TypeError, ValueError, KeyError, struct.error, OverflowError) as exc:
        if metadata is None or isinstance(exc, ImageError):
            raise
        _encode(array, fmt, quality, None, history)  # raises by itself if the pixels are at fault
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"cannot write its metadata ({reason}); --strip-metadata leaves it out") from exc


def _encode(array: np.ndarray, fmt: str, quality: int, metadata: Metadata | None, history: str) -> bytes:
    if fmt == "jpg" and array.shape[2] == 4:
        array = array[:, :, :3]
    options = _save_options(fmt, metadata, (array.shape[1], array.shape[0]), history)
    deep = fmt in SIXTEEN_BIT_FORMATS and array.dtype != np.uint8
    if fmt == "tiff":
        return _tiff(array, 16 if deep else 8, options.get("tiffinfo"))
    if deep or (fmt == "png" and _is_strip(array)):
        return _png_raw(array, 16 if deep else 8, options)
    image = array_to_pil(array)
    if fmt == "jpg":
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "webp":
        options.update(quality=quality, method=4)
    elif fmt == "png":
        options.update(compress_level=6)
    buffer = io.BytesIO()
    image.save(buffer, format=OUTPUT_FORMATS[fmt][1], **options)
    return buffer.getvalue()


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """The package's one atomic writer (:func:`autocolor.atomic.atomic_open`), its errors as ImageError."""
    from autocolor.atomic import atomic_open

    try:
        with atomic_open(path) as f:
            write(f)
    except OSError as exc:
        raise ImageError(f"cannot write {path} ({exc.strerror or exc})") from exc


def save_image(array: np.ndarray, path: str | os.PathLike, fmt: str | None = None, quality: int = 92,
               metadata: Metadata | None = None, history: str = "colorized") -> None:
    """Write ``array`` (with ``metadata``, see :func:`encode_image`) to ``path``
    under a temporary name, then rename it into place.

    Raises:
        ImageError: the folder cannot be created or written.
    """
    path = Path(path)
    data = encode_image(array, fmt or output_format_for(path), quality, metadata, history)
    _write_atomically(path, lambda f: f.write(data))


def kept_image_bytes(source: str | os.PathLike, array: np.ndarray, fmt: str, quality: int = 92,
                     metadata: Metadata | None = None) -> bytes:
    """The bytes to write for a color input that is kept as it is (``--keep-color``).

    When ``fmt`` is the source file's own format and its metadata is wanted,
    they are its own bytes: nothing is lost to re-encoding. Otherwise its
    samples ``array`` encoded in ``fmt``. The source is only read.
    """
    source = Path(source)
    if metadata is not None:
        try:
            with _identify(source) as im:
                own = im.format == OUTPUT_FORMATS[fmt][1]
        except (OSError, SyntaxError, ValueError):
            own = False
        if own:
            try:
                return source.read_bytes()
            except OSError as exc:
                raise ImageError(f"{source}: cannot read ({exc.strerror or exc})") from exc
    return encode_image(array, fmt, quality, metadata, history="re-encoded, colors kept")


def keep_image(source: str | os.PathLike, array: np.ndarray, path: str | os.PathLike, fmt: str,
               quality: int = 92, metadata: Metadata | None = None) -> None:
    """Write :func:`kept_image_bytes` to ``path``, atomically."""
    data = kept_image_bytes(source, array, fmt, quality, metadata)
    _write_atomically(Path(path), lambda f: f.write(data))