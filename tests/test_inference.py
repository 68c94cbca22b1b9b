"""The Colorizer API and batch runs: every input kind, hints, planning and skipping."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import autocolor.inference as inference
from autocolor.checkpoint import CheckpointError, save_model
from autocolor.color import gray_to_l
from autocolor.imageio import ImageError
from autocolor.inference import Colorizer, colorize_files, plan_jobs
from autocolor.models import create_model


@pytest.fixture(scope="module")
def colorizer(model_dir):
    return Colorizer.load(model_dir)


def photo(h: int = 40, w: int = 56) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w) * 2) % 256).astype(np.uint8)


def test_default_weights_missing_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "default_model_dir", lambda: tmp_path / "weights" / "default")
    with pytest.raises(CheckpointError, match=r"weights/default/model\.safetensors"):
        Colorizer.load()


def test_unknown_backend(model_dir):
    with pytest.raises(ValueError, match="backend"):
        Colorizer.load(model_dir, backend="tensorrt")


@pytest.mark.parametrize(
    "array, shape, dtype",
    [
        (photo(), (40, 56, 3), np.uint8),
        (photo()[:, :, None], (40, 56, 3), np.uint8),
        (photo().astype(np.uint16) * 257, (40, 56, 3), np.uint16),
        (photo() / 255.0, (40, 56, 3), np.float64),  # the same type back, as the docstring says
        ((photo() / 255.0).astype(np.float32), (40, 56, 3), np.float32),
        (np.dstack([photo(), np.full((40, 56), 9, np.uint8)]), (40, 56, 4), np.uint8),
        (np.zeros((1, 1), np.uint8), (1, 1, 3), np.uint8),
    ],
)
def test_array_in_array_out(colorizer, array, shape, dtype):
    out = colorizer.colorize(array)
    assert out.shape == shape and out.dtype == dtype
    if shape[2] == 4:
        assert (out[:, :, 3] == 9).all()


def test_arrays_of_any_layout_and_type(colorizer):
    gray = photo()
    expected = colorizer.colorize(np.ascontiguousarray(np.rot90(gray)))
    for layout in (np.rot90(gray), np.asfortranarray(np.rot90(gray)), np.rot90(gray)[::-1][::-1]):
        np.testing.assert_array_equal(colorizer.colorize(layout), expected)  # views and Fortran order alike
    color = np.asfortranarray(np.dstack([gray, gray // 2, 255 - gray]))
    assert colorizer.colorize(color, keep_color=True) is color
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "has color", said once per colorizer
        assert colorizer.colorize(color[::-1]).shape == (40, 56, 3)
    for dtype in (np.float64, np.float16, np.float32):
        assert colorizer.colorize((gray / 255).astype(dtype)).dtype == dtype
    boolean = colorizer.colorize(gray > 100)
    assert boolean.dtype == bool and boolean.shape == (40, 56, 3)
    big_endian = colorizer.colorize((gray.astype(np.uint16) * 257).astype(">u2"))
    assert big_endian.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(big_endian, colorizer.colorize(gray.astype(np.uint16) * 257))


def test_float_samples_in_0_255_warn(colorizer):
    with pytest.warns(UserWarning, match="above 1 come out white"):
        colorizer.colorize(photo().astype(np.float32) + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        colorizer.colorize(photo() / 255.0)


def test_max_pixels_applies_to_arrays(colorizer, tmp_path):
    # A memmap as large as the limit allows plus one row is refused before it is read.
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(3001, 1000))
    with pytest.raises(ImageError, match="over the limit"):
        colorizer.colorize(big, max_pixels=3_000_000)
    assert colorizer.colorize(big[:30, :40], max_pixels=1200).shape == (30, 40, 3)


def test_pil_and_path(colorizer, tmp_path):
    image = Image.fromarray(photo()).convert("LA")
    out = colorizer.colorize(image, render_size=64, saturation=2.0)
    assert isinstance(out, Image.Image) and out.mode == "RGBA" and out.size == (56, 40)
    path = tmp_path / "p.png"
    Image.fromarray(photo()).save(path)
    assert colorizer.colorize(path).mode == "RGB"


def test_saturation_zero_is_gray(colorizer):
    out = colorizer.colorize(photo(), saturation=0.0).astype(int)
    assert np.abs(out[:, :, 0] - out[:, :, 1]).max() <= 1 and np.abs(out[:, :, 1] - out[:, :, 2]).max() <= 1


def test_color_input_warns_or_is_kept(model_dir):
    colorizer = Colorizer.load(model_dir)
    color = np.dstack([photo(), photo() // 3, 255 - photo()])
    with pytest.warns(UserWarning, match="has color"):
        colorizer.colorize(color)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        colorizer.colorize(color)  # said once
    assert colorizer.colorize(color, keep_color=True) is color


def test_rgb_models_colorize_through_the_same_api(tmp_path):
    save_model(create_model("cae"), tmp_path / "cae")
    out = Colorizer.load(tmp_path / "cae").colorize(photo())
    assert out.shape == (40, 56, 3)


def make_tree(root):
    (root / "sub").mkdir(parents=True)
    Image.fromarray(photo()).save(root / "a.png")
    Image.fromarray(photo()).save(root / "sub" / "b.jpg")
    (root / "readme.txt").write_text("not an image")


def test_plan_folder_file_and_glob(tmp_path):
    make_tree(tmp_path / "in")
    jobs, problems = plan_jobs([str(tmp_path / "in")], tmp_path / "out")
    assert sorted(str(j.target.relative_to(tmp_path / "out")) for j in jobs) == ["a.png", "sub/b.jpg"]
    jobs, _ = plan_jobs([str(tmp_path / "in" / "**" / "*.jpg")], tmp_path / "out", "webp")
    assert [j.target for j in jobs] == [tmp_path / "out" / "sub" / "b.webp"]
    _, problems = plan_jobs([str(tmp_path / "missing"), str(tmp_path / "none*.png")], tmp_path / "out")
    assert [reason for _, reason in problems] == ["no such file or folder", "no files match this pattern"]


def test_plan_never_overwrites_inputs(tmp_path):
    make_tree(tmp_path / "in")
    with pytest.raises(ImageError, match="output folder is the input folder"):
        plan_jobs([str(tmp_path / "in")], tmp_path / "in")
    jobs, problems = plan_jobs([str(tmp_path / "in" / "a.png")], tmp_path / "in")
    assert not jobs and "would overwrite an input" in problems[0][1]
    # An output folder inside the input folder is not scanned for inputs; a file
    # there that autocolor did not write is an original and is never a target.
    (tmp_path / "in" / "out").mkdir()
    Image.fromarray(photo()).save(tmp_path / "in" / "out" / "a.png")
    jobs, problems = plan_jobs([str(tmp_path / "in")], tmp_path / "in" / "out")
    assert len(jobs) == 1 and "would overwrite an input" in problems[0][1]
    (tmp_path / "in" / "out" / "a.png").unlink()
    colorize_files(Colorizer.load("levin"), jobs, progress=False, log=lambda _: None)
    jobs, problems = plan_jobs([str(tmp_path / "in")], tmp_path / "in" / "out")
    assert len(jobs) == 2 and not problems  # its own outputs are neither inputs nor in the way


def test_plan_two_inputs_one_output(tmp_path):
    make_tree(tmp_path / "in")
    Image.fromarray(photo()).save(tmp_path / "in" / "a.jpg")
    jobs, problems = plan_jobs([str(tmp_path / "in")], tmp_path / "out", "png")
    assert len(jobs) == 2 and "already the output of" in problems[0][1]


def test_colorize_files_skips_and_reports(colorizer, tmp_path):
    make_tree(tmp_path / "in")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"")
    for i in range(5):
        Image.fromarray(photo()).save(tmp_path / "in" / f"same{i}.png")  # batched together
    jobs, _ = plan_jobs([str(tmp_path / "in")], tmp_path / "out")
    lines: list[str] = []
    summary = colorize_files(colorizer, jobs, progress=False, log=lines.append, batch_size=4)
    assert summary.done == 7 and summary.skipped == 0
    assert summary.failed == [(tmp_path / "in" / "bad.jpg", "empty file (0 bytes)")]
    assert lines == [f"{tmp_path / 'in' / 'bad.jpg'}: empty file (0 bytes)"]
    assert [p.name for p in (tmp_path / "out").rglob(".*")] == [".autocolor-record.jsonl"]  # no temporaries left
    again = colorize_files(colorizer, jobs, progress=False, log=lines.append)
    assert again.done == 0 and again.skipped == 7 and len(again.failed) == 1
    redo = colorize_files(colorizer, jobs, progress=False, log=lines.append, overwrite=True, workers=0)
    assert redo.done == 7


@pytest.mark.slow
def test_twelve_megapixels_come_out_full_size_and_as_sharp(tmp_path):
    """Chroma is predicted at 256 px, but lightness is the input's own: edges survive at 12 MP."""
    model = create_model("chroma-unet", width=16, head="regression").eval()
    with torch.no_grad():  # a strong, uniform color, so the check is about detail, not the model
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.15, 0.25]))
    save_model(model, tmp_path / "m")
    rng = np.random.default_rng(0)
    gray = np.kron(rng.integers(40, 220, size=(300, 400)), np.ones((10, 10))).astype(np.uint8)  # 3000x4000 blocks
    rgb = Colorizer.load(tmp_path / "m").colorize(gray)
    assert rgb.shape == (3000, 4000, 3) and rgb.dtype == np.uint8
    out_l = gray_to_l(torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).mul(
        torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True))
    in_l = gray_to_l(torch.from_numpy(gray).float().div(255).unsqueeze(0))

    def edge_energy(x):
        return (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[:, 1:] - x[:, :-1]).abs().mean()

    assert 0.9 < float(edge_energy(out_l) / edge_energy(in_l)) < 1.1
    assert np.abs(rgb[..., 0].astype(int) - rgb[..., 2].astype(int)).mean() > 10  # and it is colored


