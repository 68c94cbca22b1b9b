import numpy as np
import pytest

from autocolor.levin import affinity_matrix, levin_colorize


def two_regions(h: int = 24, w: int = 32) -> np.ndarray:
    lightness = np.full((h, w), 30.0)
    lightness[:, w // 2 :] = 70.0  # a vertical edge in the middle
    return lightness + np.random.default_rng(0).normal(0, 0.5, (h, w))


def test_one_scribble_per_region_fills_each_region_and_stops_at_the_edge():
    lightness = two_regions()
    ab = np.zeros((2, 24, 32))
    mask = np.zeros((24, 32), bool)
    ab[:, 3:6, 2:5] = np.array([40.0, 10.0])[:, None, None]  # reddish scribble on the left
    ab[:, 18:21, 27:30] = np.array([-20.0, -45.0])[:, None, None]  # blue scribble on the right
    mask[3:6, 2:5] = mask[18:21, 27:30] = True
    out = levin_colorize(lightness, ab, mask)
    left, right = out[:, :, :15], out[:, :, 17:]
    assert np.allclose(left.reshape(2, -1).mean(1), [40, 10], atol=2)
    assert np.allclose(right.reshape(2, -1).mean(1), [-20, -45], atol=2)
    assert np.abs(left - np.array([40.0, 10.0])[:, None, None]).max() < 5  # no bleed from the right
    assert np.array_equal(out[:, mask], ab[:, mask].astype(np.float32))  # hints are kept exactly


def test_without_hints_nothing_is_colored():
    assert not levin_colorize(two_regions(), np.zeros((2, 24, 32)), np.zeros((24, 32), bool)).any()


def test_affinities_are_row_stochastic_and_local():
    w = affinity_matrix(two_regions(8, 10))
    assert np.allclose(np.asarray(w.sum(axis=1)).ravel(), 1.0)
    assert w.nnz <= 8 * 8 * 10
    rows, cols = w.nonzero()
    assert np.all(np.abs(rows // 10 - cols // 10) <= 1) and np.all(np.abs(rows % 10 - cols % 10) <= 1)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="hint_ab must be"):
        levin_colorize(np.zeros((4, 4)), np.zeros((2, 4, 5)), np.zeros((4, 4)))
