"""Colorizing video: decode, colorize in batches, steady the chroma along optical flow, encode.

    colorizer = Colorizer.load()
    colorize_video(colorizer, "film.mp4", "out/film.mp4")     # or colorizer.colorize_video(...)

Frames stream through at constant memory, in batches, on two threads. On
the caller's: PyAV decodes them, each becomes Rec. 601 gray, the stabilizer
(:class:`ChromaStabilizer`) finds shot cuts and the motion and picks the
frames the network sees, faces are followed through the shot
(:class:`FaceTracker`), the network colorizes at the working size
(:func:`predict_frames_ab`) and the chroma is steadied along the flow. On the
other, the previous batch's chroma is laid over each frame's full-resolution
L (:func:`merge_frames`) and encoded with H.264. Timestamps (so frame rate,
variable frame rate and duration), rotation and audio are carried over; audio
packets are copied unless the output container cannot hold them, then they
are re-encoded to AAC. The output appears under its final name only when it
is complete.

Why the chroma needs steadying: every frame's colors are a fresh guess, and
film grain and exposure flicker change the guess, so per-frame colors shimmer.
The network sees every 3rd frame of a shot; each of those keyframes gets a
weighted mean of the guesses on the keyframes before and after it (up to 5
ahead), each moved along the optical flow of the gray frames to it, wherever
the flow is trustworthy (forward and backward flow agree); the frames between
take the two keyframes' chroma, moved to them. Shot cuts (a jump in the gray
histogram) restart it. Every mean is centred on the frame's own guess, so
colors cannot drift from it, and looking ahead as well as back keeps them from
lagging behind a guess that changes as the view does; frames wait (18 at most)
for the keyframes ahead of them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from autocolor.color import GRAY_WEIGHTS, gray16_to_l, merge_gray_ab
from autocolor.faces import Face, faces_in_lightness
from autocolor.imageio import ImageError
from autocolor.pipeline import predict_chroma
from autocolor.settings import DEFAULT_CRF, VIDEO_EXTENSIONS

if TYPE_CHECKING:
    from autocolor.inference import Colorizer, Job

# Containers that hold H.264 and keep the input's suffix; the others are written as MP4.
_MUXER_OF_SUFFIX = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

# x264's constant-quality factor. 18 is the usual "visually lossless" setting:
# at 23 (x264's default) the thin, low-contrast chroma of a colorized frame is
# quantized into visible blocks. Chroma is stored at half resolution (yuv420p,
# what every player reads), still twice as fine as the model's own ab.
X264_PRESET = "veryfast"  # far faster than "medium"; at CRF 18 the cost is file size, not visible quality
BATCH_FRAMES = 8
# Audio copied as it is into MP4 and MOV: what players read there. FFmpeg would
# also store Vorbis or PCM in MP4, in ways many players reject; those are
# re-encoded to AAC. Matroska holds anything.
_COPIED_AUDIO = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"},
}


class VideoError(ImageError):
    """A file that cannot be used as a video (or written as one), with the reason."""


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def output_suffix(source: str | os.PathLike) -> str:
    """The input's own suffix where that container holds H.264, else ``.mp4``."""
    suffix = Path(source).suffix.lower()
    return suffix if suffix in _MUXER_OF_SUFFIX else ".mp4"


# ---------------------------------------------------------------- the model: the only two places it is used


@torch.no_grad()
def predict_frames_ab(
    colorizer: "Colorizer",
    gray: np.ndarray,
    render_size: int | None = None,
    saturation: float = 1.0,
    hints=None,
    faces: list[list[Face]] | None = None,
) -> torch.Tensor:
    """Chroma for ``(B, H, W)`` uint16 gray frames: ``(B, 2, h, w)`` ab in Lab
    units at the model's output resolution, through the one pipeline
    (:func:`autocolor.pipeline.predict_chroma`); ``hints`` (an
    :class:`autocolor.guide.Hints`) apply to every frame.

    ``faces``: each frame's face boxes where they are already known
    (:class:`FaceTracker`); None looks for faces in every frame, as for photos.
    Either way they get the skin-tone prior only where ``colorizer.faces``.
    """
    model = colorizer.model
    if model.predicts != "ab":
        raise VideoError(f"{colorizer.name} predicts RGB; video needs a chroma model (predicts ab)")
    wanted = (True if faces is None else faces) if colorizer.faces else False
    return predict_chroma(model, gray16_to_l(gray), render_size, hints, faces=wanted) * saturation


def merge_frames(gray: np.ndarray, ab: torch.Tensor) -> np.ndarray:
    """Lay ``(B, 2, h, w)`` ab over the L of ``(B, H, W)`` uint16 gray: ``(B, H, W, 3)`` uint8 RGB."""
    return merge_gray_ab(gray, ab, np.uint8)


# ---------------------------------------------------------------- temporal consistency

FLOW_SIDE = 192  # flow is computed on gray frames scaled to at most this many pixels a side
# Faces are looked for on a shot's first predicted frame and again every this many
# frames (people walk in); in between, the boxes follow the flow. Detection costs
# several times what the network does on a frame, so looking on every frame halved the speed.
FACE_EVERY = 24