def _lab(rgb: np.ndarray) -> np.ndarray:
    from autocolor.color import rgb_to_lab

    return rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255).numpy()


def _sky_over_ground():
    c = Colorizer.load()
    if not c.model.guided:
        pytest.skip("the installed default takes no hints")
    c.faces = False
    gray = np.full((192, 256), 200, np.uint8)  # a flat, bright sky ...
    gray[120:] = 60  # ... over dark ground, with a hard edge between
    gray = (gray.astype(int) + np.random.default_rng(0).integers(-3, 4, gray.shape)).clip(0, 255).astype(np.uint8)
    return c, gray, _lab(c.colorize(gray)), _lab(c.colorize(gray, hints=[(128, 40, "#3a78d8")]))


def test_a_blue_point_on_a_gray_sky_makes_it_bluer():
    """With the shipped (hint-aware) default: the guided colorization issue's test, first half."""
    c, gray, auto, hinted = _sky_over_ground()
    assert np.array_equal(c.colorize(gray, hints=[]), c.colorize(gray))  # no hints: exactly the automatic result
    assert hinted[2, 25:55, 113:143].mean() < auto[2, 25:55, 113:143].mean() - 15  # b* falls near the point
    assert hinted[2, 10:100].mean() < auto[2, 10:100].mean() - 5  # and over the sky


def test_a_blue_point_on_the_sky_leaves_the_far_side_of_an_edge_alone():
    """The network alone carries one point's color over the whole photo (the ground's ab moves by
    about 23 here with ``hint_edge`` 0); the shipped decoding keeps points to their regions."""
    _, _, auto, hinted = _sky_over_ground()
    assert np.abs(hinted[1:, 150:192] - auto[1:, 150:192]).mean() < 2.0  # the ground keeps its colors


def test_with_a_reference_photo_too_the_far_side_keeps_the_reference_s_colors():
    c, gray, _, _ = _sky_over_ground()
    reference = np.zeros((64, 64, 3), np.uint8)
    reference[..., 0], reference[..., 1], reference[..., 2] = 40, 150, 60  # all green
    by_reference = _lab(c.colorize(gray, reference=reference))
    both = _lab(c.colorize(gray, hints=[(128, 40, "#3a78d8")], reference=reference))
    assert np.abs(both[1:, 150:192] - by_reference[1:, 150:192]).mean() < 2.0  # the ground: the reference's
    assert both[2, 25:55, 113:143].mean() < by_reference[2, 25:55, 113:143].mean() - 10  # near the point: bluer
