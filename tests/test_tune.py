"""autocolor tune and the whole-photo evaluation, on small generated corpora."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from autocolor.checkpoint import load_model, save_model
from autocolor.cli import main
from autocolor.evaluate import EvaluationError
from autocolor.models import create_model
from autocolor.quantize import Decoding
from autocolor.tune import tune


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """train/val/test folders with a manifest, as `autocolor data photos` writes them."""
    from conftest import synthetic_photos

    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for split, seed in (("train", 1), ("val", 2), ("test", 3)):
        (root / split).mkdir()
        for i, img in enumerate(synthetic_photos(4, 96, seed=seed)):
            name = f"{split}/scene_{i}.jpg"
            Image.fromarray(img).save(root / name, quality=95)
            rows.append({"split": split, "file": name, "scene_category": "sky/landscape" if i % 2 else "cutout",
                         "people": "0"})
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tune-model")
    model = create_model("chroma-unet", width=16, guided=True)
    model.head.bias.data[:] = torch.randn_like(model.head.bias) * 2  # some color to scale
    save_model(model, folder)
    return folder


def test_tune_scores_each_setting_on_whole_scenes_and_writes_the_rule_s_choice(corpus, model_folder):
    report = tune(model_folder, f"folder:{corpus}", temperatures=(0.38, 1.0), scales=(0.5, 1.0, 2.0),
                  powers=(0.0, 2.0), fusions=(0,), write=True)
    assert report["n_images"] == 2  # the val split's whole scenes, not its cut-outs
    assert len(report["rows"]) == 12
    ratios = {(r["decoding"]["temperature"], r["decoding"]["chroma_scale"], r["decoding"]["confidence_power"]):
              r["colorfulness_ratio"] for r in report["rows"]}
    assert ratios[(0.38, 2.0, 0.0)] > ratios[(0.38, 1.0, 0.0)] > ratios[(0.38, 0.5, 0.0)]  # the scale scales color
    assert ratios[(1.0, 1.0, 2.0)] < ratios[(1.0, 1.0, 0.0)]  # and the confidence power takes unsure color away
    assert load_model(model_folder).decoding == Decoding.from_dict(report["chosen"]["decoding"])


def test_tune_refuses_the_test_split(corpus, model_folder):
    with pytest.raises(EvaluationError, match="test is for reporting"):
        tune(model_folder, f"folder:{corpus}", split="test")


def test_tune_hints_from_the_command_line(corpus, model_folder, capsys):
    assert main(["tune", str(model_folder), "--data", f"folder:{corpus}", "--hints", "--n", "3",
                 "--hint-scales", "0.8,1"]) == 0
    out = capsys.readouterr().out
    assert "none (network only)" in out and "**chosen**" in out and "decay 0" in out
    rows = [line.split("|")[1].replace("**chosen**", "").strip() for line in out.splitlines() if ", scale " in line]
    assert sorted(row.rsplit(", scale ", 1)[1] for row in rows) == ["0.8"] * 7 + ["1"] * 7  # each refinement, each scale


def test_whole_photo_evaluation_reports_categories_faces_neutral_and_render_sizes(corpus, model_folder):
    from autocolor.evaluate_photos import evaluate_photos, format_photos_markdown

    report = evaluate_photos(["gray", f"m={model_folder}"], corpus, faces=(False,))
    gray, model = (m["summary"] for m in report["models"])
    assert set(gray["categories"]) == {"all", "whole scenes", "sky/landscape", "cutout"}
    assert gray["categories"]["all"]["ciede2000_vs_gray"] == pytest.approx(1.0)
    assert gray["neutral_chroma"] in (None, 0.0) or gray["neutral_chroma"] < 0.5  # gray adds no chroma
    assert gray["render_gap"] == pytest.approx(0.0, abs=1e-3)  # gray does not depend on the render size
    assert model["render_gap"] > 0 and set(model["by_render_size"]) == {"128", "256", "384"}
    assert "| m |" in format_photos_markdown(report)
    json.dumps(report)
    assert np.isfinite(model["categories"]["all"]["ciede2000"])


def test_whole_photo_evaluation_from_the_command_line_writes_tables_and_grids(corpus, model_folder, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "eval"
    assert main(["evaluate", "--models", f"gray,m={model_folder}", "--data", f"folder:{corpus}",
                 "--whole-photos", "--n", "0", "--out", str(out)]) == 0
    assert "whole scenes" in capsys.readouterr().out
    report = json.loads((out / "photos.json").read_text())
    labels = [m["label"] for m in report["models"]]
    assert labels == ["gray", "m", "m + face prior"]
    with Image.open(out / "scenes.jpg") as grid:
        # one row per whole scene (up to 12), five columns: gray input, three outputs, truth
        scenes = sum(1 for m in report["models"][0]["photos"] if m["category"] != "cutout")
        assert grid.height == min(scenes, 12) * (144 + 4)
    assert "m + face prior" in (out / "scenes.txt").read_text()


def test_hint_evaluation_levin_improves_with_points_and_automatic_models_draw_one_line(corpus, model_folder, tmp_path):
    from autocolor.evaluate_hints import evaluate_hints

    auto = tmp_path / "auto"
    save_model(create_model("chroma-unet", width=16), auto)
    report = evaluate_hints(["levin", f"auto={auto}", f"guided={model_folder}"], f"folder:{corpus}", size=64,
                            counts=(0, 1, 50), split="test", out_dir=tmp_path / "out")
    rows = {r["label"]: r for r in report["models"]}
    levin = rows["levin"]["points"]
    assert levin["0"]["ciede2000_vs_gray"] == pytest.approx(1.0, abs=1e-3)  # no points: Levin leaves it gray
    assert levin["50"]["ciede2000"] < 0.8 * levin["1"]["ciede2000"]  # the truth's colors at 50 points help
    flat = rows["auto"]["points"]
    assert flat["0"] == flat["1"] == flat["50"] and "reference_own" not in rows["auto"]  # ignores hints
    assert {"reference_own", "reference_other"} <= set(rows["guided"])  # a hint-aware network gets the global hint
    assert (tmp_path / "out" / "hints.md").read_text().count("| levin |") == 2  # CIEDE2000 and PSNR tables
    assert json.loads((tmp_path / "out" / "hints.json").read_text())["counts"] == [0, 1, 50]


def test_tune_decodes_the_network_s_output_as_the_pipeline_does(model_folder):
    import torch

    from dataclasses import replace

    from autocolor.pipeline import fuse_chroma, predict_chroma, resize
    from autocolor.tune import _network_outputs

    model = load_model(model_folder).eval()
    lightness = torch.rand(3, 1, 96, 96) * 100
    decoding = Decoding(temperature=0.5, chroma_scale=2.0, confidence_power=2.0)
    with torch.no_grad():
        (start, raw), = _network_outputs(model, lightness, 64)
        assert start == 0 and torch.allclose(model.decode(raw, decoding), predict_chroma(model, lightness, 64, None,
                                                                                           decoding), atol=1e-5)
        fused = replace(decoding, fusion_size=32)
        (_, small), = _network_outputs(model, resize(lightness, (64, 64)), 32)
        expected = fuse_chroma(model.decode(raw, fused), model.decode(small, fused))
        assert torch.allclose(expected, predict_chroma(model, lightness, 64, None, fused), atol=1e-5)
        assert not torch.allclose(expected, model.decode(raw, fused), atol=1e-2)  # the fusion changed something


def test_tune_scores_the_fusion_size_too(corpus, model_folder):
    report = tune(model_folder, f"folder:{corpus}", temperatures=(0.5,), scales=(1.0,), powers=(0.0,),
                  fusions=(0, 128))
    by_fusion = {r["decoding"]["fusion_size"]: r["ciede2000"] for r in report["rows"]}
    assert set(by_fusion) == {0, 128} and by_fusion[0] != by_fusion[128]
