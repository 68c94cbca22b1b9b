"""How a model does on whole photos, as people colorize them: per category,
on faces, on neutral surfaces, and across render sizes.

:func:`autocolor.evaluate.evaluate` scores square center crops; this scores
each photo of a corpus split whole, at its stored size, through the same
pipeline a user runs (:func:`autocolor.pipeline.colorize_gray`). Per photo:

- CIEDE2000 to the truth and the gray copy's, colorfulness and the truth's;
  per category, means over photos (colorfulness ratio: a ratio of means).
- Faces: frontal faces found by OpenCV's Haar detector on the gray photo;
  inside their boxes, CIEDE2000 and the hue error (the mean absolute
  difference of CIE hue angle, in degrees, over pixels whose true chroma is
  at least 5: skin has a hue, gray pixels do not).
- Neutral surfaces: the mean predicted chroma C*ab over pixels whose true
  chroma is below 5 (white walls, gray skies, black cloth, backdrops).
- Render sizes: CIEDE2000 at 128, 256 and 384, and between the outputs at
  128 and 384 (how much the answer depends on the setting).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from autocolor.color import rgb_to_gray, rgb_to_lab
from autocolor.evaluate import ModelEntry, resolve_model
from autocolor.metrics import colorfulness, mean_ciede2000_lab
from autocolor.pipeline import colorize_gray, to_gray16

NEUTRAL_CHROMA = 5.0
RENDER_SIZES = (128, 256, 384)


def _photos(root: Path, split: str, limit: int | None) -> list[tuple[Path, str, bool]]:
    """(file, scene category, people) of a built corpus split, from its manifest."""
    import csv

    with (root / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    rows = rows[:limit] if limit else rows
    return [(root / r["file"], r.get("scene_category", "?"), r.get("people") == "1") for r in rows]


def _ciede_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from autocolor.metrics import ciede2000

    return ciede2000(rgb_to_lab(a), rgb_to_lab(b))  # (B, H, W)


def _hue_error(out_lab: torch.Tensor, truth_lab: torch.Tensor, where: torch.Tensor) -> float | None:
    keep = where & (truth_lab[1:].norm(dim=0) >= NEUTRAL_CHROMA)
    if not bool(keep.any()):
        return None
    hue = lambda lab: torch.atan2(lab[2], lab[1])  # noqa: E731
    diff = (hue(out_lab) - hue(truth_lab)).abs()
    diff = torch.minimum(diff, 2 * math.pi - diff)
    return float(torch.rad2deg(diff[keep]).mean())


@torch.no_grad()
def _score_photo(entry: ModelEntry, rgb: torch.Tensor, faces: bool, face_boxes) -> tuple[dict[str, Any], torch.Tensor]:
    """One photo's scores, and its output at render size 256 (``(3, H, W)`` in [0, 1])."""
    gray = rgb_to_gray(rgb)[None]  # (1, 1, H, W)
    gray16 = to_gray16(gray)
    truth_lab = rgb_to_lab(rgb)
    outputs = {}
    for size in RENDER_SIZES:
        if entry.model is None:
            out = gray.expand(-1, 3, -1, -1)[0]
        else:
            out = torch.from_numpy(colorize_gray(entry.model, gray16, np.float32, size, faces=faces)[0]).permute(2, 0, 1)
        outputs[size] = out
    out = outputs[256]
    out_lab = rgb_to_lab(out)
    chroma = out_lab[1:].norm(dim=0)
    neutral = truth_lab[1:].norm(dim=0) < NEUTRAL_CHROMA
    row = {
        "ciede2000": float(mean_ciede2000_lab(out_lab[None], truth_lab[None])),
        "gray_ciede2000": float(mean_ciede2000_lab(rgb_to_lab(gray.expand(-1, 3, -1, -1)), truth_lab[None])),
        "colorfulness": float(colorfulness(out[None])),
        "truth_colorfulness": float(colorfulness(rgb[None])),
        "neutral_chroma": float(chroma[neutral].mean()) if bool(neutral.any()) else None,
        "by_render_size": {str(s): float(mean_ciede2000_lab(rgb_to_lab(o)[None], truth_lab[None]))
                           for s, o in outputs.items()},
        "render_gap": float(_ciede_map(outputs[128][None], outputs[384][None]).mean()),
    }
    if face_boxes:
        inside = torch.zeros(out.shape[-2:], dtype=torch.bool)
        for f in face_boxes:
            inside[f.y : f.y + f.h, f.x : f.x + f.w] = True
        row["face_ciede2000"] = float(_ciede_map(out[None], rgb[None])[0][inside].mean())
        row["face_hue_error"] = _hue_error(out_lab, truth_lab, inside)
    return row, out


