import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from autocolor.color import rgb_to_gray
from autocolor.data import (DatasetError, build_splits, check_cifar_batch, cutout_background, load_cifar10, parse_spec,
                            set_epoch)
from autocolor.photos import BACKGROUND


def test_cifar_reference_split_is_80_20_of_everything(cifar_root):
    splits = build_splits(f"cifar10:{cifar_root}", 32, seed=0, verify_cifar=False)
    total = 6 * 40
    assert len(splits.train) == round(total * 0.8)
    assert len(splits.train) + len(splits.val) + len(splits.test) == total
    rgb, gray = splits.test[0]
    assert rgb.shape == (3, 32, 32) and gray.shape == (1, 32, 32)
    assert torch.allclose(gray, rgb_to_gray(rgb))


def test_cifar_official_split(cifar_root):
    splits = build_splits(f"cifar10:{cifar_root}", 32, split="official", verify_cifar=False)
    assert len(splits.train) == 5 * 40
    assert len(splits.val) + len(splits.test) == 40


def test_cifar_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py lacks data_batch_1.*--download"):
        load_cifar10(tmp_path)


def test_cifar_corrupted_copy_fails_its_checksum(cifar_root):
    with pytest.raises(DatasetError, match="fail.*checksum"):
        load_cifar10(cifar_root, verify=True)


def test_cifar_batch_with_code_is_refused_unread(tmp_path, cifar_root):
    root = tmp_path / "evil"
    shutil.copytree(cifar_root, root)

    class Payload:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"data": Payload()}))
    with pytest.raises(DatasetError, match="refusing to load builtins.exec"):
        check_cifar_batch(root / "cifar-10-batches-py" / "data_batch_1")
    with pytest.raises(DatasetError):
        load_cifar10(root, verify=False)
    assert not (tmp_path / "PWNED").exists()


def test_pairs_split_and_values(pairs_root):
    splits = build_splits(f"pairs:{pairs_root}", 64, seed=0)
    assert len(splits.train) == 16 and len(splits.val) == 2 and len(splits.test) == 2
    rgb, gray = splits.test[0]
    assert rgb.shape == (3, 64, 64) and gray.shape == (1, 64, 64)
    # The stored gray was made from the color image with the same weights.
    assert (gray - rgb_to_gray(rgb)).abs().mean() < 2 / 255


def test_pairs_report_unmatched_names(tmp_path, pairs_root):
    root = tmp_path / "pairs"
    shutil.copytree(pairs_root, root)
    (root / "gray" / "003.png").unlink()
    shutil.copy(root / "color" / "004.png", root / "gray" / "extra.png")
    with pytest.raises(DatasetError, match=r"no gray partner for color/003.png.*no color partner for gray/extra.png"):
        build_splits(f"pairs:{root}", 64)


def test_pairs_need_both_folders(tmp_path):
    (tmp_path / "color").mkdir()
    with pytest.raises(DatasetError, match="gray"):
        build_splits(f"pairs:{tmp_path}", 64)


def test_folder_is_recursive_and_augmentation_is_reproducible(folder_root):
    splits = build_splits(f"folder:{folder_root}", 64, seed=3)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 24
    a1, _ = splits.train[5]
    set_epoch(splits.train, 1)
    b, _ = splits.train[5]
    set_epoch(splits.train, 0)
    a2, _ = splits.train[5]
    assert torch.equal(a1, a2)  # same (seed, epoch, index): same crop
    assert not torch.equal(a1, b)  # a new epoch draws a new crop


def _cutout(size: int = 96) -> np.ndarray:
    """A red disk on the corpus's flat gray, with a hole of the same gray inside it."""
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size, 3), BACKGROUND, np.uint8)
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] = (200, 40, 30)
    image[size // 2 - 4:size // 2 + 4, size // 2 - 4:size // 2 + 4] = BACKGROUND
    return image


def test_cutout_background_is_the_gray_that_touches_the_border():
    image = _cutout()
    mask = cutout_background(torch.from_numpy(image).permute(2, 0, 1))[0]
    assert mask[0, 0] == 1 and mask[-1, -1] == 1  # the corners are background
    assert mask[48, 48] == 0  # the gray hole inside the object is the object's own
    assert mask[48, 30] == 0  # so is the disk
    red = torch.from_numpy((image == (200, 40, 30)).all(axis=-1))
    assert 0 < float(mask[red].mean()) < 0.1  # only the one-pixel ring at the disk's edge is taken in
    photo = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert cutout_background(torch.from_numpy(photo).permute(2, 0, 1)) is None  # a photo, not a cut-out


def test_composite_puts_a_scene_behind_cutouts_only(tmp_path):
    scene = np.zeros((96, 96, 3), np.uint8)
    scene[..., 2] = 220  # a blue scene: no flat gray
    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir()
        Image.fromarray(scene).save(tmp_path / split / "b_scene.png")
    Image.fromarray(_cutout()).save(tmp_path / "train" / "a_cutout.png")
    plain = build_splits(f"folder:{tmp_path}", 64, crop_min_scale=1.0).train
    pasted = build_splits(f"folder:{tmp_path}", 64, crop_min_scale=1.0, composite=1.0).train
    corner = lambda rgb: rgb[:, :4, :4].mean(dim=(1, 2))  # noqa: E731
    assert torch.allclose(corner(plain[0][0]), torch.tensor(BACKGROUND) / 255, atol=0.02)
    assert corner(pasted[0][0])[2] > 0.8 and corner(pasted[0][0])[0] < 0.05  # the scene's blue behind the object
    center_red = pasted[0][0][:, 20:28, 28:36].mean(dim=(1, 2))
    assert center_red[0] > 0.7  # the object stays
    assert torch.equal(pasted[0][0], pasted[0][0])  # reproducible: same (seed, epoch, index)
    assert torch.equal(pasted[1][0], plain[1][0])  # a scene is left as it is
    with pytest.raises(DatasetError, match="folder"):
        build_splits(f"pairs:{tmp_path}", 64, composite=0.5)


def test_bad_specs_and_folders(tmp_path):
    with pytest.raises(DatasetError, match="cifar10:ROOT"):
        parse_spec("imagenet:/x")
    with pytest.raises(DatasetError, match="no such folder"):
        build_splits(f"folder:{tmp_path / 'nope'}", 32)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    for i in range(3):
        (tmp_path / f"also{i}.png").write_bytes(b"")
    splits = build_splits(f"folder:{tmp_path}", 32)
    with pytest.raises(DatasetError, match=r"\.(jpg|png): cannot read image"):
        for i in range(len(splits.train)):
            splits.train[i]
