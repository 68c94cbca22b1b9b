"""Reading every odd file a user may hand us, and writing results safely."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from autocolor.imageio import (
    ImageError,
    encode_image,
    load_image,
    output_format_for,
    pil_to_array,
    read_image,
    save_image,
    split_pixels,
)


def gradient(h: int = 48, w: int = 64) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w)) * 255 // (h + w)).astype(np.uint8)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    with pytest.raises(ImageError, match="not an image"):
        read_image(path)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "nope.png")


def test_pixel_limit_refuses_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(path)
    with pytest.raises(ImageError, match="over the limit"):
        read_image(path, max_pixels=100_000)
    assert read_image(path, max_pixels=120_000)[0].size == (400, 300)


@pytest.mark.slow
def test_decompression_bomb_header(tmp_path):
    # A PNG that claims 30000 x 30000 pixels: refused from its header alone.
    path = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(path, optimize=True)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageError, match="over the pixel limit|over the limit"):
        read_image(path)


def test_one_pixel(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("L", (1, 1), 128).save(path)
    image = load_image(path)
    assert image.size == (1, 1) and image.mode == "L"


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 0, 0, 100)).save(path)
    image, notes = read_image(path)
    assert image.mode == "RGB" and any("CMYK" in n for n in notes)


def test_palette_png(tmp_path):
    path = tmp_path / "palette.png"
    Image.fromarray(gradient()).convert("P").save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    assert not split_pixels(pil_to_array(image)).color  # a gray palette is still gray


def test_rgba_and_la_keep_alpha(tmp_path):
    alpha = np.full((48, 64), 77, np.uint8)
    Image.fromarray(np.dstack([gradient(), alpha])).save(tmp_path / "la.png")
    Image.fromarray(np.dstack([gradient()] * 3 + [alpha])).save(tmp_path / "rgba.png")
    for name, mode in (("la.png", "LA"), ("rgba.png", "RGBA")):
        image = load_image(tmp_path / name)
        assert image.mode == mode
        pixels = split_pixels(pil_to_array(image))
        assert (pixels.alpha == 77).all() and not pixels.color


def test_16_bit_gray_png(tmp_path):
    values = (np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    pixels = split_pixels(pil_to_array(load_image(path)))
    assert pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels.gray, values)


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("L", (16, 16), v) for v in (10, 200, 90)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image, notes = read_image(path)
    assert any("first frame" in n for n in notes)
    assert np.asarray(image.convert("L"))[0, 0] == 10
    assert output_format_for(path) == "png"


def test_exif_rotation_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(gradient(40, 100)).save(path, exif=exif.tobytes())
    assert load_image(path).size == (40, 100)


def test_non_ascii_name(tmp_path):
    path = tmp_path / "фото ü 写真.png"
    Image.fromarray(gradient()).save(path)
    assert load_image(path).size == (64, 48)


@pytest.mark.parametrize(
    "array, dtype, color",
    [
        (gradient(), np.uint8, False),
        (gradient()[:, :, None], np.uint8, False),
        (np.dstack([gradient()] * 3), np.uint8, False),
        (np.dstack([gradient(), gradient() // 2, gradient()]), np.uint8, True),
        (gradient().astype(np.uint16) * 257, np.uint16, False),
        (gradient() / 255.0, np.float32, False),
    ],
)
def test_split_pixels_kinds(array, dtype, color):
    pixels = split_pixels(array)
    assert pixels.gray.shape == (48, 64) and pixels.gray.dtype == np.uint16
    assert pixels.dtype == dtype and pixels.color == color
    expected = gradient() if not color else gradient() * 0.299 + gradient() / 2 * 0.587 + gradient() * 0.114
    np.testing.assert_allclose(pixels.gray / 257.0, np.floor(expected) if color else expected, atol=1.0)


def test_split_pixels_rejects_bad_shapes():
    with pytest.raises(ImageError):
        split_pixels(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageError):
        split_pixels(np.zeros((4, 4), np.int64))


def test_save_16_bit_png_and_tiff_keep_16_bits(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for channels in (3, 4):
        rgb = rng.integers(0, 65536, (9, 13, channels), dtype=np.uint16)
        for suffix in ("png", "tif"):
            path = tmp_path / f"deep{channels}.{suffix}"
            save_image(rgb, path)
            back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            order = [2, 1, 0, 3][:channels]  # OpenCV reads BGR(A)
            assert back.dtype == np.uint16
            np.testing.assert_array_equal(back[:, :, order], rgb)


def test_save_8_bit_formats_and_alpha(tmp_path):
    rgba = np.dstack([np.dstack([gradient()] * 3), np.full((48, 64), 200, np.uint8)])
    for fmt in ("png", "jpg", "webp", "tiff", "bmp"):
        path = tmp_path / f"out.{fmt}"
        save_image(rgba, path, fmt)
        image = Image.open(path)
        assert image.size == (64, 48)
        assert image.mode == ("RGB" if fmt in ("jpg", "bmp") else "RGBA")  # JPEG has no alpha; Pillow reads BMP alpha as RGB
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_save_into_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageError, match="cannot write"):
        save_image(np.zeros((4, 4, 3), np.uint8), blocker / "sub" / "out.png")


def test_encode_unknown_format():
    with pytest.raises(ImageError, match="unknown output format"):
        encode_image(np.zeros((2, 2, 3), np.uint8), "gif")


# ---------------------------------------------------------------- depth, transparency, Pillow's settings, arrays


def png_bytes(samples: np.ndarray, color_type: int, trns: bytes | None = None, bits: int = 16) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit color): filter 0, one IDAT."""
    import struct
    import zlib

    h, w, c = samples.shape
    rows = np.ascontiguousarray(samples.astype(">u2" if bits == 16 else np.uint8)).reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, color_type, 0, 0, 0))
    extra = chunk(b"tRNS", trns) if trns is not None else b""
    return (b"\x89PNG\r\n\x1a\n" + header + extra + chunk(b"IDAT", zlib.compress(raw.tobytes()))
            + chunk(b"IEND", b""))


