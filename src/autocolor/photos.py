"""Build a corpus of real photographs from Debian packages.

The curated list of photos lives in ``photo_sources.json`` next to this module:
each entry names a Debian package, a file inside it, its license, a category tag
and the split (``train``/``val``/``test``) it belongs to.  :func:`build_photo_corpus`
downloads the needed ``.deb`` files with ``apt-get download`` (it never installs
anything), pulls the listed files out of them, converts each to an RGB JPEG whose
longest side is at most ``max_side`` and writes::

    out_dir/train/<category>_<name>.jpg
    out_dir/val/...
    out_dir/test/...
    out_dir/manifest.csv

Photo cut-outs that ship on a transparent background (Tux Paint stamps, Scratch
costumes) are cropped to their opaque bounding box plus a small margin and
composited onto a plain neutral gray, so the background carries no color that
the colorizer would have to guess.

Some packages ship their images inside an archive file rather than as plain
files: GCompris (``gcompris-qt-data``) bundles each activity's images in a Qt
resource file (``.rcc``). Such an entry names the archive as ``path`` and the
image inside it as ``member``; :func:`read_rcc` reads the archive (no Qt needed).
Enlightenment's backgrounds are Edje themes (``.edj``, Eet format) that store
their photo as JPEG entries (``edje/images/0`` is the largest); :func:`read_eet`
reads them (no EFL needed).

Each entry also carries a coarse ``scene_category`` (one of
:data:`SCENE_CATEGORIES`, what evaluation reports per category) and a
``people`` flag; both go to ``manifest.csv`` and :func:`photo_categories`
reads the categories back. The fine ``category`` stays in the file names so
that existing builds remain valid.

The build is idempotent: files that already exist are not rebuilt, and a
package whose photos are all present is not even downloaded again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from autocolor.atomic import atomic_open, atomic_write_text
from autocolor.errors import AutocolorError

__all__ = [
    "BACKGROUND",
    "CUTOUT_MARGIN",
    "DEFAULT_CACHE_DIR",
    "MANIFEST_COLUMNS",
    "SCENE_CATEGORIES",
    "SPLITS",
    "MissingPhotoWarning",
    "PhotoCorpusError",
    "PhotoSource",
    "build_photo_corpus",
    "deb_version",
    "default_sources_path",
    "download_deb",
    "extract_deb",
    "load_sources",
    "output_name",
    "photo_categories",
    "prepare_photo",
    "read_eet",
    "read_rcc",
    "save_jpeg",
    "write_manifest",
]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Valid split names, in the order they are written to the manifest."""

SCENE_CATEGORIES: tuple[str, ...] = (
    "people",
    "animals",
    "sky/landscape",
    "buildings/streets",
    "food",
    "objects",
    "cutout",
)
"""Coarse categories that evaluation reports; ``cutout`` is any photo on a
transparent or flat background, whatever it shows."""

_SCENE_OF_FINE: dict[str, str] = {
    "person": "people",
    "animal": "animals",
    "landscape": "sky/landscape",
    "sky": "sky/landscape",
    "water": "sky/landscape",
    "plant": "sky/landscape",
    "building": "buildings/streets",
    "street": "buildings/streets",
    "food": "food",
    "vehicle": "objects",
    "indoor": "objects",
    "sport": "objects",
    "object": "objects",
}
"""Default ``scene_category`` of a fine ``category`` when an entry gives none."""

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "autocolor" / "debs"
"""Where downloaded ``.deb`` files are kept between builds."""

BACKGROUND: tuple[int, int, int] = (160, 160, 160)
"""Neutral gray that transparent pixels are composited onto (a = b = 0 in Lab)."""

MANIFEST_COLUMNS: tuple[str, ...] = (
    "split",
    "file",
    "package",
    "package_version",
    "original_path",
    "license",
    "category",
    "width",
    "height",
    "copyright",
    "scene_category",
    "people",
)
"""Columns of ``manifest.csv``; ``file`` is relative to the output directory;
``people`` is ``1`` when a person is visible, else ``0``."""