@dataclass(frozen=True)
class StabilizerConfig:
    """How chroma is carried from frame to frame (the defaults are the benchmark's choice)."""

    # The network sees every predict_every-th frame of a shot (a keyframe). Each
    # keyframe's chroma is a mean of the guesses on it and on the keyframes around
    # it, moved along the flow, weighted keep ** (distance in keyframes), up to
    # lookahead keyframes ahead; keep 0 colorizes every frame alone. Measured end to
    # end (encoded, decoded, scored) on 14 benchmark clips (7 photos, pan and zoom),
    # as the mean of the per-clip ratios to the per-frame path: 3, 0.8 and 5 gave
    # flicker 0.47x and CIEDE2000 0.992x (at most 1.005x on one clip). The past
    # alone (lookahead 0) lags behind a guess that changes with the view: with
    # 2 and 0.8 (the earlier default) 0.50x and 1.006x (at most 1.044x), with 3
    # and 0.5 0.57x and 1.000x. 3, 0.85 and 5: 0.46x, 0.993x; 4, 0.8 and 4:
    # 0.46x, 1.000x (at most 1.037x); 2, 0.8 and 5: 0.48x, 0.997x at 1.5 times
    # the network's work. Flicker cannot go far below 0.4x there: chroma held
    # nearly still (keep 0.95 on every frame) measured 0.41x on 6 of the clips,
    # since rounding grainy frames to 8-bit YUV changes their chroma about that much.
    keep: float = 0.8
    predict_every: int = 3
    lookahead: int = 5  # keyframes ahead whose guesses count (0: the past alone); frames wait for them
    cut_threshold: float = 0.4  # gray-histogram distance (0..1) above which a frame starts a new shot
    fb_tolerance: float = 0.7  # forward-backward flow disagreement allowed, in flow pixels, plus 5% of the motion

    def __post_init__(self) -> None:
        assert 0.0 <= self.keep < 1.0, f"keep must be in [0, 1), got {self.keep}"
        assert self.predict_every >= 1, f"predict_every must be at least 1, got {self.predict_every}"
        assert self.lookahead >= 0, f"lookahead must be at least 0, got {self.lookahead}"
        assert self.predict_every == 1 or self.keep > 0, "predict_every > 1 needs keep > 0 (chroma is carried)"


