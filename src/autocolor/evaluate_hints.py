"""Guided colorization measured as Zhang et al. (2017) measure it: simulated users.

For each photo and each number of points (0, 1, 2, 5, 10, 20, 50), the
points are drawn at seeded random pixels, each giving the mean true ab of
its 5 x 5 patch at the working size. The draw is seeded by the photo and
the count (rows first, then columns), so the sets for different counts share
their rows' prefix but not their points: they are not nested. Every model
gets the same points: the hint-aware network, Levin et al.'s
optimization (``levin``) and automatic models (which ignore hints and give
one flat line). The reference mode gives the network a global hint: the ab
histogram of the photo itself (an upper bound) or of another photo of the
same category in the split.

Numbers are per image, then means over images: CIEDE2000 (and its ratio to
the gray copy's) and PSNR on RGB in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from autocolor.checkpoint import atomic_write_bytes
from autocolor.color import gray16_to_l, merge_gray_ab, rgb_to_lab
from autocolor.data import build_splits, parse_spec
from autocolor.evaluate import EvaluationError, ModelEntry, load_images, resolve_model, sample_indices
from autocolor.guide import OUTPUT_STRIDE, Guide, ab_histogram, make_guide, point_hints, random_centers
from autocolor.metrics import mean_ciede2000_lab, psnr
from autocolor.pipeline import predict_chroma, to_gray16

HINT_COUNTS = (0, 1, 2, 5, 10, 20, 50)
PATCH = 5  # side of each simulated point's patch, in working-size pixels (Zhang et al.'s evaluation)


def seeded_centers(index: int, h: int, w: int, count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` seeded pixels for image ``index`` (the same for every model)."""
    return random_centers(h, w, count, torch.Generator().manual_seed(seed * 100_003 + index))


def simulated_guide(lightness: torch.Tensor, ab: torch.Tensor, first: int, count: int, seed: int,
                    reference: torch.Tensor | None = None, reach: float = 0.0) -> Guide:
    """Points for images ``first .. first + B`` of a sample (``(B, 1, S, S)`` L and ``(B, 2, S, S)`` true ab)."""
    hints, masks = [], []
    for i in range(len(ab)):
        centers = seeded_centers(first + i, ab.shape[-2], ab.shape[-1], count, seed)
        hint, mask = point_hints(ab[i], centers, PATCH)
        hints.append(hint)
        masks.append(mask)
    return make_guide(lightness, torch.stack(hints), torch.stack(masks), reference, reach)


