"""Image-quality metrics for colorization, as pure functions on tensors.

Every RGB tensor here is float sRGB in [0, 1] with shape ``(*, 3, H, W)``;
Lab follows CIE conventions (L in [0, 100], a and b roughly in [-110, 110]).
Per-image functions return one value per leading index, shape ``(*,)``.

- :func:`colorfulness`: Hasler and Suesstrunk (2003), on RGB scaled to 0-255.
- :func:`ciede2000`: the CIE 2000 color difference per pixel, in the
  formulation of Sharma, Wu and Dalal (2005), which settles the hue-angle and
  mean-hue corner cases that differ between published implementations.
- :func:`psnr` and :func:`ssim`: torchmetrics, on RGB in [0, 1] (SSIM is
  computed on the three RGB channels, not on L).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from autocolor.color import rgb_to_lab


def _check_rgb(x: torch.Tensor, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} must have shape (*, 3, H, W), got {tuple(x.shape)}")


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    _check_rgb(pred, "pred")
    _check_rgb(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")


# Pixels per chunk in mean_ciede2000: its ~60 temporaries stay cache-sized.
_CHUNK_PIXELS = 1 << 18


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt of a non-negative tensor with a zero (not NaN) gradient at 0, where
    identical colors and neutral grays put it; plain sqrt when no gradient is wanted."""
    if not _needs_grad(x):
        return x.clamp_min(0).sqrt()
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler and Suesstrunk's colorfulness of each image.

    With R, G, B on 0-255: rg = R - G, yb = (R + G) / 2 - B, and
    CF = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2),
    where mean and std (population, ddof 0) run over the image's pixels.
    A gray image (R = G = B) scores exactly 0; vivid photos score 50-100.

    Args:
        rgb: ``(*, 3, H, W)`` in [0, 1].

    Returns:
        ``(*,)`` colorfulness, >= 0.

    >>> colorfulness(torch.full((3, 4, 4), 0.5)).item()
    0.0
    """
    _check_rgb(rgb, "rgb")
    r, g, b = (rgb * 255.0).unbind(dim=-3)
    rg = (r - g).flatten(-2)  # (*, H*W)
    yb = (0.5 * (r + g) - b).flatten(-2)
    spread = _safe_sqrt(rg.var(dim=-1, unbiased=False) + yb.var(dim=-1, unbiased=False))
    offset = _safe_sqrt(rg.mean(dim=-1) ** 2 + yb.mean(dim=-1) ** 2)
    return spread + 0.3 * offset


def _hue_degrees(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Hue angle in [0, 360) degrees; 0 for a = b = 0 (as Sharma et al. define it)."""
    if not (_needs_grad(a) or _needs_grad(b)):
        return torch.remainder(torch.rad2deg(torch.atan2(b, a)), 360.0)  # atan2(0, 0) = 0
    neutral = (a == 0) & (b == 0)
    angle = torch.atan2(torch.where(neutral, torch.zeros_like(b), b), torch.where(neutral, torch.ones_like(a), a))
    return torch.remainder(torch.rad2deg(angle), 360.0)


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 color difference per pixel (kL = kC = kH = 1).

    Follows Sharma, Wu and Dalal, "The CIEDE2000 color-difference formula:
    implementation notes, supplementary test data, and mathematical
    observations" (2005): hue difference taken across the 0/360 wrap, the
    mean hue of two colors more than 180 degrees apart shifted by 180, and
    hue terms dropped when either chroma is 0. Symmetric in its arguments.
    Differentiable (compute in float64 for gradcheck-level accuracy).

    Args:
        lab1: ``(*, 3, H, W)`` Lab (L in [0, 100]); any ``(*, 3)``-channel
            layout with channels at dim -3 works, e.g. ``(N, 3, 1, 1)``.
        lab2: same shape as ``lab1``.

    Returns:
        ``(*, H, W)`` delta E 2000, >= 0 (about 1 is a just noticeable difference).

    >>> lab1 = torch.tensor([50.0, 2.6772, -79.7751]).view(3, 1, 1)
    >>> lab2 = torch.tensor([50.0, 0.0, -82.7485]).view(3, 1, 1)
    >>> round(ciede2000(lab1, lab2).item(), 4)
    2.0425
    """
    if lab1.dim() < 3 or lab1.shape[-3] != 3:
        raise ValueError(f"lab1 must have shape (*, 3, H, W), got {tuple(lab1.shape)}")
    if lab1.shape != lab2.shape:
        raise ValueError(f"lab1 and lab2 shapes differ: {tuple(lab1.shape)} vs {tuple(lab2.shape)}")
    l1, a1, b1 = lab1.unbind(dim=-3)
    l2, a2, b2 = lab2.unbind(dim=-3)
    c1p, c2p, h1p, h2p = _prime_chroma_hue(a1, b1, a2, b2)
    chromatic = (c1p * c2p) != 0  # hue is undefined when either color is neutral
    d_l, d_c, d_h = _differences(l1, l2, c1p, c2p, h1p, h2p, chromatic)
    s_l, s_c, s_h, r_t = _weights(0.5 * (l1 + l2), 0.5 * (c1p + c2p), _mean_hue(h1p, h2p, chromatic))
    term_l, term_c, term_h = d_l / s_l, d_c / s_c, d_h / s_h
    return _safe_sqrt(term_l**2 + term_c**2 + term_h**2 + r_t * term_c * term_h)


_POW25_7 = 25.0**7


def _prime_chroma_hue(
    a1: torch.Tensor, b1: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """C' and h' (degrees) of both colors, a* stretched for near-neutral colors so that their hue behaves (G)."""
    c_mean = 0.5 * (_safe_sqrt(a1 * a1 + b1 * b1) + _safe_sqrt(a2 * a2 + b2 * b2))
    c_mean7 = c_mean**7
    g = 0.5 * (1.0 - _safe_sqrt(c_mean7 / (c_mean7 + _POW25_7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = _safe_sqrt(a1p * a1p + b1 * b1), _safe_sqrt(a2p * a2p + b2 * b2)
    return c1p, c2p, _hue_degrees(b1, a1p), _hue_degrees(b2, a2p)


def _differences(
    l1: torch.Tensor, l2: torch.Tensor, c1p: torch.Tensor, c2p: torch.Tensor, h1p: torch.Tensor,
    h2p: torch.Tensor, chromatic: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Delta L', delta C' and delta H', the hue difference taken across the 0/360 wrap."""
    dh = h2p - h1p
    dh = torch.where(dh > 180.0, dh - 360.0, torch.where(dh < -180.0, dh + 360.0, dh))
    dh = torch.where(chromatic, dh, torch.zeros_like(dh))
    d_l = l2 - l1
    d_c = c2p - c1p
    d_h = 2.0 * _safe_sqrt(c1p * c2p) * torch.sin(torch.deg2rad(dh) / 2.0)
    return d_l, d_c, d_h


