"""The torch-free onnxruntime path: the same colors as the PyTorch pipeline, and no torch imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autocolor import color, ort_runner, pipeline, settings
from autocolor.cli import main
from autocolor.imageio import split_pixels
from autocolor.inference import Colorizer

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "src" / "autocolor" / "samples"


def gradient(h: int = 40, w: int = 60) -> np.ndarray:
    return (np.add.outer(np.arange(h) * 3, np.arange(w) * 2) % 256).astype(np.uint8)


# ---------------------------------------------------------------- the numpy half agrees with the torch half


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_numpy_merge_is_the_torch_merge_within_one_level(dtype):
    rng = np.random.default_rng(0)
    for b, h, w, hh, ww in [(1, 400, 640, 52, 80), (2, 37, 53, 4, 12), (1, 1, 1, 4, 4), (1, 300, 7, 75, 2)]:
        gray = rng.integers(0, 65536, (b, h, w)).astype(np.uint16)
        gray[0, 0, :1] = (0,)  # black and white are in every test
        gray[-1, -1, -1:] = (65535,)
        ab = (rng.standard_normal((b, 2, hh, ww)) * 40).astype(np.float32)
        expected = color.merge_gray_ab(gray, torch.from_numpy(ab), dtype)
        got = ort_runner.merge_gray_ab(gray, ab, dtype)
        assert got.dtype == expected.dtype and got.shape == expected.shape == (b, h, w, 3)
        level = {np.uint8: 1, np.uint16: 257, np.float32: 1 / 255}[dtype]
        difference = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        assert difference.max() <= level, (dtype, (b, h, w))
        if dtype == np.uint8:
            assert (difference > 0).mean() < 1e-3  # one level off is a rounding tie, and rare


def test_numpy_tables_and_sizes_are_the_torch_ones():
    for ours, theirs in zip(ort_runner.gray_tables(), color.gray_tables()):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(ort_runner.XYZ_TO_LINEAR_RGB, color._xyz_to_linear_rgb_matrix(), rtol=0, atol=1e-12)
    assert (ort_runner._srgb8_table().astype(int) - color._srgb8_table().numpy().astype(int)).__abs__().max() <= 1
    for h, w in [(1, 1), (40, 60), (480, 640), (3000, 4000), (1, 2_000_000), (17, 5)]:
        for render, multiple in [(32, 16), (256, 16), (1024, 16), (256, 32)]:
            assert ort_runner.working_size(h, w, render, multiple) == pipeline.working_size(h, w, render, multiple)
    from autocolor.checkpoint import CONFIG_NAME, DECODING_NAME, WEIGHTS_NAME

    assert ort_runner.MODEL_FILES == (WEIGHTS_NAME, CONFIG_NAME, DECODING_NAME)
    assert settings.GRAY_WEIGHTS == color.GRAY_WEIGHTS


def test_imageio_gray_is_rgb_to_gray_bit_for_bit():
    """split_pixels converts color in numpy now; it must be color.rgb_to_gray's gray exactly."""
    from autocolor.imageio import to_uint16

    rng = np.random.default_rng(1)
    levels = np.arange(256, dtype=np.uint8)
    every_pair = np.stack(np.meshgrid(levels, levels, indexing="ij"), -1).reshape(256, 256, 2)
    cases = [np.concatenate([every_pair, np.full((256, 256, 1), v, np.uint8)], 2) for v in (0, 1, 77, 128, 254, 255)]
    cases += [rng.integers(0, 256, (300, 200, 3)).astype(np.uint8), rng.integers(0, 65536, (300, 200, 3)).astype(np.uint16),
              rng.random((100, 80, 3), dtype=np.float32), rng.integers(0, 256, (50, 40, 4)).astype(np.uint8)]
    for samples in cases:
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(samples.dtype, 1.0)
        rgb = torch.from_numpy(np.ascontiguousarray(samples[..., :3])).permute(2, 0, 1).float() * (1.0 / scale)
        expected = to_uint16(color.rgb_to_gray(rgb)[0].numpy())
        np.testing.assert_array_equal(split_pixels(samples).gray, expected)


# ---------------------------------------------------------------- whole photos


@pytest.fixture(scope="module")
def colorizers(model_dir):
    return (Colorizer.load(model_dir), Colorizer.load(model_dir, backend="onnxruntime"),
            ort_runner.OrtColorizer.load(model_dir))


@pytest.mark.parametrize("render_size", [None, 64, 320])
def test_whole_photos_match_the_torch_pipeline(colorizers, render_size):
    by_torch, by_mixed, by_numpy = colorizers
    photos = [np.asarray(Image.open(SAMPLES / "boats.jpg")), gradient(37, 91), np.full((5, 3), 200, np.uint8)]
    for photo in photos:
        pixels = split_pixels(photo)
        expected = by_torch.colorize_pixels([pixels], render_size, 1.3)[0].astype(int)
        mixed = by_mixed.colorize_pixels([pixels], render_size, 1.3)[0].astype(int)
        got = by_numpy.colorize_pixels([pixels], render_size, 1.3)[0].astype(int)
        assert got.shape == expected.shape
        assert np.abs(got - mixed).max() <= 1  # the same graph: resize and merge differ by rounding only
        assert np.abs(got - expected).max() <= 2  # and onnxruntime's float order against PyTorch's


