"""Colorization using optimization (Levin, Lischinski and Weiss, SIGGRAPH 2004).

No learning: chroma is propagated from a few user-given pixels by requiring
that every other pixel's chroma be the weighted average of its neighbours',
with weights that are large between pixels of similar lightness. Edges in L
therefore stop the color, flat regions fill with it. The system is sparse
(one row per pixel, nine entries) and is solved once for a and b together.

It serves as guided colorization's classic baseline, and the hint-aware
network gets its propagation (at a quarter of the working size) as an input.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

# The 8-neighbourhood as (row, column) offsets.
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
# Levin et al.'s constants (their released code): the spread is 0.6 of the
# window's variance, at least enough that the most similar neighbour keeps a
# weight of 0.01, and never below 2e-6 (lightness in [0, 1]).
_VARIANCE_SHARE = 0.6
_MIN_SPREAD = 2e-6
_MIN_WEIGHT = 1e-8  # keeps every pixel linked to its neighbours, so the system is never singular


def affinity_matrix(lightness: np.ndarray) -> sp.csr_matrix:
    """Row-stochastic neighbour weights ``W`` ``(N, N)`` for an ``(H, W)`` lightness
    image in [0, 100], N = H * W: w_rs = exp(-(L_r - L_s)^2 / var_r) over
    the 8 neighbours s of r, var_r from the lightness variance of r's 3x3
    window (L scaled to [0, 1]).
    """
    if lightness.ndim != 2:
        raise ValueError(f"lightness must have shape (H, W), got {lightness.shape}")
    h, w = lightness.shape
    y = lightness.astype(np.float64) / 100.0
    padded = np.pad(y, 1, mode="edge")
    shifted = np.stack([padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _OFFSETS])  # (8, H, W)
    window = np.concatenate([shifted, y[None]])
    d2 = (shifted - y[None]) ** 2  # (8, H, W); out-of-image neighbours repeat the edge and are masked below
    spread = np.maximum.reduce([_VARIANCE_SHARE * window.var(axis=0), d2.min(axis=0) / -np.log(0.01),
                                np.full((h, w), _MIN_SPREAD)])
    weights = np.maximum(np.exp(-d2 / spread[None]), _MIN_WEIGHT)
    rows, cols = np.mgrid[0:h, 0:w]
    inside = np.stack([(rows + dy >= 0) & (rows + dy < h) & (cols + dx >= 0) & (cols + dx < w) for dy, dx in _OFFSETS])
    weights = weights * inside
    weights /= weights.sum(axis=0, keepdims=True)
    index = rows * w + cols
    row_idx = np.broadcast_to(index, (8, h, w))[inside]
    col_idx = np.stack([index + dy * w + dx for dy, dx in _OFFSETS])[inside]
    return sp.csr_matrix((weights[inside], (row_idx, col_idx)), shape=(h * w, h * w))


def levin_colorize(lightness: np.ndarray, hint_ab: np.ndarray, mask: np.ndarray, decay: float = 0.0) -> np.ndarray:
    """Propagate hint chroma over an image.

    Args:
        lightness: ``(H, W)`` L in [0, 100].
        hint_ab: ``(2, H, W)`` ab in Lab units where ``mask`` is set (ignored
            elsewhere); any ``(C, H, W)`` values spread the same way.
        mask: ``(H, W)`` bool or 0/1: the pixels whose chroma is given.
        decay: 0 for Levin et al.'s system; above 0 each free pixel is also
            pulled towards 0 with this weight, ``(1 + decay) u_r = sum_s w_rs u_s``,
            so what is spread fades with (edge-aware) distance from the hints,
            over about ``1 / sqrt(decay)`` pixels. Used to spread corrections
            of a prediction rather than colors.

    Returns:
        ``(C, H, W)`` float32, equal to ``hint_ab`` on the mask.
        With no hint at all there is nothing to propagate: all zeros (gray).

    >>> lum = np.zeros((4, 6)); lum[:, 3:] = 100.0          # dark left, bright right
    >>> ab = np.zeros((2, 4, 6)); ab[:, 0, 0] = 40; ab[:, 0, 5] = -40
    >>> hint = np.zeros((4, 6), bool); hint[0, 0] = hint[0, 5] = True
    >>> out = levin_colorize(lum, ab, hint)
    >>> bool(out[0, :, :3].min() > 39 and out[0, :, 3:].max() < -39)
    True
    """
    mask = np.asarray(mask).astype(bool)
    h, w = lightness.shape
    if hint_ab.ndim != 3 or hint_ab.shape[1:] != (h, w) or mask.shape != (h, w):
        raise ValueError(f"hint_ab must be (C, {h}, {w}) and mask ({h}, {w}); got {hint_ab.shape}, {mask.shape}")
    channels = hint_ab.shape[0]
    if not mask.any():
        return np.zeros((channels, h, w), dtype=np.float32)
    given = mask.reshape(-1)
    # Free pixels: u_r - sum_s w_rs u_s = 0; given pixels: u_r = hint. Eliminating
    # the given pixels leaves a smaller system over the free ones only.
    affinity = affinity_matrix(lightness)
    free = ~given
    values = hint_ab.reshape(channels, -1)[:, given].astype(np.float64).T  # (G, C)
    out = np.zeros((h * w, channels))
    out[given] = values
    if free.any():
        system = ((1.0 + decay) * sp.identity(int(free.sum()), format="csr") - affinity[free][:, free]).tocsc()
        rhs = affinity[free][:, given] @ values  # (F, C)
        # I - W is a diagonally dominant M-matrix with a symmetric pattern: no pivoting is
        # needed, and a minimum-degree ordering on A + A^T keeps the fill (and the time) small.
        lu = spla.splu(system, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        out[free] = lu.solve(np.ascontiguousarray(rhs))
    return out.T.reshape(channels, h, w).astype(np.float32)
