"""Quantized ab space (Zhang et al. 2016): bins, soft encoding, rebalancing, decoding.

Colorization as classification: ab is split into 10x10 cells, the cells that
any sRGB color falls into are the classes, and the network predicts a
distribution over them. Rare, saturated colors are up-weighted so the model
does not settle on the desaturated average; the annealed mean turns the
distribution back into one ab value, between the mean (dull) and the mode
(garish).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from autocolor.color import AB_SCALE, rgb_to_lab


def in_gamut_ab_bins(grid: float = 10.0, samples_per_axis: int = 48) -> torch.Tensor:
    """Centers ``(Q, 2)`` of the ab cells that some sRGB color falls into.

    The cells are found by sampling the sRGB cube, so the set follows the
    project's own Lab conversion rather than a shipped table.

    >>> bins = in_gamut_ab_bins()
    >>> 250 < bins.shape[0] < 320
    True
    """
    axis = torch.linspace(0.0, 1.0, samples_per_axis)
    r, g, b = torch.meshgrid(axis, axis, axis, indexing="ij")
    rgb = torch.stack([r, g, b]).reshape(3, -1, 1)  # (3, N, 1) as a 1-pixel-wide image
    ab = rgb_to_lab(rgb)[1:].reshape(2, -1).T  # (N, 2)
    cells = torch.unique(torch.round(ab / grid), dim=0)
    return cells * grid


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, k: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """Spread each ab value over its ``k`` nearest bins with Gaussian weights.

    Args:
        ab: ``(B, 2, H, W)`` in Lab units.
        bins: ``(Q, 2)`` bin centers.

    Returns:
        ``(B, Q, H, W)`` target distributions that sum to 1 over Q.
    """
    b, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (N, 2)
    dist2 = torch.cdist(flat, bins).pow(2)  # (N, Q)
    near_d2, near_idx = dist2.topk(k, dim=1, largest=False)
    weights = torch.softmax(-near_d2 / (2 * sigma**2), dim=1)
    target = torch.zeros_like(dist2).scatter_(1, near_idx, weights)
    return target.view(b, h, w, -1).permute(0, 3, 1, 2)


def rebalancing_weights(
    counts: torch.Tensor, bins: torch.Tensor, mix: float = 0.5, sigma: float = 5.0
) -> torch.Tensor:
    """Per-bin loss weights ``(Q,)`` from bin counts.

    w is proportional to ((1 - mix) * p_smoothed + mix / Q)^-1, with p smoothed
    by a Gaussian over ab and w scaled so its expectation under p is 1.
    """
    p = counts.double() / counts.sum().clamp_min(1)
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()).pow(2) / (2 * sigma**2))
    smoothed = kernel @ p
    smoothed = smoothed / smoothed.sum()
    q = bins.shape[0]
    w = 1.0 / ((1 - mix) * smoothed + mix / q)
    w = w / (smoothed * w).sum()
    return w.float()


def bin_counts(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """How many pixels of ``(B, 2, H, W)`` ab fall nearest to each bin."""
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    nearest = torch.cdist(flat, bins).argmin(dim=1)
    return torch.bincount(nearest, minlength=bins.shape[0])


def rebalanced_cross_entropy(
    logits: torch.Tensor, ab: torch.Tensor, bins: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy against soft-encoded ab, weighted by each pixel's nearest bin.

    Args:
        logits: ``(B, Q, h, w)``.
        ab: ``(B, 2, H, W)`` target in Lab units; pooled to ``(h, w)`` first.
    """
    if ab.shape[-2:] != logits.shape[-2:]:
        ab = torch.nn.functional.adaptive_avg_pool2d(ab, logits.shape[-2:])
    target = soft_encode(ab.float(), bins)
    pixel_w = weights[target.argmax(dim=1)]  # (B, h, w)
    ce = -(target * torch.log_softmax(logits.float(), dim=1)).sum(dim=1)
    return (ce * pixel_w).mean()


