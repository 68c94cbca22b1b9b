"""Evaluation that anyone can rerun: trained models against the gray copy.

``evaluate()`` colorizes the same seeded sample of a data split at each size
with every model, through :mod:`autocolor.pipeline` (the path the CLI and the
web demo use), and reports PSNR, SSIM, CIEDE2000 and
colorfulness. Because PSNR and CIEDE2000 reward timid color, it also sweeps a
saturation factor on each model's ab and reports CIEDE2000 at equal
colorfulness, so a muted model and a vivid one can be compared fairly.

How the numbers are averaged (also written into results.md):

- PSNR (dB, data range 1), SSIM (11x11 Gaussian window, on the RGB
  channels, not on L) and CIEDE2000 (mean over the image's pixels) are
  computed per image, then averaged over images. PSNR is therefore the mean
  of per-image PSNRs, not the PSNR of the pooled error.
- Colorfulness (Hasler and Suesstrunk) is computed per image, then averaged
  over images; the colorfulness ratio is mean output colorfulness over mean
  ground-truth colorfulness (a ratio of means).
- ``ciede2000_vs_gray``: the model's mean CIEDE2000 over the gray copy's, on
  the same images at the same size (below 1 beats leaving the photo gray).
- ``ciede2000_at_colorfulness``: CIEDE2000 interpolated linearly between the
  two neighbouring saturation factors whose colorfulness ratios bracket the
  target; ``None`` where the sweep never reaches it.

Model specs: ``gray`` (the gray input repeated to RGB; ``grey`` is accepted
too), ``default`` (the shipped weights in ``autocolor/weights/default/``), a
model folder (as training writes it: ``model.safetensors`` + ``config.json``,
or a run folder with only ``checkpoints/`` yet, whose newest checkpoint is
used), or ``LABEL=FOLDER`` to name it. A bare registered architecture name is refused:
untrained weights measure nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from autocolor.checkpoint import CONFIG_NAME, atomic_write_bytes, checkpoint_candidates, load_model
from autocolor.color import gray16_to_l, gray_to_rgb, merge_gray_ab, rgb_to_lab, saturate_rgb
from autocolor.data import build_splits
from autocolor.errors import AutocolorError
from autocolor.metrics import colorfulness, mean_ciede2000_lab, psnr, ssim
from autocolor.models import available_models, count_parameters
from autocolor.models.base import for_inference
from autocolor.pipeline import colorize_tensor, predict_chroma, to_gray16
from autocolor.validation import save_png

GRAY = "gray"
GRAY_ALIASES = (GRAY, "grey")  # "grey" was the spec's spelling before; still accepted
DEFAULT_SIZES = (32, 256)
DEFAULT_SATURATIONS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5)
COLORFULNESS_TARGETS = (0.7, 0.85, 1.0)  # the band starts at 0.7, its stretch band at 0.85
MIN_SIZE = 16  # SSIM's 11-pixel window and the chroma models' stride of 16

DEFINITIONS = {
    "psnr": "dB, data range 1, on RGB in [0, 1]; per image, then the mean over images",
    "ssim": "torchmetrics SSIM (11x11 Gaussian window, sigma 1.5) on the RGB channels, not on L; "
    "per image, then the mean over images",
    "ciede2000": "CIEDE2000 (Sharma et al. 2005) per pixel, mean over pixels per image, then mean over images",
    "ciede2000_vs_gray": "the model's mean CIEDE2000 over the gray copy's on the same images (below 1 beats gray)",
    "colorfulness": "Hasler and Suesstrunk (2003) on RGB 0-255 per image, then the mean over images",
    "colorfulness_ratio": "mean output colorfulness / mean ground-truth colorfulness",
    "saturation": "factor on the predicted ab (the pipeline's saturation argument); 1 = as the model predicts",
    "ciede2000_at_colorfulness": "CIEDE2000 interpolated linearly along the saturation sweep at that colorfulness "
    "ratio; null where the sweep does not reach it",
    "psnr_at_colorfulness": "PSNR interpolated the same way: PSNR falls as color is added, so models are compared "
    "at equal colorfulness",
}


class EvaluationError(AutocolorError, ValueError):
    """Evaluation settings that cannot work, with what to pass instead."""


@dataclass(frozen=True)
class ModelEntry:
    """A model to evaluate: ``model`` is None for the gray copy."""

    label: str
    model: nn.Module | None
    source: str
    trained_parameters: int | None = None  # counted before for_inference folded the batch norms away

    @property
    def kind(self) -> str:
        return GRAY if self.model is None else self.model.predicts

    @property
    def parameters(self) -> int:
        if self.trained_parameters is not None:
            return self.trained_parameters
        return 0 if self.model is None else count_parameters(self.model)


def shipped_weights_dir(name: str) -> Path:
    """Where weights shipped with the package live (``default`` and any others)."""
    return Path(__file__).resolve().parent / "weights" / name


def _model_folder(path: Path) -> Path:
    """A folder with the final weights, or the newest checkpoint of an unfinished run."""
    if path.is_file() or (path / CONFIG_NAME).is_file():
        return path
    candidates = checkpoint_candidates(path)
    return candidates[0] if candidates else path


def resolve_model(spec: str, device: torch.device | str = "cpu") -> ModelEntry:
    """Load the model a spec names: ``gray``, ``default``, ``FOLDER`` or ``LABEL=FOLDER``."""
    label, sep, location = (part.strip() for part in spec.partition("="))
    if not sep:
        location = label = GRAY if label in GRAY_ALIASES else label
    if not label or not location:
        raise EvaluationError(f"bad model spec {spec!r}: use gray, default, a model folder, or LABEL=FOLDER")
    if location in GRAY_ALIASES:
        return ModelEntry(label, None, "gray copy (gray input repeated to RGB)")
    if location == "levin":
        from autocolor.models import create_model

        return ModelEntry(label, create_model("levin"), "Levin et al. 2004 optimization (hints only, no learning)")
    path = Path(location).expanduser()
    if not path.exists() and "/" not in location:
        shipped = shipped_weights_dir(location)
        if shipped.is_dir():
            path = shipped
        elif location == "default":
            raise EvaluationError(
                f"default: no shipped weights at {shipped} (they may still be in training); "
                "pass a trained model folder instead, e.g. mine=runs/chroma"
            )
        elif location in available_models():
            raise EvaluationError(
                f"{location!r} is an architecture, not a trained model, and untrained weights measure nothing: "
                f"pass the folder its training run wrote, e.g. {location}=runs/{location}"
            )
    if not path.exists():
        raise EvaluationError(f"{spec}: no model folder at {path} (specs: gray, default, FOLDER, LABEL=FOLDER)")
    folder = _model_folder(path)
    model = load_model(folder)
    count = count_parameters(model)
    return ModelEntry(label, for_inference(model).to(device), str(folder), count)


def resolve_models(specs: Sequence[str], device: torch.device | str = "cpu") -> list[ModelEntry]:
    if not specs:
        raise EvaluationError("no models to evaluate")
    entries = [resolve_model(s, device) for s in specs]
    labels = [e.label for e in entries]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise EvaluationError(f"model labels must differ; repeated: {', '.join(duplicates)} (use LABEL=FOLDER)")
    return entries


# ---------------------------------------------------------------- images and predictions


def sample_indices(length: int, n: int | None, seed: int) -> list[int]:
    """``n`` indices of a ``length``-item split, drawn with ``seed`` and sorted
    (all of them when ``n`` is None or too large): the same images at every size."""
    if n is None or n >= length:
        return list(range(length))
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:n].tolist())


def load_images(dataset: Dataset, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the chosen items: ``(N, 3, S, S)`` RGB and ``(N, 1, S, S)`` gray."""
    items = [dataset[i] for i in indices]
    return torch.stack([rgb for rgb, _ in items]), torch.stack([gray for _, gray in items])


