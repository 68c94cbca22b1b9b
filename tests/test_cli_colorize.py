"""`autocolor colorize` and `autocolor export` end to end, on a folder of awkward files."""

from __future__ import annotations

import functools
import io
import re

import numpy as np
import pytest
from PIL import Image

from autocolor.cli import main


def gradient(h: int = 40, w: int = 60) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w) * 2) % 256).astype(np.uint8)


def awkward_folder(root):
    """Good files of every kind beside the bad ones, some in a subfolder."""
    (root / "sub").mkdir(parents=True)
    Image.fromarray(gradient()).save(root / "gray.jpg")
    Image.fromarray(np.dstack([gradient(), gradient() // 2, 255 - gradient()])).save(root / "color.png")
    Image.fromarray(np.dstack([gradient(), np.full((40, 60), 128, np.uint8)])).save(root / "sub" / "la.png")
    Image.fromarray(gradient().astype(np.uint16) * 257).save(root / "sub" / "deep.png")
    Image.fromarray(gradient()).convert("P").save(root / "palette.png")
    Image.new("CMYK", (30, 20), (10, 20, 30, 40)).save(root / "cmyk.jpg")
    Image.new("L", (1, 1), 99).save(root / "dot.bmp")
    frames = [Image.new("L", (12, 12), v) for v in (0, 255)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(gradient(30, 80)).save(root / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(gradient()).save(root / "ñandú 写真.webp")
    Image.fromarray(gradient()).save(root / "scan.tif")
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("hello")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "sub" / "cut.jpg").write_bytes(buffer.getvalue()[:600])


def test_colorize_folder_end_to_end(model_dir, tmp_path, capsys):
    awkward_folder(tmp_path / "in")
    out = tmp_path / "out"
    args = ["colorize", str(tmp_path / "in"), "-o", str(out), "--model", str(model_dir), "--no-progress"]
    assert main(args) == 1  # some inputs failed
    err = capsys.readouterr().err
    for name, reason in [("empty.jpg", "empty file"), ("text.jpg", "not an image"), ("cut.jpg", "truncated")]:
        assert any(line.split(": ", 1)[0].endswith(name) and reason in line for line in err.splitlines()), name
    assert "first frame" in err and err.count("in color;") == 1
    assert "done 11, skipped 0 (already written), failed 3" in err
    expected = {"gray.jpg", "color.png", "sub/la.png", "sub/deep.png", "palette.png", "cmyk.jpg", "dot.bmp",
                "anim.png", "rotated.jpg", "ñandú 写真.webp", "scan.tif"}
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == expected | {".autocolor-record.jsonl"}
    assert Image.open(out / "rotated.jpg").size == (30, 80)  # EXIF applied
    assert Image.open(out / "sub" / "la.png").mode == "RGBA"
    assert Image.open(out / "dot.bmp").size == (1, 1)
    cv2 = pytest.importorskip("cv2")
    assert cv2.imread(str(out / "sub" / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16

    # A second sitting skips what is written; the bad files are reported again.
    assert main(args) == 1
    assert "done 0, skipped 11 (already written), failed 3" in capsys.readouterr().err
    assert main([*args[:-1], "--overwrite", "--format", "png", "--no-progress", "--keep-color"]) == 1


def test_output_folder_is_input_folder(model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(gradient()).save(tmp_path / "in" / "a.png")
    assert main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "in"), "--model", str(model_dir)]) == 2
    assert "output folder is the input folder" in capsys.readouterr().err
    assert Image.open(tmp_path / "in" / "a.png").mode == "L"  # untouched


def test_unwritable_output_folder(model_dir, tmp_path, capsys):
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    (tmp_path / "blocker").write_text("a file where the folder should be")
    args = ["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "blocker" / "out"), "--model", str(model_dir)]
    assert main(args) == 2
    assert "cannot create the output folder" in capsys.readouterr().err


def test_missing_default_weights_is_one_line(tmp_path, capsys, monkeypatch):
    import autocolor.inference as inference

    monkeypatch.setattr(inference, "default_model_dir", lambda: tmp_path / "nowhere")
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    assert main(["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere/model.safetensors" in err and "Traceback" not in err


def test_export_and_onnxruntime_backend(model_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["export", "--onnx", str(tmp_path / "m.onnx"), "--model", str(model_dir), "--render-size", "64"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 10_000
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    args = ["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model_dir),
            "--backend", "onnxruntime", "--format", "jpg", "--no-progress"]
    assert main(args) == 0
    assert Image.open(tmp_path / "out" / "a.jpg").size == (60, 40)


# ---------------------------------------------------------------- metadata and depth through the CLI

CAPTION = "Grandma Grace, Easter 1952"
XMP = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6">'
       f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{CAPTION}</rdf:li></rdf:Alt></dc:description>'
       '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()
IPTC = b"\x1c\x02\x78" + len(CAPTION).to_bytes(2, "big") + CAPTION.encode()  # dataset 2:120, the caption


@functools.lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    from PIL import ImageCms  # its profiles carry the time they were made: make one, once

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def archive_exif(orientation: int = 1):
    exif = Image.Exif()
    exif[0x010E] = CAPTION  # ImageDescription
    exif[0x013B] = "A. Photographer"  # Artist
    exif[0x8298] = "(c) 1952 The Family"  # Copyright
    exif[0x0132] = "1952:04:13 10:00:00"  # DateTime
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "1952:04:13 10:00:00"  # DateTimeOriginal
    return exif


def with_app13(jpeg: bytes, iptc: bytes) -> bytes:
    """A JPEG with an IPTC block spliced in after SOI, as Photoshop writes it."""
    block = b"8BIM\x04\x04\x00\x00" + len(iptc).to_bytes(4, "big") + iptc + b"\x00" * (len(iptc) % 2)
    segment = b"Photoshop 3.0\x00" + block
    return jpeg[:2] + b"\xff\xed" + (len(segment) + 2).to_bytes(2, "big") + segment + jpeg[2:]


def raw_profile(name: str, data: bytes) -> str:
    return f"\n{name}\n{len(data):8d}\n{data.hex()}\n"


def archive_scans(root, w: int = 60, h: int = 40):
    """A JPEG, a PNG and an 8- and a 16-bit TIFF scan, each carrying EXIF, an sRGB profile, dpi, XMP and IPTC."""
    from PIL import PngImagePlugin

    root.mkdir(parents=True, exist_ok=True)
    gray = Image.fromarray(gradient(h, w))
    buffer = io.BytesIO()
    gray.save(buffer, "JPEG", exif=archive_exif(orientation=6).tobytes(), icc_profile=srgb_profile(), dpi=(600, 600),
              xmp=XMP, quality=95)
    (root / "scan.jpg").write_bytes(with_app13(buffer.getvalue(), IPTC))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    info.add_text("Raw profile type iptc", raw_profile("iptc", IPTC), zip=True)
    gray.save(root / "scan.png", exif=archive_exif(), icc_profile=srgb_profile(), dpi=(600, 600), pnginfo=info)
    tags = {270: CAPTION, 315: "A. Photographer", 33432: "(c) 1952 The Family", 306: "1952:04:13 10:00:00",
            700: XMP, 33723: IPTC}
    gray.save(root / "scan.tif", tiffinfo=tags, icc_profile=srgb_profile(), dpi=(1200, 1200))
    Image.fromarray(gradient(h, w).astype(np.uint16) * 257).save(root / "deep.tif", tiffinfo=tags,
                                                                     icc_profile=srgb_profile(), dpi=(1200, 1200))


def assert_archive_metadata(path, dpi: float, iptc: bool = True, exif_ifd: bool = True):
    from PIL import IptcImagePlugin

    with Image.open(path) as im:
        exif = im.getexif()
        assert exif.get(0x010E) == CAPTION and exif.get(0x013B) == "A. Photographer", path
        assert exif.get(0x8298) == "(c) 1952 The Family" and exif.get(0x0132) == "1952:04:13 10:00:00"
        assert exif.get(0x0112, 1) == 1  # the pixels are upright now
        assert exif.get(0x0131, "").startswith("autocolor ")
        if exif_ifd:
            assert exif.get_ifd(0x8769).get(0x9003) == "1952:04:13 10:00:00"
        assert im.info.get("icc_profile") == srgb_profile()
        assert im.info["dpi"] == pytest.approx((dpi, dpi), abs=0.01)
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        xmp = xmp.decode() if isinstance(xmp, bytes) else xmp
        assert CAPTION in xmp and "<stEvt:softwareAgent>autocolor " in xmp
        assert not re.search(r'tiff:Orientation(="|>)[2-8]', xmp)  # XMP's copy of the orientation is upright too
        if iptc:
            raw = im.info.get("Raw profile type iptc")  # PNG's place for IPTC, as ImageMagick writes it
            if raw is not None:
                assert bytes.fromhex("".join(raw.split()[2:])) == IPTC
            else:
                assert (IptcImagePlugin.getiptcinfo(im) or {}).get((2, 120)) == CAPTION.encode(), path


def test_metadata_survives_the_cli(model_dir, tmp_path):
    archive_scans(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["colorize", str(tmp_path / "in"), "-o", str(out), "--model", str(model_dir), "--no-progress"]) == 0
    assert Image.open(out / "scan.jpg").size == (40, 60)  # EXIF orientation 6 applied, then reset to 1
    assert_archive_metadata(out / "scan.jpg", 600)
    assert_archive_metadata(out / "scan.png", 600)
    assert_archive_metadata(out / "scan.tif", 1200, exif_ifd=False)
    assert_archive_metadata(out / "deep.tif", 1200, exif_ifd=False)
    cv2 = pytest.importorskip("cv2")
    assert cv2.imread(str(out / "deep.tif"), cv2.IMREAD_UNCHANGED).dtype == np.uint16

    # Into every other format that can hold it (WebP: no IPTC); 16-bit PNG from the 16-bit TIFF.
    for fmt, dpi in (("png", 1200), ("jpg", 600), ("webp", None)):
        target = tmp_path / fmt
        assert main(["colorize", str(tmp_path / "in" / "deep.tif"), "-o", str(target), "--model", str(model_dir),
                     "--no-progress", "--format", fmt]) == 0
        suffix = {"jpg": ".jpg", "png": ".png", "webp": ".webp"}[fmt]
        with Image.open(target / f"deep{suffix}") as im:
            exif, xmp = im.getexif(), im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
            assert exif.get(0x010E) == CAPTION and exif.get(0x0131, "").startswith("autocolor ")
            assert im.info.get("icc_profile") == srgb_profile() and CAPTION in str(xmp)
            if dpi:
                assert im.info["dpi"] == pytest.approx((1200, 1200), abs=0.01)
            else:
                assert exif.get(0x011A) == 1200  # WebP keeps dpi in EXIF only
    assert cv2.imread(str(tmp_path / "png" / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert_archive_metadata(tmp_path / "png" / "deep.png", 1200, exif_ifd=False)


def test_strip_metadata(model_dir, tmp_path):
    archive_scans(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["colorize", str(tmp_path / "in"), "-o", str(out), "--model", str(model_dir), "--no-progress",
                 "--strip-metadata"]) == 0
    for name in ("scan.jpg", "scan.png", "scan.tif", "deep.tif"):
        with Image.open(out / name) as im:
            exif = im.getexif()
            assert not {0x010E, 0x013B, 0x8298, 0x0131} & set(exif), name
            assert not {"icc_profile", "xmp", "XML:com.adobe.xmp", "Raw profile type iptc", "photoshop"} & set(im.info)
            assert im.info.get("dpi", (72, 72)) in ((72, 72), (1, 1)), name  # the format's default, not the scan's


def test_deep_color_and_transparency_survive_the_cli(model_dir, tmp_path):
    cv2 = pytest.importorskip("cv2")
    from test_imageio import deep_samples_files, transparent_files  # pytest puts tests/ on the path

    inputs = tmp_path / "in"
    deep = deep_samples_files(inputs)
    holes = transparent_files(inputs)
    out = tmp_path / "out"
    assert main(["colorize", str(inputs), "-o", str(out), "--model", str(model_dir), "--no-progress"]) == 0
    for name, samples in deep.items():
        back = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16, name
        if samples.shape[2] in (2, 4):
            np.testing.assert_array_equal(back[:, :, 3], samples[:, :, -1])  # 16-bit alpha, exactly
    for name, transparent in holes.items():
        with Image.open((out / name).with_suffix(".png")) as im:  # GIF comes out as PNG
            assert im.mode == "RGBA", name
            alpha = np.asarray(im)[:, :, 3]
        np.testing.assert_array_equal(alpha == 0, transparent, err_msg=name)


def test_keep_color_copies_the_file(model_dir, tmp_path):
    (tmp_path / "in").mkdir()
    color = np.dstack([gradient(), gradient() // 2, 255 - gradient()])
    buffer = io.BytesIO()
    Image.fromarray(color).save(buffer, "JPEG", quality=80, exif=archive_exif().tobytes())
    (tmp_path / "in" / "color.jpg").write_bytes(buffer.getvalue())
    before = buffer.getvalue()
    args = ["colorize", str(tmp_path / "in"), "--model", str(model_dir), "--no-progress", "--keep-color"]
    assert main([*args, "-o", str(tmp_path / "same")]) == 0
    assert (tmp_path / "same" / "color.jpg").read_bytes() == before  # not one generation of JPEG loss
    assert main([*args, "-o", str(tmp_path / "png"), "--format", "png"]) == 0
    with Image.open(tmp_path / "png" / "color.png") as im:
        assert im.format == "PNG" and im.getexif().get(0x010E) == CAPTION
    assert (tmp_path / "in" / "color.jpg").read_bytes() == before  # the input is only read


# ---------------------------------------------------------------- a CLI that behaves like a Unix tool (issue 16)

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _cli(*args, input=None, timeout=120):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "autocolor", *args], input=input, capture_output=True, env=env,
                          timeout=timeout)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_building_the_parser_imports_no_torch_and_help_is_fast():
    code = "import sys; from autocolor.cli import build_parser; build_parser(); print(sorted({'torch', 'numpy', 'PIL'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    started = time.perf_counter()
    result = _cli("colorize", "--help")
    assert result.returncode == 0 and b"--saturation" in result.stdout
    assert time.perf_counter() - started < 1.5  # was 2-3 s, importing torch


def test_version():
    from autocolor import __version__

    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.decode().strip() == f"autocolor {__version__}"


@pytest.mark.parametrize("flag,value", [
    ("--saturation", "nan"), ("--saturation", "inf"), ("--saturation", "1e30"), ("--saturation", "-1"),
    ("--render-size", "7"), ("--render-size", "3000"), ("--quality", "150"), ("--quality", "0"),
    ("--batch-size", "0"), ("--batch-size", "-3"), ("--workers", "-1"), ("--max-pixels", "0"), ("--threads", "x"),
])
def test_numeric_flags_out_of_range_are_one_line(tmp_path, capsys, flag, value):
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as stop:
        main(["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "levin", flag, value])
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert flag in line and "must be" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_serve_refuses_a_port_outside_1_to_65535_in_one_line(capsys, port):
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--port", port])
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--port" in line and "must be" in line


def test_batch_size_zero_ends_at_once(tmp_path):
    """Issue 17 item 7: --batch-size 0 looped forever."""
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    result = _cli("colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "levin",
                  "--batch-size", "0", timeout=60)
    assert result.returncode == 2 and b"--batch-size" in result.stderr


def test_non_finite_saturation_is_refused_at_every_api_entrance(model_dir, tmp_path):
    """Issue 17 item 3: NaN/inf/huge saturation gave an IndexError, black images or NaN."""
    from autocolor.inference import Colorizer, colorize_files, plan_jobs

    colorizer = Colorizer.load(model_dir)
    Image.fromarray(gradient().astype(np.uint16) * 257).save(tmp_path / "deep.png")
    jobs, _ = plan_jobs([str(tmp_path / "deep.png")], tmp_path / "out")
    for bad in (float("nan"), float("inf"), 1e30, -1.0, np.float32("nan")):
        with pytest.raises(ValueError, match="saturation must be a number from 0 to 4"):
            colorizer.colorize(gradient(), saturation=bad)
        with pytest.raises(ValueError, match="saturation"):
            colorizer.colorize_pixels([], saturation=bad)
        with pytest.raises(ValueError, match="saturation"):
            colorize_files(colorizer, jobs, saturation=bad, progress=False)
    for kwargs in ({"render_size": 7}, {"render_size": 3000}, {"render_size": float("nan")}, {"batch_size": 0},
                   {"quality": 150}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            colorize_files(colorizer, jobs, progress=False, **kwargs)
    assert not (tmp_path / "out").exists()
    assert colorizer.colorize(gradient(), saturation=0).shape == (40, 60, 3)


def test_one_file_to_a_named_output_file(model_dir, tmp_path, capsys):
    Image.fromarray(gradient()).save(tmp_path / "tower.png")
    assert main(["colorize", str(tmp_path / "tower.png"), "-o", str(tmp_path / "tower_colored.jpg"),
                 "--model", str(model_dir), "--no-progress"]) == 0
    with Image.open(tmp_path / "tower_colored.jpg") as im:  # a JPEG file, not a folder of that name
        assert im.format == "JPEG" and im.size == (60, 40)
    assert main(["colorize", str(tmp_path / "tower.png"), "-o", str(tmp_path / "tower_colored.jpg"),
                 "--model", str(model_dir)]) == 0
    assert "skipped 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="names one output file"):
        main(["colorize", str(tmp_path), "-o", str(tmp_path / "x.png"), "--model", str(model_dir)])
    with pytest.raises(SystemExit, match="input itself"):
        main(["colorize", str(tmp_path / "tower.png"), "-o", str(tmp_path / "tower.png"), "--model", str(model_dir)])


def test_stdin_to_stdout_in_a_pipe(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, "PNG")
    result = _cli("colorize", "-", "-o", "-", "--model", "levin", input=buffer.getvalue())
    assert result.returncode == 0, result.stderr.decode()
    with Image.open(io.BytesIO(result.stdout)) as im:
        assert im.format == "PNG" and im.size == (60, 40)
    assert not list(Path(".").glob("-"))  # no folder named "-"
    assert b"\x1b[" not in result.stderr and b"img/s" not in result.stderr  # no progress bar off a terminal


def test_json_summary_has_one_record_per_file(model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(gradient()).save(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"")
    args = ["colorize", str(tmp_path / "in"), str(tmp_path / "missing.png"), "-o", str(tmp_path / "out"),
            "--model", str(model_dir), "--json"]
    assert main(args) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    files = {Path(f["input"]).name: f for f in report["files"]}
    assert set(files) == {"a.png", "bad.jpg", "missing.png"} and report["done"] == 1 and report["failed"] == 2
    assert files["a.png"]["status"] == "done" and files["a.png"]["output"].endswith("a.png")
    assert files["a.png"]["seconds"] > 0 and files["a.png"]["reason"] is None
    assert files["bad.jpg"]["status"] == "failed" and "empty file" in files["bad.jpg"]["reason"]
    assert files["missing.png"]["reason"] == "no such file or folder"
    assert "img/s" not in captured.err  # stderr is not a terminal: no progress bar
    assert main(args) == 1
    again = {Path(f["input"]).name: f["status"] for f in json.loads(capsys.readouterr().out)["files"]}
    assert again["a.png"] == "skipped"


def test_missing_gpu_and_missing_extra_name_the_fix(model_dir, tmp_path, capsys, monkeypatch):
    import torch

    Image.fromarray(gradient()).save(tmp_path / "a.png")
    base = ["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "levin"]
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 2
        assert "no CUDA GPU is visible" in one_error_line(capsys.readouterr().err)
    assert main([*base, "--device", "cuda:99"]) == 2
    assert "cuda" in one_error_line(capsys.readouterr().err)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the [onnx] extra were not installed
    assert main([*base[:-1], str(model_dir), "--backend", "onnxruntime"]) == 2
    assert "pip install 'autocolor[onnx]'" in one_error_line(capsys.readouterr().err)


def test_device_auto_is_the_default():
    from autocolor.cli import build_parser

    assert build_parser().parse_args(["colorize", "a.png", "-o", "out"]).device == "auto"


# ---------------------------------------------------------------- hardening (issue 17)


def _photo(path, value=0, size=(60, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((gradient(size[1], size[0]) // 2 + value).astype(np.uint8)).save(path)
    return path.read_bytes()


def test_nested_output_folder_never_replaces_an_original(model_dir, tmp_path, capsys):
    """Item 1: `colorize n/photos -o n/photos/2019 --overwrite` replaced the original 2019/a.jpg."""
    _photo(tmp_path / "n" / "photos" / "a.jpg", 0)
    original = _photo(tmp_path / "n" / "photos" / "2019" / "a.jpg", 60)
    for extra in ([], ["--overwrite"]):
        code = main(["colorize", str(tmp_path / "n" / "photos"), "-o", str(tmp_path / "n" / "photos" / "2019"),
                     "--model", str(model_dir), *extra])
        err = capsys.readouterr().err
        assert code == 1 and "would overwrite an input" in err and "skipped 1" not in err
        assert (tmp_path / "n" / "photos" / "2019" / "a.jpg").read_bytes() == original


def test_an_output_of_another_input_with_the_same_name_is_not_skipped(model_dir, tmp_path, capsys):
    """Item 2: `colorize d1 -o out` then `colorize d2 -o out` skipped d2's photo.jpg by its name."""
    _photo(tmp_path / "d1" / "photo.jpg", 0)
    _photo(tmp_path / "d2" / "photo.jpg", 90)
    run = lambda folder, *extra: main(["colorize", str(tmp_path / folder), "-o", str(tmp_path / "out"),  # noqa: E731
                                       "--model", str(model_dir), *extra])
    assert run("d1") == 0
    first = (tmp_path / "out" / "photo.jpg").read_bytes()
    capsys.readouterr()
    assert run("d2") == 1
    err = capsys.readouterr().err
    assert "skipped 0" in err and "is not this input's output" in err and "--overwrite" in err
    assert (tmp_path / "out" / "photo.jpg").read_bytes() == first  # left alone
    assert run("d1") == 0 and "skipped 1" in capsys.readouterr().err  # its own input: known as done
    os.utime(tmp_path / "d1" / "photo.jpg", ns=(1, 1))  # the input changed since
    assert run("d1") == 1 and "skipped 0" in capsys.readouterr().err
    assert run("d2", "--overwrite") == 0 and run("d2") == 0 and "skipped 1" in capsys.readouterr().err
    (tmp_path / "out" / "photo.jpg").unlink()
    (tmp_path / "out" / "photo.jpg").mkdir()  # a folder where the output goes is not "already written"
    assert run("d2") == 1 and "a folder is in the way" in capsys.readouterr().err


def test_a_memory_error_in_one_file_does_not_end_the_batch(model_dir, tmp_path, capsys, monkeypatch):
    """Item 6: a MemoryError (or any other per-file error) ended the whole batch with a traceback."""
    import autocolor.imageio as imageio
    import autocolor.inference as inference

    for name in ("a", "b", "c"):
        _photo(tmp_path / "in" / f"{name}.png", 0, size=(60 + ord(name), 40))
    real = imageio.encode_image

    def flaky(array, fmt, quality=92, *args, **kwargs):
        if array.shape[1] == 60 + ord("a"):
            raise MemoryError()
        return real(array, fmt, quality, *args, **kwargs)

    monkeypatch.setattr(imageio, "encode_image", flaky)
    monkeypatch.setattr(inference, "encode_image", flaky, raising=False)
    assert main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert "a.png: cannot encode (MemoryError" in err and "done 2, skipped 0 (already written), failed 1" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["b.png", "c.png"]


def test_decoded_images_waiting_for_the_model_are_bounded_by_bytes(model_dir, tmp_path, monkeypatch):
    """Item 8: up to 16 images were decoded ahead whatever their size (ten 40 MP PNGs: 5 GB)."""
    import autocolor.inference as inference

    for i in range(10):
        _photo(tmp_path / "in" / f"{i}.png", i, size=(1000, 1000))  # 2 MB each as 16-bit gray
    budget = 4_000_000
    monkeypatch.setattr(inference, "LOOKAHEAD_BYTES", budget, raising=False)
    colorizer = inference.Colorizer.load(model_dir)
    decoded, consumed, peak = [0], [0], [0]
    real_read, real_colorize = inference.read_photo, colorizer.colorize_pixels

    def read(*args):
        photo = real_read(*args)
        decoded[0] += 1
        peak[0] = max(peak[0], decoded[0] - consumed[0])
        return photo

    def colorize(batch, *args):
        time.sleep(0.1)  # a slow model: the decoders run ahead as far as they are let
        consumed[0] += len(batch)
        return real_colorize(batch, *args)

    monkeypatch.setattr(inference, "read_photo", read)
    monkeypatch.setattr(colorizer, "colorize_pixels", colorize)
    jobs, _ = inference.plan_jobs([str(tmp_path / "in")], tmp_path / "out")
    summary = inference.colorize_files(colorizer, jobs, progress=False, batch_size=1, workers=2, render_size=64)
    assert summary.done == 10
    image_bytes = 1000 * 1000 * 2
    assert peak[0] * image_bytes <= budget + 2 * image_bytes, peak[0]  # the budget plus the two being decoded


def _folder_with_model(tmp_path, name, guided=False, width=16):
    import torch

    from autocolor.checkpoint import save_model
    from autocolor.models import create_model

    torch.manual_seed(0)
    folder = tmp_path / name
    save_model(create_model("chroma-unet", width=width, guided=guided), folder)
    return folder


def _edit_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _broken_model(tmp_path, case: str) -> Path:
    """A model folder broken in one of the ways issue 17 item 9 lists."""
    from safetensors.torch import load_file, save_file

    folder = _folder_with_model(tmp_path, "m")
    weights = folder / "model.safetensors"
    edits = {
        "kwargs-list": lambda c: c.update(kwargs=[16]),
        "kwargs-null": lambda c: c.update(kwargs=None),
        "width-negative": lambda c: c["kwargs"].update(width=-16),
        "width-huge": lambda c: c["kwargs"].update(width=2000),
        "width-string": lambda c: c["kwargs"].update(width="16"),
        "unknown-kwarg": lambda c: c["kwargs"].update(depth=3),
        "model-unknown": lambda c: c.update(model="resnet-9000"),
        "model-list": lambda c: c.update(model=["chroma-unet"]),
        "legacy-temperature-zero": lambda c: c["kwargs"].update(temperature=0),
    }
    if case in edits:
        _edit_config(folder, edits[case])
        if case.startswith("legacy"):
            (folder / "decoding.json").unlink()  # older folders kept decoding among the kwargs
    elif case == "temperature-zero":
        (folder / "decoding.json").write_text('{"temperature": 0}')
    elif case == "temperature-string":
        (folder / "decoding.json").write_text('{"temperature": "hot"}')
    elif case in ("decoding-nan", "decoding-inf"):
        (folder / "decoding.json").write_text('{"chroma_scale": %s}' % ("NaN" if case == "decoding-nan" else "Infinity"))
    elif case == "decoding-list":
        (folder / "decoding.json").write_text("[1, 2]")
    elif case == "deep-json":
        (folder / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    elif case == "config-folder":
        (folder / "config.json").unlink()
        (folder / "config.json").mkdir()
    elif case == "config-dev-zero":
        (folder / "config.json").unlink()
        (folder / "config.json").symlink_to("/dev/zero")
    elif case == "config-fifo":
        (folder / "config.json").unlink()
        os.mkfifo(folder / "config.json")
    elif case == "weights-fifo":
        weights.unlink()
        os.mkfifo(weights)
    elif case == "weights-folder":
        weights.unlink()
        weights.mkdir()
    elif case == "model-is-a-file":
        return weights.with_name("photo.jpg") if _photo(weights.with_name("photo.jpg")) else folder
    elif case in ("weights-int8", "weights-bool", "weights-nan", "class-weights-zero", "wrong-shape"):
        state = load_file(str(weights))
        key = "head.weight"
        if case == "weights-int8":
            state[key] = state[key].to(dtype=__import__("torch").int8)
        elif case == "weights-bool":
            state[key] = state[key] > 0
        elif case == "weights-nan":
            state[key][0] = float("nan")
        elif case == "class-weights-zero":
            state["class_weights"][:] = 0
        else:
            _edit_config(folder, lambda c: c["kwargs"].update(width=24))  # every layer the wrong shape
        save_file(state, str(weights))
    else:
        raise AssertionError(case)
    return folder


BROKEN_MODELS = ["kwargs-list", "kwargs-null", "width-negative", "width-huge", "width-string", "unknown-kwarg",
                 "model-unknown", "model-list", "legacy-temperature-zero", "temperature-zero", "temperature-string",
                 "decoding-nan", "decoding-inf", "decoding-list", "deep-json", "config-folder", "config-dev-zero",
                 "config-fifo", "weights-fifo", "weights-folder", "model-is-a-file", "weights-int8", "weights-bool",
                 "weights-nan", "class-weights-zero", "wrong-shape"]


HANGING_MODELS = ("config-dev-zero", "config-fifo", "weights-fifo")  # before the fix: ate memory or hung


@pytest.mark.parametrize("case", BROKEN_MODELS)
def test_a_broken_model_folder_is_one_line(tmp_path, capsys, case):
    """Item 9: broken model folders gave tracebacks (one ran to 103 lines), a FIFO config hung and a
    link to /dev/zero read until memory ran out: those run in a child with a memory and time limit."""
    model = _broken_model(tmp_path, case)
    _photo(tmp_path / "a.png")
    args = ["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model)]
    if case in HANGING_MODELS:
        code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
                "from autocolor.cli import main; sys.exit(main(sys.argv[1:]))")
        env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=env, timeout=60)
        returncode, err = result.returncode, result.stderr.decode()
    else:
        returncode, err = main(args), capsys.readouterr().err
    line = one_error_line(err)
    assert returncode == 2 and line.startswith("error: ") and str(tmp_path) in line, line
    assert not (tmp_path / "out" / "a.png").exists()


def test_onnx_cache_follows_the_content_of_the_model_folder(tmp_path, monkeypatch):
    """Item 4: model.onnx was reused whenever newer than the weights, even after decoding.json changed."""
    pytest.importorskip("onnxruntime")
    from autocolor.inference import Colorizer

    monkeypatch.setenv("AUTOCOLOR_CACHE", str(tmp_path / "cache"))

    folder = _folder_with_model(tmp_path, "m")
    gray = gradient(64, 64)
    assert main(["export", "--onnx", str(folder / "model.onnx"), "--model", str(folder), "--render-size", "64"]) == 0
    (folder / "decoding.json").write_text('{"temperature": 1.0, "chroma_scale": 3.0}')
    time.sleep(0.01)
    os.utime(folder / "model.onnx")  # the exported graph is newer than everything
    torch_rgb = Colorizer.load(folder).colorize(gray, render_size=64)
    onnx_rgb = Colorizer.load(folder, backend="onnxruntime").colorize(gray, render_size=64)
    assert np.abs(torch_rgb.astype(int) - onnx_rgb.astype(int)).max() <= 2
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1  # exported once, then reused
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "decoding.json", "model.onnx",
                                                       "model.safetensors"]  # the model folder is not written to
    cached[0].write_bytes(b"damaged")
    again = Colorizer.load(folder, backend="onnxruntime").colorize(gray, render_size=64)
    assert np.array_equal(again, onnx_rgb)


def test_ctrl_c_ends_with_a_summary_and_whole_files(tmp_path):
    """Item 11: Ctrl-C gave a KeyboardInterrupt traceback and no summary."""
    for i in range(300):
        _photo(tmp_path / "in" / f"{i:03d}.png", i % 50, size=(320, 240))
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "autocolor", "colorize", str(tmp_path / "in"), "-o",
                             str(tmp_path / "out"), "--model", "levin", "--workers", "1"],
                            stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((tmp_path / "out").glob("*.png"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted" in err and "done " in err
    written = list((tmp_path / "out").glob("*.png"))
    assert 3 <= len(written) < 300 and not list((tmp_path / "out").glob(".*.part"))
    for path in written:
        with Image.open(path) as im:
            im.load()  # whole
    assert main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "levin"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 300


def test_leftover_temporaries_of_killed_runs_are_removed(tmp_path, capsys):
    """Item 11: SIGKILL left .part files that no later run cleaned."""
    from autocolor.atomic import temporary_prefix as _temporary_prefix

    _photo(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = _temporary_prefix().rsplit("-", 2)[0]
    stale = [out / f"{mine}-{dead.pid}-abc123.part", out / ".a.png.k2j4h5g6.part"]  # new style, and older versions'
    live = out / f"{mine}-{os.getpid()}-def456.part"  # a run still going
    for path in [*stale, live]:
        path.write_bytes(b"half an image")
    os.utime(stale[1], (time.time() - 7200, time.time() - 7200))
    assert main(["colorize", str(tmp_path / "in"), "-o", str(out), "--model", "levin"]) == 0
    assert not any(p.exists() for p in stale) and live.exists()


def test_names_of_255_bytes_can_be_written(tmp_path):
    """Item 11: the temporary name added 15 bytes, so 241-255-byte names could not be written."""
    name = "é" * 100 + "a" * 51 + ".png"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    _photo(tmp_path / "in" / name)
    assert main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "levin"]) == 0
    assert (tmp_path / "out" / name).is_file()


def test_outputs_are_on_disk_before_they_take_their_name(tmp_path, monkeypatch):
    """Item 11: without fsync before the rename a power loss could leave an empty file taken as done."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"), real_replace(a, b))[1])
    _photo(tmp_path / "in" / "a.png")
    assert main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "levin"]) == 0
    assert "replace a.png" in events
    assert events[events.index("replace a.png") - 1] == "fsync"


def test_linked_folders_are_followed_and_dangling_links_reported(tmp_path, capsys):
    """Item 12: symlinked subfolders and dangling links were skipped without a word."""
    _photo(tmp_path / "elsewhere" / "b.png")
    _photo(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
    (tmp_path / "in" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "levin"]) == 1
    err = capsys.readouterr().err
    assert (tmp_path / "out" / "linked" / "b.png").is_file() and (tmp_path / "out" / "a.png").is_file()
    assert "gone.png: a link to" in err and "does not exist" in err and "link loop" in err


def test_nothing_to_colorize_says_why(tmp_path, capsys):
    """Item 12: "nothing to colorize" gave no reason when the input sits inside the output folder."""
    _photo(tmp_path / "out" / "photos" / "a.png")
    assert main(["colorize", str(tmp_path / "out" / "photos"), "-o", str(tmp_path / "out"), "--model", "levin"]) == 1
    err = capsys.readouterr().err
    assert "inside the output folder" in err and "nothing to colorize" in err


def test_file_names_cannot_drive_the_terminal(tmp_path, capsys):
    """Item 17: names with escape sequences or newlines were printed raw (terminal title, fake summary lines)."""
    (tmp_path / "in").mkdir()
    evil = "x\x1b]0;pwned\x07\ndone 99, skipped 0 (already written), failed 0.jpg"
    (tmp_path / "in" / evil).write_bytes(b"")
    assert main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "levin"]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert [line for line in err.splitlines() if line.startswith("done ")] == [
        "done 0, skipped 0 (already written), failed 1"]
    assert "\\x1b]0;pwned\\x07\\ndone 99" in err


# ---------------------------------------------------------------- hints from the command line (issue 14 item 4)


def test_points_json_round_trips_through_the_cli(tmp_path):
    from autocolor.guide import Hints, load_points
    from autocolor.inference import Colorizer

    gray = np.full((40, 60), 150, np.uint8)
    gray[:, 30:] = 60  # two regions with an edge between
    Image.fromarray(gray).save(tmp_path / "photo.png")
    hints = Hints.build([(10, 20, "#2060e0"), {"x": 45, "y": 5, "color": [200, 120, 40]}])
    (tmp_path / "points.json").write_text(hints.to_json())
    assert Hints.build(load_points(tmp_path / "points.json")) == hints  # the format round-trips
    assert main(["colorize", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out.png"), "--model", "levin",
                 "--hints", str(tmp_path / "points.json")]) == 0
    cli = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(int)
    api = Colorizer.load("levin").colorize(gray, hints=load_points(tmp_path / "points.json"))
    assert np.array_equal(cli, api)
    left, right = cli[:, :25].mean(axis=(0, 1)), cli[:, 35:].mean(axis=(0, 1))
    assert left[2] > left[0] + 20 and right[0] > right[2] + 20  # blue left, orange right


def test_scribbles_round_trip_through_the_cli(tmp_path):
    from autocolor.inference import Colorizer

    gray = np.full((40, 60), 150, np.uint8)
    gray[:, 30:] = 60
    Image.fromarray(gray).save(tmp_path / "photo.png")
    strokes = np.zeros((40, 60, 4), np.uint8)
    strokes[15:25, 5:20] = (40, 90, 220, 255)
    strokes[15:25, 40:55] = (60, 170, 60, 255)
    Image.fromarray(strokes, "RGBA").save(tmp_path / "strokes.png")
    assert main(["colorize", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out.png"), "--model", "levin",
                 "--scribbles", str(tmp_path / "strokes.png")]) == 0
    cli = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(int)
    assert np.array_equal(cli, Colorizer.load("levin").colorize(gray, scribble=strokes))
    assert cli[:, :25, 2].mean() > cli[:, :25, 0].mean() + 20 and cli[:, 35:, 1].mean() > cli[:, 35:, 0].mean() + 10


def test_one_reference_photo_for_a_whole_folder(tmp_path, capsys):
    from autocolor.guide import Hints
    from autocolor.inference import Colorizer

    model = _folder_with_model(tmp_path, "guided", guided=True)
    _photo(tmp_path / "album" / "a.png", 0, size=(60, 40))
    _photo(tmp_path / "album" / "b.png", 30, size=(48, 64))
    Image.fromarray(np.dstack([gradient(), gradient() // 3, 255 - gradient()])).save(tmp_path / "ref.jpg")
    assert main(["colorize", str(tmp_path / "album"), "-o", str(tmp_path / "out"), "--model", str(model),
                 "--reference", str(tmp_path / "ref.jpg")]) == 0
    colorizer = Colorizer.load(model)
    reference = np.asarray(Image.open(tmp_path / "ref.jpg").convert("RGB"))
    for name in ("a.png", "b.png"):
        cli = np.asarray(Image.open(tmp_path / "out" / name).convert("RGB"))
        api = colorizer.colorize(np.asarray(Image.open(tmp_path / "album" / name)), hints=Hints.build((), None, reference))
        assert np.array_equal(cli, api), name


def test_bad_hints_are_one_clear_line(model_dir, tmp_path, capsys):
    _photo(tmp_path / "photo.png")
    base = ["colorize", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out.png"), "--model", "levin"]
    cases = {
        "not json": ("points.json", "{oops", "not valid JSON"),
        "no points": ("points.json", '{"dots": []}', 'expected {"points"'),
        "bad color": ("points.json", '{"points": [{"x": 1, "y": 2, "color": "#12"}]}', "hint 1: color '#12' is not #rrggbb"),
        "nan x": ("points.json", '{"points": [{"x": NaN, "y": 2, "color": "#123456"}]}', "x must be a number"),
    }
    for label, (name, text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        assert main([*base, "--hints", str(tmp_path / name)]) == 2, label
        line = one_error_line(capsys.readouterr().err)
        assert expected in line and str(tmp_path / name) in line, (label, line)
    (tmp_path / "points.json").write_text('{"points": [{"x": 500, "y": 5, "color": "#123456"}]}')
    assert main([*base, "--hints", str(tmp_path / "points.json")]) == 1  # it does not fit this photo
    assert "hint 1 at (x=500, y=5) is outside the 60x40 image" in capsys.readouterr().err
    Image.fromarray(gradient()).save(tmp_path / "no_alpha.png")
    assert main([*base, "--scribbles", str(tmp_path / "no_alpha.png")]) == 2
    assert "--scribbles" in one_error_line(capsys.readouterr().err)
    assert main([*base, "--reference", str(tmp_path / "missing.jpg")]) == 2
    assert "--reference" in one_error_line(capsys.readouterr().err)
    (tmp_path / "points.json").write_text('{"points": [{"x": 5, "y": 5, "color": "#123456"}]}')
    assert main([*base[:-1], str(model_dir), "--hints", str(tmp_path / "points.json")]) == 2
    assert "takes no color hints" in one_error_line(capsys.readouterr().err)


def test_the_parsers_torch_free_constants_match_the_library():
    from autocolor import imageio, pipeline, settings

    assert settings.DEFAULT_MAX_PIXELS == imageio.DEFAULT_MAX_PIXELS
    assert settings.DEFAULT_RENDER_SIZE == pipeline.DEFAULT_RENDER_SIZE
    assert settings.OUTPUT_FORMATS == tuple(imageio.OUTPUT_FORMATS)
    assert settings.INPUT_EXTENSIONS == imageio.INPUT_EXTENSIONS
    assert {s: f for s, f in settings.SUFFIX_FORMATS.items()} == {
        s: imageio.output_format_for(Path("x" + s)) for s in settings.SUFFIX_FORMATS}
