"""Agreement of two masks: IoU and Dice."""

from __future__ import annotations

import numpy as np

__all__ = ["iou", "dice"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree fully (1.0).

    Examples
    --------
    >>> iou(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    0.5
    """
    a, b = _bool_pair(a, b)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A|+|B|); two empty masks give 1.0.

    Examples
    --------
    >>> dice(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    0.6666666666666666
    """
    a, b = _bool_pair(a, b)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else float(2 * np.count_nonzero(a & b) / total)


def _bool_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return a, b