def evaluate_photos(models: Sequence[str], root: str | Path, split: str = "test", faces: Sequence[bool] = (False,),
                    limit: int | None = None, grid_dir: str | Path | None = None) -> dict[str, Any]:
    """Score every photo of ``root``'s ``split`` with every model (and face setting).
    With ``grid_dir``, also write ``faces.jpg`` (every photo with a detected face)
    and ``scenes.jpg`` (the first whole scenes): gray, each model, truth."""
    from autocolor.faces import detect_faces

    root = Path(root)
    photos = _photos(root, split, limit)
    images = []
    for path, category, people in photos:
        with Image.open(path) as im:
            rgb = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0
        gray8 = (rgb_to_gray(rgb)[0] * 255 + 0.5).to(torch.uint8).numpy()
        images.append((path, category, people, rgb, detect_faces(gray8)))
    report: dict[str, Any] = {"root": str(root), "split": split, "n_photos": len(images), "models": []}
    columns: dict[str, list[torch.Tensor]] = {}
    for spec in models:
        entry = resolve_model(spec)
        for use_faces in faces if entry.model is not None else (False,):
            label = entry.label + (" + face prior" if use_faces else "")
            rows, columns[label] = [], []
            for path, cat, people, rgb, boxes in images:
                row, out = _score_photo(entry, rgb, use_faces, boxes)
                rows.append({"file": path.name, "category": cat, "people": people, "faces": len(boxes), **row})
                columns[label].append(out)
            report["models"].append({"label": label, "summary": summarize(rows), "photos": rows})
    if grid_dir is not None:
        truth = [rgb for _, _, _, rgb, _ in images]
        with_faces = [i for i, image in enumerate(images) if image[4]]
        scenes = [i for i, image in enumerate(images) if image[1] != "cutout"][:SCENES_IN_GRID]
        for name, chosen in (("faces.jpg", with_faces), ("scenes.jpg", scenes)):
            if chosen:
                write_photo_grid(Path(grid_dir) / name, truth, columns, chosen)
    return report


SCENES_IN_GRID = 12
GRID_HEIGHT = 144  # pixels per photo in the grids


def write_photo_grid(path: Path, truth: list[torch.Tensor], columns: dict[str, list[torch.Tensor]],
                     chosen: Sequence[int]) -> None:
    """A JPEG with one row per chosen photo: gray input, each model's output, truth.
    The column order is written to ``path`` with a ``.txt`` suffix."""
    from autocolor.atomic import atomic_write_bytes

    def cell(image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        size = (GRID_HEIGHT, max(1, round(w * GRID_HEIGHT / h)))
        return F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]

    rows = []
    for i in chosen:
        cells = [rgb_to_gray(truth[i]).expand(3, -1, -1)] + [columns[label][i] for label in columns] + [truth[i]]
        row = torch.cat([F.pad(cell(c), (0, 4, 0, 4), value=1.0) for c in cells], dim=-1)
        rows.append(row)
    width = max(r.shape[-1] for r in rows)
    grid = torch.cat([F.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows], dim=-2)
    array = (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=88)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    legend = "columns: gray input | " + " | ".join(columns) + " | truth\n"
    atomic_write_bytes(path.with_suffix(".txt"), legend.encode())


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over photos: per category, whole scenes (not cut-outs), all; faces, neutral, render sizes."""
    groups: dict[str, list[dict]] = {"all": rows, "whole scenes": [r for r in rows if r["category"] != "cutout"]}
    for r in rows:
        groups.setdefault(r["category"], []).append(r)
    table = {}
    for name, members in groups.items():
        if not members:
            continue
        de, gray_de = _mean([r["ciede2000"] for r in members]), _mean([r["gray_ciede2000"] for r in members])
        cf, truth_cf = _mean([r["colorfulness"] for r in members]), _mean([r["truth_colorfulness"] for r in members])
        table[name] = {"n": len(members), "ciede2000": de, "ciede2000_vs_gray": de / gray_de,
                       "colorfulness_ratio": cf / truth_cf if truth_cf else None}
    with_faces = [r for r in rows if r.get("face_ciede2000") is not None]
    return {
        "categories": table,
        "faces": {"photos": len(with_faces), "ciede2000": _mean([r["face_ciede2000"] for r in with_faces]),
                  "hue_error": _mean([r.get("face_hue_error") for r in with_faces])},
        "neutral_chroma": _mean([r["neutral_chroma"] for r in rows]),
        "by_render_size": {s: _mean([r["by_render_size"][s] for r in rows]) for s in map(str, RENDER_SIZES)},
        "render_gap": _mean([r["render_gap"] for r in rows]),
    }


def format_photos_markdown(report: dict[str, Any]) -> str:
    fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [f"# Whole photos: {report['n_photos']} {report['split']} photos of `{report['root']}` at render size 256",
             "", "CIEDE2000 x gray copy / colorfulness ratio, per category:", ""]
    cats = sorted({c for m in report["models"] for c in m["summary"]["categories"]},
                  key=lambda c: (c not in ("all", "whole scenes"), c))
    lines += ["| model | " + " | ".join(f"{c} ({report['models'][0]['summary']['categories'].get(c, {}).get('n', 0)})"
                                       for c in cats) + " |", "|---|" + "---:|" * len(cats)]
    for m in report["models"]:
        t = m["summary"]["categories"]
        lines.append(f"| {m['label']} | " + " | ".join(
            f"{fmt(t[c]['ciede2000_vs_gray'])} / {fmt(t[c]['colorfulness_ratio'], 2)}" if c in t else "-"
            for c in cats) + " |")
    lines += ["", "| model | faces: CIEDE2000 | faces: hue error (deg) | chroma on neutral surfaces | "
              "CIEDE2000 at 128 / 256 / 384 | 128 vs 384 |", "|---|---:|---:|---:|---:|---:|"]
    for m in report["models"]:
        s = m["summary"]
        r = s["by_render_size"]
        lines.append(f"| {m['label']} | {fmt(s['faces']['ciede2000'], 2)} | {fmt(s['faces']['hue_error'], 1)} | "
                     f"{fmt(s['neutral_chroma'], 2)} | {fmt(r['128'], 2)} / {fmt(r['256'], 2)} / {fmt(r['384'], 2)} | "
                     f"{fmt(s['render_gap'], 2)} |")
    lines += ["", f"Faces: {report['models'][0]['summary']['faces']['photos']} photos with a detected face."]
    return "\n".join(lines) + "\n"