def _scores(entry: ModelEntry, gray16: np.ndarray, truth_rgb: torch.Tensor, truth_lab: torch.Tensor,
            size: int, guide: Guide | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image CIEDE2000 and PSNR of one model on one batch."""
    if entry.model is None:  # the gray copy
        out = torch.from_numpy(gray16.astype(np.float32) / 65535.0).unsqueeze(1).expand(-1, 3, -1, -1)
    else:
        hints = guide if entry.model.guided else None
        ab = predict_chroma(entry.model, gray16_to_l(gray16), size, hints)
        out = torch.from_numpy(merge_gray_ab(gray16, ab, np.float32)).permute(0, 3, 1, 2)
    return mean_ciede2000_lab(rgb_to_lab(out), truth_lab), psnr(out, truth_rgb)


def _other_of_same_category(categories: list[str]) -> list[int]:
    """For each image, the next image of its category in the sample (wrapping), else the next image."""
    partner = []
    for i, cat in enumerate(categories):
        same = [j for j in range(len(categories)) if categories[j] == cat and j != i]
        after = [j for j in same if j > i]
        partner.append((after or same or [(i + 1) % len(categories)])[0])
    return partner


def sample_categories(data: str, split: str, size: int, seed: int, indices: Sequence[int]) -> list[str]:
    """Each sampled photo's scene category, from the corpus manifest (``?`` if there is none)."""
    from autocolor.photos import PhotoCorpusError, photo_categories

    _, root = parse_spec(data)
    dataset = getattr(build_splits(data, size, seed), split)
    try:
        table = photo_categories(root)
    except PhotoCorpusError:
        table = {}
    files = getattr(dataset, "files", None) or []
    return [table.get(Path(files[i]).relative_to(root).as_posix(), "?") if files else "?" for i in indices]


@dataclass
class _Sample:
    """The photos every model is scored on, with the truth the simulated users read."""

    rgb: torch.Tensor  # (N, 3, S, S) in [0, 1]
    gray: torch.Tensor  # (N, 1, S, S)
    truth_lab: torch.Tensor  # (N, 3, S, S)
    own_hist: torch.Tensor | None  # each photo's own ab histogram (None: no model has bins)
    partner: list[int]  # for each photo, another photo of its category
    size: int
    seed: int
    batch_size: int


@torch.no_grad()
def evaluate_hints(
    models: Sequence[str | ModelEntry],
    data: str,
    size: int = 256,
    counts: Sequence[int] = HINT_COUNTS,
    n: int | None = None,
    seed: int = 0,
    split: str = "test",
    batch_size: int = 16,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """CIEDE2000 and PSNR against the number of simulated points, per model,
    plus the reference-photo mode for hint-aware networks (see the module docstring)."""
    if any(c < 0 for c in counts):
        raise EvaluationError(f"point counts must be >= 0, got {list(counts)}")
    entries = [s if isinstance(s, ModelEntry) else resolve_model(s) for s in models]
    sample = _load_sample(entries, data, size, n, seed, split, batch_size)
    gray_score = _mean_scores(sample, ModelEntry("gray", None, "gray copy"), 0)
    rows = [_model_row(sample, entry, counts) for entry in entries]
    for row in rows:
        for score in [*row["points"].values(), row.get("reference_own"), row.get("reference_other")]:
            if score is not None:
                score["ciede2000_vs_gray"] = score["ciede2000"] / gray_score["ciede2000"]
    report = {"data": data, "split": split, "size": size, "seed": seed, "n_images": len(sample.rgb),
              "patch": PATCH, "counts": list(counts), "gray": gray_score, "models": rows}
    if out_dir is not None:
        _write_hints_report(report, Path(out_dir))
    return report


def _load_sample(entries: list[ModelEntry], data: str, size: int, n: int | None, seed: int, split: str,
                 batch_size: int) -> _Sample:
    """Draw the seeded sample of the split and prepare its truth, histograms and same-category partners."""
    dataset = getattr(build_splits(data, size, seed), split)
    indices = sample_indices(len(dataset), n, seed)
    if not indices:
        raise EvaluationError(f"{data}: the {split} split is empty")
    rgb, gray = load_images(dataset, indices)
    categories = sample_categories(data, split, size, seed, indices)
    partner = _other_of_same_category(categories)
    truth_lab = rgb_to_lab(rgb)
    bins = next((e.model.bins for e in entries if e.model is not None and hasattr(e.model, "bins")), None)
    own_hist = ab_histogram(F.avg_pool2d(truth_lab[:, 1:], OUTPUT_STRIDE), bins) if bins is not None else None
    return _Sample(rgb, gray, truth_lab, own_hist, partner, size, seed, batch_size)


def _mean_scores(sample: _Sample, entry: ModelEntry, count: int, reference: str | None = None) -> dict[str, float]:
    """Mean CIEDE2000 and PSNR of one model with ``count`` points per photo and, if asked, a reference
    histogram (``"own"``: the photo's own; ``"other"``: its partner's)."""
    rgb, batch_size = sample.rgb, sample.batch_size
    de, ps = [], []
    for start in range(0, len(rgb), batch_size):
        part = slice(start, start + batch_size)
        gray16 = to_gray16(sample.gray[part])
        ref = None
        if reference == "own":
            ref = sample.own_hist[part]
        elif reference == "other":
            ref = sample.own_hist[[sample.partner[i] for i in range(start, min(len(rgb), start + batch_size))]]
        reach = entry.model.spread_reach if entry.model is not None else 0.0
        guide = simulated_guide(gray16_to_l(gray16), sample.truth_lab[part, 1:], start, count, sample.seed, ref,
                                reach)
        d, p = _scores(entry, gray16, rgb[part], sample.truth_lab[part], sample.size, guide)
        de.append(d)
        ps.append(p)
    return {"ciede2000": torch.cat(de).double().mean().item(), "psnr": torch.cat(ps).double().mean().item()}


def _model_row(sample: _Sample, entry: ModelEntry, counts: Sequence[int]) -> dict[str, Any]:
    """One model's scores per point count (one flat line for an automatic model) and, for a
    hint-aware network, with its own and another photo's colors as the reference."""
    hinted = entry.model is not None and entry.model.guided
    curve = {}
    for count in counts:
        if not hinted and count and curve:  # an automatic model ignores hints: one flat line
            curve[str(count)] = curve[str(counts[0])]
            continue
        curve[str(count)] = _mean_scores(sample, entry, count)
    row: dict[str, Any] = {"label": entry.label, "source": entry.source, "guided": hinted, "points": curve}
    if hinted and entry.model.registry_name != "levin":
        row["reference_own"] = _mean_scores(sample, entry, 0, "own")
        row["reference_other"] = _mean_scores(sample, entry, 0, "other")
    return row


def _write_hints_report(report: dict[str, Any], out: Path) -> None:
    """Write hints.json, hints.md and hints.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "hints.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "hints.md", format_hints_markdown(report).encode())
    plot_hints(report, out / "hints.png")


def format_hints_markdown(report: dict[str, Any]) -> str:
    counts = [str(c) for c in report["counts"]]
    lines = [
        f"# Guided colorization: {report['n_images']} {report['split']} photos at {report['size']} px",
        "",
        f"Data `{report['data']}`; points are {report['patch']}x{report['patch']} patch means of the truth at "
        f"seeded pixels (seed {report['seed']}), the same for every model. Gray copy: CIEDE2000 "
        f"{report['gray']['ciede2000']:.3f}, PSNR {report['gray']['psnr']:.2f} dB.",
        "",
        "CIEDE2000 (x gray copy) by number of points:",
        "",
        "| model | " + " | ".join(counts) + " |",
        "|---|" + "---:|" * len(counts),
    ]
    for row in report["models"]:
        cells = [f"{row['points'][c]['ciede2000']:.2f} ({row['points'][c]['ciede2000_vs_gray']:.3f}x)" for c in counts]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += ["", "PSNR (dB) by number of points:", "", "| model | " + " | ".join(counts) + " |",
              "|---|" + "---:|" * len(counts)]
    for row in report["models"]:
        lines.append(f"| {row['label']} | " + " | ".join(f"{row['points'][c]['psnr']:.2f}" for c in counts) + " |")
    refs = [r for r in report["models"] if "reference_own" in r]
    if refs:
        lines += ["", "Reference photo, no points: CIEDE2000 (x gray), PSNR", "",
                  "| model | automatic | its own colors (upper bound) | another photo of its category |",
                  "|---|---:|---:|---:|"]
        for row in refs:
            cells = [row["points"][counts[0]], row["reference_own"], row["reference_other"]]
            lines.append(f"| {row['label']} | " + " | ".join(
                f"{c['ciede2000']:.2f} ({c['ciede2000_vs_gray']:.3f}x), {c['psnr']:.2f} dB" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot_hints(report: dict[str, Any], path: Path) -> None:
    """CIEDE2000 / gray copy and PSNR against the number of points, one line per model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is a convenience; the tables hold the numbers
        return
    counts = report["counts"]
    xs = [max(c, 0.5) for c in counts]  # 0 points drawn at 0.5 on the log axis
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for row in report["models"]:
        for ax, key in zip(axes, ("ciede2000_vs_gray", "psnr")):
            ax.plot(xs, [row["points"][str(c)][key] for c in counts], marker="o", label=row["label"])
    for ax, title in zip(axes, ("CIEDE2000 / gray copy's (lower is better)", "PSNR, dB (higher is better)")):
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(c) for c in counts])
        ax.set_xlabel("simulated points")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].axhline(1.0, color="gray", lw=0.8, ls="--")
    axes[1].legend()
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
