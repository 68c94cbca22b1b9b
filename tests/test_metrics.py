"""Metrics against published reference values and hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from autocolor.metrics import ciede2000, colorfulness, mean_ciede2000, psnr, ssim

# Sharma, Wu and Dalal (2005), Table 1: L1 a1 b1, L2 a2 b2, delta E 2000.
SHARMA_PAIRS = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def _pairs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    table = torch.tensor(SHARMA_PAIRS, dtype=dtype)
    lab1 = table[:, 0:3].view(-1, 3, 1, 1)  # (34, 3, 1, 1)
    lab2 = table[:, 3:6].view(-1, 3, 1, 1)
    return lab1, lab2, table[:, 6]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ciede2000_matches_sharma_table(dtype):
    lab1, lab2, expected = _pairs(dtype)
    got = ciede2000(lab1, lab2).flatten()
    # The table is printed to 4 decimals; float32 loses a little more.
    tol = 1e-4 if dtype == torch.float64 else 2e-4
    for i, (g, e) in enumerate(zip(got.tolist(), expected.tolist()), start=1):
        assert g == pytest.approx(e, abs=tol), f"Sharma pair {i}: {g:.5f} != {e:.4f}"


def test_ciede2000_is_symmetric_and_zero_on_identity():
    lab1, lab2, expected = _pairs(torch.float64)
    torch.testing.assert_close(ciede2000(lab2, lab1).flatten(), expected, atol=1e-4, rtol=0)
    assert torch.equal(ciede2000(lab1, lab1), torch.zeros(34, 1, 1, dtype=torch.float64))


def test_ciede2000_works_on_images_and_rejects_bad_shapes():
    lab = torch.tensor([50.0, 10.0, -20.0]).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    assert ciede2000(lab, lab + 1).shape == (2, 4, 5)
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\)"):
        ciede2000(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="differ"):
        ciede2000(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_ciede2000_gradient():
    # A generic point: chromatic, hues apart but not across a wrap.
    lab1 = torch.tensor([52.0, 20.0, -35.0], dtype=torch.float64).view(3, 1, 1).requires_grad_()
    lab2 = torch.tensor([47.0, 12.0, -28.0], dtype=torch.float64).view(3, 1, 1).requires_grad_()
    assert torch.autograd.gradcheck(ciede2000, (lab1, lab2))


def test_ciede2000_gradient_is_finite_at_neutral_and_identical_colors():
    lab1 = torch.tensor([[50.0, 0.0, 0.0], [40.0, 5.0, 5.0]]).view(2, 3, 1, 1).requires_grad_()
    lab2 = torch.tensor([[60.0, 0.0, 0.0], [40.0, 5.0, 5.0]]).view(2, 3, 1, 1)
    ciede2000(lab1, lab2).sum().backward()
    assert torch.isfinite(lab1.grad).all()


def test_mean_ciede2000_zero_for_identical_and_positive_otherwise():
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mean_ciede2000(rgb, rgb), torch.zeros(2))
    assert (mean_ciede2000(rgb, rgb.flip(-1)) > 0).all()


def test_mean_ciede2000_of_solid_colors_is_their_pixel_difference():
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 4, 4)
    gray = torch.full((3, 4, 4), 0.5)
    from autocolor.color import rgb_to_lab

    expected = ciede2000(rgb_to_lab(red[:, :1, :1]), rgb_to_lab(gray[:, :1, :1])).item()
    assert mean_ciede2000(red, gray).item() == pytest.approx(expected, rel=1e-6)
    assert expected > 30  # saturated red against mid gray is a large difference


def test_colorfulness_of_gray_is_zero():
    gray = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1)).expand(4, 3, 16, 16)
    assert torch.equal(colorfulness(gray), torch.zeros(4))


def test_colorfulness_by_hand():
    # Two pixels on 0-255: (255, 0, 0) and (0, 0, 255).
    # rg = [255, 0]   -> mean 127.5, std 127.5
    # yb = [127.5, -255] -> mean -63.75, std 191.25
    # CF = sqrt(127.5^2 + 191.25^2) + 0.3 * sqrt(127.5^2 + 63.75^2)
    rgb = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).view(3, 1, 2)
    expected = math.sqrt(127.5**2 + 191.25**2) + 0.3 * math.sqrt(127.5**2 + 63.75**2)
    assert colorfulness(rgb).item() == pytest.approx(expected, rel=1e-6)
    # A solid color has no spread: CF = 0.3 * |mean|. Pure red: rg = 255, yb = 127.5.
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 5, 5)
    assert colorfulness(red).item() == pytest.approx(0.3 * math.sqrt(255**2 + 127.5**2), rel=1e-6)


def test_colorfulness_is_per_image_and_batched():
    rgb = torch.rand(2, 5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    batched = colorfulness(rgb)
    assert batched.shape == (2, 5)
    assert batched[1, 3].item() == pytest.approx(colorfulness(rgb[1, 3]).item(), rel=1e-6)


def test_psnr_and_ssim_identical_and_known():
    rgb = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.isinf(psnr(rgb, rgb)).all()
    torch.testing.assert_close(ssim(rgb, rgb), torch.ones(3))
    # A uniform error of 0.1 gives MSE 0.01, so PSNR = 10 log10(1 / 0.01) = 20 dB.
    base = torch.full((2, 3, 16, 16), 0.5)
    torch.testing.assert_close(psnr(base + 0.1, base), torch.full((2,), 20.0), atol=1e-4, rtol=0)
    assert (ssim(rgb, rgb.flip(-1)) < 0.5).all()


def test_metrics_reject_non_rgb():
    with pytest.raises(ValueError, match="rgb"):
        colorfulness(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="11 pixels"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_ciede2000_fast_path_equals_gradient_path():
    lab1, lab2, _ = _pairs(torch.float64)
    with torch.no_grad():
        fast = ciede2000(lab1, lab2)
    careful = ciede2000(lab1.clone().requires_grad_(), lab2)
    assert torch.equal(fast, careful.detach())


def test_mean_ciede2000_in_chunks_equals_whole(monkeypatch):
    gen = torch.Generator().manual_seed(4)
    pred, true = torch.rand(2, 5, 3, 8, 8, generator=gen), torch.rand(2, 5, 3, 8, 8, generator=gen)
    whole = mean_ciede2000(pred, true)
    monkeypatch.setattr("autocolor.metrics._CHUNK_PIXELS", 3 * 64)  # three images at a time
    chunked = mean_ciede2000(pred, true)
    assert chunked.shape == (2, 5)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
