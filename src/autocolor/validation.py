"""Scores and pictures of a model on held-out images, for training and evaluation.

Everything here colorizes through :func:`autocolor.pipeline.colorize_tensor`,
the same path the CLI and the web demo use, and compares against the gray
copy (the gray input repeated to RGB): the score a model has to beat.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from autocolor.atomic import atomic_write_bytes
from autocolor.pipeline import colorize_tensor


@torch.no_grad()
def image_grid(model: nn.Module, rgb: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Rows of gray | prediction | truth, as one ``(3, H, W)`` image."""
    from torchvision.utils import make_grid

    pred = colorize_tensor(model, gray, render_size=gray.shape[-1])
    rows = [torch.stack([gray[i].expand(3, -1, -1), pred[i].cpu(), rgb[i]]) for i in range(len(rgb))]
    return make_grid(torch.cat(rows), nrow=3, padding=2, pad_value=1.0)


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a ``(3, H, W)`` [0, 1] image as PNG, atomically."""
    from PIL import Image

    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, device: torch.device, max_batches: int) -> dict[str, float]:
    """PSNR (RGB) of the model and of the gray copy on up to ``max_batches`` batches."""
    from torchmetrics.functional.image import peak_signal_noise_ratio as psnr

    was_training = model.training
    model.eval()
    scores, gray_scores = [], []
    for i, (rgb, gray) in enumerate(loader):
        if i >= max_batches:
            break
        pred = colorize_tensor(model, gray, render_size=gray.shape[-1])
        scores.append(psnr(pred, rgb, data_range=1.0).item())
        gray_scores.append(psnr(gray.expand_as(rgb), rgb, data_range=1.0).item())
    model.train(was_training)
    if not scores:
        return {}
    return {"psnr": sum(scores) / len(scores), "psnr_gray": sum(gray_scores) / len(gray_scores)}


@torch.no_grad()
def test_metrics(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 32) -> dict[str, dict]:
    """PSNR and SSIM (both on RGB in [0, 1]) of the model and the gray copy."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    model.eval()
    meters = {
        name: (
            PeakSignalNoiseRatio(data_range=1.0, sync_on_compute=False),
            StructuralSimilarityIndexMeasure(data_range=1.0, sync_on_compute=False),
        )
        for name in ("model", "gray")
    }
    for rgb, gray in DataLoader(dataset, batch_size=batch_size):
        pred = colorize_tensor(model, gray, render_size=gray.shape[-1])
        for name, out in (("model", pred), ("gray", gray.expand_as(rgb))):
            meters[name][0].update(out, rgb)
            meters[name][1].update(out, rgb)
    return {n: {"psnr": p.compute().item(), "ssim": s.compute().item()} for n, (p, s) in meters.items()}


def format_test_table(metrics: dict[str, Any], model_name: str) -> str:
    """The Markdown table of :func:`test_metrics`' result, model first, then the gray copy.

    >>> print(format_test_table({"model": {"psnr": 24.5, "ssim": 0.91}, "gray": {"psnr": 22.0, "ssim": 0.9}}, "cae"))
    | output | PSNR (dB) | SSIM (RGB) |
    |---|---|---|
    | cae | 24.50 | 0.9100 |
    | gray copy | 22.00 | 0.9000 |
    """
    lines = ["| output | PSNR (dB) | SSIM (RGB) |", "|---|---|---|"]
    for name, label in (("model", model_name), ("gray", "gray copy")):
        lines.append(f"| {label} | {metrics[name]['psnr']:.2f} | {metrics[name]['ssim']:.4f} |")
    return "\n".join(lines)
