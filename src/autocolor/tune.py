"""``autocolor tune``: choose a chroma model's decoding on a validation split.

The temperature moves the decoded color between the distribution's mode
(vivid, T -> 0) and its mean (muted, T = 1); the chroma scale multiplies the
result. Each setting is scored at 256 px on the validation split (never on
test), on whole scenes by default (cut-outs on flat gray are easy to keep
gray and say little about real photos), and the rule picks the one to ship:

    among the settings whose colorfulness is within ``band`` of the truth's
    (0.8-1.2 by default), the lowest CIEDE2000; if none is, the setting whose
    colorfulness ratio is nearest the band.

``--write`` saves the choice as the model folder's ``decoding.json``.

With ``--hints``, the setting tuned is how a hint-aware model is made to
agree with color points (``refine_hints``, ``hint_decay``, and the chroma
scale used when points are given, ``hint_chroma_scale``): each candidate
is scored by Zhang et al.'s simulated users (1 to 20 points, see
:mod:`autocolor.evaluate_hints`) on the same split, and the lowest mean
CIEDE2000 over those counts wins; "no refinement" is a candidate too.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from autocolor import settings
from autocolor.checkpoint import load_model, save_decoding
from autocolor.color import gray16_to_l, merge_gray_ab, rgb_to_lab
from autocolor.data import build_splits
from autocolor.evaluate import EvaluationError, load_images, sample_indices
from autocolor.evaluate_hints import sample_categories
from autocolor.metrics import colorfulness, mean_ciede2000_lab
from autocolor.models.base import for_inference
from autocolor.pipeline import fuse_chroma, fusion_working_size, resize, to_gray16, working_size
from autocolor.quantize import Decoding

DEFAULT_TEMPERATURES = settings.TUNE_TEMPERATURES
DEFAULT_SCALES = settings.TUNE_SCALES
DEFAULT_BAND = settings.TUNE_BAND
DEFAULT_POWERS = settings.TUNE_CONFIDENCE_POWERS
DEFAULT_FUSIONS = settings.TUNE_FUSION_SIZES


def choose(rows: list[dict[str, Any]], band: tuple[float, float]) -> dict[str, Any]:
    """The rule in the module docstring.

    >>> rows = [{"ciede2000": 9.0, "colorfulness_ratio": 0.5}, {"ciede2000": 9.5, "colorfulness_ratio": 0.9},
    ...         {"ciede2000": 10.0, "colorfulness_ratio": 1.1}]
    >>> choose(rows, (0.8, 1.2))["ciede2000"]
    9.5
    """
    inside = [r for r in rows if band[0] <= r["colorfulness_ratio"] <= band[1]]
    if inside:
        return min(inside, key=lambda r: r["ciede2000"])
    return min(rows, key=lambda r: min(abs(r["colorfulness_ratio"] - b) for b in band))


@torch.no_grad()
def tune(
    model_dir: str | Path,
    data: str,
    split: str = "val",
    size: int = 256,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    scales: Sequence[float] = DEFAULT_SCALES,
    band: tuple[float, float] = DEFAULT_BAND,
    scenes_only: bool = True,
    n: int | None = None,
    seed: int = 0,
    write: bool = False,
    powers: Sequence[float] = DEFAULT_POWERS,
    fusions: Sequence[int] = DEFAULT_FUSIONS,
) -> dict[str, Any]:
    """Score every (temperature, scale, confidence power, fusion size) on ``split`` and pick one by the rule."""
    if split == "test":
        raise EvaluationError("tune on the val split (or another that is not the test split): test is for reporting")
    model = for_inference(load_model(Path(model_dir)))
    if model.predicts != "ab":
        raise EvaluationError(f"{model_dir}: only chroma models have a decoding to tune")
    rgb, gray, indices = _sample(data, split, size, n, seed, scenes_only)
    gray16 = to_gray16(gray)
    truth_lab = rgb_to_lab(rgb)
    truth_cf = colorfulness(rgb).double().mean().item()
    gray_de = mean_ciede2000_lab(rgb_to_lab(gray.expand(-1, 3, -1, -1)), truth_lab).double().mean().item()
    classification = getattr(model, "head_kind", "classification") == "classification"
    temps = temperatures if classification else [model.decoding.temperature]
    l_work = resize(gray16_to_l(gray16), working_size(*gray16.shape[-2:], size, model.stride))
    # The network runs once a size (fusion sizes from the working size's L, as the pipeline); settings only decode.
    outputs = {0: _network_outputs(model, l_work, size)}
    outputs.update({f: _network_outputs(model, l_work, f) for f in fusions
                    if fusion_working_size(tuple(l_work.shape[-2:]), f, model.stride) is not None})
    rows = []
    for t, s, power, fusion in product(temps, scales, powers if classification else [0.0], fusions):
        decoding = replace(model.decoding, temperature=float(t), chroma_scale=float(s), confidence_power=float(power),
                           fusion_size=int(fusion))
        de, cf = [], []
        coarse = outputs.get(fusion) if fusion else None  # None where the pipeline would not fuse either
        for i, (start, raw) in enumerate(outputs[0]):
            part = slice(start, start + len(raw))
            ab = model.decode(raw, decoding).float()
            if coarse is not None:
                ab = fuse_chroma(ab, model.decode(coarse[i][1], decoding).float())
            out = torch.from_numpy(merge_gray_ab(gray16[part], ab, np.float32)).permute(0, 3, 1, 2)
            de.append(mean_ciede2000_lab(rgb_to_lab(out), truth_lab[part]))
            cf.append(colorfulness(out))
        ciede = torch.cat(de).double().mean().item()
        rows.append({"decoding": decoding.to_dict(), "ciede2000": ciede, "ciede2000_vs_gray": ciede / gray_de,
                     "colorfulness_ratio": torch.cat(cf).double().mean().item() / truth_cf})
    best = choose(rows, band)
    if write:
        save_decoding(Path(model_dir), Decoding.from_dict(best["decoding"]))
    return {"model": str(model_dir), "data": data, "split": split, "size": size, "n_images": len(indices),
            "scenes_only": scenes_only, "band": list(band), "gray_ciede2000": gray_de, "rows": rows,
            "chosen": best, "written": write}


def _sample(data: str, split: str, size: int, n: int | None, seed: int, scenes_only: bool):
    """RGB and gray ``(N, C, size, size)`` of the seeded sample of ``split`` (whole scenes only, if
    asked and there are any) and the indices drawn."""
    dataset = getattr(build_splits(data, size, seed), split)
    indices = sample_indices(len(dataset), n, seed)
    if scenes_only:
        categories = sample_categories(data, split, size, seed, indices)
        indices = [i for i, c in zip(indices, categories) if c not in ("cutout", "?")] or indices
    if not indices:
        raise EvaluationError(f"{data}: the {split} split is empty")
    return (*load_images(dataset, indices), indices)


def _network_outputs(model, lightness: torch.Tensor, size: int, batch: int = 16) -> list[tuple[int, torch.Tensor]]:
    """``(first index, raw output)`` of each batch of L at the working size of ``size``, as
    :func:`autocolor.pipeline.predict_chroma` runs the network without hints."""
    work = working_size(*lightness.shape[-2:], size, model.stride)
    return [(start, model(resize(lightness[start:start + batch], work)))
            for start in range(0, len(lightness), batch)]


def format_tune(report: dict[str, Any]) -> str:
    lines = [f"{report['split']} split, {report['n_images']} {'whole-scene ' if report['scenes_only'] else ''}"
             f"photos at {report['size']} px; gray copy CIEDE2000 {report['gray_ciede2000']:.3f}", "",
             "| temperature | chroma scale | confidence power | fusion size | CIEDE2000 | x gray "
             "| colorfulness ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        d = r["decoding"]
        mark = " **chosen**" if r is report["chosen"] else ""
        lines.append(f"| {d['temperature']:g} | {d['chroma_scale']:g} | {d.get('confidence_power', 0):g} | "
                     f"{d.get('fusion_size', 0) or '-'} | {r['ciede2000']:.3f} | "
                     f"{r['ciede2000_vs_gray']:.3f} | {r['colorfulness_ratio']:.3f}{mark} |")
    d = report["chosen"]["decoding"]
    lines += ["", f"chosen by the rule (colorfulness in {report['band'][0]:g}-{report['band'][1]:g}, lowest CIEDE2000): "
              f"temperature {d['temperature']:g}, chroma scale {d['chroma_scale']:g}, "
              f"confidence power {d.get('confidence_power', 0):g}, fusion size {d.get('fusion_size', 0) or 'off'}"
              + (" (written to decoding.json)" if report["written"] else " (not written; --write saves it)")]
    return "\n".join(lines)


HINT_DECAYS = (0.0, 0.0003, 0.001, 0.003, 0.01, 0.03)  # divided by the hinted cells: a log grid
HINT_CHROMA_SCALES = settings.TUNE_HINT_SCALES
TUNE_HINT_COUNTS = (1, 2, 5, 10, 20)


@torch.no_grad()
def tune_hints(model_dir: str | Path, data: str, split: str = "val", decays: Sequence[float] = HINT_DECAYS,
               n: int | None = 24, write: bool = False,
               scales: Sequence[float] = HINT_CHROMA_SCALES) -> dict[str, Any]:
    """Choose ``refine_hints``, ``hint_decay`` and ``hint_chroma_scale`` by simulated
    users (see the module docstring)."""
    from autocolor.evaluate import ModelEntry
    from autocolor.evaluate_hints import evaluate_hints

    if split == "test":
        raise EvaluationError("tune on the val split (or another that is not the test split): test is for reporting")
    model = for_inference(load_model(Path(model_dir)))
    if not model.guided:
        raise EvaluationError(f"{model_dir}: not a hint-aware model; nothing to tune for hints")
    candidates = []
    for scale in scales:
        start = replace(model.decoding, hint_chroma_scale=float(scale))
        candidates += [replace(start, refine_hints=False)]
        candidates += [replace(start, refine_hints=True, hint_decay=float(d)) for d in decays]
    rows = []
    for decoding in candidates:
        model.decoding = decoding
        report = evaluate_hints([ModelEntry("m", model, str(model_dir))], data, counts=TUNE_HINT_COUNTS, n=n,
                                split=split)
        curve = report["models"][0]["points"]
        rows.append({"decoding": decoding.to_dict(), "by_points": {c: v["ciede2000_vs_gray"] for c, v in curve.items()},
                     "mean_vs_gray": sum(v["ciede2000_vs_gray"] for v in curve.values()) / len(curve)})
    best = min(rows, key=lambda r: r["mean_vs_gray"])
    if write:
        save_decoding(Path(model_dir), Decoding.from_dict(best["decoding"]))
    return {"model": str(model_dir), "split": split, "n_images": report["n_images"], "rows": rows, "chosen": best,
            "written": write}


def format_tune_hints(report: dict[str, Any]) -> str:
    counts = list(report["rows"][0]["by_points"])
    lines = [f"{report['split']} split, {report['n_images']} photos; CIEDE2000 x gray copy by simulated points", "",
             "| refinement | " + " | ".join(counts) + " | mean |", "|---|" + "---:|" * (len(counts) + 1)]
    for r in report["rows"]:
        d = r["decoding"]
        name = (f"decay {d['hint_decay']:g}" if d["refine_hints"] else "none (network only)") + \
            f", scale {d['hint_chroma_scale']:g}"
        mark = " **chosen**" if r is report["chosen"] else ""
        lines.append(f"| {name}{mark} | " + " | ".join(f"{r['by_points'][c]:.3f}" for c in counts)
                     + f" | {r['mean_vs_gray']:.3f} |")
    return "\n".join(lines)
