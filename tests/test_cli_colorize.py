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
