"""Color math: gray, Lab and its normalization, in one place.

Every image tensor here is float RGB in [0, 1] with shape ``(*, 3, H, W)``;
Lab follows CIE conventions (L in [0, 100], a and b roughly in [-110, 110]).
Conversions go through :mod:`kornia.color`, so they are differentiable and
run on whatever device and dtype the input has.
"""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb as _kornia_lab_to_rgb
from kornia.color import rgb_to_lab as _kornia_rgb_to_lab

# OpenCV's COLOR_RGB2GRAY (Rec. 601 luma). The reference designs made their gray
# inputs this way, so every gray image in the project is made with these weights.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)

# Normalization at the network's edges (Zhang et al. 2016): L in [0, 100] is fed
# as (L - 50) / 100 and ab is predicted in units of 110.
L_CENTER = 50.0
L_SCALE = 100.0
AB_SCALE = 110.0


def _check_channels(x: torch.Tensor, channels: int, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != channels:
        raise ValueError(f"{name} must have shape (*, {channels}, H, W), got {tuple(x.shape)}")


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of an RGB image.

    Args:
        rgb: ``(*, 3, H, W)`` in [0, 1].

    Returns:
        ``(*, 1, H, W)`` in [0, 1].

    >>> rgb_to_gray(torch.ones(3, 2, 2)).shape
    torch.Size([1, 2, 2])
    """
    _check_channels(rgb, 3, "rgb")
    w = torch.tensor(GRAY_WEIGHTS, device=rgb.device, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb * w).sum(dim=-3, keepdim=True)


def gray_to_rgb(gray: torch.Tensor) -> torch.Tensor:
    """Repeat a ``(*, 1, H, W)`` gray image to ``(*, 3, H, W)``."""
    _check_channels(gray, 1, "gray")
    return gray.expand(*gray.shape[:-3], 3, *gray.shape[-2:]).contiguous()


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(*, 3, H, W)`` in [0, 1] to Lab ``(*, 3, H, W)`` (L in [0, 100])."""
    _check_channels(rgb, 3, "rgb")
    return _kornia_rgb_to_lab(rgb.clamp(0.0, 1.0))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab ``(*, 3, H, W)`` to sRGB in [0, 1], clipped to the displayable gamut."""
    _check_channels(lab, 3, "lab")
    return _kornia_lab_to_rgb(lab, clip=True)


def gray_to_l(gray: torch.Tensor) -> torch.Tensor:
    """Lab lightness ``(*, 1, H, W)`` in [0, 100] of a gray image in [0, 1].

    A gray pixel is the sRGB color (g, g, g), so its L follows from the sRGB
    transfer curve and the Lab cube root alone.
    """
    _check_channels(gray, 1, "gray")
    g = gray.clamp(0.0, 1.0)
    linear = torch.where(g > 0.04045, ((g + 0.055) / 1.055) ** 2.4, g / 12.92)
    eps = 216.0 / 24389.0
    kappa = 24389.0 / 27.0
    return torch.where(linear > eps, 116.0 * linear.clamp_min(eps) ** (1.0 / 3.0) - 16.0, kappa * linear)


def normalize_l(lightness: torch.Tensor) -> torch.Tensor:
    """L in [0, 100] to the network's input range [-0.5, 0.5]."""
    return (lightness - L_CENTER) / L_SCALE


def normalize_ab(ab: torch.Tensor) -> torch.Tensor:
    """ab in Lab units to the network's range (about [-1, 1])."""
    return ab / AB_SCALE


def unnormalize_ab(ab: torch.Tensor) -> torch.Tensor:
    """Network ab (about [-1, 1]) back to Lab units."""
    return ab * AB_SCALE


def merge_l_ab(lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Join ``(*, 1, H, W)`` L and ``(*, 2, H, W)`` ab into RGB in [0, 1].

    ab is resized (bilinear) to L's size first, so chroma predicted at a
    working resolution is laid over the full-resolution lightness.
    """
    _check_channels(lightness, 1, "lightness")
    _check_channels(ab, 2, "ab")
    if ab.shape[-2:] != lightness.shape[-2:]:
        batched = ab if ab.dim() == 4 else ab.unsqueeze(0)
        batched = torch.nn.functional.interpolate(
            batched, size=lightness.shape[-2:], mode="bilinear", align_corners=False
        )
        ab = batched if ab.dim() == 4 else batched.squeeze(0)
    return lab_to_rgb(torch.cat([lightness, ab.to(lightness.dtype)], dim=-3))


def saturate_ab(ab: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale chroma by ``factor`` (1 = unchanged, 0 = gray)."""
    return ab * factor


def saturate_rgb(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale an RGB image's Lab chroma by ``factor``, keeping its lightness."""
    lab = rgb_to_lab(rgb)
    return lab_to_rgb(torch.cat([lab[..., :1, :, :], lab[..., 1:, :, :] * factor], dim=-3))
