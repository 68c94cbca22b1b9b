"""Color guidance for the hint-aware model: points, scribbles and a reference photo.

A :class:`Guide` holds what the network reads beside L, all at the working
size (``(B, *, H, W)``):

- ``ab`` and ``mask``: sparse local hints (Zhang et al. 2017): ab in Lab
  units where the user gave a color, 0 elsewhere, and 1 in ``mask`` there.
- ``spread``: the same hints propagated over the whole image by Levin et
  al.'s optimization at a quarter of the working size (the network's output
  resolution), so the network starts from where the colors would flow and
  learns where to trust it; 0 everywhere without hints.
- ``reference``: a global hint, the ab histogram ``(B, Q)`` of a reference
  photo over the model's bins, or None.

Training simulates users from the true colors (:func:`simulate_guide`):
a random number of points, each the mean ab of a small square patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from autocolor.levin import levin_colorize

OUTPUT_STRIDE = 4  # the chroma network predicts ab at 1/4 of the working size


@dataclass
class Guide:
    """Hints at the working size; see the module docstring for each field."""

    ab: torch.Tensor  # (B, 2, H, W) Lab units, 0 where no hint
    mask: torch.Tensor  # (B, 1, H, W) 1 where a hint is
    spread: torch.Tensor  # (B, 2, H/4, W/4) Lab units
    reference: torch.Tensor | None = None  # (B, Q) histogram, sums to 1

    def to(self, device: torch.device | str) -> "Guide":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Guide(move(self.ab), move(self.mask), move(self.spread), move(self.reference))

    @property
    def empty(self) -> bool:
        return not bool(self.mask.any()) and self.reference is None


def empty_guide(batch: int, height: int, width: int, device: torch.device | str = "cpu") -> Guide:
    """No hints: what the automatic mode sees."""
    return Guide(
        ab=torch.zeros(batch, 2, height, width, device=device),
        mask=torch.zeros(batch, 1, height, width, device=device),
        spread=torch.zeros(batch, 2, height // OUTPUT_STRIDE, width // OUTPUT_STRIDE, device=device),
    )


def spread_hints(lightness: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Levin-propagate hints at a quarter of the size.

    Args:
        lightness: ``(B, 1, H, W)`` L in [0, 100].
        ab, mask: ``(B, 2, H, W)`` and ``(B, 1, H, W)`` hints.

    Returns:
        ``(B, 2, H/4, W/4)`` ab in Lab units (zeros for images without hints).
    """
    size = (lightness.shape[-2] // OUTPUT_STRIDE, lightness.shape[-1] // OUTPUT_STRIDE)
    out = torch.zeros(lightness.shape[0], 2, *size)
    if not bool(mask.any()):
        return out.to(lightness.device)
    small_l = F.adaptive_avg_pool2d(lightness.float(), size).cpu().numpy()
    weight = F.adaptive_avg_pool2d(mask.float(), size)
    small_ab = (F.adaptive_avg_pool2d(ab.float() * mask, size) / weight.clamp_min(1e-6)).cpu().numpy()
    small_mask = (weight > 0).squeeze(1).cpu().numpy()
    for i in range(lightness.shape[0]):
        if small_mask[i].any():
            out[i] = torch.from_numpy(levin_colorize(small_l[i, 0], small_ab[i], small_mask[i]))
    return out.to(lightness.device)


def make_guide(
    lightness: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor | None = None
) -> Guide:
    """A :class:`Guide` from hints at the working size (``spread`` computed here)."""
    return Guide(ab * mask, mask, spread_hints(lightness, ab, mask), reference)


# ---------------------------------------------------------------- simulated users


def point_hints(
    ab: torch.Tensor, centers: list[tuple[int, int]], patch: int | list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hints as a user would give them: each the mean true ab of a square patch.

    Args:
        ab: ``(2, H, W)`` true ab in Lab units.
        centers: ``(row, column)`` of each point.
        patch: side of each point's square (one for all, or one per point).

    Returns:
        ``(2, H, W)`` hint ab and ``(1, H, W)`` mask.
    """
    _, h, w = ab.shape
    hint = torch.zeros_like(ab)
    mask = torch.zeros(1, h, w, dtype=ab.dtype, device=ab.device)
    sides = patch if isinstance(patch, list) else [patch] * len(centers)
    for (row, col), side in zip(centers, sides):
        top, left = max(0, row - side // 2), max(0, col - side // 2)
        window = (slice(None), slice(top, min(h, top + side)), slice(left, min(w, left + side)))
        hint[window] = ab[window].mean(dim=(1, 2), keepdim=True)
        mask[window] = 1.0
    return hint, mask


def random_centers(h: int, w: int, n: int, gen: torch.Generator) -> list[tuple[int, int]]:
    rows = torch.randint(0, h, (n,), generator=gen).tolist()
    cols = torch.randint(0, w, (n,), generator=gen).tolist()
    return list(zip(rows, cols))


def ab_histogram(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """``(B, Q)`` share of pixels of ``(B, 2, H, W)`` ab nearest to each bin."""
    flat = ab.permute(0, 2, 3, 1).reshape(ab.shape[0], -1, 2)  # (B, N, 2)
    nearest = torch.cdist(flat.float(), bins.float().expand(ab.shape[0], -1, -1)).argmin(dim=-1)  # (B, N)
    counts = torch.zeros(ab.shape[0], bins.shape[0], device=ab.device).scatter_add_(
        1, nearest, torch.ones_like(nearest, dtype=torch.float32))
    return counts / counts.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class HintSampling:
    """How training simulates users (Zhang et al. 2017, with their geometric count)."""

    p_none: float = 0.3  # share of images with no point at all (the automatic mode)
    p_more: float = 0.9  # each further point follows with this probability: mean 10 points
    max_points: int = 60
    max_patch: int = 9  # patch sides drawn from 1..max_patch
    p_reference: float = 0.2  # share of images given their own ab histogram as the global hint


def simulate_guide(
    lightness: torch.Tensor,
    ab: torch.Tensor,
    gens: list[torch.Generator],
    bins: torch.Tensor,
    sampling: HintSampling = HintSampling(),
) -> Guide:
    """Simulated hints for a training batch, one generator per image (so a
    sample's hints depend only on the sample, not on the batch it is in).

    Args:
        lightness: ``(B, 1, H, W)`` L; ab: ``(B, 2, H, W)`` true ab (Lab units).
    """
    b, _, h, w = ab.shape
    hint_ab, hint_mask, references, has_reference = [], [], [], []
    for i, gen in enumerate(gens):
        u = torch.rand(2, generator=gen).tolist()
        n = 0 if u[0] < sampling.p_none else _geometric(sampling.p_more, sampling.max_points, gen)
        sides = torch.randint(1, sampling.max_patch + 1, (n,), generator=gen).tolist()
        hint, mask = point_hints(ab[i], random_centers(h, w, n, gen), sides)
        hint_ab.append(hint)
        hint_mask.append(mask)
        has_reference.append(u[1] < sampling.p_reference)
    guide = make_guide(lightness, torch.stack(hint_ab), torch.stack(hint_mask))
    if any(has_reference):
        histogram = ab_histogram(F.avg_pool2d(ab, OUTPUT_STRIDE), bins)
        keep = torch.tensor(has_reference, dtype=histogram.dtype, device=histogram.device).unsqueeze(1)
        guide.reference = histogram * keep  # all zeros: "no reference" for that image
    return guide


def _geometric(p_more: float, cap: int, gen: torch.Generator) -> int:
    """1 + the number of successes before the first failure, capped."""
    u = torch.rand(1, generator=gen).item()
    return min(cap, 1 + int(math.log(max(u, 1e-12)) / math.log(p_more)))
