import torch

from autocolor.guide import HintSampling, ab_histogram, point_hints, simulate_guide, spread_hints
from autocolor.quantize import in_gamut_ab_bins


def test_point_hints_are_patch_means_of_the_truth():
    ab = torch.zeros(2, 16, 16)
    ab[0, :, 8:] = 30.0
    hint, mask = point_hints(ab, [(4, 8)], 4)  # a 4x4 patch straddling the a-edge at column 8
    assert mask.sum() == 16
    assert torch.allclose(hint[0][mask[0] > 0], torch.full((16,), 15.0))
    assert not hint[:, mask[0] == 0].any()


def test_simulated_hints_depend_only_on_each_images_generator():
    bins = in_gamut_ab_bins()
    lightness = torch.rand(3, 1, 32, 32) * 100
    ab = torch.randn(3, 2, 32, 32) * 20
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6, 7)]  # noqa: E731
    sampling = HintSampling(p_none=0.0, p_reference=1.0)
    full = simulate_guide(lightness, ab, gens(), bins, sampling)
    again = simulate_guide(lightness[1:], ab[1:], gens()[1:], bins, sampling)
    assert torch.equal(full.mask[1:], again.mask) and torch.equal(full.ab[1:], again.ab)
    assert full.mask.flatten(1).sum(1).min() > 0  # p_none=0: every image has points
    assert torch.allclose(full.reference.sum(1), torch.ones(3))