def test_the_decoding_s_fusion_and_confidence_power_match_the_torch_pipeline(tmp_path):
    from autocolor.checkpoint import save_decoding, save_model
    from autocolor.models import create_model
    from autocolor.quantize import Decoding

    torch.manual_seed(1)
    net = create_model("chroma-unet", width=16)
    net.head.bias.data[:] = torch.randn_like(net.head.bias) * 2  # some color, different at each scale
    save_model(net, tmp_path / "m")
    save_decoding(tmp_path / "m", Decoding(temperature=0.5, chroma_scale=3.0, confidence_power=2.0, fusion_size=64))
    pixels = split_pixels(np.asarray(Image.open(SAMPLES / "boats.jpg")))
    by_torch = Colorizer.load(tmp_path / "m").colorize_pixels([pixels], 160)[0].astype(int)
    by_numpy = ort_runner.OrtColorizer.load(tmp_path / "m").colorize_pixels([pixels], 160)[0].astype(int)
    assert np.abs(by_numpy - by_torch).max() <= 2
    save_decoding(tmp_path / "m", Decoding(temperature=0.5, chroma_scale=3.0, confidence_power=2.0))
    unfused = ort_runner.OrtColorizer.load(tmp_path / "m").colorize_pixels([pixels], 160)[0].astype(int)
    assert np.abs(unfused - by_numpy).max() > 2  # the fusion is not a no-op here


def test_sixteen_bits_alpha_and_batches(colorizers):
    _, by_mixed, by_numpy = colorizers
    rng = np.random.default_rng(2)
    deep = [split_pixels(rng.integers(0, 65536, (48, 64, 2)).astype(np.uint16)) for _ in range(2)]
    expected = by_mixed.colorize_pixels(deep, 64)
    got = by_numpy.colorize_pixels(deep, 64)
    for e, g, p in zip(expected, got, deep):
        assert g.dtype == np.uint16 and g.shape == (48, 64, 4)
        np.testing.assert_array_equal(g[..., 3], p.alpha)
        assert np.abs(g.astype(int) - e.astype(int)).max() <= 257


def test_a_face_gets_the_same_skin_tone_correction(colorizers):
    from autocolor import faces

    if not faces.available():
        pytest.skip("no face detector (the faces extra)")
    by_torch, by_mixed, by_numpy = colorizers
    pixels = split_pixels(np.asarray(Image.open(SAMPLES / "portrait.jpg")))
    by_numpy.faces = False
    plain = by_numpy.colorize_pixels([pixels])[0].astype(int)
    by_numpy.faces = True
    got = by_numpy.colorize_pixels([pixels])[0].astype(int)
    expected = by_mixed.colorize_pixels([pixels])[0].astype(int)
    assert np.abs(got - plain).max() > 5  # the face was corrected
    assert np.abs(got - expected).max() <= 1


# ---------------------------------------------------------------- the cache


