"""The differential erythema mask (docs/design.md, How it works).

``D = a*(pathological) - a*(twin)`` in CIELAB (D65, from sRGB), and the mask
is ``D > theta``. Thresholds are calibrated over a cohort against reference
masks for all candidates at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from skimage import morphology

from deid_client.metrics import iou

__all__ = [
    "a_star",
    "erythema_map",
    "carry_lesion",
    "threshold_mask",
    "clean_mask",
    "differential_mask",
    "candidate_thresholds",
    "iou_curve",
    "calibrate_threshold",
    "per_image_iou",
]

Objective = Literal["mean", "pooled"]


def a_star(image: np.ndarray) -> np.ndarray:
    """CIELAB a* (D65) of a uint8 sRGB image, float32 H x W.

    OpenCV's float conversion is used (it applies the sRGB transfer curve);
    it agrees with ``skimage.color.rgb2lab`` to within 0.5 a* units.
    """
    return _lab(_check_rgb(image, "image"))[..., 1]


def _lab(image: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of a uint8 sRGB image, float32 H x W x 3 (OpenCV's float conversion)."""
    return cv2.cvtColor(image.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)


def erythema_map(pathological: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """Signed difference ``a*(pathological) - a*(twin)``, float32 H x W, in a* units.

    Examples
    --------
    >>> red = np.full((2, 2, 3), (200, 120, 110), np.uint8)
    >>> skin = np.full((2, 2, 3), (200, 150, 130), np.uint8)
    >>> bool((erythema_map(red, skin) > 10).all())
    True
    """
    if np.shape(pathological) != np.shape(twin):
        raise ValueError(
            f"pathological and twin images differ in shape: "
            f"{np.shape(pathological)} vs {np.shape(twin)}"
        )
    return a_star(pathological) - a_star(twin)


def threshold_mask(diff: np.ndarray, theta: float) -> np.ndarray:
    """The erythema mask ``diff > theta`` (paper's Eq. 5), bool H x W."""
    return np.asarray(diff) > theta


def clean_mask(mask: np.ndarray, *, min_size: int = 0, max_hole_size: int = 0) -> np.ndarray:
    """Optional clean-up: drop components of at most ``min_size`` pixels, fill holes
    of at most ``max_hole_size`` pixels. Both 0 (the default) return the mask as is.
    """
    mask = np.asarray(mask, dtype=bool)
    if min_size > 0:
        mask = morphology.remove_small_objects(mask, max_size=min_size)
    if max_hole_size > 0:
        mask = morphology.remove_small_holes(mask, max_size=max_hole_size)
    return mask


def differential_mask(
    pathological: np.ndarray,
    twin: np.ndarray,
    theta: float,
    *,
    min_size: int = 0,
    max_hole_size: int = 0,
) -> np.ndarray:
    """Mask of pixels where ``pathological`` is redder than ``twin`` by more than ``theta``."""
    mask = threshold_mask(erythema_map(pathological, twin), theta)
    return clean_mask(mask, min_size=min_size, max_hole_size=max_hole_size)


def carry_lesion(pathological: np.ndarray, twin: np.ndarray, target: np.ndarray,
                 theta: float, gain: float = 1.0) -> np.ndarray:
    """``target`` (uint8 RGB) with the lesion of ``pathological`` added: the CIELAB
    difference ``pathological - twin``, where it is erythema, times ``gain``.

    The difference is carried in full wherever ``pathological`` is redder than
    ``twin`` by ``theta`` or more, faded out below ``theta / 2`` and not carried
    elsewhere, so the result's :func:`differential_mask` against ``target`` at
    ``gain * theta`` is the one of ``pathological`` against ``twin`` at ``theta`` (up to
    the sRGB gamut) and nothing else of ``pathological`` comes along. ``gain`` > 1 makes
    the lesion stand out more on ``target`` than on ``pathological`` (docs/training.md).

    >>> skin = np.full((4, 4, 3), (200, 150, 130), np.uint8)
    >>> red = skin.copy(); red[:2] = (200, 120, 110)
    >>> other = np.full((4, 4, 3), (120, 90, 70), np.uint8)
    >>> out = carry_lesion(red, skin, other, theta=5.0)
    >>> bool((differential_mask(out, other, 5.0) == differential_mask(red, skin, 5.0)).all())
    True
    >>> stronger = carry_lesion(red, skin, other, theta=5.0, gain=1.25)
    >>> bool((differential_mask(stronger, other, 1.25 * 5.0) == differential_mask(red, skin, 5.0)).all())
    True
    """
    for name, image in (("pathological", pathological), ("twin", twin), ("target", target)):
        _check_rgb(image, name)
    if not np.shape(pathological) == np.shape(twin) == np.shape(target):
        raise ValueError(f"images differ in shape: {np.shape(pathological)}, {np.shape(twin)}, "
                         f"{np.shape(target)}")
    if gain <= 0:
        raise ValueError(f"gain must be positive, not {gain}")
    lab = [_lab(im) for im in (pathological, twin, target)]
    difference = lab[0] - lab[1]
    weight = np.clip(difference[..., 1] / (theta / 2) - 1.0, 0.0, 1.0)[..., None]
    rgb = cv2.cvtColor(lab[2] + np.float32(gain) * weight * difference, cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def candidate_thresholds(diffs: Sequence[np.ndarray], n: int = 256) -> np.ndarray:
    """``n`` evenly spaced thresholds from 0 to the largest difference in the cohort."""
    top = max(float(np.max(d)) for d in diffs)
    return np.linspace(0.0, max(top, 1e-3), n, dtype=np.float32)


def iou_curve(
    diffs: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    thresholds: np.ndarray,
    objective: Objective = "mean",
) -> np.ndarray:
    """IoU against the references for every threshold at once, shape (K,).

    Each pixel is binned once against the sorted thresholds; a reverse
    cumulative sum then counts, for every threshold, the predicted and
    true-positive pixels. No image is re-thresholded per candidate.
    ``objective="mean"`` averages per-image IoU; ``"pooled"`` pools the counts.
    """
    if objective not in ("mean", "pooled"):
        raise ValueError(f"objective must be 'mean' or 'pooled', not {objective!r}")
    if len(diffs) != len(references) or len(diffs) == 0:
        raise ValueError("need the same, non-zero number of difference maps and references")
    thresholds = np.asarray(thresholds, dtype=np.float32)
    order = np.argsort(thresholds, kind="stable")
    ascending = thresholds[order]
    k = ascending.size
    tp = np.empty((len(diffs), k), np.int64)
    pred = np.empty_like(tp)
    ref_count = np.empty((len(diffs), 1), np.int64)
    for i, (diff, ref) in enumerate(zip(diffs, references, strict=True)):
        diff = np.asarray(diff, dtype=np.float32)
        ref = np.asarray(ref, dtype=bool)
        if diff.shape != ref.shape:
            raise ValueError(f"item {i}: difference map {diff.shape} vs reference {ref.shape}")
        # below[j] = number of thresholds strictly below pixel j, so
        # pixel j is predicted for threshold index t  <=>  t < below[j].
        below = np.searchsorted(ascending, diff.ravel(), side="left")
        pred[i] = _count_above(below, k)
        tp[i] = _count_above(below[ref.ravel()], k)
        ref_count[i] = np.count_nonzero(ref)
    union = pred + ref_count - tp
    if objective == "mean":
        per_image = np.where(union > 0, tp / np.maximum(union, 1), 1.0)
        scores = per_image.mean(axis=0)
    else:
        total = union.sum(axis=0)
        scores = np.where(total > 0, tp.sum(axis=0) / np.maximum(total, 1), 1.0)
    out = np.empty(k)
    out[order] = scores
    return out


def _count_above(below: np.ndarray, k: int) -> np.ndarray:
    """For each threshold index t, how many entries of ``below`` exceed t."""
    counts = np.bincount(below, minlength=k + 1)
    return counts[::-1].cumsum()[::-1][1:]


def calibrate_threshold(
    diffs: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    objective: Objective = "mean",
    thresholds: np.ndarray | None = None,
) -> tuple[float, float]:
    """theta* = argmax over candidate thresholds of IoU(reference, diff > theta).

    Returns ``(theta_star, iou_at_theta_star)``; among equally good candidates
    the smallest threshold wins. Candidates default to
    :func:`candidate_thresholds`.

    Examples
    --------
    >>> diff = np.array([[0.0, 1.0, 5.0, 9.0]])
    >>> ref = np.array([[False, False, True, True]])
    >>> calibrate_threshold([diff], [ref], thresholds=np.array([0.5, 2.0, 6.0]))
    (2.0, 1.0)
    """
    if thresholds is None:
        thresholds = candidate_thresholds(diffs)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    scores = iou_curve(diffs, references, thresholds, objective)
    best = np.flatnonzero(scores == scores.max())
    pick = best[np.argmin(thresholds[best])]
    return float(thresholds[pick]), float(scores[pick])


def per_image_iou(
    diffs: Sequence[np.ndarray], references: Sequence[np.ndarray], theta: float
) -> list[float]:
    """IoU of ``diff > theta`` against each reference."""
    return [iou(threshold_mask(d, theta), r) for d, r in zip(diffs, references, strict=True)]


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 H x W x 3 RGB, got {image.dtype} {image.shape}")
    return image
