"""A face prior that needs no training data: detected faces get skin-tone hints.

Gray or greenish skin is the failure people notice first, and the training
photos hold few faces. OpenCV 4.x wheels ship pretrained Haar face detectors
(``cv2.data.haarcascades``), usable offline. Each frontal face found on the
gray photo gets a few color points inside its central ellipse (forehead,
cheeks, chin, away from eyes and hair), each at a typical skin chroma; the
pipeline makes the prediction agree with them as it does with a user's
points, with a strong decay, so the correction stays on the face
(:func:`autocolor.guide.refine_with_hints`).

The detector is optional: without ``opencv-python-headless<5`` (the
``faces`` extra) there are no face hints, and ``faces=False`` turns them off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# A typical skin chroma (CIE a*, b*): the middle of the skin-tone cluster across
# light and dark skin, whose hue (about 50 degrees) varies far less than its L.
SKIN_AB = (14.0, 18.0)
FACE_DECAY = 0.05  # corrections fade over a few output cells: they stay on the face
DETECT_SIDE = 640  # faces are looked for on the photo shrunk to about this long side
# Where the points go, as fractions of the detector's box (x, y): forehead, cheeks, chin, nose.
_SPOTS = ((0.5, 0.25), (0.3, 0.58), (0.7, 0.58), (0.5, 0.82), (0.5, 0.55))


@dataclass(frozen=True)
class Face:
    x: int  # box in the photo's pixels: left, top, width, height
    y: int
    w: int
    h: int


@lru_cache(maxsize=1)
def _detector():
    try:
        import cv2
    except ImportError:
        return None
    root = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not root:  # OpenCV 5 wheels no longer ship the cascades
        return None
    cascade = cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml")
    return None if cascade.empty() else cascade


def available() -> bool:
    """Whether a face detector is installed (``pip install 'autocolor[faces]'``)."""
    return _detector() is not None


def detect_faces(gray: np.ndarray, min_side_share: float = 0.06) -> list[Face]:
    """Frontal faces in ``(H, W)`` uint8 or uint16 gray, as boxes in its pixels.

    Faces smaller than ``min_side_share`` of the photo's short side are left
    alone (too small for their color to matter, and most false hits are small).
    """
    detector = _detector()
    if detector is None:
        return []
    import cv2

    image = gray if gray.dtype == np.uint8 else (gray >> 8).astype(np.uint8)
    h, w = image.shape
    scale = min(1.0, DETECT_SIDE / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    small = cv2.equalizeHist(small)
    side = max(24, int(min(small.shape) * min_side_share))
    found = detector.detectMultiScale(small, scaleFactor=1.1, minNeighbors=6, minSize=(side, side))
    return [Face(int(x / scale), int(y / scale), int(fw / scale), int(fh / scale)) for x, y, fw, fh in found]


def faces_in_lightness(lightness) -> list[Face]:
    """:func:`detect_faces` on an ``(H, W)`` tensor of L in [0, 100], as :func:`face_guide` looks."""
    import torch

    return detect_faces((lightness.clamp(0, 100) * 2.55 + 0.5).to(torch.uint8).cpu().numpy())


def face_points(faces: list[Face], lightness_at) -> list[tuple[float, float, tuple[float, float]]]:
    """``(x, y, (a, b))`` skin points for each face; ``lightness_at(x, y)`` is unused
    for the chroma (skin's a*, b* vary little with L) but kept dark points out:
    a spot darker than L 15 (hair, shadow) gets no point."""
    points = []
    for face in faces:
        for fx, fy in _SPOTS:
            x, y = face.x + fx * face.w, face.y + fy * face.h
            if lightness_at(x, y) >= 15.0:
                points.append((x, y, SKIN_AB))
    return points


def face_guide(lightness, work_size: tuple[int, int], found: Sequence[Sequence[Face]] | None = None):
    """Skin-tone hints for ``(B, 1, H, W)`` full-resolution L, laid out at the working
    size as a :class:`autocolor.guide.Guide` (None when no image has a face).

    ``found``: each image's faces, already known (video detects them once in a
    while and moves the boxes along the motion in between); None detects them here.
    """
    import torch

    from autocolor.guide import make_guide

    b, _, h, w = lightness.shape
    hh, ww = work_size
    if found is not None and not any(found):
        return None
    ab = torch.zeros(b, 2, hh, ww)
    mask = torch.zeros(b, 1, hh, ww)
    for i in range(b):
        full = lightness[i, 0]
        faces = faces_in_lightness(full) if found is None else found[i]
        points = face_points(faces, lambda x, y: float(full[min(h - 1, int(y)), min(w - 1, int(x))]))
        for x, y, (a, bb) in points:
            row, col = min(hh - 1, int(y * hh / h)), min(ww - 1, int(x * ww / w))
            window = (i, slice(None), slice(max(0, row - 1), row + 2), slice(max(0, col - 1), col + 2))
            ab[window[0], 0, window[2], window[3]] = a
            ab[window[0], 1, window[2], window[3]] = bb
            mask[window] = 1.0
    if not bool(mask.any()):
        return None
    from autocolor.pipeline import resize

    return make_guide(resize(lightness.float().cpu(), work_size), ab, mask)
