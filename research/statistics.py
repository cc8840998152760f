"""Distribution statistics of CIELAB a* values (docs/distributions.md): normalised
histograms, the Bhattacharyya coefficient, the two-sample Kolmogorov-Smirnov statistic."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["histogram", "bhattacharyya", "ks_statistic", "A_STAR_RANGE"]

#: a* of any sRGB colour lies inside this range (about -86..98).
A_STAR_RANGE = (-100.0, 100.0)


def histogram(
    values: np.ndarray, *, bins: int = 100, range: tuple[float, float] = A_STAR_RANGE
) -> np.ndarray:
    """Normalised histogram (sums to 1) of ``values``, e.g. the a* channel of an image."""
    counts, _ = np.histogram(np.ravel(values), bins=bins, range=range)
    total = counts.sum()
    if total == 0:
        raise ValueError("no values inside the histogram range")
    return counts / total


def bhattacharyya(p: np.ndarray, q: np.ndarray) -> float:
    """Bhattacharyya coefficient sum(sqrt(p * q)) of two histograms (normalised here).

    1.0 for identical distributions, 0.0 for disjoint ones.

    Examples
    --------
    >>> bhattacharyya(np.array([1, 1, 0]), np.array([0, 1, 1]))
    0.5
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() == 0 or q.sum() == 0:
        raise ValueError("histograms must be non-negative and not all zero")
    return float(np.sqrt(p / p.sum() * q / q.sum()).sum())


def ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs.

    Examples
    --------
    >>> ks_statistic(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    1.0
    """
    return float(stats.ks_2samp(np.ravel(x), np.ravel(y)).statistic)