ALPHA_MODES = ("bbox", "opaque_rows", "flatten")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
_JPEG_QUALITY = 95
CUTOUT_MARGIN = 0.06
"""Margin around a cut-out's opaque bounding box, as a fraction of its longest side."""


class PhotoCorpusError(AutocolorError, RuntimeError):
    """The photo corpus could not be built (missing tool, package or file, bad list)."""


class MissingPhotoWarning(UserWarning):
    """A listed photo was absent from its package or unreadable; it was skipped."""


@dataclass(frozen=True)
class PhotoSource:
    """One curated photo: where it comes from and where it goes.

    Attributes:
        package: Debian binary package that ships the file.
        path: path of the file inside the package, without a leading slash.
        category: short tag such as ``animal``, ``street`` or ``landscape``.
        split: ``train``, ``val`` or ``test``.
        name: short stable name; the output file is ``<category>_<name>.jpg``.
        license: SPDX-like license id taken from the package's copyright file.
        copyright: copyright holder(s) as given in the package's copyright file.
        group: photos sharing a group (variants of one photo, one scene or one
            person) always share a split.
        alpha: how transparency is handled, one of ``bbox`` (crop to the opaque
            bounding box, then composite; the default), ``opaque_rows`` (crop
            away the partly transparent rows at the top, e.g. a panorama whose
            sky is transparent) or ``flatten`` (composite the whole canvas).
        member: for a ``path`` that is an archive (a Qt ``.rcc`` resource
            file or an Eet/Edje ``.edj`` file), the image's path (key) inside
            it; empty for a plain file.
        scene_category: one of :data:`SCENE_CATEGORIES`.
        people: a person (a face, or at least a body) is visible.
        rotate: clockwise rotation in degrees (0, 90, 180, 270) applied after
            EXIF orientation, for photos whose rotation lives in an
            application's database instead (KPhotoAlbum's demo).
    """

    package: str
    path: str
    category: str
    split: str
    name: str
    license: str
    copyright: str = ""
    group: str = ""
    alpha: str = "bbox"
    member: str = ""
    scene_category: str = ""
    people: bool = False
    rotate: int = 0

    @property
    def original_path(self) -> str:
        """Where the photo lives in its package: ``/path`` or ``/archive:/member``."""
        return f"/{self.path}:/{self.member}" if self.member else f"/{self.path}"

    @property
    def filename(self) -> str:
        """Output file name, ``<category>_<name>.jpg``."""
        return output_name(self.category, self.name)

    @property
    def relpath(self) -> str:
        """Output path relative to the corpus directory, ``<split>/<filename>``."""
        return f"{self.split}/{self.filename}"


def output_name(category: str, name: str) -> str:
    """Return the corpus file name for a photo: ``<category>_<name>.jpg``."""
    return f"{category}_{name}.jpg"


def default_sources_path() -> Path:
    """Path of the curated ``photo_sources.json`` shipped with the package."""
    return Path(__file__).with_name("photo_sources.json")


# --------------------------------------------------------------------------- sources


def load_sources(path: Path | None = None) -> list[PhotoSource]:
    """Read and validate a photo list (``photo_sources.json`` by default).

    The file holds either a JSON list of entries or an object with a
    ``"photos"`` list. Each entry needs ``package``, ``path``, ``category``,
    ``split`` and ``license``; ``name`` defaults to a slug of the file's stem
    (the member's stem for an archive member) and ``group`` to
    ``package:path`` (``package:path:member``). ``member`` (optional) is the
    path of the image inside the archive ``path`` (a Qt ``.rcc`` or Eet
    ``.edj`` file). ``scene_category`` defaults to the coarse category of the
    fine ``category`` (``person`` -> ``people``, ...); ``people`` (a JSON
    boolean) defaults to false.

    Raises:
        PhotoCorpusError: the file is missing or malformed, an entry lacks a
            field or has an invalid split, category, scene category, people
            flag, name or alpha mode, a
            package path is listed twice, or two entries would write the same
            output file.
    """
    path = Path(path) if path is not None else default_sources_path()
    items = _read_entries(path)
    sources: list[PhotoSource] = []
    seen_paths: set[tuple[str, str, str]] = set()
    seen_out: set[str] = set()
    for i, item in enumerate(items):
        where = f"{path.name} entry {i}"
        src = _source_of_entry(item, where)
        _check_source(src, where)
        key = (src.package, src.path, src.member)
        if key in seen_paths:
            raise PhotoCorpusError(f"{where}: {src.package}:{src.original_path} is listed twice")
        seen_paths.add(key)
        if src.relpath in seen_out:
            raise PhotoCorpusError(f"{where}: output file {src.relpath} is used twice")
        seen_out.add(src.relpath)
        sources.append(src)
    return sources