def _mean_hue(h1p: torch.Tensor, h2p: torch.Tensor, chromatic: torch.Tensor) -> torch.Tensor:
    """Mean hue h-bar': shifted by 180 for hues more than 180 apart; the sum where either color is neutral."""
    h_sum = h1p + h2p
    far_apart = (h1p - h2p).abs() > 180.0
    h_bar = torch.where(
        far_apart,
        torch.where(h_sum < 360.0, (h_sum + 360.0) / 2.0, (h_sum - 360.0) / 2.0),
        h_sum / 2.0,
    )
    return torch.where(chromatic, h_bar, h_sum)


def _weights(
    l_bar: torch.Tensor, c_bar: torch.Tensor, h_bar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The weighting functions S_L, S_C, S_H and the rotation term R_T at the mean color."""
    rad = torch.deg2rad
    t = (
        1.0
        - 0.17 * torch.cos(rad(h_bar - 30.0))
        + 0.24 * torch.cos(rad(2.0 * h_bar))
        + 0.32 * torch.cos(rad(3.0 * h_bar + 6.0))
        - 0.20 * torch.cos(rad(4.0 * h_bar - 63.0))
    )
    d_theta = 30.0 * torch.exp(-(((h_bar - 275.0) / 25.0) ** 2))
    c_bar7 = c_bar**7
    r_c = 2.0 * _safe_sqrt(c_bar7 / (c_bar7 + _POW25_7))
    l_off = (l_bar - 50.0) ** 2
    s_l = 1.0 + 0.015 * l_off / torch.sqrt(20.0 + l_off)
    s_c = 1.0 + 0.045 * c_bar
    s_h = 1.0 + 0.015 * c_bar * t
    r_t = -torch.sin(rad(2.0 * d_theta)) * r_c
    return s_l, s_c, s_h, r_t


def mean_ciede2000(rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 over the pixels of each image.

    Args:
        rgb_pred: ``(*, 3, H, W)`` sRGB in [0, 1].
        rgb_true: same shape.

    Returns:
        ``(*,)`` mean delta E 2000 per image.
    """
    _check_pair(rgb_pred, rgb_true)
    return mean_ciede2000_lab(rgb_to_lab(rgb_pred), rgb_to_lab(rgb_true))


def mean_ciede2000_lab(lab_pred: torch.Tensor, lab_true: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 over the pixels of each image, from Lab ``(*, 3, H, W)``.

    Works through the images a few at a time, so that memory stays small on
    large batches; returns ``(*,)``.
    """
    if lab_pred.shape != lab_true.shape:
        raise ValueError(f"shapes differ: {tuple(lab_pred.shape)} vs {tuple(lab_true.shape)}")
    pred, lead = _batched(lab_pred)
    true, _ = _batched(lab_true)
    step = max(1, _CHUNK_PIXELS // (pred.shape[-1] * pred.shape[-2]))
    means = [
        ciede2000(pred[i : i + step], true[i : i + step]).flatten(-2).mean(dim=-1)
        for i in range(0, len(pred), step)
    ]
    return torch.cat(means).reshape(lead)


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    lead = x.shape[:-3]
    return x.reshape(-1, *x.shape[-3:]), lead


def psnr(rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image, in dB, with data range 1.

    Args:
        rgb_pred: ``(*, 3, H, W)`` sRGB in [0, 1].
        rgb_true: same shape.

    Returns:
        ``(*,)`` PSNR per image over all three channels; ``inf`` for identical images.
    """
    _check_pair(rgb_pred, rgb_true)
    pred, lead = _batched(rgb_pred)
    true, _ = _batched(rgb_true)
    return peak_signal_noise_ratio(pred, true, data_range=1.0, reduction="none", dim=(1, 2, 3)).reshape(lead)


def ssim(rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """Structural similarity of each image, on the RGB channels (not on L).

    torchmetrics' default: an 11x11 Gaussian window (sigma 1.5), data range 1,
    averaged over channels and pixels. Images need at least 11 pixels a side.

    Args:
        rgb_pred: ``(*, 3, H, W)`` sRGB in [0, 1].
        rgb_true: same shape.

    Returns:
        ``(*,)`` SSIM per image, at most 1 (1 for identical images).
    """
    _check_pair(rgb_pred, rgb_true)
    if min(rgb_pred.shape[-2:]) < 11:
        raise ValueError(f"ssim needs images at least 11 pixels a side, got {tuple(rgb_pred.shape[-2:])}")
    pred, lead = _batched(rgb_pred)
    true, _ = _batched(rgb_true)
    return structural_similarity_index_measure(pred, true, data_range=1.0, reduction="none").reshape(lead)
