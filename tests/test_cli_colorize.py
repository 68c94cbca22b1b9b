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
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == expected
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
