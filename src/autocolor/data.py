"""Datasets: CIFAR-10, paired color/gray folders, and plain folders of photos.

Every dataset yields ``(rgb, gray)``: float tensors ``(3, S, S)`` and
``(1, S, S)`` in [0, 1]. Gray is the Rec. 601 luma of the color image (as the
reference designs made it with OpenCV), except for paired folders, whose gray
images are read from disk.

Augmentation draws from a generator seeded by (seed, epoch, index), so a
batch depends only on where it sits in the run: resuming mid-epoch, or
spreading the data over workers and ranks, yields the same samples.
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset

from autocolor.color import rgb_to_gray
from autocolor.errors import AutocolorError
from autocolor.photos import BACKGROUND

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class DatasetError(AutocolorError, RuntimeError):
    """A dataset that cannot be used, with a message saying what to do."""


# ---------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Crop and flip policy: random for training, centered and fixed otherwise."""

    size: int
    train: bool
    min_scale: float = 0.35  # smallest crop area, as a share of the image
    composite: float = 0.0  # share of cut-out samples pasted onto a whole-scene photo (folders only)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    # Large odd multipliers keep (seed, epoch, index) triples from colliding.
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_000_007 + index)


def apply_augment(image: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Crop ``(C, H, W)`` to ``(C, size, size)``: a random resized crop and flip
    for training, the largest centered square otherwise."""
    _, h, w = image.shape
    if not aug.train:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return TF.resized_crop(image, top, left, side, side, [aug.size, aug.size], antialias=True)
    area = h * w
    u = torch.rand(4, generator=gen).tolist()
    scale = aug.min_scale + (1.0 - aug.min_scale) * u[0]
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1]
    ratio = math.exp(log_ratio)
    cw = min(w, max(1, round(math.sqrt(area * scale * ratio))))
    ch = min(h, max(1, round(math.sqrt(area * scale / ratio))))
    top = int(u[2] * (h - ch + 1))
    left = int(u[3] * (w - cw + 1))
    out = TF.resized_crop(image, top, left, ch, cw, [aug.size, aug.size], antialias=True)
    if torch.rand(1, generator=gen).item() < 0.5:
        out = out.flip(-1)
    return out


class EpochAware:
    """Mixin: datasets whose augmentation depends on the epoch."""

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


# ---------------------------------------------------------------- image files


def list_images(root: Path) -> list[Path]:
    """All image files under ``root``, recursively, in a stable order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def read_rgb_uint8(path: Path) -> torch.Tensor:
    """Decode an image file to ``(3, H, W)`` uint8 RGB (alpha dropped, EXIF applied)."""
    from PIL import ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from exc
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def read_gray_uint8(path: Path) -> torch.Tensor:
    """Decode an image file to ``(1, H, W)`` uint8 gray, Rec. 601 for color files."""
    try:
        with Image.open(path) as im:
            if im.mode in ("L", "I;16", "I"):
                gray = np.asarray(im.convert("L"))
                return torch.from_numpy(gray.copy()).unsqueeze(0)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from exc
    rgb = read_rgb_uint8(path).float() / 255.0
    return (rgb_to_gray(rgb) * 255.0).round().to(torch.uint8)


CUTOUT_TOLERANCE = 6  # per channel, for JPEG noise on the flat gray
CUTOUT_MIN_SHARE = 0.05  # of the pixels, background touching the border, for a photo to count as a cut-out


def cutout_background(image: torch.Tensor) -> torch.Tensor | None:
    """The flat gray around a cut-out: ``(1, H, W)`` float mask (1 = background) of the
    pixels within ``CUTOUT_TOLERANCE`` of the gray that ``autocolor data photos`` lays photos with
    transparency on (:data:`autocolor.photos.BACKGROUND`) and that connect to the image's border,
    grown by one pixel to take in the gray fringe of the object's antialiased edge. None
    for a photo that is not a cut-out (less than ``CUTOUT_MIN_SHARE`` of such background).

    Args:
        image: ``(3, H, W)`` uint8 RGB.
    """
    from scipy import ndimage

    gray = torch.tensor(BACKGROUND, dtype=torch.int32).view(3, 1, 1)
    near = ((image.int() - gray).abs() <= CUTOUT_TOLERANCE).all(dim=0).numpy()
    labels, _ = ndimage.label(near)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, border[border > 0])
    if background.mean() < CUTOUT_MIN_SHARE:
        return None
    background = ndimage.binary_dilation(background)
    return torch.from_numpy(background).float().unsqueeze(0)