def deep_samples_files(root) -> dict[str, np.ndarray]:
    """48-bit RGB and 64-bit RGBA PNG and TIFF (OpenCV's: filtered PNG rows, LZW TIFF), 32-bit LA PNG."""
    cv2 = pytest.importorskip("cv2")
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    files = {}
    for channels in (3, 4):
        smooth = np.add.outer(np.arange(30) * 2000, np.arange(50) * 1000) % 65536  # (30, 50)
        samples = np.dstack([smooth, 65535 - smooth, rng.integers(0, 65536, (30, 50)), smooth // 3][:channels])
        samples = samples.astype(np.uint16)
        for suffix in ("png", "tif"):
            name = f"rgb{channels * 16}.{suffix}"
            cv2.imwrite(str(root / name), samples[:, :, [2, 1, 0, 3][:channels]])
            files[name] = samples
    la = np.dstack([np.arange(30 * 50).reshape(30, 50) * 43, np.full((30, 50), 40000)]).astype(np.uint16)
    (root / "la32.png").write_bytes(png_bytes(la, 4))
    files["la32.png"] = la
    return files


def transparent_files(root) -> dict[str, np.ndarray]:
    """Gray, 16-bit gray and RGB PNGs with a tRNS transparent color, and a GIF with a transparent index:
    name -> where the output must be transparent."""
    root.mkdir(parents=True, exist_ok=True)
    gray = gradient(30, 50)
    holes = gray == gray[0, 0]
    Image.fromarray(gray).save(root / "trns_gray.png", transparency=int(gray[0, 0]))
    Image.fromarray(np.dstack([gray] * 3)).save(root / "trns_rgb.png", transparency=(int(gray[0, 0]),) * 3)
    deep = gray.astype(np.uint16) * 257
    (root / "trns_gray16.png").write_bytes(png_bytes(deep[:, :, None], 0, trns=int(deep[0, 0]).to_bytes(2, "big")))
    Image.fromarray(gray).save(root / "trns.gif", transparency=int(gray[0, 0]))
    rgb48 = np.dstack([deep, deep // 2, deep])
    (root / "trns_rgb48.png").write_bytes(png_bytes(rgb48, 2, trns=rgb48[0, 0].astype(">u2").tobytes()))
    return {"trns_gray.png": holes, "trns_rgb.png": holes, "trns_gray16.png": holes, "trns.gif": holes,
            "trns_rgb48.png": holes}


def test_deep_color_is_read_at_16_bits(tmp_path):
    from autocolor.imageio import read_photo

    for name, samples in deep_samples_files(tmp_path).items():
        photo = read_photo(tmp_path / name)
        assert photo.samples.dtype == np.uint16, name
        np.testing.assert_array_equal(photo.samples, samples, err_msg=name)
        assert split_pixels(photo.samples).dtype == np.uint16


def test_deep_color_is_read_upright(tmp_path):
    import struct
    import zlib

    from autocolor.imageio import read_photo

    samples = np.random.default_rng(2).integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    payload = exif.tobytes()[6:]
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    data = png_bytes(samples, 2)
    (tmp_path / "rotated.png").write_bytes(data[:33] + chunk + data[33:])  # after the signature and IHDR
    np.testing.assert_array_equal(read_photo(tmp_path / "rotated.png").samples, np.rot90(samples, -1))


def test_transparent_color_becomes_alpha(tmp_path):
    from autocolor.imageio import read_photo

    for name, holes in transparent_files(tmp_path).items():
        readings = [read_photo(tmp_path / name).samples]
        if "48" not in name:  # Pillow's images hold 8 bits of 48-bit color, too few to match the color exactly
            readings.append(pil_to_array(load_image(tmp_path / name)))
        for samples in readings:
            pixels = split_pixels(samples)
            assert pixels.alpha is not None, name
            np.testing.assert_array_equal(pixels.alpha == 0, holes, err_msg=name)
            assert pixels.alpha.max() == np.iinfo(pixels.dtype).max


def test_reading_leaves_pillows_limit_alone(tmp_path, monkeypatch):
    # An application that imports autocolor keeps its own bomb limit; our reads
    # (here of images over it, in threads, as the batch decodes) never change it.
    from concurrent.futures import ThreadPoolExecutor

    for suffix in ("png", "tif", "gif", "jpg"):
        Image.fromarray(gradient(100, 100)).save(tmp_path / f"a.{suffix}")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    with ThreadPoolExecutor(8) as pool:
        shapes = list(pool.map(lambda p: load_image(p, max_pixels=50_000).size,
                               sorted(tmp_path.iterdir()) * 8))
    assert shapes == [(100, 100)] * 32
    assert read_image(tmp_path / "a.tif", max_pixels=10**9)[0].size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 4000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "a.png")  # still refused elsewhere in the process
    with pytest.raises(ImageError, match="over the limit"):
        read_image(tmp_path / "a.png", max_pixels=9_999)


def test_metadata_written_in_each_format(tmp_path):
    # What read_photo finds comes back out of save_image; the CLI tests cover the batch.
    from autocolor.imageio import Metadata, read_photo

    from test_cli_colorize import CAPTION, IPTC, XMP, archive_exif, srgb_profile

    meta = Metadata(exif=archive_exif(orientation=8).tobytes(), icc_profile=srgb_profile(), dpi=(600.0, 600.0),
                    xmp=XMP, iptc=IPTC)
    rgb = np.dstack([gradient()] * 3)
    for fmt in ("jpg", "png", "tiff", "webp"):
        save_image(rgb, tmp_path / f"out.{fmt}", fmt, metadata=meta)
        back = read_photo(tmp_path / f"out.{fmt}").metadata
        assert back.icc_profile == meta.icc_profile and CAPTION.encode() in back.xmp, fmt
        assert b"autocolor" in back.xmp and back.xmp.count(b"<rdf:li rdf:parseType") == 1
        exif = Image.Exif()
        exif.load(back.exif)
        assert exif[0x010E] == CAPTION and exif[0x0112] == 1 and exif[0x0131].startswith("autocolor "), fmt
        assert back.dpi == (600.0, 600.0) or (fmt == "webp" and back.dpi is None)
        assert back.iptc == (IPTC if fmt != "webp" else b""), fmt
    # A second pass appends to the history instead of starting another one.
    save_image(rgb, tmp_path / "again.png", "png", metadata=read_photo(tmp_path / "out.png").metadata)
    assert read_photo(tmp_path / "again.png").metadata.xmp.count(b"<rdf:li rdf:parseType") == 2


def test_gray_icc_profile_and_broken_xmp(tmp_path):
    from PIL import ImageCms

    from autocolor.imageio import Metadata, read_photo

    lab_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.fromarray(gradient()).save(tmp_path / "a.jpg", icc_profile=lab_profile, xmp=b"<not xml")
    meta = read_photo(tmp_path / "a.jpg").metadata
    assert meta.icc_profile == b"" and meta.xmp == b"<not xml"  # a Lab profile cannot describe RGB output
    save_image(np.dstack([gradient()] * 3), tmp_path / "b.jpg", metadata=meta)
    assert Image.open(tmp_path / "b.jpg").info["xmp"] == b"<not xml"  # copied as it was, not mangled
    assert read_photo(tmp_path / "b.jpg").metadata.exif != Metadata().exif  # autocolor's Software tag
    Image.fromarray(gradient()).save(tmp_path / "plain.tif")
    assert read_photo(tmp_path / "plain.tif").metadata.dpi is None  # not Pillow's stand-in (1, 1)


def test_unwritable_metadata_is_one_line(tmp_path, monkeypatch):
    import autocolor.imageio as imageio

    def broken(fmt, metadata, size, history):
        if metadata is not None:
            raise TypeError("unknown EXIF type")
        return {}

    monkeypatch.setattr(imageio, "_save_options", broken)
    with pytest.raises(ImageError, match=r"cannot write its metadata \(unknown EXIF type\); --strip-metadata"):
        save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png", metadata=imageio.Metadata())
    assert list(tmp_path.iterdir()) == []
