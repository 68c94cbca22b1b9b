"""`autocolor colorize` and `autocolor export` end to end, on a folder of awkward files."""

from __future__ import annotations

import io

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