class FolderDataset(EpochAware, Dataset):
    """Color photos in a folder tree; gray is made from each on the fly.

    Decoded images are kept in memory after first use (a few hundred photos at
    512 px take well under a gigabyte), so epochs after the first skip decoding.
    With ``aug.composite``, that share of the cut-out samples (objects on the
    corpus's flat gray) get a random crop of a whole-scene photo of the same
    folder behind them instead, so objects are also seen in context.
    """

    def __init__(self, files: Sequence[Path], aug: Augment, seed: int = 0, cache: bool = True) -> None:
        self.files = list(files)
        self.aug = aug
        self.seed = seed
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.backgrounds: list[torch.Tensor | None] = []
        self.scenes: list[int] = []
        if aug.train and aug.composite > 0:
            self.backgrounds = [cutout_background(self._load(i)) for i in range(len(self.files))]
            self.scenes = [i for i, mask in enumerate(self.backgrounds) if mask is None]

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> torch.Tensor:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        image = read_rgb_uint8(self.files[index])
        if self.cache is not None:
            self.cache[index] = image
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = sample_generator(self.seed, self.epoch, index)
        image = self._load(index)
        mask = self.backgrounds[index] if self.backgrounds else None
        if mask is None or not self.scenes or torch.rand(1, generator=gen).item() >= self.aug.composite:
            rgb = apply_augment(image, self.aug, gen).float() / 255.0
            return rgb, rgb_to_gray(rgb)
        # One crop for the object and its mask, another of a random scene behind it.
        both = apply_augment(torch.cat([image.float() / 255.0, mask]), self.aug, gen)
        obj, mask = both[:3], both[3:]
        scene_index = self.scenes[int(torch.randint(len(self.scenes), (1,), generator=gen))]
        scene = apply_augment(self._load(scene_index), self.aug, gen).float() / 255.0
        rgb = (obj * (1 - mask) + scene * mask).clamp(0, 1)
        return rgb, rgb_to_gray(rgb)


class PairedFolderDataset(EpochAware, Dataset):
    """The landscape layout: ``DIR/color/NAME`` beside ``DIR/gray/NAME``."""

    def __init__(self, root: Path, aug: Augment, seed: int = 0, names: Sequence[str] | None = None) -> None:
        self.root = root
        color_dir, gray_dir = root / "color", root / "gray"
        for d in (color_dir, gray_dir):
            if not d.is_dir():
                raise DatasetError(f"{root}: paired dataset needs 'color/' and 'gray/' folders; {d} is missing")
        color = {p.relative_to(color_dir).as_posix() for p in list_images(color_dir)}
        gray = {p.relative_to(gray_dir).as_posix() for p in list_images(gray_dir)}
        only_color, only_gray = sorted(color - gray), sorted(gray - color)
        if only_color or only_gray:
            parts = []
            if only_color:
                parts.append(f"no gray partner for color/{', color/'.join(only_color[:10])}")
            if only_gray:
                parts.append(f"no color partner for gray/{', gray/'.join(only_gray[:10])}")
            raise DatasetError(f"{root}: unmatched pairs: {'; '.join(parts)}")
        if not color:
            raise DatasetError(f"{root}: no image pairs found in color/ and gray/")
        self.names = sorted(color) if names is None else list(names)
        self.aug = aug
        self.seed = seed

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        name = self.names[index]
        rgb = read_rgb_uint8(self.root / "color" / name)
        gray = read_gray_uint8(self.root / "gray" / name)
        if gray.shape[-2:] != rgb.shape[-2:]:
            raise DatasetError(
                f"{self.root}: {name}: color is {tuple(rgb.shape[-2:])} but gray is {tuple(gray.shape[-2:])}"
            )
        both = apply_augment(torch.cat([rgb, gray]), self.aug, sample_generator(self.seed, self.epoch, index))
        both = both.float() / 255.0
        return both[:3], both[3:]


# ---------------------------------------------------------------- CIFAR-10