def _flow_input(gray: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint16 gray scaled down to FLOW_SIDE, as uint8 normalized to
    its own mean and spread, so that exposure flicker reads neither as motion nor as a cut."""
    import cv2

    h, w = gray.shape
    scale = min(1.0, FLOW_SIDE / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    small = (small - small.mean()) * (48.0 / (small.std() + 1e-3)) + 128.0
    return np.clip(small, 0, 255).astype(np.uint8)


@dataclass
class Motion:
    """How a frame moved from the one before, both ways, at the flow's resolution ``(fh, fw)``."""

    back: np.ndarray  # (fh, fw, 2) float32: where each pixel of this frame was in the previous one
    reliable: np.ndarray  # (fh, fw) bool: forward and backward flow agree there, and the pixel was in view
    forth: np.ndarray  # (fh, fw, 2) float32: where each pixel of the previous frame is in this one
    reliable_forth: np.ndarray  # (fh, fw) bool: the same, on the previous frame's pixels


@dataclass
class Plan:
    """One batch as the stabilizer sees it, before any prediction."""

    starts: list[bool]  # the frame starts a shot (the clip's first frame does)
    motions: list[Motion | None]  # from the previous frame; None at a shot's start or when nothing is carried
    wanted: np.ndarray  # indices of the frames the network must see (its keyframes)


@dataclass
class _Held:
    """A frame of the current shot whose chroma is not out yet."""

    motion: Motion | None  # from the frame before; None where the shot starts
    ab: np.ndarray | None  # (2, h, w) the network's, on keyframes
    forward: np.ndarray  # (2, h, w) the chroma carried forward to it from the shot's past


class ChromaStabilizer:
    """Steadies the chroma of a stream of frames along the optical flow of the
    gray frames; a shot cut starts afresh.

    The network sees every ``predict_every``-th frame of a shot (a keyframe).
    Each keyframe's chroma is a weighted mean of the network's guesses on it
    and on the keyframes around it, each moved along the flow to it: weight
    ``keep`` to the power of the distance in keyframes, as far as
    ``lookahead`` keyframes ahead, wherever the flow is reliable (forward and
    backward flow agree). The frames between two keyframes take the chroma of
    both, moved to them and mixed by nearness. Looking ahead as well as back
    keeps the colors from lagging behind a guess that changes as the view
    does; it holds each frame back until the keyframes it needs have come
    (``(lookahead + 1) * predict_every`` frames at most). ``lookahead=0``
    blends each keyframe's guess with the past alone, and returns every
    frame at once.

    Feed it batches in order with :meth:`plan` (which frames need a
    prediction, and how each moved), then :meth:`blend`, which returns the
    chroma of the frames that are done; :meth:`finish` returns the rest.
    :meth:`steady` does all of it for a whole clip.
    """

    def __init__(self, config: StabilizerConfig = StabilizerConfig()) -> None:
        import cv2

        self.config = config
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # the previous frame's flow gray and histogram
        self._forward: np.ndarray | None = None  # the chroma carried forward to the previous frame
        self._held: list[_Held] = []  # from a keyframe on: the frames of this shot not out yet
        self._first: np.ndarray | None = None  # the chroma of _held[0], once known
        self._since_prediction = 0
        self.cuts = 0  # shot cuts seen (the first frame is not one)
        self.predicted = 0  # frames the network ran on

    def steady(self, gray: np.ndarray, predict: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        """A whole clip (or what is left of it): ``(B, H, W)`` uint16 gray frames to
        their ``(B, 2, h, w)`` steadied ab. ``predict(indices)`` returns the network's
        ab ``(len(indices), 2, h, w)`` for those frames."""
        plan = self.plan(gray)
        done = self.blend(plan, predict(plan.wanted) if len(plan.wanted) else None)
        return torch.cat([done, self.finish()])

    def plan(self, gray: np.ndarray) -> Plan:
        """Shot starts, motion and the frames to predict for ``(B, H, W)`` uint16 gray frames."""
        starts, motions, wanted = [], [], []
        since, carry = self._since_prediction, self.config.keep > 0
        for i, image in enumerate(gray):
            small = _flow_input(image)
            hist = np.bincount(small.ravel() >> 4, minlength=16) / small.size
            start = self._last is None or 0.5 * np.abs(hist - self._last[1]).sum() > self.config.cut_threshold
            self.cuts += int(start and self._last is not None)
            motions.append(self._motion(self._last[0], small) if carry and not start else None)
            starts.append(start)
            since = 0 if start or since + 1 >= self.config.predict_every else since + 1
            if since == 0:
                wanted.append(i)
            self._last = (small, hist)
        self._since_prediction = since
        self.predicted += len(wanted)
        return Plan(starts, motions, np.asarray(wanted, dtype=np.int64))

    def blend(self, plan: Plan, predicted: torch.Tensor | None) -> torch.Tensor:
        """The steadied ``(n, 2, h, w)`` ab of the next ``n`` frames of the stream,
        in order, given the network's ab of ``plan.wanted``; ``n`` may be less than
        the batch (frames wait for keyframes ahead) or more (earlier ones were waiting)."""
        fresh = dict(zip(plan.wanted.tolist(), predicted.numpy())) if predicted is not None else {}
        keep, out = self.config.keep, []
        for i, motion in enumerate(plan.motions):
            ab = fresh.get(i)
            if motion is None:  # a shot starts (or every frame is colorized alone)
                out += self._release(ended=True)
                forward = ab
            else:
                warped, reliable = self._along(motion, self._forward)
                forward = warped if ab is None else ab + (keep * reliable) * (warped - ab)
            self._forward = forward
            if self.config.lookahead == 0 or keep == 0:
                out.append(forward)
            else:
                self._held.append(_Held(motion, ab, forward))
                out += self._release(ended=False)
        return _stacked(out, self._forward)

    def finish(self) -> torch.Tensor:
        """The steadied ab of the frames still held back: the stream has ended."""
        return _stacked(self._release(ended=True), self._forward)

    def _release(self, ended: bool) -> list[np.ndarray]:
        """The chroma of the held frames that can be given now (all of them when the shot has ``ended``)."""
        out = []
        while self._held:
            keys = [i for i, held in enumerate(self._held) if held.ab is not None]  # keys[0] == 0
            if not ended and len(keys) < self.config.lookahead + 2:  # the next keyframe needs that many ahead
                break
            if self._first is None:
                self._first = self._both_ways(0, keys)
            if len(keys) == 1:  # the shot's last keyframe: its chroma carried on to the shot's end
                out += self._carried(self._first, len(self._held))
                self._held, self._first = [], None
                break
            after = self._both_ways(keys[1], keys)
            out += self._between(self._first, after, keys[1])
            self._held, self._first = self._held[keys[1]:], after
        return out

    def _both_ways(self, j: int, keys: list[int]) -> np.ndarray:
        """Keyframe ``_held[j]``'s chroma: its carried-forward chroma (the past) and the
        guesses of up to ``lookahead`` keyframes ahead carried back to it, as one mean."""
        keep, held = self.config.keep, self._held
        ahead = [i for i in keys if i > j][: self.config.lookahead]
        guess = held[j].ab
        back = held[ahead[-1]].ab if ahead else guess
        for s in range(ahead[-1] - 1 if ahead else -1, j - 1, -1):
            warped, reliable = self._along(held[s + 1].motion, back, backward=True)
            back = warped if held[s].ab is None else held[s].ab + (keep * reliable) * (warped - held[s].ab)
        # forward holds (1 - keep) keep^i of the guess i keyframes back, back the same ahead;
        # both hold this keyframe's: counted once, the weights sum to 1.
        return (held[j].forward + back - (1 - keep) * guess) / (1 + keep)

    def _between(self, first: np.ndarray, after: np.ndarray, n: int) -> list[np.ndarray]:
        """``_held[0]`` .. ``_held[n - 1]``: between the keyframes ``_held[0]`` (chroma ``first``)
        and ``_held[n]`` (``after``), each frame mixes the two, moved to it, by nearness
        and by how reliably each came."""
        forward = [self._with_trust(first)]
        for t in range(1, n):
            forward.append(self._chained(self._held[t].motion, forward[-1]))
        backward = [self._with_trust(after)]
        for t in range(n - 1, 0, -1):
            backward.append(self._chained(self._held[t + 1].motion, backward[-1], backward=True))
        backward.reverse()  # backward[t - 1] is at frame t
        out = [first]
        for t in range(1, n):
            near, (one, two) = t / n, (forward[t], backward[t - 1])
            w1, w2 = (1 - near) * one[2], near * two[2]
            mixed = (w1 * one[:2] + w2 * two[:2] + 1e-3 * ((1 - near) * one[:2] + near * two[:2])) / (w1 + w2 + 1e-3)
            out.append(mixed)
        return out

    def _carried(self, first: np.ndarray, n: int) -> list[np.ndarray]:
        out = [first]
        for t in range(1, n):
            out.append(self._along(self._held[t].motion, out[-1])[0])
        return out

    @staticmethod
    def _with_trust(ab: np.ndarray) -> np.ndarray:
        """``(2, h, w)`` ab and a third channel: how reliably it was carried here (1: not moved)."""
        return np.concatenate([ab, np.ones((1, *ab.shape[-2:]), np.float32)])

    def _chained(self, motion: Motion, carried: np.ndarray, backward: bool = False) -> np.ndarray:
        """:meth:`_with_trust` chroma moved one frame on, its trust times this move's."""
        warped, reliable = self._along(motion, carried, backward)
        warped[2] *= reliable
        return warped

    def _motion(self, before: np.ndarray, now: np.ndarray) -> Motion:
        """The flow between the flow grays ``before`` and ``now``, both ways, and where it is reliable."""
        back = self._dis.calc(now, before, None)  # (fh, fw, 2): where each pixel of now was before
        forth = self._dis.calc(before, now, None)
        return Motion(back, self._consistent(back, forth), forth, self._consistent(forth, back))

    def _consistent(self, flow: np.ndarray, reverse: np.ndarray) -> np.ndarray:
        """Where following ``flow`` and then ``reverse`` returns to the pixel (Sundaram
        et al. 2010) and ``flow`` stays inside the frame: ``(fh, fw)`` bool."""
        import cv2

        fh, fw = flow.shape[:2]
        gx, gy = _grid(fh, fw)
        map_x, map_y = gx + flow[..., 0], gy + flow[..., 1]
        returned = cv2.remap(reverse, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        miss = np.square(flow + returned).sum(-1)
        motion = np.square(flow).sum(-1) + np.square(returned).sum(-1)
        reliable = miss <= self.config.fb_tolerance**2 + 0.05 * motion
        return reliable & (map_x >= 0) & (map_x <= fw - 1) & (map_y >= 0) & (map_y <= fh - 1)

    @staticmethod
    def _along(motion: Motion, ab: np.ndarray, backward: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(C, h, w)`` ab of the previous frame moved along ``motion`` to this one
        (``backward``: this frame's moved to the previous one), and the fraction
        ``(h, w)`` of each pixel where that move is reliable."""
        import cv2

        flow, reliable = (motion.forth, motion.reliable_forth) if backward else (motion.back, motion.reliable)
        fh, fw = reliable.shape
        h, w = ab.shape[-2:]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) * np.float32([w / fw, h / fh])
        ax, ay = _grid(h, w)
        map_x, map_y = ax + flow[..., 0], ay + flow[..., 1]
        warped = np.stack([cv2.remap(c, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for c in ab])
        fraction = cv2.resize(reliable.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        return warped, fraction


def _stacked(frames: list[np.ndarray], like: np.ndarray | None) -> torch.Tensor:
    """``(n, 2, h, w)`` of ``n`` ab frames (n may be 0: then shaped like ``like``)."""
    if frames:
        return torch.from_numpy(np.stack(frames))
    return torch.zeros((0, *like.shape) if like is not None else (0, 2, 1, 1))


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(h, w)`` float32: x, y (read-only, shared)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


class FaceTracker:
    """Face boxes through a shot: looked for on its first predicted frame and on
    a predicted frame every ``every`` frames, moved along the flow in between.
    Without motion (every frame colorized alone) faces are looked for on each."""

    def __init__(self, every: int = FACE_EVERY) -> None:
        self.every = every
        self._boxes: list[Face] | None = None  # None: not looked for in this shot yet
        self._age = 0  # frames since they were looked for
        self.detections = 0

    def follow(self, gray: np.ndarray, plan: Plan) -> list[list[Face]]:
        """The face boxes of each of ``plan.wanted`` among the ``(B, H, W)`` uint16 frames."""
        wanted, found = set(plan.wanted.tolist()), []
        for i, motion in enumerate(plan.motions):
            if motion is None:
                self._boxes = None
            elif self._boxes:
                self._boxes = _moved(self._boxes, motion, gray.shape[-2:])
            self._age += 1
            if i not in wanted:
                continue
            if self._boxes is None or self._age >= self.every:
                self._boxes, self._age = faces_in_lightness(gray16_to_l(gray[i : i + 1])[0, 0]), 0
                self.detections += 1
            found.append(self._boxes)
        return found


def _moved(boxes: list[Face], motion: Motion, size: tuple[int, int]) -> list[Face]:
    """Face boxes moved by the median flow inside each (reliable pixels where there
    are any); a box whose center leaves the frame is dropped."""
    h, w = size
    fh, fw = motion.reliable.shape
    sx, sy = fw / w, fh / h
    moved = []
    for box in boxes:
        rows = slice(max(0, int(box.y * sy)), max(1, min(fh, round((box.y + box.h) * sy))))
        cols = slice(max(0, int(box.x * sx)), max(1, min(fw, round((box.x + box.w) * sx))))
        flow, good = motion.back[rows, cols].reshape(-1, 2), motion.reliable[rows, cols].ravel()
        if flow.size == 0:
            continue
        dx, dy = np.median(flow[good] if good.any() else flow, axis=0)
        x, y = round(box.x - dx / sx), round(box.y - dy / sy)  # back flow points to the past: the box moves the other way
        if 0 <= x + box.w / 2 < w and 0 <= y + box.h / 2 < h:
            moved.append(Face(max(0, x), max(0, y), min(box.w, w - max(0, x)), min(box.h, h - max(0, y))))
    return moved


# ---------------------------------------------------------------- writing


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to stream into; on success it is
    fsynced and renamed to ``path``, on any error removed.

    Raises:
        VideoError: the folder cannot be created or written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
    except OSError as exc:
        raise VideoError(f"cannot write to {path.parent} ({exc.strerror or exc})") from exc
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, VideoError):
            raise VideoError(f"cannot write {path} ({exc.strerror or exc})") from exc
        raise


# ---------------------------------------------------------------- decoding and encoding


# 8-bit YUV layouts whose first plane is the luma, read as it is instead of converting to RGB first.
_LUMA_FIRST = {"yuv420p", "yuv422p", "yuv444p", "yuv440p", "yuv411p", "yuv410p", "nv12", "nv21"}
_LUMA_FIRST_FULL = {"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p"}  # the same in full ("JPEG") range
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def _frame_gray(frame) -> np.ndarray:
    """A decoded frame's ``(H, W)`` uint16 gray.

    For 8-bit YUV (nearly all video) that is the luma plane, stretched from TV
    range to the 8-bit gray levels an 8-bit photo has: the Rec. 601 gray of
    the frame's RGB (exactly so for gray film, whose chroma is neutral)
    without converting to RGB. Other layouts go through RGB, as photos do.
    (Finer levels leave fractions that the 8-bit output rounds afresh in
    every frame: 23-44% more flicker on two of the benchmark's clips.)
    """
    name = frame.format.name
    if name in _LUMA_FIRST or name in _LUMA_FIRST_FULL:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        return _luma_table(name in _LUMA_FIRST_FULL or frame.color_range == _FULL_RANGE)[luma]
    return _rgb_gray(frame.to_ndarray(format="rgb24"))


@lru_cache(maxsize=2)
def _luma_table(full_range: bool) -> np.ndarray:
    """uint16 gray (8-bit levels times 257) for each 8-bit luma level, 16..235 (TV range) or 0..255."""
    levels = np.arange(256, dtype=np.float64)
    gray8 = levels if full_range else np.clip(np.round((levels - 16.0) * (255.0 / 219.0)), 0, 255)
    return (gray8 * 257).astype(np.uint16)


def _rgb_gray(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB to ``(H, W)`` uint16 Rec. 601 gray, as photos get."""
    weights = np.asarray(GRAY_WEIGHTS, np.float32) * np.float32(65535.0 / 255.0)
    return (rgb @ weights + 0.5).astype(np.uint16)


@dataclass
class _Source:
    container: object
    video: object
    audio: object | None
    frames: int  # best estimate, for the progress bar; 0 when unknown


def _import_av():
    try:
        import av
    except ImportError:
        raise VideoError("video needs PyAV: pip install 'autocolor[video]'") from None
    return av


def _open_source(src: Path) -> _Source:
    av = _import_av()
    try:
        container = av.open(str(src), "r")
    except av.error.FileNotFoundError:
        raise VideoError(f"{src}: no such file") from None
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError(f"{src}: not a readable video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{src}: no video stream")
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    audio = container.streams.audio[0] if container.streams.audio else None
    frames = video.frames
    if not frames and video.duration and video.average_rate:
        frames = round(float(video.duration * video.time_base * video.average_rate))
    return _Source(container, video, audio, frames or 0)


@dataclass(frozen=True)
class VideoInfo:
    """What a video's headers say (nothing is decoded): frame size, duration and frame count, 0 where unknown."""

    width: int
    height: int
    seconds: float
    frames: int


def probe_video(src: str | os.PathLike) -> VideoInfo:
    """The size, duration and frame count a video's headers give.

    Raises:
        VideoError: not a readable video, or no video stream.
    """
    source = _open_source(Path(src))
    try:
        video, container = source.video, source.container
        seconds = float(video.duration * video.time_base) if video.duration and video.time_base else 0.0
        if not seconds and container.duration:
            seconds = container.duration / 1_000_000  # AV_TIME_BASE
        return VideoInfo(video.width, video.height, seconds, source.frames)
    finally:
        source.container.close()


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0].strip() or type(exc).__name__


class _Sink:
    """The output container: H.264 video and the input's audio, copied or re-encoded."""

    def __init__(self, path: Path, muxer: str, source: _Source, first, crf: int) -> None:
        import av

        self.path = path
        codec = source.audio.codec_context.name if source.audio is not None else None
        try:
            self._open(path, muxer, source, first, crf, copy_audio=codec in _COPIED_AUDIO.get(muxer, {codec}))
        except av.error.FFmpegError:
            self.abandon()
            self._open(path, muxer, source, first, crf, copy_audio=False)

    def _open(self, path: Path, muxer: str, source: _Source, first, crf: int, copy_audio: bool) -> None:
        import av

        self.container = out = av.open(str(path), "w", format=muxer)
        rate = source.video.average_rate or source.video.guessed_rate or Fraction(25)
        video = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": X264_PRESET})
        # 4:2:0 needs even sides; an odd-sized frame keeps its size in 4:4:4 (fine
        # in players built on FFmpeg, refused by browsers).
        self.pix_fmt = "yuv420p" if first.width % 2 == 0 and first.height % 2 == 0 else "yuv444p"
        video.width, video.height, video.pix_fmt = first.width, first.height, self.pix_fmt
        video.codec_context.time_base = source.video.time_base
        video.codec_context.colorspace = 6  # SMPTE 170M: the Rec. 601 matrix the frames are converted with
        video.codec_context.color_range = 1  # limited ("TV") range, what players assume
        if source.video.sample_aspect_ratio:
            video.sample_aspect_ratio = source.video.sample_aspect_ratio
        if first.rotation:
            video.set_display_rotation(first.rotation)
        self.video = video
        self.audio = self.encoder = self.resampler = None
        if source.audio is not None:
            if copy_audio:
                self.audio = out.add_stream_from_template(source.audio)
            else:
                decoder = source.audio.codec_context
                self.audio = self.encoder = out.add_stream("aac", rate=decoder.sample_rate or 48000)
                self.encoder.layout = decoder.layout
                self.resampler = av.AudioResampler(format="fltp", layout=decoder.layout, rate=self.encoder.rate)
        out.start_encoding()

    def write_audio(self, packet) -> None:
        if packet.dts is None or packet.size == 0:
            return
        if self.encoder is None:
            packet.stream = self.audio
            self.container.mux(packet)
            return
        for frame in packet.decode():
            for resampled in self.resampler.resample(frame):
                self.container.mux(self.audio.encode(resampled))

    def write_frames(self, rgb: np.ndarray, stamps: list[tuple[int, int]]) -> None:
        """Encode ``(B, H, W, 3)`` uint8 RGB frames with their (pts, duration)."""
        import av

        for image, (pts, duration) in zip(rgb, stamps):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame = frame.reformat(format=self.pix_fmt, dst_colorspace="ITU601")
            frame.pts, frame.duration = pts, duration
            frame.time_base = self.video.codec_context.time_base
            self.container.mux(self.video.encode(frame))

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        if self.encoder is not None:
            for resampled in self.resampler.resample(None):
                self.container.mux(self.encoder.encode(resampled))
            self.container.mux(self.encoder.encode(None))
        self.container.close()

    def abandon(self) -> None:
        try:
            self.container.close()
        except Exception:  # the output is being thrown away; the first error is the one to report
            pass


def _decoded(source: _Source, src: Path, on_audio: Callable) -> Iterator:
    """Video frames in presentation order; audio packets go to ``on_audio``."""
    import av

    streams = [source.video] + ([source.audio] if source.audio is not None else [])
    index = 0
    try:
        for packet in source.container.demux(streams):
            if packet.stream.type == "audio":
                on_audio(packet)
                continue
            for frame in packet.decode():
                index += 1
                yield frame
    except av.error.FFmpegError as exc:
        raise VideoError(f"{src}: broken video stream after frame {index} ({_reason(exc)})") from None


class _Background:
    """Calls run in order on one thread; at most ``depth`` wait, and an error
    in one is raised by the next :meth:`submit` or by :meth:`finish`."""

    def __init__(self, depth: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="autocolor-encode")
        self._pending: deque = deque()
        self._depth = depth

    def submit(self, fn: Callable, *args) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while self._pending and (len(self._pending) > self._depth or self._pending[0].done()):
            self._pending.popleft().result()

    def finish(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()

    def abandon(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()


# ---------------------------------------------------------------- colorize_video


@torch.no_grad()
def colorize_video(
    colorizer: "Colorizer",
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    render_size: int | None = None,
    saturation: float = 1.0,
    crf: int = DEFAULT_CRF,
    stabilize: bool | StabilizerConfig = True,
    hints=None,
    reference=None,
    batch_frames: int = BATCH_FRAMES,
    progress: bool = True,
    max_frames: int | None = None,
) -> int:
    """Colorize the video ``src`` into ``dst`` (H.264; MP4, MOV or Matroska by
    ``dst``'s suffix, MP4 for any other). Returns the number of frames written.

    Args:
        render_size: working resolution, as for photos.
        saturation: chroma scale, 1 = as predicted.
        crf: x264 constant-quality factor (lower: larger files, finer chroma).
        stabilize: steady the chroma along optical flow (a
            :class:`StabilizerConfig` tunes it; False colorizes every frame alone).
        hints, reference: color points (or an :class:`autocolor.guide.Hints`)
            and a reference photo, applied to every frame (hint-aware models).
        max_frames: refuse a clip with more frames (counted as they are
            decoded, whatever its header says).

    Raises:
        VideoError: ``src`` is not a video, has no video stream or no frames,
            its stream is broken, it has more than ``max_frames`` frames, or
            ``dst`` cannot be written. Nothing is left under ``dst`` (or a
            temporary name) then.
    """
    src, dst = Path(src), Path(dst)
    chroma = FrameChroma(colorizer, _stabilizer_config(stabilize), render_size, saturation,
                         _video_hints(hints, reference))
    source = _open_source(src)
    try:
        with _progress_bar(source, src, progress) as bar, _model_threads(), atomic_output(dst) as tmp:
            output = _Output(tmp, _MUXER_OF_SUFFIX.get(dst.suffix.lower(), "mp4"), source, crf, src)
            try:
                _stream(source, src, output, chroma, batch_frames, bar, max_frames)
            except Exception as exc:
                output.abandon()
                raise _video_error(exc, dst)
    finally:
        source.container.close()
    return output.written


def _video_hints(hints, reference):
    """The :class:`autocolor.guide.Hints` every frame gets, or None."""
    from autocolor.guide import Hints

    hints = hints if isinstance(hints, Hints) else Hints.build(hints or (), None, reference)
    return None if hints.empty else hints


def _stabilizer_config(stabilize: bool | StabilizerConfig) -> StabilizerConfig:
    if isinstance(stabilize, StabilizerConfig):
        return stabilize
    return StabilizerConfig() if stabilize else StabilizerConfig(keep=0.0, predict_every=1)


@contextmanager
def _model_threads() -> Iterator[None]:
    """While a clip is colorized the network gets at most half the cores (PyTorch's
    threads), so that merging and encoding the previous batch, on a thread of their
    own, have the other half. On 2 shared cores (one each) that ran 1.5 and 2.4
    times the frames/s (two runs) of the network spreading over both with the
    encoder fighting it for them (PyTorch's threads spin while they wait)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, _cores() // 2)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def _progress_bar(source: _Source, src: Path, shown: bool):
    from tqdm import tqdm

    bar = tqdm(total=source.frames or None, unit="frame", desc=src.name, disable=not shown, dynamic_ncols=True,
               leave=False, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def _stream(source: _Source, src: Path, output: _Output, chroma: FrameChroma, batch_frames: int, bar,
            max_frames: int | None = None) -> None:
    """Decode every frame, colorize them in batches, and hand them to ``output`` in order."""
    batch: list = []
    for index, frame in enumerate(_decoded(source, src, output.audio)):
        if max_frames is not None and index >= max_frames:
            raise VideoError(f"{src}: longer than {max_frames} frames")
        output.open(frame)
        batch.append(frame)
        if len(batch) == batch_frames:
            _colorize_batch(batch, chroma, output, bar)
            batch = []
    if batch:
        _colorize_batch(batch, chroma, output, bar)
    _write(output, bar, *chroma.finish())
    output.finish()


def _colorize_batch(frames: list, chroma: FrameChroma, output: _Output, bar) -> None:
    """Gray and steadied chroma on this thread; merging and encoding behind it."""
    output.stamp(frames)
    _write(output, bar, *chroma(np.stack([_frame_gray(f) for f in frames])))  # (B, H, W) uint16 in


def _write(output: _Output, bar, gray: np.ndarray, ab: torch.Tensor) -> None:
    """The next frames' gray and steadied ab to the encoder, if there are any yet."""
    if len(ab):
        output.write(gray, ab)
        bar.update(len(ab))


class FrameChroma:
    """The ab of each batch of a clip: the network runs on the frames the
    stabilizer asks for, with the face prior on faces tracked through the shot
    (:class:`FaceTracker`), and the stabilizer steadies the result."""

    def __init__(self, colorizer: Colorizer, config: StabilizerConfig, render_size: int | None = None,
                 saturation: float = 1.0, hints=None) -> None:
        self.colorizer, self.render_size, self.saturation, self.hints = colorizer, render_size, saturation, hints
        self.stabilizer = ChromaStabilizer(config)
        self.faces = FaceTracker()
        self._waiting: deque[np.ndarray] = deque()  # the gray of frames whose chroma is not out yet

    def __call__(self, gray: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """``(B, H, W)`` uint16 gray frames in, in order; out the gray and
        ``(n, 2, h, w)`` ab of the next ``n`` frames whose chroma is done (the
        stabilizer holds frames back until the keyframes ahead of them have come)."""
        plan = self.stabilizer.plan(gray)
        predicted = None
        if len(plan.wanted):
            found = self.faces.follow(gray, plan) if self.colorizer.faces else None
            predicted = predict_frames_ab(self.colorizer, gray[plan.wanted], self.render_size, self.saturation,
                                          self.hints, faces=found)
        elif self.colorizer.faces:
            self.faces.follow(gray, plan)  # the boxes still move with the frames
        self._waiting.extend(gray)
        return self._done(self.stabilizer.blend(plan, predicted))

    def finish(self) -> tuple[np.ndarray, torch.Tensor]:
        """The gray and ab of the frames still held back: the clip has ended."""
        return self._done(self.stabilizer.finish())

    def _done(self, ab: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        gray = [self._waiting.popleft() for _ in range(len(ab))]
        return (np.stack(gray) if gray else np.zeros((0, 0, 0), np.uint16)), ab


def _video_error(exc: Exception, dst: Path) -> Exception:
    import av

    if isinstance(exc, av.error.FFmpegError):
        return VideoError(f"{dst}: cannot encode ({_reason(exc)})")
    return exc


class _Output:
    """The clip being written: opened by its first frame (size, rotation), then
    fed in order on one background thread, which lays the chroma over each
    frame's L, converts to YUV, encodes and muxes while the model works on the
    next batch (x264 adds its own threads). At most two writes wait there (and
    the stabilizer holds at most 18 frames and a batch back), so memory stays flat."""

    def __init__(self, path: Path, muxer: str, source: _Source, crf: int, src: Path) -> None:
        self._open_args = (path, muxer, source, crf)
        self._src = src
        self._sink: _Sink | None = None
        self._waiting_audio: list = []  # packets read before the first frame
        self._encoder = _Background()
        self._last_pts = -1
        self._stamps: deque[tuple[int, int]] = deque()  # (pts, duration) of frames decoded and not yet written
        self.written = 0

    def open(self, frame) -> None:
        if self._sink is None:
            path, muxer, source, crf = self._open_args
            self._sink = _Sink(path, muxer, source, frame, crf)
            for packet in self._waiting_audio:
                self._encoder.submit(self._sink.write_audio, packet)
            self._waiting_audio.clear()
        elif (frame.width, frame.height) != (self._sink.video.width, self._sink.video.height):
            raise VideoError(f"{self._src}: the frame size changes mid-stream, which is not supported")

    def audio(self, packet) -> None:
        if self._sink is None:
            self._waiting_audio.append(packet)
        else:
            self._encoder.submit(self._sink.write_audio, packet)

    def stamp(self, frames: list) -> None:
        """Note the timestamps of ``frames`` as decoded: they are written in this order."""
        for frame in frames:
            pts = frame.pts if frame.pts is not None else self._last_pts + 1
            self._last_pts = max(pts, self._last_pts + 1)  # the encoder refuses repeated timestamps
            self._stamps.append((self._last_pts, frame.duration or 0))

    def write(self, gray: np.ndarray, ab: torch.Tensor) -> None:
        """The next ``(n, H, W)`` gray frames and their ``(n, 2, h, w)`` ab, to be merged and encoded."""
        stamps = [self._stamps.popleft() for _ in range(len(gray))]
        self._encoder.submit(self._merged, gray, ab, stamps)
        self.written += len(gray)

    def _merged(self, gray: np.ndarray, ab: torch.Tensor, stamps: list[tuple[int, int]]) -> None:
        self._sink.write_frames(merge_frames(gray, ab), stamps)

    def finish(self) -> None:
        if self._sink is None:
            raise VideoError(f"{self._src}: no frames could be decoded")
        self._encoder.submit(self._sink.close)
        self._encoder.finish()

    def abandon(self) -> None:
        self._encoder.abandon()
        if self._sink is not None:
            self._sink.abandon()


# ---------------------------------------------------------------- batch runs


def colorize_video_jobs(
    colorizer: "Colorizer",
    jobs: list["Job"],
    *,
    render_size: int | None = None,
    saturation: float = 1.0,
    crf: int = DEFAULT_CRF,
    progress: bool = True,
    hints=None,
) -> Iterator[tuple["Job", str | None]]:
    """Colorize video jobs one after another (each one already keeps the cores
    busy); yields each job with None, or with the reason it failed."""
    for job in jobs:
        try:
            colorize_video(colorizer, job.source, job.target, render_size=render_size, saturation=saturation,
                           crf=crf, progress=progress, hints=hints)
        except (ImageError, ValueError) as exc:
            yield job, str(exc).removeprefix(f"{job.source}: ")
        except (RuntimeError, MemoryError) as exc:
            yield job, f"colorizing failed ({type(exc).__name__}: {exc})"
        else:
            yield job, None
