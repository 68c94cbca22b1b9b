"""Fuzzing image loading and colorizing with random and mutated files.

Seeds are small real files in every input format, written here with Pillow;
hypothesis mutates them (bit flips, truncation, inserted and deleted bytes,
overwritten bytes, and header fields such as the width and height in PNG's
IHDR, JPEG's SOF, BMP, GIF and TIFF headers) or draws bytes from nothing.
Every case must either colorize or raise :class:`ImageError` with one line;
no other exception, no case past a time bound, no memory growth past a bound.

CI runs the "ci" profile (a few hundred cases). ``AUTOCOLOR_FUZZ_EXAMPLES=5000``
runs that many per test instead (benchmarks/fuzz_long.sh), and prints the counts.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import time
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from autocolor.checkpoint import save_model
from autocolor.imageio import DEFAULT_MAX_PIXELS, ImageError, read_image
from autocolor.inference import Colorizer
from autocolor.models import create_model

LONG_EXAMPLES = int(os.environ.get("AUTOCOLOR_FUZZ_EXAMPLES", "0"))
FUZZ_MAX_PIXELS = 1_000_000  # what the fuzzed cases may decode to: keeps each case well under the time bound
CASE_SECONDS = 10.0  # a case past this is a hang (the machine is shared with a training run)
RSS_GROWTH_MB = 500
RENDER_SIZE = 64

# hypothesis's deadline reports slow cases (after they return); the SIGALRM guard in
# check_case also stops a real hang, at CASE_SECONDS.
_common = dict(database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               deadline=timedelta(seconds=CASE_SECONDS * 0.8))
settings.register_profile("ci", max_examples=150, derandomize=True, **_common)
settings.register_profile("long", max_examples=max(LONG_EXAMPLES, 1), **_common)
PROFILE = "long" if LONG_EXAMPLES else "ci"


# ---------------------------------------------------------------- seeds


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def seed_files() -> dict[str, tuple[str, bytes]]:
    """name -> (suffix, bytes): small real files covering each format's common modes."""
    yy, xx = np.mgrid[0:29, 0:37]
    gray = Image.fromarray((128 + 90 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8), "L")
    rgb = Image.merge("RGB", (gray, gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gray.point(lambda v: 255 - v)))
    rgba = rgb.copy()
    rgba.putalpha(gray)
    gray16 = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    floating = np.asarray(gray).astype(np.float32) / 255.0
    floating[0, :3] = [np.nan, np.inf, -np.inf]  # float TIFFs may hold these
    floating = Image.fromarray(floating)
    strip = Image.fromarray(np.asarray(gray)[:1].repeat(80, axis=1))  # 1 x 2960: a thin strip
    palette = rgb.quantize(16)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    frames = [gray.convert("P"), gray.point(lambda v: 255 - v).convert("P")]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "jpeg-gray": (".jpg", _encode(gray, "JPEG", quality=80)),
        "jpeg-rgb-exif": (".jpg", _encode(rgb, "JPEG", quality=80, exif=exif.tobytes())),
        "jpeg-progressive": (".jpg", _encode(rgb, "JPEG", progressive=True, quality=70)),
        "jpeg-cmyk": (".jpg", _encode(rgb.convert("CMYK"), "JPEG")),
        "png-gray": (".png", _encode(gray, "PNG")),
        "png-rgba": (".png", _encode(rgba, "PNG")),
        "png-palette": (".png", _encode(palette, "PNG", transparency=0)),
        "png-16bit": (".png", _encode(gray16, "PNG")),
        "png-strip": (".png", _encode(strip, "PNG")),
        "tiff-raw": (".tif", _encode(rgb, "TIFF")),
        "tiff-deflate": (".tif", _encode(gray, "TIFF", compression="tiff_deflate")),
        "tiff-lzw-rgba": (".tif", _encode(rgba, "TIFF", compression="tiff_lzw")),
        "tiff-16bit": (".tif", _encode(gray16, "TIFF")),
        "tiff-float": (".tif", _encode(floating, "TIFF")),
        "webp-lossy": (".webp", _encode(rgb, "WEBP", quality=60)),
        "webp-lossless": (".webp", _encode(rgba, "WEBP", lossless=True)),
        "bmp-rgb": (".bmp", _encode(rgb, "BMP")),
        "bmp-palette": (".bmp", _encode(palette, "BMP")),
        "gif-animated": (".gif", animated.getvalue()),
    }


# ---------------------------------------------------------------- header fields


