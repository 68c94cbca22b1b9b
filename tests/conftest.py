"""Small datasets written by fixtures: CIFAR-format batches, paired and plain folders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autocolor.checkpoint import save_model
from autocolor.data import CIFAR10Files
from autocolor.models import create_model


def synthetic_photos(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 images with structure a colorizer can learn:
    a sky-blue top over a green or brown bottom, with lightness that hints at which."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    yy = np.linspace(0, 1, size)[:, None]
    for i in range(n):
        horizon = rng.uniform(0.3, 0.7)
        sky = np.array([90, 150, 230]) * (0.8 + 0.2 * yy)
        ground = np.array([60, 140, 50]) if i % 2 else np.array([150, 100, 60])
        img = np.where(yy[..., None] < horizon, sky[:, None, :], ground * (0.6 + 0.4 * yy[..., None]))
        img = img + rng.normal(0, 6, size=(size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """CIFAR-10 python batches with 40 images each (checksums will not match)."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / CIFAR10Files.base_folder
    folder.mkdir()
    names = [n for n, _ in CIFAR10Files.train_list + CIFAR10Files.test_list]
    for k, name in enumerate(names):
        imgs = synthetic_photos(40, 32, seed=k)
        data = imgs.transpose(0, 3, 1, 2).reshape(40, -1)  # CIFAR stores planar RGB rows
        entry = {"data": data, "labels": [i % 10 for i in range(40)], "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    (folder / CIFAR10Files.meta["filename"]).write_bytes(pickle.dumps(meta))
    return root


@pytest.fixture(scope="session")
def pairs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    (root / "color").mkdir()
    (root / "gray").mkdir()
    for i, img in enumerate(synthetic_photos(20, 160, seed=99)):
        Image.fromarray(img).save(root / "color" / f"{i:03d}.png")
        gray = (img @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
        Image.fromarray(gray).save(root / "gray" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    (root / "sub").mkdir()
    for i, img in enumerate(synthetic_photos(24, 192, seed=7)):
        target = root / ("sub" if i % 3 == 0 else ".") / f"photo{i:02d}.jpg"
        Image.fromarray(img).save(target, quality=95)
    return root


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """An untrained width-16 chroma-unet saved as a model folder (fast; for I/O behaviour)."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    save_model(create_model("chroma-unet", width=16), folder)
    return folder


@pytest.fixture(autouse=True)
def _onnx_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Exported ONNX graphs go to a test folder, not the user's ~/.cache."""
    monkeypatch.setenv("AUTOCOLOR_CACHE", str(tmp_path_factory.getbasetemp() / "autocolor-cache"))
