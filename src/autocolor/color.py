"""Color math: gray, Lab and its normalization, in one place.

Every image tensor here is float RGB in [0, 1] with shape ``(*, 3, H, W)``;
Lab follows CIE conventions (L in [0, 100], a and b roughly in [-110, 110]).
Conversions go through :mod:`kornia.color`, so they are differentiable and
run on whatever device and dtype the input has.

The last section is the same Lab-to-RGB conversion for inference on 16-bit
gray pixels: L, f(Y) and Y read from tables of the gray level, the sRGB
curve from a table for 8-bit output, in row tiles over threads, so laying
chroma over a 12-megapixel photo takes a fraction of a second.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import lab_to_rgb as _kornia_lab_to_rgb
from kornia.color import linear_rgb_to_rgb, xyz_to_rgb
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


# ---------------------------------------------------------------- L and ab to RGB, fast

TILE_PIXELS = 1 << 15  # pixels per merged tile: below torch's grain size, and its temporaries stay in cache
STRIP_SIDE = 16  # images thinner than this are strips, never photos
_WHITE = (0.95047, 1.0, 1.08883)  # D65, as kornia's lab_to_rgb uses
_SRGB_STEPS = (1 << 18) - 1  # linear values are quantized to 18 bits for the sRGB table


@lru_cache(maxsize=1)
def gray_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each 16-bit gray level: L in [0, 100] (by :func:`gray_to_l`), Lab's
    f(Y) = (L + 16) / 116, and the relative luminance Y itself."""
    levels = torch.arange(65536, dtype=torch.float64) / 65535.0
    lightness = gray_to_l(levels.view(1, 1, -1)).view(-1)
    fy = (lightness + 16.0) / 116.0
    return lightness.float().numpy(), fy.float().numpy(), _finv(fy).float().numpy()


@lru_cache(maxsize=1)
def _xyz_to_linear_rgb_matrix() -> list[list[float]]:
    # Read kornia's matrix back from it, so there is one definition of the conversion.
    basis = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)  # three 1x1 images: X, Y, Z
    return xyz_to_rgb(basis)[:, :, 0, 0].T.tolist()  # rows: R, G, B


