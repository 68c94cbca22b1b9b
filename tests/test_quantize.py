import pytest
import torch

from autocolor.color import AB_SCALE
from autocolor.quantize import (
    annealed_mean,
    bin_counts,
    in_gamut_ab_bins,
    rebalanced_cross_entropy,
    rebalancing_weights,
    soft_encode,
)


def test_bins_cover_the_srgb_gamut_on_a_10_grid():
    bins = in_gamut_ab_bins()
    assert 250 < bins.shape[0] < 320
    assert torch.all(bins % 10 == 0)
    assert (bins == torch.tensor([0.0, 0.0])).all(dim=1).any()  # gray is a class


def test_soft_encoding_is_a_distribution_peaked_at_the_nearest_bin():
    bins = in_gamut_ab_bins()
    ab = torch.tensor([[20.0, -30.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    z = soft_encode(ab, bins)
    assert torch.allclose(z.sum(dim=1), torch.ones(1, 1, 2))
    assert torch.equal(bins[z[0, :, 0, 0].argmax()], torch.tensor([20.0, -30.0]))


def test_rebalancing_upweights_rare_bins_and_has_unit_expectation():
    bins = in_gamut_ab_bins()
    counts = torch.ones(bins.shape[0], dtype=torch.long)
    gray = int((bins == 0).all(dim=1).nonzero())
    counts[gray] = 10_000
    w = rebalancing_weights(counts, bins, mix=0.5)
    assert w[gray] < w.median()
    p = counts.double() / counts.sum()
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()).pow(2) / 50)
    smoothed = kernel @ p
    smoothed /= smoothed.sum()
    assert abs(float((smoothed * w.double()).sum()) - 1.0) < 1e-4


def test_annealed_mean_between_mean_and_mode():
    bins = torch.tensor([[0.0, 0.0], [50.0, 0.0]])
    logits = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    mean = annealed_mean(logits, bins, 1.0)[0, 0, 0, 0] * AB_SCALE
    sharp = annealed_mean(logits, bins, 0.1)[0, 0, 0, 0] * AB_SCALE
    assert 0 < mean < sharp < 50.0
    assert abs(float(mean) - 50 * torch.sigmoid(torch.tensor(1.0))) < 1e-4


def test_confidence_power_shrinks_only_where_the_likely_hues_disagree():
    bins = torch.tensor([[40.0, 0.0], [0.0, 40.0], [-40.0, 0.0]])
    one_hue = torch.tensor([9.0, 0.0, 0.0]).view(1, 3, 1, 1)  # nearly all on (40, 0)
    two_hues = torch.tensor([5.0, 5.0, -30.0]).view(1, 3, 1, 1)  # half (40, 0), half (0, 40)
    for logits in (one_hue, two_hues):
        plain = annealed_mean(logits.clone(), bins, 1.0)
        for power in (1.0, 2.0):
            shrunk = annealed_mean(logits.clone(), bins, 1.0, confidence_power=power)
            agreement = plain.norm() * AB_SCALE / 40.0  # |E ab| / E|ab|, every bin's chroma being 40
            assert torch.allclose(shrunk, plain * agreement ** power, atol=1e-4)
    assert annealed_mean(one_hue.clone(), bins, 1.0, confidence_power=2.0).norm() * AB_SCALE > 39.9  # sure: kept
    assert abs(float(annealed_mean(two_hues.clone(), bins, 1.0, confidence_power=2.0).norm() * AB_SCALE) - 14.14) < 0.01


def test_cross_entropy_prefers_the_right_color():
    bins = in_gamut_ab_bins()
    w = torch.ones(bins.shape[0])
    ab = torch.full((1, 2, 4, 4), 30.0)
    right = soft_encode(ab, bins).log().clamp_min(-20) * 5
    wrong = soft_encode(-ab, bins).log().clamp_min(-20) * 5
    assert rebalanced_cross_entropy(right, ab, bins, w) < rebalanced_cross_entropy(wrong, ab, bins, w)
    assert bin_counts(ab, bins).sum() == 16


@pytest.mark.parametrize("grad", [False, True])
def test_annealed_mean_is_the_expectation_under_the_tempered_softmax(grad):
    torch.manual_seed(0)
    bins = in_gamut_ab_bins()
    logits = (torch.randn(2, bins.shape[0], 3, 5) * 4).requires_grad_(grad)
    log_prior = torch.randn(bins.shape[0])
    kept = logits.detach().clone()
    for t, prior in ((1.0, None), (0.38, None), (0.5, log_prior)):
        shifted = logits if prior is None else logits - prior.view(1, -1, 1, 1)
        probs = torch.softmax(shifted / t, dim=1)
        expected = torch.einsum("bqhw,qc->bchw", probs, bins) / AB_SCALE
        got = annealed_mean(logits, bins, t, prior)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.equal(logits.detach(), kept)  # the input is never changed in place
    if grad:
        got.sum().backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0
