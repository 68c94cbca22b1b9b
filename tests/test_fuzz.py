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
    tally.cases += 1
    tally.max_seconds = max(tally.max_seconds, time.perf_counter() - started)
    tally.rss_max_mb = max(tally.rss_max_mb, _rss_mb())
    assert tally.rss_max_mb - tally.rss_start_mb < RSS_GROWTH_MB, tally.line("memory")


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
        tally.cases += 1
        tally.max_seconds = max(tally.max_seconds, time.perf_counter() - started)
        tally.rss_max_mb = max(tally.rss_max_mb, _rss_mb())
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