def annealed_mean(
    logits: torch.Tensor, bins: torch.Tensor, temperature: float, log_prior: torch.Tensor | None = None,
    confidence_power: float = 0.0,
) -> torch.Tensor:
    """Decode ``(B, Q, h, w)`` logits to normalized ab ``(B, 2, h, w)``.

    temperature 1 gives the mean of the distribution, towards 0 its mode;
    Zhang et al. use 0.38. ``log_prior`` ``(Q,)``, if given, is subtracted
    from the logits first. ``confidence_power`` above 0 shrinks the result
    by ``R ** confidence_power``, where ``R = |E[ab]| / E[|ab|]`` (under the
    same tempered distribution) is 1 where the likely colors share one hue and
    falls towards 0 where they disagree (blue or orange: the mean is a guess
    no one predicted, the blotch of an unsure model).
    """
    # Each pass over (B, Q, h, w) costs as much as the network's head, so the
    # shift and scale are one pass and, without autograd, the rest is in place.
    if log_prior is None:
        z = logits / temperature
    else:
        z = torch.add(log_prior.view(1, -1, 1, 1).to(logits.dtype) / -temperature, logits, alpha=1 / temperature)
    peak = z.amax(dim=1, keepdim=True)
    weights = torch.exp(z - peak) if z.requires_grad else z.sub_(peak).exp_()  # the softmax's numerator
    # One 1x1 convolution gives the bin-weighted sums of a and b and the
    # normalizer (and the chroma, for R) together: cheaper than softmax then einsum, on CPU and in ONNX.
    rows = [bins.T, torch.ones(1, bins.shape[0], dtype=bins.dtype, device=bins.device)]
    if confidence_power:
        rows.append(bins.norm(dim=1)[None])
    sums = torch.nn.functional.conv2d(weights, torch.cat(rows).to(weights.dtype)[:, :, None, None])
    ab = sums[:, :2] / sums[:, 2:3] / AB_SCALE
    if confidence_power:
        agreement = (sums[:, :2].norm(dim=1, keepdim=True) / sums[:, 3:].clamp_min(1e-12)).clamp(0.0, 1.0)
        ab = ab * agreement.pow(confidence_power)
    return ab


@dataclass(frozen=True)
class Decoding:
    """How a chroma model's output becomes ab: a setting of its use, not of
    its architecture, saved beside the weights (``decoding.json``) and
    chosen on a validation split by ``autocolor tune``.

    Args:
        temperature: annealed-mean temperature (1: the mean, towards 0: the
            mode; Zhang et al. use 0.38). Classification heads only.
        chroma_scale: factor on the decoded ab.
        prior_correction: exponent on the class-rebalancing weights divided
            out of the predicted distribution before decoding (1: fully, 0:
            not at all, as Zhang et al. decode).
        refine_hints: with color points, make the prediction agree with them
            by spreading the differences (:func:`autocolor.guide.refine_with_hints`).
        hint_decay: how fast those corrections fade with distance (0: not at
            all), divided by the number of hinted cells at the output size: one
            point corrects its surroundings, many points the whole image.
        hint_chroma_scale: ``chroma_scale`` when points or strokes are given.
            The automatic scale makes up for the timid average of an unsure
            model; near a user's colors the model is sure, and scaling its ab
            would carry them past the truth.
        confidence_power: shrinks chroma where the likely colors disagree
            in hue (:func:`annealed_mean`); 0: off. With it, ``chroma_scale``
            can be higher for the same colorfulness: color moves from unsure
            regions (false color on neutral surfaces, blotches) to sure ones.
        fusion_size: 0 (off), or a render size smaller than the one asked
            for: the automatic chroma is then the mean of the predictions at
            both sizes (:func:`autocolor.pipeline.automatic_chroma`), so the
            output depends less on the render size; ``chroma_scale`` makes up
            for the mean's muting.
        hint_edge: keeps points to their regions: a lightness step (L units,
            at half the working size) beyond this bounds a point's region, and
            outside its points' regions the result without points is kept,
            automatic or from the reference photo (:func:`autocolor.guide.hint_influence`). 0: off, points may change
            the whole image (the network alone carries one point's color far).
        hint_flip: with points, also predict on the mirrored photo and its
            mirrored points and average the two (test-time augmentation: one
            more pass an edit, a little less error).
    """

    temperature: float = 0.38
    chroma_scale: float = 1.0
    prior_correction: float = 1.0
    refine_hints: bool = False
    hint_decay: float = 0.01
    hint_chroma_scale: float = 1.0
    hint_edge: float = 0.0
    confidence_power: float = 0.0
    fusion_size: int = 0
    hint_flip: bool = False

    def __post_init__(self) -> None:
        for name in ("refine_hints", "hint_flip"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"decoding {name} must be true or false, got {getattr(self, name)!r}")
        for name, low, high in (("temperature", 0.01, 10.0), ("chroma_scale", 0.0, 10.0),
                                ("prior_correction", 0.0, 2.0), ("hint_decay", 0.0, 1.0),
                                ("hint_chroma_scale", 0.0, 10.0), ("hint_edge", 0.0, 100.0),
                                ("confidence_power", 0.0, 8.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"decoding {name} must be a finite number, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"decoding {name} must be in [{low}, {high}], got {value}")
        size = self.fusion_size
        if isinstance(size, bool) or not isinstance(size, int) or not (size == 0 or 32 <= size <= 1024):
            raise ValueError(f"decoding fusion_size must be 0 (off) or an integer render size from 32 to 1024, "
                             f"got {size!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "Decoding":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown decoding settings: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
