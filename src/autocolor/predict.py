"""One forward path from gray pixels to RGB pixels, for every kind of model.

Training, evaluation, the CLI and the web demo all call :func:`predict_rgb`,
so a model is judged exactly as it is used.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from autocolor.color import gray_to_l, merge_l_ab

DEFAULT_RENDER_SIZE = 256


def working_size(h: int, w: int, render_size: int, multiple: int = 16) -> tuple[int, int]:
    """Size with about ``render_size**2`` pixels, the input's aspect ratio, and
    both sides a multiple of ``multiple`` (never below it).

    The long side is capped at ``render_size**2 / multiple``: otherwise a thin
    strip (a 1 x 2,000,000 PNG is a few kB) would get 16 x 362,032 and take
    gigabytes. Photos are never near the cap.
    """
    scale = render_size / math.sqrt(h * w)
    cap = max(multiple, render_size * render_size // multiple // multiple * multiple)
    return (
        min(cap, max(multiple, round(h * scale / multiple) * multiple)),
        min(cap, max(multiple, round(w * scale / multiple) * multiple)),
    )


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def predict_ab(model: nn.Module, gray: torch.Tensor, render_size: int | None = None):
    """Chroma for ``(B, 1, H, W)`` gray in [0, 1]: ab in Lab units at the model's
    output resolution (the working size over 4), plus the full-resolution L."""
    lightness = gray_to_l(gray)
    h, w = gray.shape[-2:]
    size = working_size(h, w, render_size or DEFAULT_RENDER_SIZE, model.stride)
    ab = model.predict_ab(resize(lightness, size))
    return ab.float(), lightness


@torch.no_grad()
def predict_rgb(
    model: nn.Module,
    gray: torch.Tensor,
    render_size: int | None = None,
    saturation: float = 1.0,
) -> torch.Tensor:
    """Colorize ``(B, 1, H, W)`` gray in [0, 1]; returns ``(B, 3, H, W)`` RGB in [0, 1].

    Chroma models run at ``render_size`` (about that many pixels squared) and
    their ab is laid over the full-resolution L. RGB models run as designed:
    a fixed-size model (the CIFAR CAE) at its size, then upsampled; the others
    at ``render_size`` when given, else at full size.
    """
    model_dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    gray = gray.to(device=device, dtype=torch.float32)
    h, w = gray.shape[-2:]
    if model.predicts == "ab":
        ab, lightness = predict_ab(model, gray, render_size)
        return merge_l_ab(lightness, ab * saturation).clamp(0, 1)
    if model.fixed_size is not None:
        size = (model.fixed_size, model.fixed_size)
    elif render_size is not None:
        size = working_size(h, w, render_size)
    else:
        size = (h, w)
    rgb = model(resize(gray, size).to(model_dtype)).float()
    rgb = F.interpolate(rgb, size=(h, w), mode="bicubic", align_corners=False) if rgb.shape[-2:] != (h, w) else rgb
    rgb = rgb.clamp(0, 1)
    if saturation != 1.0:
        from autocolor.color import saturate_rgb

        rgb = saturate_rgb(rgb, saturation)
    return rgb