def _read_entries(path: Path) -> list:
    """The list of entries of a photo list file (a JSON list, or an object's ``"photos"``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PhotoCorpusError(f"cannot read photo list {path}: {exc}") from exc
    items = data.get("photos") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise PhotoCorpusError(f"photo list {path} has no 'photos' list")
    return items


def _source_of_entry(item: object, where: str) -> PhotoSource:
    """One entry as a :class:`PhotoSource`, its defaults filled in (see :func:`load_sources`)."""
    if not isinstance(item, dict):
        raise PhotoCorpusError(f"{where}: not an object")
    missing = [k for k in ("package", "path", "category", "split", "license") if not item.get(k)]
    if missing:
        raise PhotoCorpusError(f"{where}: missing field(s) {', '.join(missing)}")
    member = str(item["path"]).lstrip("/")
    inner = str(item.get("member") or "").lstrip(":/")
    name = item.get("name") or _slug(Path(inner or member).stem)
    default_group = f"{item['package']}:{member}" + (f":{inner}" if inner else "")
    category = str(item["category"])
    scene_category = str(item.get("scene_category") or _SCENE_OF_FINE.get(category, ""))
    if scene_category not in SCENE_CATEGORIES:
        raise PhotoCorpusError(
            f"{where}: scene_category {scene_category or '(none)'!r} is not one of {', '.join(SCENE_CATEGORIES)}"
            f" (set it for category {category!r})"
        )
    people = item.get("people", False)
    if not isinstance(people, bool):
        raise PhotoCorpusError(f"{where}: people must be true or false, not {people!r}")
    rotate = item.get("rotate", 0)
    if rotate not in (0, 90, 180, 270):
        raise PhotoCorpusError(f"{where}: rotate must be 0, 90, 180 or 270, not {rotate!r}")
    return PhotoSource(
        package=str(item["package"]),
        path=member,
        category=category,
        split=str(item["split"]),
        name=str(name),
        license=str(item["license"]),
        copyright=str(item.get("copyright", "")),
        group=str(item.get("group") or default_group),
        alpha=str(item.get("alpha") or "bbox"),
        member=inner,
        scene_category=scene_category,
        people=people,
        rotate=rotate,
    )


def _check_source(src: PhotoSource, where: str) -> None:
    """Refuse a source whose split, category, name, alpha mode or path is invalid."""
    if src.split not in SPLITS:
        raise PhotoCorpusError(f"{where}: split {src.split!r} is not one of {', '.join(SPLITS)}")
    for field, value in (("category", src.category), ("name", src.name)):
        if not _SLUG.fullmatch(value):
            raise PhotoCorpusError(f"{where}: {field} {value!r} must match [a-z0-9][a-z0-9-]*")
    if src.alpha not in ALPHA_MODES:
        raise PhotoCorpusError(f"{where}: alpha {src.alpha!r} is not one of {', '.join(ALPHA_MODES)}")
    if ".." in src.path.split("/") or ".." in src.member.split("/"):
        raise PhotoCorpusError(f"{where}: path {src.path!r} / member {src.member!r} must not contain '..'")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "photo"


# --------------------------------------------------------------------------- debs


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a command; a missing executable becomes a one-line PhotoCorpusError."""
    try:
        return subprocess.run(list(cmd), cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise PhotoCorpusError(f"{cmd[0]} not found: it is needed to {what} (run on Debian/Ubuntu)") from exc


def _last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or ["no output"])[-1]


