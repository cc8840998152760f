"""Score differential masks and the naive baseline on phantoms with known ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deid_client.firewall.masks import a_star, calibrate_threshold, erythema_map, per_image_iou
from deid_client.metrics import iou
from research.mask_sources import naive_mask
from research.statistics import bhattacharyya, histogram, ks_statistic
from deid_client.phantom import Phantom

__all__ = ["score_phantom_masks", "distribution_report"]


def score_phantom_masks(phantoms: Sequence[Phantom], objective: str = "mean") -> dict:
    """Calibrate theta* on (image, exact healthy twin) pairs and compare with the baseline.

    Returns a JSON-ready dict: theta*, mean/min IoU of the differential mask,
    IoU of the naive baseline on the whole image and inside the face outline,
    and breakdowns by distractor, lesion kind and skin type.
    """
    diffs = [erythema_map(p.image, p.twin) for p in phantoms]
    refs = [p.mask for p in phantoms]
    theta, score = calibrate_threshold(diffs, refs, objective=objective)
    ours = np.array(per_image_iou(diffs, refs, theta))
    naive_image = np.array([iou(naive_mask(p.image), p.mask) for p in phantoms])
    naive_face = np.array([iou(naive_mask(p.image, p.face), p.mask) for p in phantoms])

    def split(label: str, chosen: np.ndarray) -> dict:
        return {f"{label}_{name}": {"n": int(sel.sum()), "differential": _mean(ours[sel]),
                                    "naive_face": _mean(naive_face[sel])}
                for name, sel in (("with", chosen), ("without", ~chosen))}

    jewellery = np.array([bool(p.identity.jewellery) for p in phantoms])
    flush = np.array([p.identity.flush > 0 for p in phantoms])
    kinds = np.array([p.lesion.kind for p in phantoms])
    skins = np.array([p.identity.skin_type for p in phantoms])
    return {
        "images": len(phantoms),
        "objective": objective,
        "theta_star": theta,
        "iou_at_theta_star": score,
        "differential_iou_mean": _mean(ours),
        "differential_iou_min": float(ours.min()),
        "naive_iou_mean_whole_image": _mean(naive_image),
        "naive_iou_mean_face_region": _mean(naive_face),
        "by_distractor": {**split("jewellery", jewellery), **split("flush", flush)},
        "by_lesion_kind": {k: _mean(ours[kinds == k]) for k in sorted(set(kinds))},
        "by_skin_type": {int(s): _mean(ours[skins == s]) for s in sorted(set(skins))},
        "per_image_iou": [float(x) for x in ours],
    }


def distribution_report(pathological: np.ndarray, healthy: np.ndarray,
                        region: np.ndarray | None = None) -> dict:
    """Bhattacharyya coefficient and KS statistic between the a* of two images (inside
    the boolean ``region`` only, e.g. the face, if given)."""
    a1, a2 = a_star(pathological), a_star(healthy)
    if region is not None:
        a1, a2 = a1[region], a2[region]
    return {"bhattacharyya": bhattacharyya(histogram(a1), histogram(a2)),
            "ks": ks_statistic(a1, a2)}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None