_ALLOWED_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except numpy's array reconstruction: a CIFAR batch
    is a dict of arrays and lists, and anything else is not one."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def check_cifar_batch(path: Path, key: str = "data") -> dict:
    """Read ``path`` as a data-only CIFAR pickle holding ``key``, or raise DatasetError."""
    try:
        entry = _DataOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as exc:  # any failure means the file is not a usable batch
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch (no {key!r} entry)")
    return entry


class CIFAR10Files(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 that can skip checksums for small test batches.

    With ``verify=False`` (tests, custom batches), each batch is first read by
    a data-only unpickler, so nothing but arrays can ever be loaded.
    """

    def __init__(self, root: str, train: bool, download: bool = False, verify: bool = True) -> None:
        self._verify = verify
        super().__init__(root, train=train, download=download)

    def _check_integrity(self) -> bool:
        if self._verify:
            return super()._check_integrity()
        folder = Path(self.root) / self.base_folder
        for name, _ in self.train_list + self.test_list:
            if not (folder / name).is_file():
                return False
            check_cifar_batch(folder / name)
        return True

    def _load_meta(self) -> None:
        if self._verify:
            return super()._load_meta()
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        self.classes = list(check_cifar_batch(path, self.meta["key"])[self.meta["key"]])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class CIFARImages(EpochAware, Dataset):
    """CIFAR-10 images (labels unused) as ``(rgb, gray)`` at 32x32 or resized."""

    def __init__(self, images: Dataset, aug: Augment, seed: int = 0) -> None:
        self.images = images
        self.aug = aug
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pil, _ = self.images[index]
        image = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        gen = sample_generator(self.seed, self.epoch, index)
        if self.aug.size == image.shape[-1]:
            # At native size only flip: cropping 32x32 images loses too much.
            if self.aug.train and torch.rand(1, generator=gen).item() < 0.5:
                image = image.flip(-1)
        else:
            image = apply_augment(image, self.aug, gen)
        rgb = image.float() / 255.0
        return rgb, rgb_to_gray(rgb)


def load_cifar10(root: Path, download: bool = False, verify: bool = True) -> tuple[Dataset, Dataset]:
    """The official (train 50k, test 10k) CIFAR-10 splits, with clear errors."""
    from torchvision.datasets.utils import check_integrity

    folder = root / CIFAR10Files.base_folder
    if not download:
        names = CIFAR10Files.train_list + CIFAR10Files.test_list
        names = names + [[CIFAR10Files.meta["filename"], CIFAR10Files.meta["md5"]]]
        missing = [n for n, _ in names if not (folder / n).is_file()]
        if missing:
            raise DatasetError(
                f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}. Put the python-version batches "
                f"(data_batch_1..5, test_batch, batches.meta from cifar-10-python.tar.gz) in {folder}, "
                "or pass --download where the internet is reachable"
            )
        if verify:
            bad = [n for n, md5 in names if not check_integrity(str(folder / n), md5)]
            if bad:
                raise DatasetError(
                    f"CIFAR-10 under {folder} is corrupted: {', '.join(bad)} fail(s) the checksum; "
                    "replace them with the files from cifar-10-python.tar.gz"
                )
    try:
        train = CIFAR10Files(str(root), train=True, download=download, verify=verify)
        test = CIFAR10Files(str(root), train=False, download=download, verify=verify)
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"CIFAR-10 under {folder} cannot be read: {exc}") from exc
    return train, test


# ---------------------------------------------------------------- specs and splits


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Shuffle ``range(n)`` with ``seed`` and cut it by ``fractions``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cuts, start, out = [], 0, []
    for f in fractions[:-1]:
        start += round(n * f)
        cuts.append(start)
    bounds = [0, *cuts, n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        out.append(order[a:b])
    return out


def parse_spec(spec: str) -> tuple[str, Path]:
    kind, sep, path = spec.partition(":")
    if not sep or kind not in ("cifar10", "pairs", "folder") or not path:
        raise DatasetError(f"bad data spec {spec!r}: use cifar10:ROOT, pairs:DIR or folder:DIR")
    return kind, Path(path).expanduser()


def build_splits(
    spec: str,
    size: int,
    seed: int = 0,
    split: str = "random",
    download: bool = False,
    verify_cifar: bool = True,
    crop_min_scale: float = 0.35,
    composite: float = 0.0,
) -> Splits:
    """Train/val/test datasets for a data spec at crop size ``size``.

    cifar10: all 60,000 images split 80/20 with ``seed`` (the reference
    protocol; val is the first 5% of the test part), or with
    ``split="official"`` the 50k/10k split. Training crops cover
    ``crop_min_scale`` to all of a photo's area, resized to ``size``: small
    values show objects at the larger sizes a higher render size gives them. Folders with ``train/``, ``val/``
    and ``test/`` subfolders (as ``autocolor data photos`` writes them) keep
    them; other folders are split 80/10/10 by file with ``seed``. ``composite``: the share of a
    folder's cut-out training samples given a whole-scene background (see :class:`FolderDataset`).
    """
    kind, root = parse_spec(spec)
    if composite and kind != "folder":
        raise DatasetError(f"composite needs a folder of photos (folder:DIR), not {kind}:")
    train_aug = Augment(size, train=True, min_scale=crop_min_scale, composite=composite)
    eval_aug = Augment(size, train=False)
    if kind == "cifar10":
        return _cifar10_splits(root, train_aug, eval_aug, seed, split, download, verify_cifar)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if kind == "pairs":
        return _paired_splits(root, train_aug, eval_aug, seed)
    return _folder_splits(root, train_aug, eval_aug, seed)


def _cifar10_splits(
    root: Path, train_aug: Augment, eval_aug: Augment, seed: int, split: str, download: bool, verify: bool
) -> Splits:
    """CIFAR-10 split 80/5/15 with ``seed``, or the official 50k/10k with the test half split into val and test."""
    official_train, official_test = load_cifar10(root, download=download, verify=verify)
    if split == "official":
        test_src = official_test
        val_part, test_part = seeded_split(len(test_src), [0.5, 0.5], seed)
        return Splits(
            CIFARImages(official_train, train_aug, seed),
            Subset(CIFARImages(test_src, eval_aug, seed), val_part),
            Subset(CIFARImages(test_src, eval_aug, seed), test_part),
        )
    everything = ConcatDataset([official_train, official_test])
    tr, va, te = seeded_split(len(everything), [0.8, 0.05, 0.15], seed)
    return Splits(
        Subset(CIFARImages(everything, train_aug, seed), tr),
        Subset(CIFARImages(everything, eval_aug, seed), va),
        Subset(CIFARImages(everything, eval_aug, seed), te),
    )


def _paired_splits(root: Path, train_aug: Augment, eval_aug: Augment, seed: int) -> Splits:
    """A ``color/`` + ``gray/`` folder's pairs split 80/10/10 by name with ``seed``."""
    names = PairedFolderDataset(root, eval_aug, seed).names
    tr, va, te = seeded_split(len(names), [0.8, 0.1, 0.1], seed)
    pick = lambda idx: [names[i] for i in idx]  # noqa: E731
    return Splits(
        PairedFolderDataset(root, train_aug, seed, pick(tr)),
        PairedFolderDataset(root, eval_aug, seed, pick(va)),
        PairedFolderDataset(root, eval_aug, seed, pick(te)),
    )


def _folder_splits(root: Path, train_aug: Augment, eval_aug: Augment, seed: int) -> Splits:
    """A photo folder's own ``train/``, ``val/``, ``test/``, or its files split 80/10/10 with ``seed``."""
    if all((root / s).is_dir() for s in ("train", "val", "test")):
        return Splits(
            FolderDataset(list_images(root / "train"), train_aug, seed),
            FolderDataset(list_images(root / "val"), eval_aug, seed),
            FolderDataset(list_images(root / "test"), eval_aug, seed),
        )
    files = list_images(root)
    if not files:
        raise DatasetError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    if len(files) < 3:
        raise DatasetError(f"{root}: need at least 3 images to split, found {len(files)}")
    tr, va, te = seeded_split(len(files), [0.8, 0.1, 0.1], seed)
    return Splits(
        FolderDataset([files[i] for i in tr], train_aug, seed),
        FolderDataset([files[i] for i in va], eval_aug, seed),
        FolderDataset([files[i] for i in te], eval_aug, seed),
    )


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a dataset (through Subset/ConcatDataset wrappers) the current epoch."""
    if isinstance(dataset, EpochAware):
        dataset.set_epoch(epoch)
    elif isinstance(dataset, Subset):
        set_epoch(dataset.dataset, epoch)
    elif isinstance(dataset, ConcatDataset):
        for d in dataset.datasets:
            set_epoch(d, epoch)