def colorize_at_saturations(
    entry: ModelEntry, gray: torch.Tensor, render_size: int, saturations: Sequence[float]
) -> list[torch.Tensor]:
    """``colorize_tensor(model, gray, render_size, saturation=s)`` for each ``s``,
    running the network once: chroma models rescale their predicted ab before
    the merge, RGB models rescale the chroma of their output, both exactly as
    the pipeline does. The gray copy ignores saturation (gray has no chroma).

    Returns a list of ``(B, 3, H, W)`` RGB in [0, 1], one per saturation.
    """
    if entry.model is None:
        return [gray_to_rgb(gray)] * len(saturations)
    if entry.model.predicts == "ab":
        gray16 = to_gray16(gray)
        ab = predict_chroma(entry.model, gray16_to_l(gray16), render_size)
        return [torch.from_numpy(merge_gray_ab(gray16, ab * s, np.float32)).permute(0, 3, 1, 2) for s in saturations]
    rgb = colorize_tensor(entry.model, gray, render_size)
    return [rgb if s == 1.0 else saturate_rgb(rgb, s) for s in saturations]


def interpolate_at(ratios: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """Value at ``target`` along a polyline of (ratio, value) points, taken in
    order; the first segment that brackets ``target`` wins. None if none does."""
    points = list(zip(ratios, values))
    for (r0, v0), (r1, v1) in zip(points[:-1], points[1:]):
        lo, hi = min(r0, r1), max(r0, r1)
        if lo <= target <= hi:
            if r1 == r0:
                return v0
            return v0 + (v1 - v0) * (target - r0) / (r1 - r0)
    if len(points) == 1 and points[0][0] == target:
        return points[0][1]
    return None


def _mean(values: list[torch.Tensor]) -> float:
    return torch.cat(values).double().mean().item()


# ---------------------------------------------------------------- the evaluation


def _evaluate_size(
    entries: list[ModelEntry],
    rgb: torch.Tensor,
    gray: torch.Tensor,
    size: int,
    saturations: list[float],
    batch_size: int,
    grid_rows: int,
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Metrics for every model at one size, plus the grid's columns."""
    truth_lab, truth_colorfulness, gray_ciede2000 = _truth_and_gray_copy(rgb, gray, batch_size)
    columns = [gray_to_rgb(gray[:grid_rows]).cpu()]
    rows = []
    for entry in entries:
        scores, column = _score_model(entry, rgb, gray, truth_lab, size, saturations, batch_size, grid_rows)
        columns.append(column)
        rows.append(_model_row(entry, scores, saturations, truth_colorfulness, gray_ciede2000))
    columns.append(rgb[:grid_rows].cpu())
    result = {
        "size": size,
        "n_images": len(rgb),
        "truth_colorfulness": truth_colorfulness,
        "gray_ciede2000": gray_ciede2000,
        "models": rows,
    }
    return result, columns


def _truth_and_gray_copy(rgb: torch.Tensor, gray: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float, float]:
    """The truth in Lab (converted once, compared with every output), its colorfulness, the gray copy's CIEDE2000."""
    truth_cf: list[torch.Tensor] = []
    gray_de: list[torch.Tensor] = []
    truth_lab = torch.empty_like(rgb)
    for start in range(0, len(rgb), batch_size):
        batch = slice(start, start + batch_size)
        truth_lab[batch] = rgb_to_lab(rgb[batch])
        truth_cf.append(colorfulness(rgb[batch]).cpu())
        gray_de.append(mean_ciede2000_lab(rgb_to_lab(gray_to_rgb(gray[batch])), truth_lab[batch]).cpu())
    return truth_lab, _mean(truth_cf), _mean(gray_de)


def _score_model(
    entry: ModelEntry,
    rgb: torch.Tensor,
    gray: torch.Tensor,
    truth_lab: torch.Tensor,
    size: int,
    saturations: list[float],
    batch_size: int,
    grid_rows: int,
) -> tuple[dict[str, list], torch.Tensor]:
    """One model's per-image CIEDE2000, colorfulness and PSNR at each saturation (SSIM at 1), and its grid column."""
    device = rgb.device
    main = saturations.index(1.0)
    scores: dict[str, list] = {key: [[] for _ in saturations] for key in ("ciede2000", "colorfulness", "psnr")}
    scores["ssim"] = []
    grid_part: list[torch.Tensor] = []
    for start in range(0, len(rgb), batch_size):
        batch_rgb, batch_gray = rgb[start : start + batch_size], gray[start : start + batch_size]
        batch_lab = truth_lab[start : start + batch_size]
        outputs = colorize_at_saturations(entry, batch_gray, size, saturations)
        for k, (de, cf, ps) in enumerate(_score_outputs(outputs, batch_rgb, batch_lab)):
            scores["ciede2000"][k].append(de)
            scores["colorfulness"][k].append(cf)
            scores["psnr"][k].append(ps)
        pred = outputs[main].to(device)
        scores["ssim"].append(ssim(pred, batch_rgb).cpu())
        if start < grid_rows:
            grid_part.append(pred[: grid_rows - start].cpu())
    return scores, torch.cat(grid_part)


def _score_outputs(
    outputs: list[torch.Tensor], truth_rgb: torch.Tensor, truth_lab: torch.Tensor
) -> list[tuple[torch.Tensor, ...]]:
    """Per-image CIEDE2000, colorfulness and PSNR of each output; one repeated (the gray copy's) is scored once."""
    scored: dict[int, tuple[torch.Tensor, ...]] = {}
    for out in outputs:
        if id(out) not in scored:
            out_dev = out.to(truth_rgb.device)
            de = mean_ciede2000_lab(rgb_to_lab(out_dev), truth_lab).cpu()
            scored[id(out)] = (de, colorfulness(out_dev).cpu(), psnr(out_dev, truth_rgb).cpu())
    return [scored[id(out)] for out in outputs]


def _sweep(saturations: list[float], scores: dict[str, list], truth_colorfulness: float) -> list[dict[str, float]]:
    """One point of the saturation sweep per factor: mean PSNR, CIEDE2000, colorfulness and its ratio to the truth's."""
    sweep = []
    for s, de, cf, ps in zip(saturations, scores["ciede2000"], scores["colorfulness"], scores["psnr"]):
        cf_mean = _mean(cf)
        sweep.append(
            {
                "saturation": s,
                "psnr": _mean(ps),
                "ciede2000": _mean(de),
                "colorfulness": cf_mean,
                "colorfulness_ratio": cf_mean / truth_colorfulness if truth_colorfulness > 0 else math.nan,
            }
        )
    return sweep


def _model_row(
    entry: ModelEntry, scores: dict[str, list], saturations: list[float], truth_colorfulness: float,
    gray_ciede2000: float,
) -> dict[str, Any]:
    """One model's row of the report: the metrics at saturation 1, the sweep and the values at equal colorfulness."""
    main = saturations.index(1.0)
    sweep = _sweep(saturations, scores, truth_colorfulness)
    ratios = [p["colorfulness_ratio"] for p in sweep]
    errors = [p["ciede2000"] for p in sweep]
    at_cf = {f"{t:g}": interpolate_at(ratios, errors, t) for t in COLORFULNESS_TARGETS}
    psnr_at_cf = {f"{t:g}": interpolate_at(ratios, [p["psnr"] for p in sweep], t) for t in COLORFULNESS_TARGETS}
    de_main = sweep[main]["ciede2000"]
    return {
        "label": entry.label,
        "source": entry.source,
        "kind": entry.kind,
        "parameters": entry.parameters,
        "psnr": _mean(scores["psnr"][main]),
        "ssim": _mean(scores["ssim"]),
        "ciede2000": de_main,
        "ciede2000_vs_gray": de_main / gray_ciede2000 if gray_ciede2000 > 0 else math.nan,
        "colorfulness": sweep[main]["colorfulness"],
        "colorfulness_ratio": sweep[main]["colorfulness_ratio"],
        "sweep": sweep,
        "ciede2000_at_colorfulness": at_cf,
        "ciede2000_at_colorfulness_vs_gray": {
            k: (v / gray_ciede2000 if v is not None and gray_ciede2000 > 0 else None) for k, v in at_cf.items()
        },
        "psnr_at_colorfulness": psnr_at_cf,
    }


def grid_image(columns: list[torch.Tensor]) -> torch.Tensor:
    """Lay ``(K, 3, S, S)`` columns side by side, image i in row i: ``(3, H, W)``."""
    from torchvision.utils import make_grid

    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # (K * columns, 3, S, S), row-major
    return make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0)


@torch.no_grad()
def evaluate(
    models: Sequence[str],
    data: str,
    sizes: Sequence[int] = DEFAULT_SIZES,
    n: int | None = 100,
    seed: int = 0,
    split: str = "test",
    saturations: Sequence[float] = DEFAULT_SATURATIONS,
    out_dir: str | Path | None = None,
    batch_size: int = 16,
    grid_rows: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate ``models`` (specs, see the module docstring) on ``data``.

    Args:
        models: model specs, e.g. ``["gray", "default", "cae=runs/cae"]``.
        data: a data spec for :func:`autocolor.data.build_splits`.
        sizes: square center-crop sides; models work at each (chroma models
            render at it, the CIFAR CAE at 32 and is upsampled).
        n: images drawn with ``seed`` from the split (None: all of it).
        seed: seeds the split and the sample; the run is deterministic.
        split: "test" or "val".
        saturations: factors on ab for the colorfulness trade-off (1 is
            always included: it is the model as shipped).
        out_dir: if given, results.md, results.json and grid_SIZE.png go here.
        batch_size: images per forward pass.
        grid_rows: images shown in each grid.
        device: torch device for models and metrics.

    Returns:
        A JSON-ready dict: settings, ``definitions`` and, per size in
        ``results``, the truth's colorfulness, the gray copy's CIEDE2000 and
        one row per model (see :data:`DEFINITIONS` for each number).
    """
    _check_settings(sizes, n, split, saturations)
    sweep = sorted({float(s) for s in saturations} | {1.0})
    entries = resolve_models(models, device)

    report = _new_report(data, split, seed, n, sizes, sweep, entries)
    grids: dict[int, torch.Tensor] = {}
    for size in sizes:
        dataset = getattr(build_splits(data, size, seed), split)
        indices = sample_indices(len(dataset), n, seed)
        rgb, gray = load_images(dataset, indices)
        result, columns = _evaluate_size(entries, rgb.to(device), gray.to(device), size, sweep, batch_size, grid_rows)
        report["results"].append(result)
        grids[size] = grid_image(columns)
    if out_dir is not None:
        _write_report(report, grids, Path(out_dir))
    return report


def _new_report(
    data: str, split: str, seed: int, n: int | None, sizes: Sequence[int], sweep: list[float],
    entries: list[ModelEntry],
) -> dict[str, Any]:
    """The report's settings, versions and definitions, with no results yet."""
    return {
        "data": data,
        "split": split,
        "seed": seed,
        "n": n,
        "sizes": list(sizes),
        "saturations": sweep,
        "colorfulness_targets": list(COLORFULNESS_TARGETS),
        "models": {e.label: e.source for e in entries},
        "versions": _versions(),
        "definitions": DEFINITIONS,
        "results": [],
    }


def _check_settings(sizes: Sequence[int], n: int | None, split: str, saturations: Sequence[float]) -> None:
    """Refuse evaluation settings that cannot work, saying what to pass instead."""
    if split not in ("test", "val"):
        raise EvaluationError(f"split must be 'test' or 'val', got {split!r}")
    bad = [s for s in sizes if s < MIN_SIZE]
    if not sizes or bad:
        raise EvaluationError(f"sizes must be at least {MIN_SIZE} pixels, got {list(sizes)}")
    if n is not None and n < 1:
        raise EvaluationError(f"n must be at least 1 (or None for the whole split), got {n}")
    if any(not math.isfinite(s) or s < 0 for s in saturations):
        raise EvaluationError(f"saturations must be finite and >= 0, got {list(saturations)}")


def _write_report(report: dict[str, Any], grids: dict[int, torch.Tensor], out: Path) -> None:
    """Write grid_SIZE.png, results.json and results.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for size, grid in grids.items():
        save_png(grid, out / f"grid_{size}.png")
    atomic_write_bytes(out / "results.json", json.dumps(_json_safe(report), indent=2).encode())
    atomic_write_bytes(out / "results.md", format_markdown(report).encode())


def _versions() -> dict[str, str]:
    """Library versions that change the numbers, for whoever reruns this."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("autocolor", "torch", "torchvision", "torchmetrics", "kornia"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats (PSNR of a perfect copy) become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------- the report


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one metrics table and one trade-off table per size."""
    lines = [
        "# Colorization evaluation",
        "",
        f"Data `{report['data']}`, split `{report['split']}`, seed {report['seed']}; "
        f"saturation factors {', '.join(f'{s:g}' for s in report['saturations'])}.",
        "",
        "Models: " + "; ".join(f"`{label}` = {source}" for label, source in report["models"].items()) + ".",
    ]
    for result in report["results"]:
        size = result["size"]
        lines += _metrics_table(result)
        lines += _tradeoff_table(result, report["saturations"])
        lines += _equal_colorfulness_table(result, [f"{t:g}" for t in report["colorfulness_targets"]])
        columns = " | ".join(["gray", *(row["label"] for row in result["models"]), "truth"])
        lines += ["", f"Grid `grid_{size}.png`: columns {columns}; one row per image (the first of the sample)."]
    lines += ["", "## Definitions", ""]
    lines += [f"- **{name}**: {text}." for name, text in report["definitions"].items()]
    return "\n".join(lines) + "\n"


def _metrics_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines of one size's heading and its metrics table, one row per model."""
    size = result["size"]
    note = (f"Ground-truth colorfulness {result['truth_colorfulness']:.2f}; "
            f"gray copy's CIEDE2000 {result['gray_ciede2000']:.3f}.")
    columns = ["params", "PSNR (dB)", "SSIM (RGB)", "CIEDE2000", "CIEDE2000 / gray", "colorfulness",
               "truth colorfulness", "colorfulness ratio"]
    rows = [
        (row["label"], [f"{row['parameters']:,}", _fmt(row["psnr"]), _fmt(row["ssim"], 4), _fmt(row["ciede2000"], 3),
                        _fmt(row["ciede2000_vs_gray"], 3), _fmt(row["colorfulness"]),
                        _fmt(result["truth_colorfulness"]), _fmt(row["colorfulness_ratio"], 3)])
        for row in result["models"]
    ]
    return _table(f"## {size} x {size} px, {result['n_images']} images", columns, rows, note)


def _tradeoff_table(result: dict[str, Any], sats: list[float]) -> list[str]:
    """Markdown lines of the CIEDE2000 / colorfulness ratio at each saturation factor, one row per model."""
    rows = [
        (row["label"], [f"{_fmt(p['ciede2000'], 3)} / {_fmt(p['colorfulness_ratio'], 3)}" for p in row["sweep"]])
        for row in result["models"]
    ]
    return _table(f"### Trade-off at {result['size']} px: CIEDE2000 / colorfulness ratio as ab is scaled",
                  [f"s={s:g}" for s in sats], rows)


def _equal_colorfulness_table(result: dict[str, Any], targets: list[str]) -> list[str]:
    """Markdown lines of CIEDE2000 (x gray) and PSNR at each target colorfulness ratio, one row per model."""
    rows = []
    for row in result["models"]:
        cells = []
        for t in targets:
            value, ratio = row["ciede2000_at_colorfulness"][t], row["ciede2000_at_colorfulness_vs_gray"][t]
            cells.append("unreachable" if value is None else
                         f"{value:.3f} ({_fmt(ratio, 3)}x), {_fmt(row['psnr_at_colorfulness'][t])} dB")
        rows.append((row["label"], cells))
    return _table(f"### At equal colorfulness, {result['size']} px: CIEDE2000 (x gray) and PSNR along each model's "
                  "sweep", [f"colorfulness {t}" for t in targets], rows)


def _table(title: str, columns: list[str], rows: list[tuple[str, list[str]]], note: str | None = None) -> list[str]:
    """Markdown lines of a titled table (a note under the title if given): a model column, then ``columns``."""
    lines = ["", title, ""] + ([note, ""] if note else [])
    lines += ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    return lines + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