def test_spread_hints_colors_the_hinted_image_only():
    lightness = torch.full((2, 1, 32, 32), 50.0)
    ab = torch.zeros(2, 2, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    ab[0, :, 4:8, 4:8], mask[0, :, 4:8, 4:8] = 25.0, 1.0
    spread = spread_hints(lightness, ab, mask)
    assert spread.shape == (2, 2, 8, 8)
    assert torch.allclose(spread[0], torch.full((2, 8, 8), 25.0), atol=1e-3)  # a flat image fills entirely
    assert not spread[1].any()


def test_spread_with_a_reach_stays_near_the_hint_at_every_working_size():
    """A model trained with ``spread_reach`` sees a point's color fade over that
    share of the image, the same share at 128 px (training) and 256 px (use)."""
    for side in (128, 256):
        lightness = torch.full((1, 1, side, side), 50.0)
        ab, mask = torch.zeros(1, 2, side, side), torch.zeros(1, 1, side, side)
        ab[..., :8, :8], mask[..., :8, :8] = 25.0, 1.0  # a point in the top-left corner
        spread = spread_hints(lightness, ab, mask, reach=0.25)[0, 0]
        cells = spread.shape[-1]
        assert spread[0, 0] > 24  # at the hint: its color
        assert spread[cells // 4, cells // 4] < 0.5 * 25  # a quarter of the image away: mostly faded
        assert spread[-1, -1] < 0.05 * 25  # the far corner: nothing
        if side == 128:
            quarter = spread[cells // 4, cells // 4]
        else:
            assert abs(spread[cells // 4, cells // 4] - quarter) < 2.5  # the same share at both sizes


def test_histogram_of_a_flat_color_is_one_bin():
    bins = in_gamut_ab_bins()
    hist = ab_histogram(torch.full((1, 2, 4, 4), 20.0), bins)
    assert hist.max() == 1.0 and torch.allclose(bins[hist.argmax()], torch.tensor([20.0, 20.0]))


def test_refinement_makes_the_prediction_agree_with_the_points_and_fades_with_decay():
    from autocolor.guide import make_guide, refine_with_hints

    lightness = torch.full((1, 1, 64, 64), 50.0)
    predicted = torch.zeros(1, 2, 16, 16)
    ab = torch.zeros(1, 2, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    ab[..., 0:4, 0:4], mask[..., 0:4, 0:4] = 30.0, 1.0  # one point in a corner
    guide = make_guide(lightness, ab, mask)
    everywhere = refine_with_hints(predicted, lightness, guide, decay=0.0)
    assert torch.allclose(everywhere, torch.full_like(everywhere, 30.0), atol=1e-3)  # a flat image takes it all
    local = refine_with_hints(predicted, lightness, guide, decay=0.1)
    assert local[0, :, 0, 0].min() > 29 and local[0, :, -1, -1].abs().max() < 1  # near: corrected; far: as predicted
    none = make_guide(lightness, torch.zeros_like(ab), torch.zeros_like(mask))
    assert torch.equal(refine_with_hints(predicted, lightness, none, 0.0), predicted)


def test_a_points_influence_fills_its_region_and_stops_at_an_edge():
    from autocolor.guide import hint_influence, make_guide

    lightness = torch.full((1, 1, 64, 64), 80.0)
    lightness[..., 40:, :] = 25.0  # a bright top over a dark bottom, with a hard edge between
    ab = torch.zeros(1, 2, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    ab[..., 8:12, 30:34], mask[..., 8:12, 30:34] = 30.0, 1.0  # one point in the top
    guide = make_guide(lightness, ab, mask)
    influence = hint_influence(lightness, guide, (32, 32), edge=12.0)
    assert influence.shape == (1, 1, 32, 32) and 0 <= influence.min() and influence.max() <= 1
    assert influence[0, 0, 4:6, 15:17].min() == 1.0  # at the point
    assert influence[0, 0, :19].min() > 0.75  # the whole top, corners included, fading only slowly
    assert influence[0, 0, 20:].max() < 0.02  # past the edge (55 L units): nothing
    assert hint_influence(lightness, guide, (32, 32), edge=60.0)[0, 0, 21:].min() > 0.75  # a weaker edge than asked
    none = make_guide(lightness, torch.zeros_like(ab), torch.zeros_like(mask))
    assert not hint_influence(lightness, none, (32, 32), 12.0).any()


def test_bad_hints_are_refused_with_what_is_wrong():
    import numpy as np
    import pytest

    from autocolor.guide import HintError, Hints

    with pytest.raises(HintError, match="hint 1: color '#12' is not #rrggbb"):
        Hints.build([(1, 2, "#12")])
    with pytest.raises(HintError, match="each channel must be a number in 0-255"):
        Hints.build([(1, 2, (0, 300, 0))])
    with pytest.raises(HintError, match=r"hint 2 at \(x=70, y=5\) is outside the 64x48 image"):
        Hints.build([(1, 2, "#102030"), (70, 5, "#102030")]).check(48, 64)
    with pytest.raises(HintError, match="scribble image is 10x10; it must be the photo's size, 64x48"):
        Hints.build(scribble=np.zeros((10, 10, 4), np.uint8)).check(48, 64)
    with pytest.raises(HintError, match="needs an alpha channel"):
        Hints.build(scribble=np.zeros((48, 64, 3), np.uint8))


def test_hint_flip_makes_the_pointed_result_mirror_symmetric():
    from dataclasses import replace

    from autocolor.guide import Hints, flip_guide
    from autocolor.models import create_model
    from autocolor.pipeline import predict_chroma, resize, working_size

    torch.manual_seed(0)
    model = create_model("chroma-unet", width=16, guided=True).eval()
    for p in model.parameters():  # an untrained guided model ignores hints: wake the hint layers up
        if p.dim() == 4 and not p.abs().sum():
            p.data.normal_(0, 0.1)
    lightness = torch.rand(1, 1, 64, 96) * 100
    l_work = resize(lightness, working_size(64, 96, 96, model.stride))
    guide = Hints.build([(20, 10, "#3a78d8"), (70, 50, "#d8783a")]).guide(l_work, (64, 96), model.bins)
    for flip in (False, True):
        model.decoding = replace(model.decoding, hint_flip=flip, refine_hints=False, hint_edge=0.0)
        ab = predict_chroma(model, lightness, 96, guide)
        ab_mirrored = predict_chroma(model, lightness.flip(-1), 96, flip_guide(guide))
        gap = (ab - ab_mirrored.flip(-1)).abs().max().item()
        assert (gap < 1e-4) == flip, (flip, gap)  # the network alone is not: its stride-2 convolutions are not