@lru_cache(maxsize=1)
def _srgb8_table() -> torch.Tensor:
    """8-bit sRGB of each quantized linear value (the transfer curve's steepest
    slope, 12.92, keeps the quantization error far below one 8-bit level)."""
    linear = torch.linspace(0.0, 1.0, _SRGB_STEPS + 1).view(1, 1, -1).expand(3, 1, -1)
    return (linear_rgb_to_rgb(linear)[0, 0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def _finv(t: torch.Tensor) -> torch.Tensor:
    """Inverse of Lab's companding function f, with kornia's constants."""
    return torch.where(t > 0.2068966, t * t * t, (t - 4.0 / 29.0) / 7.787)


def lab_tile_to_rgb(gray: np.ndarray, ab: torch.Tensor, out: np.ndarray) -> None:
    """Write RGB for ``(B, h, W)`` uint16 gray and ``(B, 2, h, W)`` ab (Lab units)
    into the first three channels of ``out`` ``(B, h, W, 3|4)`` (uint8, uint16 or float32).

    The conversion of :func:`autocolor.color.lab_to_rgb` (kornia's, D65, clipped),
    with L, f(Y) and Y read from tables of the gray level and, for 8-bit
    output, the sRGB curve read from a table: a few passes over small tiles.
    """
    _, fy_table, y_table = gray_tables()
    fy = torch.from_numpy(fy_table[gray])
    xyz = (
        _finv(torch.add(fy, ab[:, 0], alpha=1.0 / 500.0)).mul_(_WHITE[0]),
        torch.from_numpy(y_table[gray]),
        _finv(torch.sub(fy, ab[:, 1], alpha=1.0 / 200.0).clamp_(min=0.0)).mul_(_WHITE[2]),
    )
    for channel, row in enumerate(_xyz_to_linear_rgb_matrix()):
        linear = torch.mul(xyz[0], row[0]).add_(xyz[1], alpha=row[1]).add_(xyz[2], alpha=row[2]).clamp_(0.0, 1.0)
        if out.dtype == np.uint8:
            index = linear.mul_(_SRGB_STEPS).add_(0.5).to(torch.int32)
            out[..., channel] = torch.index_select(_srgb8_table(), 0, index.view(-1)).view(index.shape).numpy()
            continue
        srgb = linear_rgb_to_rgb(linear.unsqueeze(-3).expand(*linear.shape[:-2], 3, *linear.shape[-2:]))[..., 0, :, :]
        srgb = srgb.clamp_(0.0, 1.0)
        out[..., channel] = srgb.mul_(65535.0).add_(0.5).numpy() if out.dtype == np.uint16 else srgb.numpy()


def bilinear_taps(n_in: int, n_out: int, at: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0, i1`` and weights ``w0, w1`` (float32) of output samples
    ``at`` (of ``n_out``) resized bilinearly (``align_corners=False``) from ``n_in``.

    Torch's CPU kernel's own arithmetic: the source position
    ``scale * (i + 0.5) - 0.5`` rounded once (a fused multiply-add), so
    :class:`BilinearUpsampler` gives what ``F.interpolate`` gives, bit for bit
    where torch's kernels fuse, and within a float32 step elsewhere.
    """
    index = np.arange(*at.indices(n_out))
    if n_in == n_out:
        return index, index, np.ones(len(index), np.float32), np.zeros(len(index), np.float32)
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    centers = index.astype(np.float32) + np.float32(0.5)
    source = np.maximum((scale * centers - 0.5).astype(np.float32), np.float32(0.0))  # exact in float64, one rounding
    i0 = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    w1 = np.clip(source - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return i0, np.minimum(i0 + 1, n_in - 1), np.float32(1.0) - w1, w1


def _lerp(a: torch.Tensor, b: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """``a * wa + b * wb`` in float32, rounded as ``fma(a, wa, b * wb)`` (torch's kernel)."""
    return torch.mul(b, wb).double().addcmul_(a.double(), wa.double()).float()


class BilinearUpsampler:
    """``F.interpolate(ab, size=(h, w), mode="bilinear", align_corners=False)``
    one tile at a time: :meth:`tile` gives the rows and columns asked for, so
    the full-resolution chroma (8 bytes a pixel) never exists at once, nor
    anything else as long as the image (a 1 x 10,000,000 strip).

    Torch interpolates along rows first; those row results are kept for every
    source row when they are small beside the output (a photo's 48 source
    rows for its 3000), else computed for each tile.
    """

    def __init__(self, ab: torch.Tensor, size: tuple[int, int]) -> None:
        self.ab = ab.float().contiguous()
        self.size = size
        self._across: torch.Tensor | None = None
        if self.ab.shape[-2] * 8 <= size[0]:
            self._across = self._along_rows(self.ab, slice(0, size[1]))  # (B, C, h_in, W)

    def _along_rows(self, band: torch.Tensor, cols: slice) -> torch.Tensor:
        c0, c1, w0, w1 = (torch.from_numpy(t) for t in bilinear_taps(self.ab.shape[-1], self.size[1], cols))
        return _lerp(band[..., c0], band[..., c1], w0, w1)

    def tile(self, rows: slice, cols: slice) -> torch.Tensor:
        """``(B, C, len(rows), len(cols))`` of the upsampled chroma."""
        r0, r1, w0, w1 = (torch.from_numpy(t) for t in bilinear_taps(self.ab.shape[-2], self.size[0], rows))
        if self._across is not None:
            across, low = self._across[..., cols], 0
        else:
            low, high = int(r0.min()), int(r1.max()) + 1
            across = self._along_rows(self.ab[:, :, low:high], cols)  # the source rows these rows read
        return _lerp(across[:, :, r0 - low], across[:, :, r1 - low], w0[:, None], w1[:, None])


def merge_gray_ab(gray: np.ndarray, ab: torch.Tensor, dtype: np.dtype, channels: int = 3) -> np.ndarray:
    """Lay ``(B, 2, h, w)`` ab (Lab units) over the L of ``(B, H, W)`` uint16 gray:
    ``(B, H, W, 3)`` samples of ``dtype`` (``(B, H, W, 4)`` with ``channels=4``, the
    fourth left for the caller's alpha, unset).

    ab is upsampled bilinearly as in :func:`autocolor.color.merge_l_ab` and
    converted in tiles: bands of whole rows, or pieces of a row as long as an
    image is wide. An 8-bit photo's chroma is upsampled whole (8 bytes a
    pixel, and faster: 12 MP merged in 0.36 s against 0.44 s by tiles on 2
    cores); deep outputs' and strips' tile by tile (:class:`BilinearUpsampler`,
    the same values), so that a strip costs no more per pixel than a photo.
    """
    b, h, w = gray.shape
    if min(h, w) >= STRIP_SIDE and dtype == np.uint8:
        # An 8-bit photo: its whole chroma at once (8 bytes a pixel) is the fastest, and stays
        # under the peak that face detection sets. Deep outputs, whose own samples already
        # cost 6-16 bytes a pixel, and strips are upsampled tile by tile.
        whole = F.interpolate(ab.float(), size=(h, w), mode="bilinear", align_corners=False)
        chroma = lambda rows, cols: whole[:, :, rows, cols]  # noqa: E731
    else:
        chroma = BilinearUpsampler(ab, (h, w)).tile
    out = np.empty((b, h, w, channels), dtype=dtype)
    step = max(1, TILE_PIXELS // (w * b))
    width = w if step > 1 or w * b <= TILE_PIXELS else max(1, TILE_PIXELS // b)
    tiles = [(slice(top, min(h, top + step)), slice(left, min(w, left + width)))
             for top in range(0, h, step) for left in range(0, w, width)]

    def merge(tile: tuple[slice, slice]) -> None:
        rows, cols = tile
        lab_tile_to_rgb(gray[:, rows, cols], chroma(rows, cols), out[:, rows, cols])

    threads = min(len(tiles), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if threads <= 1:
        for tile in tiles:
            merge(tile)
        return out
    # Tiles this small run single-threaded inside torch; spreading them over our
    # own threads (torch releases the GIL) uses the cores without OpenMP's
    # barriers, which stall badly when other processes share the CPU.
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(merge, tiles))
    return out


def gray16_to_l(gray: np.ndarray) -> torch.Tensor:
    """L in [0, 100] ``(B, 1, H, W)`` of ``(B, H, W)`` uint16 gray (table lookup;
    the same values as :func:`gray_to_l` of ``gray / 65535``)."""
    return torch.from_numpy(gray_tables()[0][gray]).unsqueeze(1)