def test_the_cache_is_keyed_by_content_and_a_stale_entry_is_rebuilt(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOLOR_CACHE", str(tmp_path / "cache"))
    cached = ort_runner.cached_graph_path(model_dir)
    assert cached.parent == tmp_path / "cache" / "onnx" and not cached.exists()
    runner = ort_runner.load_runner(model_dir)
    assert cached.is_file() and runner.stride == 16 and runner.guided is False
    from autocolor.checkpoint import load_model
    from autocolor.onnx_export import export_onnx_bytes

    cached.write_bytes(export_onnx_bytes(load_model(model_dir)))  # an older graph without the metadata
    with pytest.raises(ValueError, match="metadata"):
        ort_runner.OrtChroma(cached)
    assert ort_runner.load_runner(model_dir).stride == 16
    assert ort_runner.OrtChroma(cached).bins > 0  # rewritten with it
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ort_runner.MODEL_FILES:
        if (model_dir / name).is_file():
            (copy / name).write_bytes((model_dir / name).read_bytes())
    assert ort_runner.cached_graph_path(copy) == cached  # the same files, wherever they are
    (copy / "decoding.json").write_text('{"temperature": 0.5, "chroma_scale": 2.0}')
    assert ort_runner.cached_graph_path(copy) != cached


def test_a_guided_model_runs_without_hints(tmp_path, monkeypatch):
    from autocolor.checkpoint import save_model
    from autocolor.models import create_model

    monkeypatch.setenv("AUTOCOLOR_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_model(create_model("chroma-unet", width=16, guided=True).eval(), tmp_path / "guided")
    runner = ort_runner.OrtColorizer.load(tmp_path / "guided")
    assert runner.model.guided
    pixels = split_pixels(gradient(64, 80))
    expected = Colorizer.load(tmp_path / "guided").colorize_pixels([pixels])[0].astype(int)
    assert np.abs(runner.colorize_pixels([pixels])[0].astype(int) - expected).max() <= 2


def test_rgb_models_and_missing_folders_are_one_line(tmp_path, capsys):
    from autocolor.checkpoint import save_model
    from autocolor.models import create_model

    save_model(create_model("cae"), tmp_path / "cae")
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    for model, words in ((tmp_path / "cae", "only chroma models"), (tmp_path / "nowhere", "nowhere")):
        assert main(["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model),
                     "--backend", "onnxruntime"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err


# ---------------------------------------------------------------- the command


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_command_behaves_the_same_on_both_backends(model_dir, tmp_path, capsys, backend):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(gradient()).save(inputs / "a.png")
    Image.fromarray(gradient(30, 20)).save(inputs / "b.jpg")
    (inputs / "broken.png").write_bytes(b"not a png")
    base = ["--model", str(model_dir), "--backend", backend, "--render-size", "64"]
    code, out, err = _run(["colorize", str(inputs), "-o", str(tmp_path / "out"), "--json", *base], capsys)
    assert code == 1 and "broken.png" in err and "note:" not in err
    summary = json.loads(out)
    assert (summary["done"], summary["failed"]) == (2, 1)
    code, out, _ = _run(["colorize", str(inputs), "-o", str(tmp_path / "out"), "--json", *base], capsys)
    assert json.loads(out)["skipped"] == 2  # a re-run skips what is done
    assert _run(["colorize", str(inputs / "a.png"), "-o", str(tmp_path / "one.webp"), *base], capsys)[0] == 0
    with Image.open(tmp_path / "one.webp") as im:
        assert im.format == "WEBP" and im.size == (60, 40)
    for target, words in (("x.gif", "cannot write .gif"), ("in/a.png", "inputs are never overwritten")):
        with pytest.raises(SystemExit, match=words):
            main(["colorize", str(inputs / "a.png"), "-o", str(tmp_path / target), *base])
    code, out, err = _run(["colorize", str(tmp_path / "empty*"), "-o", str(tmp_path / "o2"), *base], capsys)
    assert code == 1 and "nothing to colorize" in err


@pytest.mark.slow
def test_stdin_to_stdout_without_torch_in_the_way(model_dir, tmp_path):
    data = (tmp_path / "a.png")
    Image.fromarray(gradient()).save(data)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "autocolor", "colorize", "-", "-o", "-", "--model", str(model_dir),
                             "--backend", "onnxruntime", "--render-size", "64"], input=data.read_bytes(),
                            capture_output=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(b"\x89PNG")


@pytest.mark.slow
def test_a_cached_model_colorizes_without_importing_torch(model_dir, tmp_path):
    """Issue 16: --backend onnxruntime imported torch and re-exported the model on every run."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
           "AUTOCOLOR_CACHE": str(tmp_path / "cache")}
    photo = tmp_path / "boats.jpg"
    photo.write_bytes((SAMPLES / "boats.jpg").read_bytes())
    code = ("import sys\n"
            "from autocolor.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "print('torch' in sys.modules, code)\n")
    args = ["colorize", str(photo), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--backend", "onnxruntime",
            "--overwrite"]
    first = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert first.stdout.split() == ["True", "0"], first.stderr  # the first run exports with PyTorch
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    second = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert second.stdout.split() == ["False", "0"], second.stderr
    assert "note:" not in second.stderr
    with Image.open(tmp_path / "out" / "boats.jpg") as im:
        assert im.mode == "RGB" and im.size == Image.open(photo).size


@pytest.mark.parametrize("extra", [["--hints", "HINTS"], ["--model", "levin"], ["VIDEO"]])
def test_what_needs_torch_falls_back_with_a_note(model_dir, tmp_path, capsys, extra):
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    (tmp_path / "points.json").write_text(json.dumps({"points": [{"x": 3, "y": 4, "color": "#6d9ed8"}]}))
    args = ["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--backend", "onnxruntime",
            "--render-size", "64"]
    if extra == ["VIDEO"]:
        (tmp_path / "film.mp4").write_bytes(b"not really a video")
        args[1] = str(tmp_path)
        extra = ["--model", str(model_dir)]
    elif extra[0] == "--hints":
        extra = ["--hints", str(tmp_path / "points.json"), "--model", "levin"]
    code, _, err = _run(args + extra, capsys)
    assert err.startswith("note: ") and "onnxruntime" in err.splitlines()[0], err
    assert (tmp_path / "out" / "a.png").is_file()
    assert code == (1 if "film.mp4" in err else 0)  # the fake video fails on its own line; the photo is done