def _set_dimensions(data: bytes, width: int, height: int, fix_crc: bool) -> bytes:
    """Overwrite the width and height fields of a PNG, JPEG, BMP, GIF, TIFF or WebP header."""
    out = bytearray(data)
    if out.startswith(b"\x89PNG") and len(out) >= 33:
        out[16:24] = struct.pack(">II", width & 0xFFFFFFFF, height & 0xFFFFFFFF)
        if fix_crc:  # otherwise Pillow may stop at the CRC before it reads the size
            out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif out.startswith(b"\xff\xd8"):
        for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
            at = out.find(marker)
            if at >= 0 and at + 9 <= len(out):
                out[at + 5:at + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
                break
    elif out.startswith(b"BM") and len(out) >= 26:
        out[18:26] = struct.pack("<ii", _int32(width), _int32(height))
    elif out.startswith(b"GIF") and len(out) >= 10:
        out[6:10] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
        at = out.find(b"\x2c", 13)  # first image descriptor
        if at >= 0 and at + 9 <= len(out):
            out[at + 5:at + 9] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
    elif out[:4] in (b"II*\x00", b"MM\x00*"):
        _set_tiff_dimensions(out, width, height)
    elif out[:4] == b"RIFF" and out[8:12] == b"WEBP" and len(out) >= 30:
        if out[12:16] == b"VP8 ":
            out[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
        elif out[12:16] == b"VP8L" and len(out) >= 25:
            bits = ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14) | (out[24] & 0xF0) << 24
            out[21:25] = struct.pack("<I", bits & 0xFFFFFFFF)
    return bytes(out)


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _set_tiff_dimensions(out: bytearray, width: int, height: int) -> None:
    endian = "<" if out[:2] == b"II" else ">"
    if len(out) < 8:
        return
    (ifd,) = struct.unpack(endian + "I", out[4:8])
    if ifd + 2 > len(out):
        return
    (count,) = struct.unpack(endian + "H", out[ifd:ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(out):
            return
        tag, kind = struct.unpack(endian + "HH", out[entry:entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            out[entry + 8:entry + 12] = (struct.pack(endian + "HH", value & 0xFFFF, 0) if kind == 3
                                         else struct.pack(endian + "I", value & 0xFFFFFFFF))


# ---------------------------------------------------------------- mutations

positions = st.one_of(st.integers(8, 96), st.integers(0, 1 << 16))  # past the magic bytes often, anywhere sometimes
dimensions = st.one_of(
    st.sampled_from([0, 1, 2, 255, 256, 4095, 65535, 65536, 30_000, 2**31 - 1, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
mutation = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(0, 7)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), positions, st.integers(1, 64)),
    st.tuples(st.just("overwrite"), positions, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("dims"), dimensions, dimensions, st.booleans()),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    for op in ops:
        n = max(1, len(data))
        if op[0] == "flip":
            at = op[1] % n
            data = data[:at] + bytes([data[at] ^ (1 << op[2])]) + data[at + 1:] if data else data
        elif op[0] == "truncate":
            data = data[:op[1] % n]
        elif op[0] == "insert":
            at = op[1] % (n + 1)
            data = data[:at] + op[2] + data[at:]
        elif op[0] == "delete":
            at = op[1] % n
            data = data[:at] + data[at + op[2]:]
        elif op[0] == "overwrite":
            at = op[1] % n
            data = data[:at] + op[2] + data[at + len(op[2]):]
        elif op[0] == "dims":
            data = _set_dimensions(data, op[1], op[2], op[3])
    return data


MAGIC = [
    b"", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0",
    b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"RIFF\x00\x10\x00\x00WEBPVP8L", b"RIFF\x00\x10\x00\x00WEBPVP8X",
]


# ---------------------------------------------------------------- the check


class CaseTimeout(Exception):
    pass


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Tally:
    cases: int = 0
    colorized: int = 0
    refused: int = 0
    max_seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_max_mb: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    def count(self, started: float) -> None:
        """One case more, begun at ``started`` (``time.perf_counter()``): its time and the RSS so far."""
        self.cases += 1
        self.max_seconds = max(self.max_seconds, time.perf_counter() - started)
        self.rss_max_mb = max(self.rss_max_mb, _rss_mb())

    def colorized_case(self, started: float) -> None:
        """One case more that colorized, begun at ``started``; memory has not grown past the bound."""
        self.colorized += 1
        self.count(started)
        self.check_memory()

    def check_memory(self) -> None:
        assert self.rss_max_mb - self.rss_start_mb < RSS_GROWTH_MB, self.line("memory")

    def line(self, name: str) -> str:
        top = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:6])
        return (f"{name}: {self.cases} cases, {self.colorized} colorized, {self.refused} refused "
                f"({top}); max {self.max_seconds:.2f} s per case; RSS {self.rss_start_mb:.0f} -> "
                f"max {self.rss_max_mb:.0f} MB (+{self.rss_max_mb - self.rss_start_mb:.0f})")


@pytest.fixture(scope="module")
def colorizer(tmp_path_factory) -> Colorizer:
    folder = tmp_path_factory.mktemp("tiny-model")
    save_model(create_model("chroma-unet", width=16).eval(), folder)
    return Colorizer.load(folder)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_case(colorizer: Colorizer, path: Path, data: bytes, tally: Tally) -> None:
    """Load and colorize ``data`` under a time guard; only ImageError may come out."""
    path.write_bytes(data)

    def expire(signum, frame):
        raise CaseTimeout(f"case took over {CASE_SECONDS} s ({len(data)} bytes)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a library warning turned error must come out as ImageError too
            image = read_image(path, FUZZ_MAX_PIXELS)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the input has color" is the Colorizer's own, deliberate warning
            result = colorizer.colorize(image, render_size=RENDER_SIZE)
        assert result.size == image.size and result.mode in ("RGB", "RGBA")
        tally.colorized += 1
    except ImageError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        tally.refused += 1
        kind = "over the pixel limit" if "over the" in message else message.split(" (")[0][:40]
        tally.reasons[kind] = tally.reasons.get(kind, 0) + 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    tally.count(started)
    tally.check_memory()


def _warm(colorizer: Colorizer, workdir: Path) -> Tally:
    # The first colorize builds lookup tables and torch's kernels: count growth from after it.
    for name, (suffix, data) in seed_files().items():
        check_case(colorizer, workdir / f"seed{suffix}", data, Tally(rss_start_mb=_rss_mb()))
    return Tally(rss_start_mb=_rss_mb())


def _report(tally: Tally, name: str) -> None:
    print("\n" + tally.line(name))
    if LONG_EXAMPLES:
        out = os.environ.get("AUTOCOLOR_FUZZ_REPORT")
        if out:
            with open(out, "a") as f:
                f.write(tally.line(name) + "\n")


def test_seeds_all_colorize(colorizer, workdir):
    tally = Tally(rss_start_mb=_rss_mb())
    for name, (suffix, data) in seed_files().items():
        check_case(colorizer, workdir / f"{name}{suffix}", data, tally)
    assert tally.colorized == len(seed_files()), tally.reasons


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mutated", "random"])
def test_fuzz_load_and_colorize(colorizer, workdir, kind):
    tally = _warm(colorizer, workdir)
    names = sorted(seed_files())

    if kind == "mutated":
        cases = st.tuples(st.sampled_from(names), st.lists(mutation, min_size=1, max_size=4),
                          st.sampled_from(["own", ".png", ".jpg", ".gif"]))
    else:
        # Random bytes behind each format's magic reach its decoder; bare random bytes rarely would.
        raw = st.tuples(st.sampled_from(MAGIC), st.binary(max_size=4096)).map(lambda mb: [("raw", mb[0] + mb[1])])
        cases = st.tuples(st.just(""), raw, st.sampled_from([".png", ".jpg", ".tif", ".webp", ".bmp", ".gif", ".bin"]))

    @settings(settings.get_profile(PROFILE))
    @given(cases)
    def run(case):
        name, ops, suffix = case
        if name:
            own, data = seed_files()[name]
            data = mutate(data, ops)
            suffix = own if suffix == "own" else suffix
        else:
            data = ops[0][1]
        if not data:
            data = b"\0"  # an empty file is its own, tested case
        check_case(colorizer, workdir / f"case{suffix}", data, tally)

    try:
        run()
    finally:
        _report(tally, f"fuzz {kind} ({PROFILE})")
    assert tally.cases > 0


# ---------------------------------------------------------------- regressions found by fuzzing


@pytest.mark.parametrize("name", ["png-gray", "jpeg-rgb-exif", "bmp-rgb", "gif-animated", "tiff-raw", "webp-lossy"])
def test_huge_header_dimensions_are_refused_before_decoding(colorizer, workdir, name):
    suffix, data = seed_files()[name]
    tally = Tally(rss_start_mb=_rss_mb())
    big = _set_dimensions(data, 60_000, 60_000, fix_crc=True)
    check_case(colorizer, workdir / f"big{suffix}", big, tally)
    assert tally.refused == 1
    path = workdir / f"big{suffix}"
    with pytest.raises(ImageError):
        read_image(path, DEFAULT_MAX_PIXELS)


def test_library_warning_turned_error_is_an_image_error(workdir):
    """Found by fuzzing: a flipped bit in a TIFF makes Pillow warn "Corrupt EXIF data";
    under ``-W error`` that UserWarning escaped read_image."""
    suffix, data = seed_files()["tiff-16bit"]
    path = workdir / f"flipped{suffix}"
    path.write_bytes(mutate(data, [("flip", 8, 0)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="corrupt or unsupported image"):
            read_image(path)


def test_float_tiff_with_nan_and_inf_colorizes_without_numpy_warnings(colorizer, workdir):
    suffix, data = seed_files()["tiff-float"]
    path = workdir / f"nan{suffix}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "invalid value encountered in cast" before the fix
        image = read_image(path)[0]
        assert image.mode == "F" and np.isnan(np.asarray(image)).any()
        assert colorizer.colorize(image, render_size=RENDER_SIZE).size == image.size


def test_thin_strip_works_at_a_bounded_size(colorizer, workdir):
    """Found by fuzzing the pixel limit: a 1 x 2,000,000 PNG (a few kB, under every pixel
    limit) got a 16 x 362,032 working size and took 8.5 GB and 24 s; now 16 x 4,096."""
    from autocolor.pipeline import working_size

    assert working_size(1, 2_000_000, 256) == (16, 4096)
    assert working_size(2_000_000, 1, 256) == (4096, 16)
    for (h, w), size in [((480, 640), (224, 288)), ((100, 1600), (64, 1024)), ((1, 1), (256, 256))]:
        assert working_size(h, w, 256) == size  # photos: about 256**2 pixels, aspect kept
    path = workdir / "strip.png"
    Image.new("L", (1_000_000, 1), 90).save(path)
    rss = _rss_mb()
    started = time.perf_counter()
    result = colorizer.colorize(read_image(path)[0], render_size=256)
    assert result.size == (1_000_000, 1)
    assert time.perf_counter() - started < 20 and _rss_mb() - rss < 400


def test_a_reversed_color_strip_array_colorizes(colorizer):
    """Found by the layout fuzzer: a one-row color array reversed top to bottom (``a[::-1]``)
    counts as contiguous to numpy, so no copy was made, and torch.from_numpy refused its
    negative stride with a ValueError about tensors."""
    rgb = np.dstack([np.arange(40, dtype=np.uint8), np.full(40, 90, np.uint8), 255 - np.arange(40, dtype=np.uint8)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the input has color"
        flipped = colorizer.colorize(rgb[::-1], render_size=RENDER_SIZE)
        assert np.array_equal(flipped, colorizer.colorize(rgb.copy(), render_size=RENDER_SIZE))


def test_suggest_refuses_a_bad_count_in_one_line(colorizer):
    """Found by the number fuzzer: ``suggest(k=-1)`` raised torch's RuntimeError, k NaN, 2.5,
    True or None a TypeError from topk."""
    gray = (np.add.outer(np.arange(24), np.arange(40)) * 3 % 256).astype(np.uint8)
    for bad in (-1, 0, float("nan"), 2.5, True, None, "3", 10**6):
        with pytest.raises(ValueError, match="^k must be an integer from 1 to"):
            colorizer.suggest(gray, 3, 3, k=bad)
    assert len(colorizer.suggest(gray, 3, 3, k=3)) == 3


def test_suggest_refuses_a_bad_pixel_in_one_line(colorizer):
    """Found by the number fuzzer: suggest's x and y were not checked as numbers: None gave a
    TypeError (from a comparison, or from formatting the message about it), False was taken
    for column 0."""
    gray = (np.add.outer(np.arange(24), np.arange(40)) * 3 % 256).astype(np.uint8)
    for x, y in ((None, 3), (40.0, None), (0.0, False), ("3", 3), (float("nan"), 3), (3, [1])):
        with pytest.raises(ValueError) as refused:
            colorizer.suggest(gray, x, y)
        assert "\n" not in str(refused.value)


# ---------------------------------------------------------------- hostile model folders and numbers (issue 17)

_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=8),
    st.integers(-(10**12), 10**12).filter(lambda w: not 64 < w <= 512),  # valid wide models are only slow
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "0", "-0.0", "8", "16", "2000"]).map(lambda t: ("raw", t)),
    st.floats(allow_nan=False, allow_infinity=False),
)
_JSON_VALUES = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _json_text(value) -> str:
    """JSON text of ``value`` where ("raw", text) leaves are written as they are (NaN, 1e999, ...)."""
    import json

    if isinstance(value, tuple) and len(value) == 2 and value[0] == "raw":
        return value[1]
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_json_text(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


_CONFIGS = st.fixed_dictionaries({
    "model": st.one_of(st.sampled_from(["chroma-unet", "cae", "levin", "nope"]), _JSON_VALUES),
    "kwargs": st.one_of(
        st.dictionaries(st.sampled_from(["width", "head", "guided", "temperature", "depth"]), _JSON_VALUES, max_size=3),
        _JSON_VALUES),
})
_DECODINGS = st.one_of(st.none(), st.dictionaries(st.sampled_from(["temperature", "chroma_scale", "prior_correction",
                                                                   "other"]), _JSON_SCALARS, max_size=3), _JSON_VALUES)
_WEIGHT_DAMAGE = st.sampled_from(["none", "int8", "bool", "float16", "nan", "inf", "zero-class-weights", "truncate",
                                  "drop-tensor", "extra-tensor", "reshape", "empty"])


@lru_cache(maxsize=1)
def _weights_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_model(create_model("chroma-unet", width=16).eval(), Path(tmp))
        return (Path(tmp) / "model.safetensors").read_bytes()


def _damage_weights(data: bytes, how: str) -> bytes:
    import torch
    from safetensors.torch import load, save

    if how == "truncate":
        return data[: len(data) // 3]
    if how == "empty":
        return b""
    state = load(data)
    key = "head.weight"
    if how == "int8":
        state[key] = state[key].to(torch.int8)
    elif how == "bool":
        state[key] = state[key] > 0
    elif how == "float16":
        state[key] = state[key].half()
    elif how in ("nan", "inf"):
        state[key][0] = float(how)
    elif how == "zero-class-weights":
        state["class_weights"][:] = 0
    elif how == "drop-tensor":
        del state[key]
    elif how == "extra-tensor":
        state["surprise"] = torch.zeros(3)
    elif how == "reshape":
        state[key] = state[key].reshape(-1)
    return save(state)


def test_fuzz_hostile_model_folders(workdir):
    """Any config.json, decoding.json and damaged weights: a model, or one CheckpointError line."""
    import json

    from autocolor.checkpoint import CheckpointError, load_model

    tally = Tally(rss_start_mb=_rss_mb())

    @settings(settings.get_profile(PROFILE))
    @given(_CONFIGS, _DECODINGS, _WEIGHT_DAMAGE, st.booleans())
    def run(config, decoding, damage, raw_config):
        folder = workdir / "hostile-model"
        folder.mkdir(exist_ok=True)
        text = _json_text(config) if raw_config else json.dumps({"model": "chroma-unet", "kwargs": {"width": 16}})
        (folder / "config.json").write_text(text)
        (folder / "decoding.json").unlink(missing_ok=True)
        if decoding is not None:
            (folder / "decoding.json").write_text(_json_text(decoding))
        (folder / "model.safetensors").write_bytes(_damage_weights(_weights_bytes(), damage))
        started = time.perf_counter()
        try:
            load_model(folder)
            tally.colorized += 1
        except CheckpointError as exc:
            message = str(exc)
            assert message and "\n" not in message and str(folder) in message, repr(message)
            tally.refused += 1
            kind = message.split(": ", 2)[1][:30] if message.count(": ") >= 1 else message[:30]
            tally.reasons[kind] = tally.reasons.get(kind, 0) + 1
        tally.count(started)
        assert tally.max_seconds < CASE_SECONDS and tally.rss_max_mb - tally.rss_start_mb < RSS_GROWTH_MB

    try:
        run()
    finally:
        _report(tally, f"fuzz model folders ({PROFILE})")
    assert tally.refused > 0


_NUMBERS = st.one_of(st.floats(), st.integers(-(10**20), 10**20), st.booleans(), st.none(), st.text(max_size=4),
                     st.sampled_from([0, 1, 16, 31, 32, 64, 1024, 1025, 4.0, 4.0001, -0.0, float("nan")]))


def _is_one_line_value_error(call) -> bool:
    try:
        call()
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return True
    return False


def test_fuzz_numeric_parameters_at_every_entrance(colorizer, workdir, capsys):
    """render_size, saturation, quality, batch_size, workers and max_pixels: accepted within their
    bounds and then the output is finite and whole, or refused in one line (CLI, Colorizer, colorize_files)."""
    from autocolor import settings as bounds
    from autocolor.cli import build_parser
    from autocolor.inference import colorize_files, plan_jobs

    gray = (np.add.outer(np.arange(24), np.arange(40)) * 3 % 256).astype(np.uint8)
    Image.fromarray(gray).save(workdir / "numbers.png")
    jobs, _ = plan_jobs([str(workdir / "numbers.png")], workdir / "numbers-out")
    flags = {"render_size": bounds.RENDER_SIZE, "saturation": bounds.SATURATION, "quality": bounds.QUALITY,
             "batch_size": bounds.BATCH_SIZE, "workers": bounds.WORKERS, "max_pixels": bounds.MAX_PIXELS}

    def within(value, b) -> bool:
        import math
        import numbers

        return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                and b.low <= value <= b.high and (not b.integer or float(value).is_integer()))

    @settings(settings.get_profile(PROFILE), max_examples=60 if not LONG_EXAMPLES else LONG_EXAMPLES)
    @given(st.sampled_from(sorted(flags)), _NUMBERS)
    def run(name, value):
        b = flags[name]
        # The CLI: parsed within bounds, or one error line and exit status 2.
        try:
            args = build_parser().parse_args(["colorize", "a.png", "-o", "o", f"--{name.replace('_', '-')}", str(value)])
            assert within(getattr(args, name), b)
        except SystemExit as stop:
            assert stop.code == 2
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1, err
        if name == "render_size" and value is None:
            return  # None: the model's default
        ok = within(value, b)
        # The API: the same bounds (values within them kept small, for speed).
        small = {"render_size": lambda v: min(int(v), 128), "max_pixels": lambda v: max(int(v), gray.size)}
        arg = small[name](value) if ok and name in small else value
        if name in ("render_size", "saturation"):
            assert _is_one_line_value_error(lambda: colorizer.colorize(gray, **{name: arg})) != ok, (name, value)
        refused = _is_one_line_value_error(lambda: colorize_files(colorizer, jobs, progress=False, overwrite=True,
                                                                  log=lambda _: None, **{name: arg}))
        assert refused != ok, (name, value)

    run()


# ---------------------------------------------------------------- strips and array layouts (issue 17)

# Every size the code cuts images by, made tiny: the same images then go through many partial
# tiles, row pieces and chunks, and must come out exactly as they do in one piece.
_TINY_TILES = {("autocolor.color", "TILE_PIXELS"): 997, ("autocolor.imageio", "_SPLIT_TILE"): 1009,
               ("autocolor.imageio", "_CONVERT_CHUNK"): 1013, ("autocolor.imageio", "_PIECE_BYTES"): 4099,
               ("autocolor.imageio", "_STRIP_PIXELS"): 64}


class tiny_tiles:
    """A context in which :data:`_TINY_TILES` hold (hypothesis's cases cannot take monkeypatch)."""

    def __enter__(self):
        import importlib

        self.saved = []
        for (module, name), value in _TINY_TILES.items():
            mod = importlib.import_module(module)
            self.saved.append((mod, name, getattr(mod, name)))
            setattr(mod, name, value)

    def __exit__(self, *exc):
        for mod, name, value in self.saved:
            setattr(mod, name, value)


_SAMPLE_TYPES = ["u1", "u2", ">u2", "f2", "f4", ">f4", "f8", "?"]
_long_side = st.one_of(st.integers(1, 300), st.integers(300, 6000), st.sampled_from([16, 97, 101, 1009, 4096, 4097]))
_STRIP_SHAPES = st.one_of(
    st.tuples(st.just(1), _long_side), st.tuples(_long_side, st.just(1)),
    st.tuples(st.just(2), _long_side), st.tuples(_long_side, st.just(2)),
    st.tuples(st.integers(1, 15), st.integers(16, 20_000), st.booleans()).map(lambda t: t[:2] if t[2] else t[1::-1]),
)


def _samples(shape: tuple[int, ...], kind: str, seed: int, smooth: bool) -> np.ndarray:
    """Samples of ``shape`` in sample type ``kind``: noise, or a ramp along the long side."""
    size = int(np.prod(shape))
    unit = np.linspace(0, 1, size).reshape(shape) if smooth else np.random.default_rng(seed).random(shape)
    dtype = np.dtype(kind)
    if dtype == bool:
        return unit >= 0.5
    if dtype.kind == "f":
        values = unit.astype(dtype)
        if seed % 5 == 0:
            values.flat[seed % values.size] = np.nan  # floats may hold NaN: it counts as black
        return values
    return (unit * np.iinfo(dtype).max + 0.5).astype(dtype)


def _colorize_quietly(colorizer: Colorizer, array, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the input has color"
        return colorizer.colorize(array, render_size=RENDER_SIZE, **kwargs)


def _same_but_rounding(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal colors up to torch's last bit: its SIMD kernels and their scalar tails may round
    one step apart, so a pixel can differ with where a tile edge puts it (one level in 8 or
    16 bits, 1e-6 in float32, one float16 step); alpha, copied, is exact."""
    if a.shape != b.shape:
        return False
    color = (slice(None),) * (a.ndim - 1) + (slice(0, 3),)
    if a.shape[-1] == 4 and not np.array_equal(a[..., 3], b[..., 3], equal_nan=True):
        return False
    x, y = a[color].astype(np.float64), b[color].astype(np.float64)
    step = {"u": 1.0, "b": 0.0}.get(a.dtype.kind, 1e-3 if a.dtype.itemsize == 2 else 1e-6)
    return bool(np.all(np.abs(x - y) <= step))


def _check_result(result: np.ndarray, given: np.ndarray) -> None:
    """Shape, sample type, finite color and the caller's alpha, exactly."""
    channels = 1 if given.ndim == 2 else given.shape[2]
    assert result.dtype == given.dtype
    assert result.shape == given.shape[:2] + (4 if channels in (2, 4) else 3,)
    if result.dtype.kind == "f":
        assert np.isfinite(result[..., :3].astype(np.float64)).all()
    if channels in (2, 4):  # float alpha is carried as float32
        alpha = given[..., -1]
        same = (lambda a: a.astype(np.float32)) if given.dtype.kind == "f" else (lambda a: a)
        assert np.array_equal(same(result[..., 3]), same(alpha), equal_nan=True)


@pytest.mark.slow
def test_fuzz_strip_arrays(colorizer, workdir):
    """1 x N, N x 1, 2 x N and other strips thinner than 16 px, in every channel count, sample
    type and memory layout, through Colorizer.colorize: the right shape, type and alpha, the
    same samples in any layout, and (but for torch's last bit) when every tile, row piece and
    chunk is made tiny."""
    tally = Tally(rss_start_mb=_rss_mb())

    @settings(settings.get_profile(PROFILE), max_examples=60 if not LONG_EXAMPLES else LONG_EXAMPLES)
    @given(_STRIP_SHAPES, st.sampled_from([None, 1, 2, 3, 4]), st.sampled_from(_SAMPLE_TYPES),
           st.integers(0, 2**32 - 1), st.booleans(), st.sampled_from(["plain", *_LAYOUTS]))
    def run(shape, channels, kind, seed, smooth, how):
        plain = _samples(shape if channels is None else (*shape, channels), kind, seed, smooth)
        array = plain if how == "plain" else _layout(plain, how, workdir)
        started = time.perf_counter()
        result = _colorize_quietly(colorizer, array)
        _check_result(result, array)
        if how not in ("plain", "broadcast"):
            assert np.array_equal(result, _colorize_quietly(colorizer, plain).astype(result.dtype), equal_nan=True)
        with tiny_tiles():
            tiled = _colorize_quietly(colorizer, array)
        assert _same_but_rounding(tiled, result), "tiling changed the result"
        tally.colorized_case(started)

    try:
        run()
    finally:
        _report(tally, f"fuzz strip arrays ({PROFILE})")


def _strip_file(path: Path, shape: tuple[int, int], mode: str, seed: int) -> None:
    """A strip image file of ``mode`` ("RGB16"/"RGBA16": 48/64-bit PNG or TIFF) at ``path``."""
    from autocolor.imageio import encode_image

    if mode in ("RGB16", "RGBA16"):
        array = _samples((*shape, 3 if mode == "RGB16" else 4), "u2", seed, seed % 2 == 0)
        path.write_bytes(encode_image(array, "png" if path.suffix == ".png" else "tiff", metadata=None))
        return
    base = {"L": "u1", "LA": "u1", "RGB": "u1", "RGBA": "u1", "P": "u1", "1": "?", "I;16": "u2", "F": "f4"}[mode]
    channels = {"LA": 2, "RGB": 3, "RGBA": 4}.get(mode)
    array = _samples(shape if channels is None else (*shape, channels), base, seed, seed % 2 == 0)
    if mode == "F":
        array = np.nan_to_num(array)
    image = Image.fromarray(array.astype(np.uint8) * 255 if mode == "1" else array)
    if mode == "P":
        image = image.convert("P")
    elif mode == "1":
        image = image.convert("1")
    options = {"transparency": 3} if mode == "P" and path.suffix in (".png", ".gif") else {}
    image.save(path, **options)


_FILE_MODES = {".png": ["L", "LA", "RGB", "RGBA", "P", "1", "I;16", "RGB16", "RGBA16"],
               ".tif": ["L", "RGB", "RGBA", "I;16", "F", "RGB16", "RGBA16"],
               ".bmp": ["L", "RGB", "P"], ".gif": ["L", "P"], ".jpg": ["L", "RGB"], ".webp": ["RGB", "RGBA"]}
_LOSSLESS = (".png", ".tif", ".bmp", ".gif")


@pytest.mark.slow
def test_fuzz_strip_files(colorizer, workdir):
    """Strips written in each format and mode, through the batch path (read_photo, colorize,
    encode, write): each comes out whole, at its depth (16-bit stays 16-bit in PNG and TIFF),
    with its alpha; lossless outputs hold exactly what the API gives, also with tiny tiles
    and the PNG strip writer."""
    from autocolor.imageio import read_photo, split_pixels
    from autocolor.inference import plan_jobs

    tally = Tally(rss_start_mb=_rss_mb())
    cases = st.sampled_from(sorted(_FILE_MODES)).flatmap(
        lambda suffix: st.tuples(st.just(suffix), st.sampled_from(_FILE_MODES[suffix])))

    @settings(settings.get_profile(PROFILE), max_examples=40 if not LONG_EXAMPLES else LONG_EXAMPLES)
    @given(cases, _STRIP_SHAPES, st.integers(0, 2**32 - 1))
    def run(case, shape, seed):
        from autocolor.inference import colorize_files

        suffix, mode = case
        if suffix == ".webp" and max(shape) > 16383 or suffix == ".jpg" and max(shape) > 65500:
            shape = (min(shape[0], 4000), min(shape[1], 4000))
        source = workdir / f"strip{suffix}"
        _strip_file(source, shape, mode, seed)
        started = time.perf_counter()
        outputs = []
        for tiles in (False, True):
            jobs, problems = plan_jobs([str(source)], workdir / f"strip-out-{tiles}")
            assert not problems
            with tiny_tiles() if tiles else warnings.catch_warnings():
                summary = colorize_files(colorizer, jobs, render_size=RENDER_SIZE, overwrite=True, progress=False,
                                         log=lambda _: None)
            assert summary.done == 1, summary.failed
            outputs.append(read_photo(jobs[0].target, max_pixels=10**8).samples)
        photo = read_photo(source, max_pixels=10**8)
        channels = 1 if photo.samples.ndim == 2 else photo.samples.shape[2]
        out = outputs[0]
        assert out.shape[:2] == shape and out.shape[2] == (4 if channels in (2, 4) and suffix != ".jpg" else 3)
        deep = photo.samples.dtype != np.uint8 and suffix in (".png", ".tif")
        assert out.dtype == (np.uint16 if deep else np.uint8)
        if suffix in _LOSSLESS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                (expected,) = colorizer.colorize_pixels([split_pixels(photo.samples)], RENDER_SIZE)
            from autocolor.imageio import to_uint8, to_uint16

            assert np.array_equal(out, to_uint16(expected) if deep else to_uint8(expected)), "file and API differ"
            assert _same_but_rounding(outputs[1], out), "tiling changed the file"
        tally.colorized_case(started)

    try:
        run()
    finally:
        _report(tally, f"fuzz strip files ({PROFILE})")


def _layout(array: np.ndarray, how: str, folder: Path) -> np.ndarray:
    """The same samples in another memory layout (a view or a copy); 2-D or 3-D in, same shape out."""
    if how == "fortran":
        return np.asfortranarray(array)
    if how == "flip-rows":
        return array[::-1].copy()[::-1]  # a copy made from the flipped view, viewed flipped back
    if how == "flip-cols":
        return array[:, ::-1].copy()[:, ::-1]
    if how == "flip-both":
        return array[::-1, ::-1].copy()[::-1, ::-1]
    if how == "rot90":  # negative and swapped strides: np.rot90 of the array rotated back
        return np.rot90(np.rot90(array, -1).copy())
    if how == "transposed":
        return array.swapaxes(0, 1).copy().swapaxes(0, 1)
    if how == "strided":  # every other row and every third column of a larger array
        big = np.zeros((array.shape[0] * 2, array.shape[1] * 3) + array.shape[2:], array.dtype)
        big[::2, ::3] = array
        return big[::2, ::3]
    if how == "channels-planar":  # channels outermost in memory
        return np.moveaxis(np.moveaxis(array, -1, 0).copy(), 0, -1) if array.ndim == 3 else array
    if how == "byteswapped":
        return array.astype(array.dtype.newbyteorder("S")) if array.dtype.itemsize > 1 else array
    if how == "memmap":
        path = folder / "layout.npy"
        path.unlink(missing_ok=True)  # a new file: an earlier case's map may still be open
        np.save(path, array)
        return np.load(path, mmap_mode="r")
    if how == "read-only":
        view = array.copy()
        view.flags.writeable = False
        return view
    if how == "broadcast":  # zero strides: one row repeated (read-only)
        return np.broadcast_to(array[:1], array.shape)
    raise AssertionError(how)


_LAYOUTS = ["fortran", "flip-rows", "flip-cols", "flip-both", "rot90", "transposed", "strided", "channels-planar",
            "byteswapped", "memmap", "read-only", "broadcast"]


@pytest.mark.slow
def test_fuzz_array_layouts(colorizer, workdir):
    """Any memory layout (Fortran order, negative, zero and large strides, big-endian samples,
    memmaps, read-only views) colorizes exactly as the same samples in C order and native
    byte order, in the caller's own sample type."""
    tally = Tally(rss_start_mb=_rss_mb())

    @settings(settings.get_profile(PROFILE), max_examples=100 if not LONG_EXAMPLES else LONG_EXAMPLES)
    @given(st.one_of(st.tuples(st.integers(1, 40), st.integers(1, 40)), st.tuples(st.just(1), st.integers(1, 40)),
                     st.tuples(st.integers(1, 40), st.just(1))),
           st.sampled_from([None, 1, 2, 3, 4]), st.sampled_from(_SAMPLE_TYPES), st.sampled_from(_LAYOUTS),
           st.integers(0, 2**32 - 1))
    def run(shape, channels, kind, how, seed):
        array = _samples(shape if channels is None else (*shape, channels), kind, seed, seed % 3 == 0)
        started = time.perf_counter()
        odd = _layout(array, how, workdir)
        assert odd.shape == array.shape
        plain = np.ascontiguousarray(odd).astype(odd.dtype.newbyteorder("="))
        result = _colorize_quietly(colorizer, odd)
        _check_result(result, odd)
        expected = _colorize_quietly(colorizer, plain)
        assert np.array_equal(result.astype(expected.dtype), expected, equal_nan=True), how
        tally.colorized_case(started)

    try:
        run()
    finally:
        _report(tally, f"fuzz array layouts ({PROFILE})")


_BAD_SHAPES = st.one_of(
    st.just(()), st.tuples(st.integers(0, 50)),  # 0-d, 1-d
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(1, 3)),  # 4-d
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.sampled_from([0, 5, 6, 64])),  # channels
    st.tuples(st.just(0), st.integers(0, 6)), st.tuples(st.integers(0, 6), st.just(0)),  # no pixels
    st.tuples(st.just(0), st.integers(1, 6), st.sampled_from([1, 3])),
)
_BAD_TYPES = ["i1", "i2", "i4", "i8", "u4", "u8", "c8", "c16", "O", "U2", "S2", "M8[s]", "m8[s]", "V3"]


@pytest.mark.slow
def test_fuzz_arrays_refused_in_one_line(colorizer):
    """0-d, 1-d, 4-d and deeper arrays, 0 or 5+ channels, no pixels, and sample types other
    than uint8, uint16, float and bool: one ImageError line each, from the API."""
    from autocolor.imageio import ImageError

    @settings(settings.get_profile(PROFILE), max_examples=60 if not LONG_EXAMPLES else LONG_EXAMPLES)
    @given(st.one_of(st.tuples(_BAD_SHAPES, st.sampled_from(_SAMPLE_TYPES)),
                     st.tuples(st.tuples(st.integers(1, 8), st.integers(1, 8)), st.sampled_from(_BAD_TYPES))))
    def run(case):
        shape, kind = case
        array = np.zeros(shape, dtype=np.dtype(kind))
        with pytest.raises(ImageError) as refused:
            _colorize_quietly(colorizer, array)
        message = str(refused.value)
        assert message and "\n" not in message and len(message) < 300, message
        tally.cases += 1
        tally.refused += 1
        kind = {"unsupported": "sample type", "empty": "no pixels"}.get(message.split(" ")[0], "shape")
        tally.reasons[kind] = tally.reasons.get(kind, 0) + 1
        tally.rss_max_mb = max(tally.rss_max_mb, _rss_mb())

    tally = Tally(rss_start_mb=_rss_mb())
    try:
        run()
    finally:
        _report(tally, f"fuzz refused arrays ({PROFILE})")


# ---------------------------------------------------------------- numbers at the remaining entrances (issue 17)


def _is_number_within(value, low: float, high: float, high_open: bool = False) -> bool:
    import math
    import numbers

    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return low <= value < high if high_open else low <= value <= high


_JSON_NUMBERS = st.one_of(
    st.floats(), st.integers(-(10**30), 10**30), st.booleans(), st.none(), st.text(max_size=5),
    st.lists(st.integers(0, 300), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.sampled_from([0, 1, 127, 128, 192, 256, 256.0, 256.5, 1024, 1025, 2.0, 2.0001, -0.0, 1e308,
                     float("nan"), float("inf"), "256", "nan", "1e999"]),
)


@pytest.mark.slow
def test_fuzz_numbers_in_hints_and_suggestions(workdir):
    """Hint coordinates and colors, and suggest's x, y and k, from any Python value: used
    exactly when they are numbers within the photo (0-255 for a channel, 1-1000 for k), else
    one ValueError line."""
    from autocolor.models import create_model

    gray = (np.add.outer(np.arange(24), np.arange(40)) * 3 % 256).astype(np.uint8)
    guided = Colorizer(create_model("chroma-unet", width=16, guided=True).eval(), name="guided")
    h, w = gray.shape
    tally = Tally(rss_start_mb=_rss_mb())

    @settings(settings.get_profile(PROFILE), max_examples=100 if not LONG_EXAMPLES else LONG_EXAMPLES)
    @given(st.sampled_from(["hint", "color", "suggest-xy", "suggest-k"]), _JSON_NUMBERS, _JSON_NUMBERS)
    def run(where, a, b):
        if where == "hint":
            ok = _is_number_within(a, 0, w, high_open=True) and _is_number_within(b, 0, h, high_open=True)
            call = lambda: guided.colorize(gray, render_size=RENDER_SIZE, hints=[(a, b, "#3060e0")])
        elif where == "color":
            ok = _is_number_within(a, 0, 255) and _is_number_within(b, 0, 255)
            call = lambda: guided.colorize(gray, render_size=RENDER_SIZE, hints=[(5, 5, (a, b, 128))])
        elif where == "suggest-xy":
            ok = _is_number_within(a, 0, w, high_open=True) and _is_number_within(b, 0, h, high_open=True)
            call = lambda: guided.suggest(gray, a, b, render_size=RENDER_SIZE)
        else:
            ok = _is_number_within(a, 1, 1000) and float(a).is_integer()  # 3.0 counts, as at every entrance
            call = lambda: guided.suggest(gray, 3, 4, k=a, render_size=RENDER_SIZE)
        refused = _is_one_line_value_error(call)
        assert refused != ok, (where, a, b)
        tally.cases += 1
        tally.refused += refused
        tally.colorized += not refused
        tally.rss_max_mb = max(tally.rss_max_mb, _rss_mb())
        if refused:
            tally.reasons[where] = tally.reasons.get(where, 0) + 1

    try:
        run()
    finally:
        _report(tally, f"fuzz hint and suggest numbers ({PROFILE})")


@pytest.mark.slow
def test_fuzz_web_settings_and_clicks(tmp_path):
    """The page's own JSON values, as any client may send them, into a running page's click
    handler: render size, saturation, the clicked pixel and the color. A value refused is
    one line and leaves the photo's points as they were; an accepted one is within bounds
    (render sizes offered, saturation 0-2) and every point kept lies inside the photo."""
    import re

    from autocolor.web import RENDER_SIZES, Handlers, WebConfig, WebState

    folder = tmp_path / "guided"
    save_model(create_model("chroma-unet", width=16, guided=True).eval(), folder)
    handlers = Handlers(WebState(WebConfig(models={"m": str(folder)}, samples=[]), tmp_path / "work"))
    request = type("Request", (), {"session_hash": "fuzz", "client": type("Client", (), {"host": "127.0.0.1"})()})()
    upload = handlers.state.uploads.new_path("photo.png")
    Image.fromarray((np.add.outer(np.arange(48), np.arange(64)) * 2 % 256).astype(np.uint8)).save(upload)
    handlers.colorize([str(upload)], "m", 128, 1.0, request)
    session = handlers.state.session(request)
    width, height = session.photo.size
    tally = Tally(rss_start_mb=_rss_mb())
    valid = {"render_size": st.sampled_from([128, 192, 256.0]), "saturation": st.floats(0.0, 2.0),
             "index": st.tuples(st.integers(-5, 70), st.integers(-5, 50)).map(list),  # the preview's pixels, and off it
             "color": st.one_of(st.sampled_from(["#3060e0", "#ffffff"]),
                                st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)).map(list))}
    hostile = {"render_size": _JSON_NUMBERS, "saturation": _JSON_NUMBERS,
               "index": st.one_of(st.lists(_JSON_NUMBERS, min_size=0, max_size=3), _JSON_NUMBERS),
               "color": st.one_of(st.sampled_from(["3060e0", "#zzzzzz", "", "red", "#3060e0ff"]), _JSON_NUMBERS)}
    # One value from anything a client may send, the others as the page sends them (a quarter all valid).
    cases = st.sampled_from(["none", *hostile]).flatmap(lambda bad: st.fixed_dictionaries(
        {k: hostile[k] if k == bad else v for k, v in valid.items()}))

    @settings(settings.get_profile(PROFILE), max_examples=40 if not LONG_EXAMPLES else LONG_EXAMPLES)
    @given(cases)
    def run(case):
        render_size, saturation, where, color = case["render_size"], case["saturation"], case["index"], case["color"]
        if len(session.edit().points) > 4:
            handlers.clear("m", 128, 1.0, request)
        before = list(session.edit().points)
        event = type("Select", (), {"index": where})()
        tally.cases += 1
        try:
            handlers.click(color, "m", render_size, saturation, event, request)
        except Exception as exc:  # noqa: BLE001 - Gradio shows any exception as that visitor's error
            assert str(exc) and "\n" not in str(exc), repr(exc)
            assert session.edit().points == before
            tally.refused += 1
            kind = type(exc).__name__
            tally.reasons[kind] = tally.reasons.get(kind, 0) + 1
            return
        tally.colorized += len(session.edit().points) > len(before)  # a point taken, not one explained away
        tally.rss_max_mb = max(tally.rss_max_mb, _rss_mb())
        how = handlers._how(session, "m", render_size, saturation)
        assert how.render_size in RENDER_SIZES and 0.0 <= how.saturation <= 2.0
        for point in session.edit().points:
            assert 0 <= point.x <= width - 1 and 0 <= point.y <= height - 1, point
            assert re.fullmatch(r"#[0-9a-f]{6}", point.color), point

    try:
        run()
    finally:
        handlers.state.end("fuzz")
        _report(tally, f"fuzz web clicks ({PROFILE})")
    assert tally.colorized > 0 and tally.refused > 0


def test_web_settings_that_are_not_numbers_are_a_value_error(tmp_path):
    from autocolor.web import Handlers, WebConfig, WebState

    handlers = Handlers(WebState(WebConfig(models={"m": "levin"}, samples=[]), tmp_path / "work"))
    session = type("Session", (), {"visitor": "v"})()
    for render_size, saturation in ((None, 1.0), (256, None), (256, [1]), (256, {"a": 1}), (float("inf"), 1.0),
                                     (256.5, 1.0), ("x", 1.0)):
        with pytest.raises(ValueError):
            handlers._how(session, "m", render_size, saturation)


def test_numpy_numbers_are_numbers_in_hints():
    from autocolor.guide import HintError, Hints

    for point in ((np.int64(3), 2, "#ff0000"), (3, np.float32(2.5), "#ff0000"), (3, 2, (np.uint8(9), 0, 0)),
                  (3, 2, np.array([9, 0, 0], np.uint8))):
        try:
            Hints.build([point]).check(24, 40)
        except HintError as exc:
            raise AssertionError(f"{point}: {exc}") from None
