import cv2
import numpy as np
import pytest
import torch

from autocolor.color import (
    gray_to_l,
    gray_to_rgb,
    lab_to_rgb,
    merge_l_ab,
    normalize_ab,
    normalize_l,
    rgb_to_gray,
    rgb_to_lab,
    unnormalize_ab,
)


def test_gray_matches_opencv_rgb2gray():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    ours = rgb_to_gray(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
    theirs = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    # OpenCV rounds to uint8 with fixed-point weights: within one level.
    assert ours.shape == (1, 17, 23)
    assert np.abs(ours[0].numpy() - theirs).max() <= 1 / 255 + 1e-6


def test_gray_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\)"):
        rgb_to_gray(torch.zeros(1, 4, 4))


def test_lab_round_trip():
    rgb = torch.rand(2, 3, 8, 8)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)


def test_gray_to_l_matches_lab_of_gray_rgb():
    gray = torch.rand(1, 16, 16)
    expected = rgb_to_lab(gray_to_rgb(gray))
    assert torch.allclose(gray_to_l(gray), expected[:1], atol=1e-3)
    assert expected[1:].abs().max() < 0.01  # gray has no chroma (up to the D65 matrix's rounding)


def test_normalization_round_trip_and_range():
    assert normalize_l(torch.tensor(50.0)) == 0
    assert normalize_l(torch.tensor(100.0)) == 0.5
    ab = torch.linspace(-110, 110, 11)
    assert torch.allclose(unnormalize_ab(normalize_ab(ab)), ab)


def test_merge_restores_color_at_full_resolution():
    # A smooth image, so that blurred chroma stays in gamut.
    rgb = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 3), size=(64, 48), mode="bilinear")
    lab = rgb_to_lab(rgb)
    small_ab = torch.nn.functional.interpolate(lab[:, 1:], size=(16, 12), mode="bilinear")
    out = merge_l_ab(lab[:, :1], small_ab)
    assert out.shape == rgb.shape
    # Same lightness as the full-resolution input, chroma from the small map.
    assert (rgb_to_lab(out)[:, :1] - lab[:, :1]).abs().mean() < 0.5
    exact = merge_l_ab(lab[:, :1], lab[:, 1:])
    assert torch.allclose(exact, rgb, atol=1e-3)


def test_fast_merge_matches_the_exact_conversion():
    import numpy as np

    from autocolor.color import gray_to_l, merge_gray_ab, merge_l_ab

    gray = (np.random.default_rng(0).random((2, 30, 44)) * 65535).astype(np.uint16)
    ab = torch.randn(2, 2, 8, 11) * 40
    lightness = gray_to_l(torch.from_numpy(gray.astype(np.float32) / 65535).unsqueeze(1))
    reference = merge_l_ab(lightness, ab).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(merge_gray_ab(gray, ab, np.uint8) / 255.0, reference, atol=0.51 / 255)
    np.testing.assert_allclose(merge_gray_ab(gray, ab, np.uint16) / 65535.0, reference, atol=1e-4)
    np.testing.assert_allclose(merge_gray_ab(gray, ab, np.float32), reference, atol=1e-4)
