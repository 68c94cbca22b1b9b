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

Users give :class:`Hints` in the input photo's pixels: points ``(x, y,
color)`` (x the column, y the row; color ``(r, g, b)`` in 0-255 or
``"#rrggbb"``), a scribble image (RGBA, the input's size, alpha marks the
painted pixels) and a reference photo; :meth:`Hints.guide` lays them out at
the working size. Training simulates users from the true colors
(:func:`simulate_guide`): a random number of points, each the mean ab of a
small square patch.

The points file for ``autocolor colorize --hints`` is JSON::

    {"points": [{"x": 120, "y": 40, "color": "#6d9ed8"},
                {"x": 300, "y": 410, "color": [196, 150, 120]}]}
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import dijkstra

from autocolor.color import rgb_to_lab
from autocolor.errors import AutocolorError
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


def flip_guide(guide: Guide) -> Guide:
    """The hints of the left-right mirrored image (the reference photo's colors stay as they are)."""
    return Guide(guide.ab.flip(-1), guide.mask.flip(-1), guide.spread.flip(-1), guide.reference)


def empty_guide(batch: int, height: int, width: int, device: torch.device | str = "cpu") -> Guide:
    """No hints: what the automatic mode sees."""
    return Guide(
        ab=torch.zeros(batch, 2, height, width, device=device),
        mask=torch.zeros(batch, 1, height, width, device=device),
        spread=torch.zeros(batch, 2, height // OUTPUT_STRIDE, width // OUTPUT_STRIDE, device=device),
    )


def spread_decay(height: int, width: int, reach: float) -> float:
    """Levin decay for a ``height x width`` grid such that what is spread fades over
    about ``reach`` times the image's (geometric-mean) side; 0 (no fading) for ``reach`` 0.

    The fading length of ``levin_colorize``'s decay is about ``1 / sqrt(decay)`` cells,
    so a reach given as a share of the image means the same at every working size.

    >>> spread_decay(32, 32, 0.25), spread_decay(64, 64, 0.25), spread_decay(64, 64, 0.0)
    (0.015625, 0.00390625, 0.0)
    """
    return 0.0 if reach <= 0 else 1.0 / (reach * reach * height * width)


def spread_hints(lightness: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor, reach: float = 0.0) -> torch.Tensor:
    """Levin-propagate hints at a quarter of the size.

    Args:
        lightness: ``(B, 1, H, W)`` L in [0, 100].
        ab, mask: ``(B, 2, H, W)`` and ``(B, 1, H, W)`` hints.
        reach: 0 fills the whole image from the hints (Levin et al.); above 0
            the spread colors fade over about this share of the image
            (:func:`spread_decay`), so a point stays local.

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
    decay = spread_decay(*size, reach)
    for i in range(lightness.shape[0]):
        if small_mask[i].any():
            out[i] = torch.from_numpy(levin_colorize(small_l[i, 0], small_ab[i], small_mask[i], decay))
    return out.to(lightness.device)


def make_guide(
    lightness: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor | None = None,
    reach: float = 0.0,
) -> Guide:
    """A :class:`Guide` from hints at the working size (``spread`` computed here,
    with the reach the model was trained with: ``model.spread_reach``)."""
    return Guide(ab * mask, mask, spread_hints(lightness, ab, mask, reach), reference)


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
    reach: float = 0.0,
) -> Guide:
    """Simulated hints for a training batch, one generator per image (so a
    sample's hints depend only on the sample, not on the batch it is in).

    Args:
        lightness: ``(B, 1, H, W)`` L; ab: ``(B, 2, H, W)`` true ab (Lab units).
    """
    _, _, h, w = ab.shape
    hint_ab, hint_mask, has_reference = [], [], []
    for i, gen in enumerate(gens):
        u = torch.rand(2, generator=gen).tolist()
        n = 0 if u[0] < sampling.p_none else _geometric(sampling.p_more, sampling.max_points, gen)
        sides = torch.randint(1, sampling.max_patch + 1, (n,), generator=gen).tolist()
        hint, mask = point_hints(ab[i], random_centers(h, w, n, gen), sides)
        hint_ab.append(hint)
        hint_mask.append(mask)
        has_reference.append(u[1] < sampling.p_reference)
    guide = make_guide(lightness, torch.stack(hint_ab), torch.stack(hint_mask), reach=reach)
    if any(has_reference):
        histogram = ab_histogram(F.avg_pool2d(ab, OUTPUT_STRIDE), bins)
        keep = torch.tensor(has_reference, dtype=histogram.dtype, device=histogram.device).unsqueeze(1)
        guide.reference = histogram * keep  # all zeros: "no reference" for that image
    return guide


def _geometric(p_more: float, cap: int, gen: torch.Generator) -> int:
    """1 + the number of successes before the first failure, capped."""
    u = torch.rand(1, generator=gen).item()
    return min(cap, 1 + int(math.log(max(u, 1e-12)) / math.log(p_more)))


# ---------------------------------------------------------------- hints from users


class HintError(AutocolorError, ValueError):
    """Hints that cannot be used, with what is wrong."""


POINT_SIZE = 5  # side, in working-size pixels, of the square a point colors (as hints are evaluated)
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def _real(value) -> bool:
    """A finite real number: Python's or numpy's (``np.int64``, ``np.float32``), not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def parse_color(color) -> tuple[int, int, int]:
    """``(r, g, b)`` in 0-255 from a tuple/list/array of three numbers or ``"#rrggbb"``.

    >>> parse_color("#ff8000"), parse_color([0, 128, 255])
    ((255, 128, 0), (0, 128, 255))
    """
    if isinstance(color, np.ndarray) and color.shape == (3,):
        color = color.tolist()
    if isinstance(color, str):
        match = _HEX.match(color.strip())
        if not match:
            raise HintError(f"color {color!r} is not #rrggbb")
        value = int(match.group(1), 16)
        return value >> 16, (value >> 8) & 255, value & 255
    if isinstance(color, (list, tuple)) and len(color) == 3:
        rgb = []
        for c in color:
            if not _real(c) or not 0 <= c <= 255:
                raise HintError(f"color {list(color)!r}: each channel must be a number in 0-255")
            rgb.append(int(round(c)))
        return tuple(rgb)  # type: ignore[return-value]
    raise HintError(f"color {color!r} must be (r, g, b) in 0-255 or '#rrggbb'")


def _rgb_to_ab(rgb: np.ndarray) -> torch.Tensor:
    """``(..., 3)`` uint8 RGB to ``(2, ...)`` ab in Lab units."""
    flat = torch.from_numpy(np.asarray(rgb, dtype=np.float32).reshape(-1, 3) / 255.0).T.reshape(3, -1, 1)
    return rgb_to_lab(flat)[1:, :, 0].reshape(2, *np.asarray(rgb).shape[:-1])


@dataclass(frozen=True)
class Point:
    x: float  # column, in the input's pixels
    y: float  # row
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Hints:
    """What a user says about the colors of one photo (see the module docstring).

    ``points`` and ``scribble`` are checked against the photo's size by
    :meth:`check`; ``reference`` is any RGB photo ``(h, w, 3)`` uint8.
    """

    points: tuple[Point, ...] = ()
    scribble: np.ndarray | None = field(default=None, compare=False)  # (H, W, 4) uint8 RGBA
    reference: np.ndarray | None = field(default=None, compare=False)  # (h, w, 3) uint8 RGB
    point_size: int = POINT_SIZE

    @property
    def empty(self) -> bool:
        return not self.points and self.scribble is None and self.reference is None

    @classmethod
    def build(cls, points: Sequence = (), scribble=None, reference=None) -> "Hints":
        """From ``(x, y, color)`` triples (or dicts with those keys), a scribble
        array/PIL image and a reference array/PIL image."""
        parsed = []
        for i, item in enumerate(points):
            if isinstance(item, dict):
                item = (item.get("x"), item.get("y"), item.get("color"))
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise HintError(f"hint {i + 1}: expected (x, y, color), got {item!r}")
            x, y, color = item
            for name, v in (("x", x), ("y", y)):
                if not _real(v):
                    raise HintError(f"hint {i + 1}: {name} must be a number, got {v!r}")
            try:
                parsed.append(Point(float(x), float(y), parse_color(color)))
            except HintError as exc:
                raise HintError(f"hint {i + 1}: {exc}") from None
        return cls(tuple(parsed), _as_rgba(scribble), _as_rgb(reference))

    def check(self, height: int, width: int) -> None:
        for i, p in enumerate(self.points):
            if not (0 <= p.x < width and 0 <= p.y < height):
                raise HintError(f"hint {i + 1} at (x={p.x:g}, y={p.y:g}) is outside the {width}x{height} image")
        if self.scribble is not None and self.scribble.shape[:2] != (height, width):
            sh, sw = self.scribble.shape[:2]
            raise HintError(f"the scribble image is {sw}x{sh}; it must be the photo's size, {width}x{height}")

    def guide(self, l_work: torch.Tensor, full_size: tuple[int, int], bins: torch.Tensor,
              reach: float = 0.0) -> Guide:
        """The :class:`Guide` for L at the working size ``(B, 1, h, w)`` (the
        same hints for every image of the batch; ``reach`` as in :func:`spread_hints`)."""
        self.check(*full_size)
        b, _, h, w = l_work.shape
        ab = torch.zeros(2, h, w)
        mask = torch.zeros(1, h, w)
        if self.scribble is not None:
            alpha = torch.from_numpy(self.scribble[..., 3].astype(np.float32) / 255.0)[None, None]
            painted = torch.from_numpy(self.scribble[..., :3].copy()).permute(2, 0, 1)[None].float()
            weight = F.adaptive_avg_pool2d((alpha > 0.5).float(), (h, w))[0]
            mean_rgb = F.adaptive_avg_pool2d(painted * (alpha > 0.5), (h, w))[0] / weight.clamp_min(1e-6)
            ab = _rgb_to_ab(mean_rgb.permute(1, 2, 0).clamp(0, 255).numpy())
            mask = (weight > 0.25).float()
            ab = ab * mask
        if self.points:
            colors = _rgb_to_ab(np.array([p.color for p in self.points], dtype=np.uint8))  # (2, N)
            rows = [min(h - 1, int(p.y * h / full_size[0])) for p in self.points]
            cols = [min(w - 1, int(p.x * w / full_size[1])) for p in self.points]
            for k, (row, col) in enumerate(zip(rows, cols)):
                top, left = max(0, row - self.point_size // 2), max(0, col - self.point_size // 2)
                window = (slice(None), slice(top, top + self.point_size), slice(left, left + self.point_size))
                ab[window] = colors[:, k, None, None]
                mask[window] = 1.0
        reference = None
        if self.reference is not None:
            reference = reference_histogram(self.reference, bins).expand(b, -1)
        ab, mask = ab.expand(b, -1, -1, -1), mask.expand(b, -1, -1, -1)
        return make_guide(l_work.cpu(), ab, mask, reference, reach)

    def to_json(self) -> str:
        return json.dumps({"points": [{"x": p.x, "y": p.y, "color": "#%02x%02x%02x" % p.color}
                                      for p in self.points]}, indent=2)


def reference_histogram(rgb: np.ndarray, bins: torch.Tensor, side: int = 256) -> torch.Tensor:
    """``(1, Q)`` ab histogram of an RGB photo, seen at about ``side`` pixels and
    pooled to a quarter as in training (:func:`simulate_guide`)."""
    image = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    scale = side / math.sqrt(image.shape[-2] * image.shape[-1])
    size = (max(4, round(image.shape[-2] * scale)), max(4, round(image.shape[-1] * scale)))
    image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    ab = rgb_to_lab(image.clamp(0, 1))[:, 1:]
    return ab_histogram(F.avg_pool2d(ab, OUTPUT_STRIDE), bins)


def _to_array(image, what: str) -> np.ndarray | None:
    if image is None:
        return None
    if isinstance(image, (str, os.PathLike)):
        from autocolor.imageio import read_image

        image = read_image(image)[0]
    if hasattr(image, "mode"):  # a PIL image
        image = np.asarray(image.convert("RGBA" if what == "scribble" else "RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise HintError(f"the {what} must be an 8-bit {'RGBA' if what == 'scribble' else 'RGB'} image, "
                        f"got an array of {array.dtype} with shape {array.shape}")
    return array


def _as_rgba(image) -> np.ndarray | None:
    array = _to_array(image, "scribble")
    if array is not None and array.shape[-1] != 4:
        raise HintError(f"the scribble image needs an alpha channel marking the painted pixels (RGBA), "
                        f"got {array.shape[-1]} channels")
    return array


def _as_rgb(image) -> np.ndarray | None:
    array = _to_array(image, "reference")
    if array is not None and array.shape[-1] == 4:
        array = array[..., :3]
    if array is not None and array.shape[-1] != 3:
        raise HintError(f"the reference photo must be RGB, got {array.shape[-1]} channels")
    return array


def load_points(path: str | os.PathLike) -> list[dict]:
    """The points of a hints JSON file (see the module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise HintError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HintError(f"{path}: not valid JSON ({exc})") from None
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list):
        raise HintError(f'{path}: expected {{"points": [{{"x": .., "y": .., "color": "#rrggbb"}}, ...]}}')
    return points


def _hints_at(size: tuple[int, int], lightness: torch.Tensor, guide: Guide):
    """L, hint ab and the hinted cells at ``size``: ``(B, h, w)``, ``(B, 2, h, w)``, ``(B, h, w)`` bool (numpy, CPU)."""
    small_l = F.adaptive_avg_pool2d(lightness.float().cpu(), size)[:, 0].numpy()
    weight = F.adaptive_avg_pool2d(guide.mask.float().cpu(), size)
    hint = F.adaptive_avg_pool2d((guide.ab * guide.mask).float().cpu(), size) / weight.clamp_min(1e-6)
    return small_l, hint, (weight > 0).squeeze(1).numpy()


def refine_with_hints(ab: torch.Tensor, lightness: torch.Tensor, guide: Guide, decay: float,
                      shared: bool = False, stride: int | None = None) -> torch.Tensor:
    """Make a prediction agree with the points: the differences between the
    hints and the predicted ab at the hinted pixels are spread over the image
    by Levin et al.'s optimization with ``decay`` (edge-aware, fading with
    distance) and added. Without hints, ``ab`` comes back unchanged.
    ``shared``: ``decay`` is divided by the number of hinted cells, so one
    point corrects its surroundings and many points, together, the whole image.
    ``stride``: solve at 1/stride of the working size (finer than ``ab``'s
    own resolution, at more cost); None solves at ``ab``'s resolution.

    Args:
        ab: ``(B, 2, h, w)`` predicted ab (Lab units) at the model's output resolution.
        lightness: ``(B, 1, H, W)`` L at the working size; guide: the hints at that size.
    """
    if not bool(guide.mask.any()):
        return ab
    if stride is not None:
        size = (lightness.shape[-2] // stride, lightness.shape[-1] // stride)
        if tuple(size) != tuple(ab.shape[-2:]):
            ab = F.interpolate(ab.float(), size=size, mode="bilinear", align_corners=False)
    small_l, hint, given = _hints_at(ab.shape[-2:], lightness, guide)
    residual = (hint - ab.cpu()).numpy()
    out = ab.clone()
    for i in range(ab.shape[0]):
        if given[i].any():
            rate = decay / int(given[i].sum()) if shared else decay
            out[i] += torch.from_numpy(levin_colorize(small_l[i], residual[i], given[i], rate)).to(ab.device)
    return out


# A point's region (hint_influence): every lightness step beyond the edge threshold costs its excess
# over EDGE_SOFTNESS L units, and crossing the whole image costs FADE, so the influence exp(-cost) stays
# near 1 in the point's region, falls off fast past an edge and only slowly with distance.
EDGE_SOFTNESS = 10.0
FADE = 0.25


def hint_influence(lightness: torch.Tensor, guide: Guide, size: tuple[int, int], edge: float) -> torch.Tensor:
    """Where the points apply, ``(B, 1, *size)`` in [0, 1]: ``exp(-cost)`` of the
    cheapest path from any hinted cell over the 8-neighbour grid at ``size``,
    where a step costs ``max(|dL| - edge, 0) / EDGE_SOFTNESS`` plus its share of
    ``FADE`` per image side (an edge-aware geodesic distance, Dijkstra's
    algorithm from scipy.sparse.csgraph). Lightness steps below ``edge`` (L
    units: texture, shading) are free, so a point fills its region; a strong
    edge stops it. 0 everywhere for an image without points.

    Args:
        lightness: ``(B, 1, H, W)`` L at the working size; guide: the hints at that size.
    """
    small_l, _, given = _hints_at(size, lightness, guide)
    out = torch.zeros(lightness.shape[0], 1, *size)
    for i in range(lightness.shape[0]):
        if given[i].any():
            graph = _step_costs(small_l[i].astype(np.float64), edge)
            cost = dijkstra(graph, directed=False, indices=np.flatnonzero(given[i]), min_only=True)
            out[i, 0] = torch.from_numpy(np.exp(-cost).reshape(size)).float()
    return out


def _step_costs(lightness: np.ndarray, edge: float) -> sp.csr_matrix:
    """The sparse ``(N, N)`` graph of :func:`hint_influence`'s step costs over an ``(h, w)`` grid."""
    h, w = lightness.shape
    index = np.arange(h * w).reshape(h, w)
    rows, cols, costs = [], [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each undirected neighbour pair once
        here = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
        there = (slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
        step = np.maximum(np.abs(lightness[here] - lightness[there]) - edge, 0.0) / EDGE_SOFTNESS
        rows.append(index[here].ravel())
        cols.append(index[there].ravel())
        costs.append((step + FADE * math.hypot(dy, dx) / max(h, w) + 1e-12).ravel())  # > 0: a stored edge
    return sp.csr_matrix((np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))
