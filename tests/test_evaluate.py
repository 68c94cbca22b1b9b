"""Evaluation end to end on a tiny photo folder, with untrained models saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autocolor.checkpoint import save_model
from autocolor.cli import main
from autocolor.color import gray_to_rgb
from autocolor.data import build_splits
from autocolor.evaluate import (
    EvaluationError,
    ModelEntry,
    colorize_at_saturations,
    evaluate,
    interpolate_at,
    load_images,
    resolve_model,
    sample_indices,
)
from autocolor.metrics import mean_ciede2000
from autocolor.models import create_model
from autocolor.pipeline import colorize_gray, to_gray16

SIZES = (32, 64)
N = 3


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Untrained models on disk: the pipeline, not their quality, is under test."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    dirs = {"chroma": root / "chroma", "cae": root / "cae"}
    save_model(create_model("chroma-unet", width=16), dirs["chroma"])
    save_model(create_model("cae"), dirs["cae"])
    return dirs


@pytest.fixture(scope="module")
def report(folder_root, model_dirs, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eval-out")
    specs = ["gray", f"chroma={model_dirs['chroma']}", f"cae={model_dirs['cae']}"]
    return evaluate(specs, f"folder:{folder_root}", sizes=SIZES, n=N, seed=0, out_dir=out), out


def _rows(result: dict) -> dict[str, dict]:
    return {row["label"]: row for row in result["models"]}


def test_every_size_has_every_model(report):
    results, _ = report
    assert [r["size"] for r in results["results"]] == list(SIZES)
    for result in results["results"]:
        assert result["n_images"] == N
        assert list(_rows(result)) == ["gray", "chroma", "cae"]
        for row in result["models"]:
            assert [p["saturation"] for p in row["sweep"]] == [0.0, 0.5, 0.75, 1.0, 1.25, 1.5]
            assert row["ciede2000"] == row["sweep"][3]["ciede2000"]
            assert set(row["ciede2000_at_colorfulness"]) == set(row["psnr_at_colorfulness"]) == {"0.7", "0.85", "1"}
            assert row["psnr"] == row["sweep"][3]["psnr"]
    chroma = _rows(results["results"][0])["chroma"]
    assert chroma["kind"] == "ab" and chroma["parameters"] == sum(
        p.numel() for p in create_model("chroma-unet", width=16).parameters()
    )


def test_gray_copy_is_the_baseline(report, folder_root):
    results, _ = report
    for result in results["results"]:
        copy = _rows(result)["gray"]
        assert copy["colorfulness"] == 0.0 and copy["colorfulness_ratio"] == 0.0
        assert copy["parameters"] == 0
        assert copy["ciede2000_vs_gray"] == pytest.approx(1.0)
        assert copy["ciede2000_at_colorfulness"] == {"0.7": None, "0.85": None, "1": None}
        assert {p["ciede2000"] for p in copy["sweep"]} == {copy["ciede2000"]}
        # Recompute independently: the same seeded images, gray repeated to RGB.
        dataset = build_splits(f"folder:{folder_root}", result["size"], seed=0).test
        rgb, gray = load_images(dataset, sample_indices(len(dataset), N, seed=0))
        expected = mean_ciede2000(gray_to_rgb(gray), rgb).double().mean().item()
        assert copy["ciede2000"] == pytest.approx(expected, rel=1e-6)
        assert result["gray_ciede2000"] == pytest.approx(expected, rel=1e-6)
        assert result["truth_colorfulness"] > 10  # the synthetic photos are colorful


def test_saturation_zero_removes_all_color(report):
    results, _ = report
    for result in results["results"]:
        for label in ("chroma", "cae"):
            sweep = _rows(result)[label]["sweep"]
            assert sweep[0]["colorfulness"] < 1e-2, (label, sweep[0])
            # More saturation, more color: the ratio grows along the sweep.
            ratios = [p["colorfulness_ratio"] for p in sweep]
            assert ratios == sorted(ratios)


def test_files_written(report):
    results, out = report
    markdown = (out / "results.md").read_text()
    lines = markdown.splitlines()
    for label in ("gray", "chroma", "cae"):
        rows = [line for line in lines if line.startswith(f"| {label} |")]
        assert len(rows) == 3 * len(SIZES)  # metrics, trade-off and equal-colorfulness tables
    assert "SSIM (RGB)" in markdown and "mean over images" in markdown

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    saved = json.loads((out / "results.json").read_text(), parse_constant=no_nan)
    assert saved["results"][1]["models"][2]["label"] == "cae"
    assert saved["results"][0]["models"][1]["psnr"] == pytest.approx(results["results"][0]["models"][1]["psnr"])
    for size in SIZES:
        with Image.open(out / f"grid_{size}.png") as grid:
            columns = 5  # gray | gray | chroma | cae | truth
            assert grid.mode == "RGB"
            assert grid.size == (columns * size + (columns + 1) * 2, N * size + (N + 1) * 2)


def test_sweep_runs_the_network_once_and_matches_the_pipeline(folder_root, model_dirs):
    gray = torch.rand(2, 1, 40, 56, generator=torch.Generator().manual_seed(0))
    saturations = [0.0, 0.5, 1.0, 1.5]
    torch.manual_seed(0)
    for model in (resolve_model(str(model_dirs["chroma"])).model, create_model("unet-rgb").eval()):
        entry = ModelEntry("m", model, "test")
        swept = colorize_at_saturations(entry, gray, 32, saturations)
        for s, out in zip(saturations, swept):
            expected = colorize_gray(model, to_gray16(gray), np.float32, render_size=32, saturation=s)
            torch.testing.assert_close(out, torch.from_numpy(expected).permute(0, 3, 1, 2))


def test_evaluation_is_deterministic(folder_root, model_dirs):
    specs = ["gray", f"chroma={model_dirs['chroma']}"]
    first = evaluate(specs, f"folder:{folder_root}", sizes=(32,), n=2, seed=3, saturations=(0.5,))
    second = evaluate(specs, f"folder:{folder_root}", sizes=(32,), n=2, seed=3, saturations=(0.5,))
    assert first == second
    assert [p["saturation"] for p in first["results"][0]["models"][1]["sweep"]] == [0.5, 1.0]


def test_interpolate_at():
    ratios, values = [0.0, 0.5, 1.0, 1.5], [10.0, 12.0, 14.0, 16.0]
    assert interpolate_at(ratios, values, 0.8) == pytest.approx(13.2)
    assert interpolate_at(ratios, values, 1.0) == pytest.approx(14.0)
    assert interpolate_at(ratios, values, 1.6) is None
    assert interpolate_at([0.0, 0.0], [5.0, 5.0], 0.8) is None


def test_model_spec_errors(tmp_path, model_dirs, monkeypatch):
    monkeypatch.setattr("autocolor.evaluate.shipped_weights_dir", lambda name: tmp_path / "weights" / name)
    with pytest.raises(EvaluationError, match="untrained"):
        resolve_model("cae")
    with pytest.raises(EvaluationError, match="no shipped weights"):
        resolve_model("default")
    with pytest.raises(EvaluationError, match="no model folder"):
        resolve_model(f"x={tmp_path / 'missing'}")
    with pytest.raises(EvaluationError, match="repeated: gray"):
        evaluate(["gray", "gray"], "folder:unused", sizes=(32,))
    # Shipped weights are found by name once they exist.
    save_model(create_model("cae"), tmp_path / "weights" / "default")
    assert resolve_model("default").model.registry_name == "cae"


def test_the_spelling_grey_still_names_the_gray_copy():
    """Specs written before the rename keep working, and the report says gray."""
    for spec in ("gray", "grey"):
        entry = resolve_model(spec)
        assert (entry.label, entry.model, entry.kind) == ("gray", None, "gray")
    labelled = resolve_model("copy=grey")
    assert (labelled.label, labelled.model) == ("copy", None)
    with pytest.raises(EvaluationError, match="repeated: gray"):
        evaluate(["gray", "grey"], "folder:unused", sizes=(32,))


def test_unfinished_run_uses_its_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    for step in (10, 20):
        save_model(create_model("cae"), run / "checkpoints" / f"step-{step:09d}")
    entry = resolve_model(f"early={run}")
    assert entry.label == "early" and entry.source.endswith("step-000000020")


def test_cli_evaluate(folder_root, model_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "--models", f"gray,chroma={model_dirs['chroma']}", "--data", f"folder:{folder_root}",
            "--sizes", "32", "--n", "2", "--saturations", "0,1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| chroma |" in printed and "CIEDE2000 / gray" in printed
    assert {p.name for p in out.iterdir()} == {"results.md", "results.json", "grid_32.png"}


def test_cli_evaluate_refuses_untrained_architecture(folder_root, capsys):
    argv = ["evaluate", "--models", "unet-rgb", "--data", f"folder:{folder_root}", "--sizes", "32"]
    assert main(argv) == 2
    assert "untrained" in capsys.readouterr().err


def test_shipped_weights_can_be_labelled(tmp_path, monkeypatch):
    monkeypatch.setattr("autocolor.evaluate.shipped_weights_dir", lambda name: tmp_path / "weights" / name)
    save_model(create_model("cae"), tmp_path / "weights" / "default")
    entry = resolve_model("shipped=default")
    assert entry.label == "shipped" and entry.source == str(tmp_path / "weights" / "default")
