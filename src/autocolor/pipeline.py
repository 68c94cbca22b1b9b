"""The one path from gray pixels to color, used by every caller.

    gray (uint16) -> L -> working size -> model (+ hints) -> ab -> x saturation
                  -> merged with the full-resolution L -> RGB

:func:`colorize_gray` is that path; the Colorizer API, the batch CLI, the web
demo, the ONNX backend, training validation and evaluation all call it (or,
for a saturation sweep, its two halves :func:`predict_chroma` and
:func:`autocolor.color.merge_gray_ab`). Training and evaluation hold float
gray tensors; :func:`colorize_tensor` quantizes them to 16 bits and takes the
same path, so a model is judged exactly as it is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from autocolor.color import STRIP_SIDE, gray16_to_l, merge_gray_ab, saturate_rgb
from autocolor.faces import FACE_DECAY, Face, face_guide
from autocolor.guide import Guide, Hints, empty_guide, flip_guide, hint_influence, refine_with_hints
from autocolor.quantize import Decoding

DEFAULT_RENDER_SIZE = 256
# The face detector finds nothing under 24 px; asking it about a strip 1 px high costs
# OpenCV's shrinking tables for its whole length (200 MB for 36,000,000 px).
FACE_MIN_SIDE = 24
REFINE_STRIDE = 2  # hint corrections are solved at half the working size: finer than the model's 1/4, still fast


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
    """Antialiased bilinear resize of ``(B, C, H, W)`` to ``size``.

    A strip (a side under ``STRIP_SIDE``) is box-averaged first to no more than
    4 times ``size``: torch's antialiasing weights take 8 bytes per input pixel
    along an axis, as much as a 1-pixel strip's own floats twice over.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if min(x.shape[-2:]) < STRIP_SIDE:
        kernel = (max(1, x.shape[-2] // (4 * size[0])), max(1, x.shape[-1] // (4 * size[1])))
        if kernel != (1, 1):
            x = F.avg_pool2d(x, kernel, ceil_mode=True)  # a short last window averages what it holds
    if size[1] > x.shape[-1] and size[0] < x.shape[-2]:
        # Torch resizes the width first: a tall strip (10,000,000 x 1 to 4096 x 16) would pass
        # through 10,000,000 x 16 floats. Its height goes first instead (photos never get here).
        x = F.interpolate(x, size=(size[0], x.shape[-1]), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _device_of(model) -> torch.device:
    params = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return params.device if params is not None else torch.device("cpu")


@torch.no_grad()
def predict_chroma(
    model,
    lightness: torch.Tensor,
    render_size: int | None = None,
    hints: Hints | Guide | None = None,
    decoding: Decoding | None = None,
    faces: bool | Sequence[Sequence[Face]] = False,
) -> torch.Tensor:
    """Chroma of full-resolution L ``(B, 1, H, W)`` in [0, 100]: ab ``(B, 2, h, w)``
    in Lab units at the model's output resolution, on the CPU.

    The model sees L at the working size (about ``render_size`` squared);
    ``hints`` (in the input's pixel coordinates) are laid out at that size;
    a :class:`Guide` must already be at it. With ``faces``, detected faces
    get skin-tone corrections (:mod:`autocolor.faces`); a list of each
    image's faces, where they are already known (video follows them along
    the motion, the web demo finds them once a photo), stands for detecting them.
    """
    h, w = lightness.shape[-2:]
    size = working_size(h, w, render_size or DEFAULT_RENDER_SIZE, model.stride)
    l_work = resize(lightness, size)
    guide = None
    if isinstance(hints, Guide):  # already laid out at the working size (evaluation's simulated users)
        guide = hints
    elif hints is not None and not hints.empty:
        guide = hints.guide(l_work, (h, w), model.bins, model.spread_reach)
    if guide is not None:
        if not model.guided:
            raise ValueError("this model takes no color hints; use a guided model (the default) or 'levin'")
        guide = guide.to(_device_of(model))
    decoding = decoding or model.decoding
    if guide is not None and bool(guide.mask.any()) and not model.exact_hints:
        ab = _pointed_chroma(model, l_work, guide, decoding)
    elif guide is None:
        ab = automatic_chroma(model, l_work, decoding)
    else:
        ab = model.predict_ab(l_work.to(_device_of(model)), guide, decoding).float().cpu()
    if faces and not model.exact_hints and min(h, w) >= FACE_MIN_SIDE:
        skin = face_guide(lightness, size, None if faces is True else faces)
        if skin is not None:
            ab = refine_with_hints(ab, l_work.cpu(), skin, FACE_DECAY)
    return ab


def fusion_working_size(work: tuple[int, int], fusion_size: int, multiple: int) -> tuple[int, int] | None:
    """The smaller working size whose prediction a decoding's ``fusion_size`` averages in, or None
    (0: off, or not smaller than ``work``)."""
    if not fusion_size:
        return None
    small = working_size(*work, fusion_size, multiple)
    return small if small[0] * small[1] < work[0] * work[1] else None


def fuse_chroma(ab: torch.Tensor, small_ab: torch.Tensor) -> torch.Tensor:
    """The mean of the chroma predicted at the working size and at the smaller fusion size
    (brought to ``ab``'s size): an object seen at two scales gets one answer."""
    return 0.5 * (ab + F.interpolate(small_ab, size=ab.shape[-2:], mode="bilinear", align_corners=False))


def automatic_chroma(model, l_work: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """ab without hints, on the CPU: the network at the working size and, with
    ``decoding.fusion_size``, also at that smaller size, the two averaged."""
    device = _device_of(model)
    ab = model.predict_ab(l_work.to(device), None, decoding).float().cpu()
    small = fusion_working_size(tuple(l_work.shape[-2:]), decoding.fusion_size, model.stride)
    if small is not None:
        ab = fuse_chroma(ab, model.predict_ab(resize(l_work, small).to(device), None, decoding).float().cpu())
    return ab


def _pointed_chroma(model, l_work: torch.Tensor, guide: Guide, decoding: Decoding) -> torch.Tensor:
    """ab with color points: the network at the hint chroma scale, made to agree with the
    points (``refine_hints``), and kept to the regions the points are in (``hint_edge``:
    elsewhere the result without points stays, automatic or from the reference photo, so a
    point on the sky leaves the ground alone)."""
    device = _device_of(model)
    pointed = replace(decoding, chroma_scale=decoding.hint_chroma_scale)
    ab = model.predict_ab(l_work.to(device), guide, pointed).float().cpu()
    if decoding.hint_flip:
        mirrored = model.predict_ab(l_work.flip(-1).to(device), flip_guide(guide), pointed).float().cpu()
        ab = 0.5 * (ab + mirrored.flip(-1))
    guide = guide.to("cpu")
    if decoding.refine_hints:
        ab = refine_with_hints(ab, l_work, guide, decoding.hint_decay, shared=True, stride=REFINE_STRIDE)
    if decoding.hint_edge > 0:
        if guide.reference is None:
            unpointed = automatic_chroma(model, l_work, decoding)
        else:  # outside the points' regions, the reference photo still sets the colors
            only_reference = replace(empty_guide(*guide.mask.shape[:1], *l_work.shape[-2:]), reference=guide.reference)
            unpointed = model.predict_ab(l_work.to(device), only_reference.to(device), decoding).float().cpu()
        unpointed = F.interpolate(unpointed, size=ab.shape[-2:], mode="bilinear", align_corners=False)
        influence = hint_influence(l_work, guide, ab.shape[-2:], decoding.hint_edge)
        ab = unpointed + influence * (ab - unpointed)
    return ab


@torch.no_grad()
def _colorize_rgb_model(model, gray: np.ndarray, dtype: np.dtype, render_size: int | None, saturation: float):
    """The reference designs predict RGB from gray in [0, 1]: a fixed-size model at
    its size, the others at ``render_size`` (else at full size), resized back."""
    g = torch.from_numpy(gray.astype(np.float32) / 65535.0).unsqueeze(1).to(_device_of(model))  # (B, 1, H, W)
    h, w = g.shape[-2:]
    if model.fixed_size is not None:
        size = (model.fixed_size, model.fixed_size)
    else:
        size = working_size(h, w, render_size, model.stride) if render_size is not None else (h, w)
    dtype_in = next(model.parameters()).dtype
    rgb = model(resize(g, size).to(dtype_in)).float()
    if rgb.shape[-2:] != (h, w):
        rgb = F.interpolate(rgb, size=(h, w), mode="bicubic", align_corners=False)
    rgb = rgb.clamp(0, 1)
    if saturation != 1.0:
        rgb = saturate_rgb(rgb, saturation)
    rgb = rgb.cpu().permute(0, 2, 3, 1).numpy()
    if np.dtype(dtype) == np.uint8:
        return (rgb * 255.0 + 0.5).astype(np.uint8)
    if np.dtype(dtype) == np.uint16:
        return (rgb * 65535.0 + 0.5).astype(np.uint16)
    return rgb.astype(np.float32)


def colorize_gray(
    model,
    gray: np.ndarray,
    dtype: np.dtype = np.uint8,
    render_size: int | None = None,
    saturation: float = 1.0,
    hints: Hints | None = None,
    decoding: Decoding | None = None,
    faces: bool = False,
    channels: int = 3,
) -> np.ndarray:
    """Colorize ``(B, H, W)`` uint16 gray into ``(B, H, W, 3)`` samples of ``dtype``
    (uint8, uint16 or float32 in [0, 1]); with ``channels=4`` chroma models leave
    a fourth channel for the caller's alpha (RGB models give 3 channels always)."""
    if model.predicts == "rgb":
        if hints is not None and not hints.empty:
            raise ValueError("RGB models take no color hints")
        return _colorize_rgb_model(model, gray, dtype, render_size, saturation)
    ab = predict_chroma(model, gray16_to_l(gray), render_size, hints, decoding, faces)
    return merge_gray_ab(gray, ab * saturation, dtype, channels)


def to_gray16(gray: torch.Tensor) -> np.ndarray:
    """``(B, 1, H, W)`` float gray in [0, 1] to ``(B, H, W)`` uint16."""
    return (gray[:, 0].detach().float().cpu().clamp(0, 1) * 65535.0 + 0.5).to(torch.int32).numpy().astype(np.uint16)


def colorize_tensor(model, gray: torch.Tensor, render_size: int | None = None, saturation: float = 1.0) -> torch.Tensor:
    """:func:`colorize_gray` for ``(B, 1, H, W)`` float gray in [0, 1]: ``(B, 3, H, W)`` RGB in [0, 1]."""
    rgb = colorize_gray(model, to_gray16(gray), np.float32, render_size, saturation)
    return torch.from_numpy(rgb).permute(0, 3, 1, 2)
