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