def _cached_deb(package: str, cache_dir: Path) -> Path | None:
    found = [p for p in cache_dir.glob(f"{package}_*.deb") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def download_deb(package: str, cache_dir: Path) -> Path:
    """Return the ``.deb`` of ``package`` in ``cache_dir``, downloading it if needed.

    Uses ``apt-get download`` (no installation, no root needed beyond what apt
    requires). A ``.deb`` already in the cache is reused as is.

    Raises:
        PhotoCorpusError: apt-get is missing or the package cannot be downloaded.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = _cached_deb(package, cache_dir)
    if cached is not None:
        return cached
    if shutil.which("apt-get") is None:
        raise PhotoCorpusError(
            f"apt-get not found: it is needed to download Debian package {package!r} (run on Debian/Ubuntu)"
        )
    log.info("downloading %s", package)
    proc = _run(["apt-get", "download", "-q", package], f"download Debian package {package!r}", cwd=cache_dir)
    deb = _cached_deb(package, cache_dir)
    if proc.returncode != 0 or deb is None:
        raise PhotoCorpusError(
            f"cannot download Debian package {package!r} with apt-get download "
            f"(try 'apt-get update'): {_last_line(proc.stderr + proc.stdout)}"
        )
    return deb


def deb_version(deb: Path) -> str:
    """Version of a ``.deb`` file, from its control data (``dpkg-deb -f``)."""
    proc = _run(["dpkg-deb", "-f", str(deb), "Version"], f"read the version of {deb.name}")
    if proc.returncode != 0:
        raise PhotoCorpusError(f"cannot read {deb}: {_last_line(proc.stderr)}")
    return proc.stdout.decode().strip()


def extract_deb(deb: Path, dest: Path, members: Iterable[str] | None = None) -> list[str]:
    """Extract a ``.deb`` (without installing it) below ``dest``.

    With ``members=None`` the whole file system tree is unpacked with
    ``dpkg-deb -x``. Otherwise only the listed paths (relative to the package
    root, e.g. ``usr/share/backgrounds/x.jpg``) are written to ``dest/<path>``,
    streaming the data archive once; a listed path that is a symlink inside the
    package gets the content of its target.

    Returns:
        The listed members that were not found in the package (empty when
        ``members`` is None).

    Raises:
        PhotoCorpusError: dpkg-deb is missing or the file is not a valid .deb.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if members is None:
        proc = _run(["dpkg-deb", "-x", str(deb), str(dest)], f"extract {Path(deb).name}")
        if proc.returncode != 0:
            raise PhotoCorpusError(f"cannot extract {deb}: {_last_line(proc.stderr)}")
        return []

    wanted = {_norm(m) for m in members}
    # Paths to read from the archive -> the requested paths that want their content.
    lookup: dict[str, set[str]] = {m: {m} for m in wanted}
    found: set[str] = set()
    for _ in range(4):  # follow symlinks inside the package, a few levels deep
        links: dict[str, set[str]] = {}
        for name, kind, payload in _iter_deb_members(deb, set(lookup)):
            targets = lookup[name]
            if kind == "file":
                for target in targets:
                    out = dest / target
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(payload)
                    found.add(target)
            else:  # symlink: payload is the resolved path inside the package
                links.setdefault(payload.decode(), set()).update(targets)
        lookup = {k: v - found for k, v in links.items() if v - found}
        if not lookup:
            break
    return sorted(wanted - found)


def _norm(member: str) -> str:
    """Normalise an archive member name: no leading ``./`` or ``/``."""
    while member.startswith("./"):
        member = member[2:]
    return posixpath.normpath(member.lstrip("/"))


def _iter_deb_members(deb: Path, names: set[str]) -> Iterable[tuple[str, str, bytes]]:
    """Yield ``(name, "file", bytes)`` or ``(name, "link", target)`` for listed members."""
    try:
        proc = subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError as exc:
        raise PhotoCorpusError(f"dpkg-deb not found: it is needed to extract {Path(deb).name}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                name = _norm(info.name)
                if name not in names:
                    continue
                if info.isfile():
                    fh = tar.extractfile(info)
                    yield name, "file", fh.read() if fh is not None else b""
                elif info.issym() or info.islnk():
                    base = posixpath.dirname(name) if info.issym() else ""
                    target = _norm(posixpath.join(base, info.linkname))
                    yield name, "link", target.encode()
    except tarfile.TarError as exc:
        raise PhotoCorpusError(f"cannot read the data archive of {deb}: {exc}") from exc
    finally:
        while proc.stdout.read(1 << 16):  # drain the tail so dpkg-deb can exit
            pass
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        rc = proc.wait()
    if rc != 0:
        raise PhotoCorpusError(f"cannot extract {deb}: {_last_line(err)}")


# --------------------------------------------------------------------------- Qt resource files

_RCC_COMPRESSED = 0x01  # zlib (qCompress: 4-byte big-endian size, then a zlib stream)
_RCC_DIRECTORY = 0x02
_RCC_COMPRESSED_ZSTD = 0x04


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Return ``{path: content}`` for every file in a binary Qt resource (``.rcc``).

    Paths are relative to the resource root without the leading ``:/``, e.g.
    ``gcompris/src/activities/erase/resource/alpaca.webp``. zlib-compressed
    entries are decompressed; format versions 1 to 3 are understood.

    Raises:
        PhotoCorpusError: the data is not a valid ``.rcc`` file, or an entry
            uses zstd compression (not supported).
    """
    try:
        if data[:4] != b"qres":
            raise ValueError("no 'qres' magic")
        version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
        if not 1 <= version <= 3:
            raise ValueError(f"unknown version {version}")
        node_size = 14 if version == 1 else 22  # v2+ adds an 8-byte modification time

        def name_at(offset: int) -> str:
            (length,) = struct.unpack_from(">H", data, names + offset)
            start = names + offset + 6  # length, then a 4-byte hash, then UTF-16BE
            return data[start : start + 2 * length].decode("utf-16-be")

        files: dict[str, bytes] = {}
        stack: list[tuple[int, str]] = [(0, "")]
        seen: set[int] = set()
        while stack:
            index, path = stack.pop()
            if index in seen:
                raise ValueError("directory loop")
            seen.add(index)
            node = tree + index * node_size
            name_offset, flags = struct.unpack_from(">IH", data, node)
            if index:
                path = f"{path}/{name_at(name_offset)}" if path else name_at(name_offset)
            if flags & _RCC_DIRECTORY:
                count, first = struct.unpack_from(">II", data, node + 6)
                stack.extend((child, path) for child in range(first, first + count))
                continue
            (data_offset,) = struct.unpack_from(">I", data, node + 10)
            (size,) = struct.unpack_from(">I", data, payload + data_offset)
            start = payload + data_offset + 4
            blob = data[start : start + size]
            if len(blob) != size:
                raise ValueError(f"{path}: truncated")
            if flags & _RCC_COMPRESSED_ZSTD:
                raise PhotoCorpusError(f"{path}: zstd-compressed resource entries are not supported")
            if flags & _RCC_COMPRESSED:
                blob = zlib.decompress(blob[4:])
            files[path] = blob
        return files
    except (struct.error, ValueError, UnicodeDecodeError, zlib.error) as exc:
        raise PhotoCorpusError(f"not a valid Qt resource (.rcc) file: {exc}") from exc


# --------------------------------------------------------------------------- Eet (Edje) files

_EET_MAGIC = 0x1EE70F42  # EET_MAGIC_FILE2: header, then 6-int directory entries
_EET_COMPRESSED = 0x01


def read_eet(data: bytes) -> dict[str, bytes]:
    """Return ``{key: content}`` for the uncompressed entries of an Eet file.

    Edje themes (``.edj``) are Eet files; their images are entries named
    ``edje/images/<n>``, stored as plain JPEG files when the theme was built
    with lossy ("user") compression, as Enlightenment's backgrounds are.
    Compressed entries (Edje's own code and collections) are left out: no
    photo is stored that way.

    Raises:
        PhotoCorpusError: the data is not an Eet file (or is truncated).
    """
    try:
        magic, entries, _dictionary = struct.unpack_from(">III", data, 0)
        if magic != _EET_MAGIC:
            raise ValueError(f"bad magic {magic:#x}")
        files: dict[str, bytes] = {}
        for i in range(entries):
            offset, size, _data_size, name_offset, name_size, flags = struct.unpack_from(">6I", data, 12 + 24 * i)
            name = data[name_offset : name_offset + name_size].rstrip(b"\0").decode("utf-8")
            blob = data[offset : offset + size]
            if len(blob) != size:
                raise ValueError(f"{name}: truncated")
            if not flags & _EET_COMPRESSED:
                files[name] = blob
        return files
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise PhotoCorpusError(f"not a valid Eet (.edj) file: {exc}") from exc


def _read_archive(path: Path) -> dict[str, bytes]:
    """Files inside an archive that entries name members of: ``.edj``/``.eet`` or Qt ``.rcc``."""
    data = path.read_bytes()
    return read_eet(data) if path.suffix in (".edj", ".eet") else read_rcc(data)


# --------------------------------------------------------------------------- images


def prepare_photo(
    src: Path | str | Image.Image,
    max_side: int = 512,
    alpha: str = "bbox",
    background: tuple[int, int, int] = BACKGROUND,
    rotate: int = 0,
) -> Image.Image:
    """Load a photo and return it as an RGB image whose longest side is <= ``max_side``.

    * EXIF orientation is applied, then ``rotate`` degrees clockwise.
    * Images with transparency are handled per ``alpha`` (see
      :class:`PhotoSource`) and then composited onto ``background``; fully
      opaque images are untouched by this step.
    * Images larger than ``max_side`` are downscaled with Lanczos filtering
      (a fast integer ``reduce`` first for very large ones); smaller ones are
      never upscaled.

    Raises:
        ValueError: ``max_side`` < 1 or an unknown ``alpha`` mode.
        OSError: the file cannot be decoded.
    """
    if max_side < 1:
        raise ValueError("max_side must be >= 1")
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, not {alpha!r}")
    if isinstance(src, Image.Image):
        im = src.copy()
    else:
        with Image.open(src) as opened:
            if opened.format == "JPEG":
                # Let libjpeg decode at a reduced scale; the result stays >= 2x max_side.
                opened.draft("RGB", (max_side * 2, max_side * 2))
            opened.load()
            im = opened.copy()
    im = ImageOps.exif_transpose(im)
    if rotate % 360:
        im = im.rotate(-rotate, expand=True)

    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = _composite(im.convert("RGBA"), alpha, background)
    elif im.mode != "RGB":
        im = im.convert("RGB")

    w, h = im.size
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return im


def _composite(im: Image.Image, alpha: str, background: tuple[int, int, int]) -> Image.Image:
    a = im.getchannel("A")
    lo, hi = a.getextrema()
    if lo == 255:  # nothing transparent
        return im.convert("RGB")
    if hi == 0:
        raise ValueError("image is fully transparent")
    if alpha == "bbox":
        box = a.point(lambda v: 255 if v > 8 else 0).getbbox() or (0, 0, *im.size)
        im = im.crop(box)
        margin = round(CUTOUT_MARGIN * max(im.size))
        canvas = Image.new("RGBA", (im.width + 2 * margin, im.height + 2 * margin), (*background, 255))
        canvas.alpha_composite(im, (margin, margin))
        return canvas.convert("RGB")
    if alpha == "opaque_rows":
        # Keep the rows below the last row that is not (almost) fully opaque.
        width = im.width
        data = a.tobytes()
        top = 0
        for y in range(im.height - 1, -1, -1):
            row = data[y * width : (y + 1) * width]
            if sum(1 for v in row if v < 250) > width // 100:
                top = y + 1
                break
        if top >= im.height:
            raise ValueError("no opaque rows")
        im = im.crop((0, top, im.width, im.height))
    canvas = Image.new("RGBA", im.size, (*background, 255))
    canvas.alpha_composite(im)
    return canvas.convert("RGB")


def save_jpeg(im: Image.Image, dest: Path, quality: int = _JPEG_QUALITY) -> None:
    """Write ``im`` as a corpus JPEG through the package's atomic writer (0644, fsynced)."""
    with atomic_open(dest) as fh:
        im.save(fh, format="JPEG", quality=quality, optimize=True)


# --------------------------------------------------------------------------- manifest


def _read_manifest(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return {row["file"]: row for row in csv.DictReader(fh) if row.get("file")}
    except (OSError, csv.Error, KeyError):
        return {}


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Write ``manifest.csv`` atomically: :data:`MANIFEST_COLUMNS`, rows by split then file."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    order = {s: i for i, s in enumerate(SPLITS)}
    for row in sorted(rows, key=lambda r: (order[r["split"]], r["file"])):
        writer.writerow({k: row.get(k, "") for k in MANIFEST_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def photo_categories(root: Path) -> dict[str, str]:
    """Map each photo of a built corpus to its scene category.

    Args:
        root: corpus directory (the one holding ``manifest.csv``).

    Returns:
        ``{file: scene_category}`` with ``file`` relative to ``root`` as in the
        manifest (``test/person_x.jpg``) and the category one of
        :data:`SCENE_CATEGORIES`.

    Raises:
        PhotoCorpusError: ``manifest.csv`` is missing or was written before
            scene categories existed (rebuild with ``autocolor data photos``).
    """
    path = Path(root) / "manifest.csv"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error) as exc:
        raise PhotoCorpusError(f"cannot read {path}: {exc}") from exc
    if rows and "scene_category" not in rows[0]:
        raise PhotoCorpusError(
            f"{path} has no scene_category column: rebuild it with 'autocolor data photos {root}'"
        )
    return {row["file"]: row["scene_category"] for row in rows if row.get("file")}


# --------------------------------------------------------------------------- build


def build_photo_corpus(
    out_dir: Path,
    cache_dir: Path | None = None,
    max_side: int = 512,
    sources: Path | None = None,
    *,
    strict: bool = False,
    workers: int | None = None,
) -> Path:
    """Download, extract and convert the curated photos into ``out_dir``.

    Args:
        out_dir: corpus directory; gets ``train/``, ``val/``, ``test/`` and
            ``manifest.csv``.
        cache_dir: where ``.deb`` files are kept (default
            ``~/.cache/autocolor/debs``); cached files are not downloaded again.
        max_side: longest side of the written JPEGs (never upscaled).
        sources: photo list to use instead of the bundled ``photo_sources.json``.
        strict: raise :class:`PhotoCorpusError` for a listed file that is
            missing from its package or unreadable, instead of warning
            (:class:`MissingPhotoWarning`) and going on.
        workers: threads used to convert images (default: CPU count).

    Returns:
        ``out_dir``.

    Raises:
        PhotoCorpusError: apt-get/dpkg-deb missing, a package that cannot be
            downloaded, an invalid photo list, or (with ``strict``) a missing file.
    """
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    entries = load_sources(sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (out_dir / split).mkdir(exist_ok=True)
    manifest_path = out_dir / "manifest.csv"
    old_rows = _read_manifest(manifest_path)

    rows: list[dict[str, str]] = []
    by_package: dict[str, list[PhotoSource]] = {}
    for src in entries:
        by_package.setdefault(src.package, []).append(src)
    for package, items in by_package.items():
        kept, todo = _built_and_todo(items, old_rows, out_dir)
        rows.extend(kept)
        if not todo:
            log.info("%s: all %d photos present", package, len(items))
            continue
        rows.extend(_build_package(package, todo, out_dir, cache_dir, max_side, strict, workers))
    _remove_dropped(out_dir, old_rows, {r["file"] for r in rows} | {s.relpath for s in entries})
    write_manifest(manifest_path, rows)
    return out_dir


def _built_and_todo(
    items: list[PhotoSource], old_rows: dict[str, dict[str, str]], out_dir: Path
) -> tuple[list[dict[str, str]], list[PhotoSource]]:
    """The manifest rows of photos already built (file and versioned row present), and the photos to build."""
    rows: list[dict[str, str]] = []
    todo: list[PhotoSource] = []
    for src in items:
        old = old_rows.get(src.relpath)
        if (out_dir / src.relpath).is_file() and old is not None and old.get("package_version"):
            rows.append(_row(src, old["package_version"], int(old["width"]), int(old["height"])))
        else:
            todo.append(src)
    return rows, todo


def _build_package(
    package: str, todo: list[PhotoSource], out_dir: Path, cache_dir: Path, max_side: int, strict: bool,
    workers: int | None,
) -> list[dict[str, str]]:
    """Download one package, extract the photos ``todo`` names and convert them; their manifest rows."""
    deb = download_deb(package, cache_dir)
    version = deb_version(deb)
    log.info("%s %s: converting %d photos", package, version, len(todo))
    with tempfile.TemporaryDirectory(prefix="autocolor-deb-") as tmp:
        root = Path(tmp)
        missing = set(extract_deb(deb, root, sorted({s.path for s in todo})))
        for src in todo:
            if src.path in missing:
                _problem(f"{src.path} is not in Debian package {package!r} ({deb.name}); skipped", strict)
        present = [s for s in todo if s.path not in missing]
        present = _unpack_members(present, root, package, strict)

        def convert(src: PhotoSource) -> dict[str, str] | None:
            return _convert_photo(src, root, out_dir, package, version, max_side, strict)

        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
            return [r for r in pool.map(convert, present) if r is not None]


def _convert_photo(
    src: PhotoSource, root: Path, out_dir: Path, package: str, version: str, max_side: int, strict: bool
) -> dict[str, str] | None:
    """Write one extracted photo as a corpus JPEG (unless already there); its manifest row, or None."""
    dest = out_dir / src.relpath
    try:
        if dest.is_file():  # written earlier but not in the manifest
            with Image.open(dest) as done:
                size = done.size
        else:
            im = prepare_photo(_local_path(root, src), max_side=max_side, alpha=src.alpha, rotate=src.rotate)
            save_jpeg(im, dest)
            size = im.size
    except (OSError, ValueError) as exc:
        _problem(f"cannot convert {src.original_path} from Debian package {package!r}: {exc}", strict)
        return None
    return _row(src, version, *size)


def _remove_dropped(out_dir: Path, old_rows: dict[str, dict[str, str]], current: set[str]) -> None:
    """Delete the outputs of photos that an earlier list had but the current one lacks."""
    for stale in set(old_rows) - current:
        target = out_dir / stale
        if target.parent.name in SPLITS and target.parent.parent == out_dir:
            target.unlink(missing_ok=True)


_MEMBERS_DIR = ".members"  # below the extraction root: archive members written as files


def _local_path(root: Path, src: PhotoSource) -> Path:
    """Where the photo's bytes are on disk after extraction (and unpacking of members)."""
    if src.member:
        return root / _MEMBERS_DIR / src.path / src.member
    return root / src.path


def _unpack_members(items: list[PhotoSource], root: Path, package: str, strict: bool) -> list[PhotoSource]:
    """Write the archive members the entries name to disk; return the entries found."""
    by_archive: dict[str, list[PhotoSource]] = {}
    for src in items:
        if src.member:
            by_archive.setdefault(src.path, []).append(src)
    bad: set[tuple[str, str]] = set()
    for archive, wanted in by_archive.items():
        try:
            content = _read_archive(root / archive)
        except (OSError, PhotoCorpusError) as exc:
            _problem(f"cannot read {archive} from Debian package {package!r}: {exc}; "
                     f"{len(wanted)} photo(s) skipped", strict)
            bad.update((s.path, s.member) for s in wanted)
            continue
        for src in wanted:
            blob = content.get(src.member)
            if blob is None:
                _problem(f"{src.member} is not in {archive} (Debian package {package!r}); skipped", strict)
                bad.add((src.path, src.member))
                continue
            dest = _local_path(root, src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(blob)
    return [s for s in items if (s.path, s.member) not in bad]


def _row(src: PhotoSource, version: str, width: int, height: int) -> dict[str, str]:
    return {
        "split": src.split,
        "file": src.relpath,
        "package": src.package,
        "package_version": version,
        "original_path": src.original_path,
        "license": src.license,
        "category": src.category,
        "width": str(width),
        "height": str(height),
        "copyright": src.copyright,
        "scene_category": src.scene_category,
        "people": "1" if src.people else "0",
    }


def _problem(message: str, strict: bool) -> None:
    if strict:
        raise PhotoCorpusError(message)
    log.warning("%s", message)
    warnings.warn(message, MissingPhotoWarning, stacklevel=3)
