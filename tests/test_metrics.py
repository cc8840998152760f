import numpy as np
import pytest
from scipy import stats

from deid_client.metrics import dice, iou
from research.statistics import bhattacharyya, histogram, ks_statistic


def test_iou_and_dice_known_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 px
    b[1:3] = True  # 8 px, 4 shared
    assert iou(a, b) == pytest.approx(4 / 12)
    assert dice(a, b) == pytest.approx(8 / 16)
    assert iou(a, a) == dice(a, a) == 1.0
    assert iou(a, ~a) == dice(a, ~a) == 0.0
    empty = np.zeros((4, 4), bool)
    assert iou(empty, empty) == dice(empty, empty) == 1.0
    with pytest.raises(ValueError, match="shape"):
        iou(a, a[:3])


def test_iou_dice_relation(rng):
    for _ in range(20):
        a, b = rng.random((10, 10)) > 0.5, rng.random((10, 10)) > 0.6
        j = iou(a, b)
        assert dice(a, b) == pytest.approx(2 * j / (1 + j))


def test_histogram_is_normalised(rng):
    h = histogram(rng.normal(10, 5, 1000), bins=50)
    assert h.shape == (50,) and h.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="range"):
        histogram(np.array([500.0]))


def test_bhattacharyya():
    p = np.array([1.0, 2.0, 3.0, 0.0])
    assert bhattacharyya(p, 10 * p) == pytest.approx(1.0)
    assert bhattacharyya([1, 0], [0, 1]) == 0.0
    assert bhattacharyya([1, 1], [1, 0]) == pytest.approx(np.sqrt(0.5))
    with pytest.raises(ValueError):
        bhattacharyya([1, 0], [1, 0, 0])
    with pytest.raises(ValueError):
        bhattacharyya([0, 0], [1, 0])


def test_ks_statistic(rng):
    x = rng.normal(0, 1, 500)
    assert ks_statistic(x, x) == 0.0
    assert ks_statistic(x, x + 100) == 1.0
    assert ks_statistic(np.arange(10.0), np.arange(5.0, 15.0)) == pytest.approx(0.5)
    y = rng.normal(0.3, 1, 700)
    # the statistic is the largest gap between the two empirical CDFs
    grid = np.sort(np.concatenate([x, y]))
    gap = np.abs(np.searchsorted(np.sort(x), grid, "right") / x.size
                 - np.searchsorted(np.sort(y), grid, "right") / y.size).max()
    assert ks_statistic(x, y) == pytest.approx(gap)
    assert ks_statistic(x, y) == pytest.approx(stats.ks_2samp(x, y).statistic)
