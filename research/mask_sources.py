"""The research mask sources: what a site would train on without the firewall, for the
study's comparison (docs/study.md). They are not the product: the ClientApp trains on the
firewall's surrogates (``surrogate``), and a run names one of these as its ``mask-source``
only from a checkout of the repository (``deid_client.task.data.training_source``).

``oracle``  the differential mask against the patient's exact healthy twin (the phantom
            world's; a folder's ``healthy/``, matched by file stem), at the firewall's θ;
``naive``   Otsu's threshold on a* of the photo alone;
``truth``   the reference masks themselves, an upper bound.

Each takes the node's training samples and its ``DataConfig`` and returns (images, masks):
the patients' own photos, with the masks the source gives them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage import filters

from deid_client.firewall.masks import a_star, differential_mask
from deid_client.io.images import list_images, read_image, resize

__all__ = ["SOURCES", "naive_mask", "oracle", "naive", "truth"]


def naive_mask(image: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Zero-shot baseline that sees only the original: Otsu's threshold on a*.

    With ``region`` (e.g. a face outline) the threshold is chosen from, and the
    mask limited to, that region. Either way it cannot tell a lesion from lips,
    jewellery or a natural flush, which is what the differential mask is for.
    """
    values = a_star(image)
    inside = np.ones(values.shape, bool) if region is None else np.asarray(region, bool)
    if inside.shape != values.shape:
        raise ValueError(f"region {inside.shape} does not match image {values.shape}")
    if not inside.any() or np.ptp(values[inside]) == 0:
        return np.zeros(values.shape, dtype=bool)
    return (values > filters.threshold_otsu(values[inside])) & inside


def oracle(samples, config) -> tuple[np.ndarray, np.ndarray]:
    twins = _twins(samples, config)
    theta = config.firewall_settings.theta
    return _stack(samples, [differential_mask(s.image, t, theta) for s, t in zip(samples, twins)])


def naive(samples, config) -> tuple[np.ndarray, np.ndarray]:
    return _stack(samples, [naive_mask(s.image) for s in samples])


def truth(samples, config) -> tuple[np.ndarray, np.ndarray]:
    if any(s.truth is None for s in samples):
        raise ValueError("mask-source 'truth' needs reference masks (data-dir/masks/)")
    return _stack(samples, [s.truth for s in samples])


oracle.needs_theta = True  # the cache key holds what decides the masks
naive.needs_theta = truth.needs_theta = False
SOURCES = {"oracle": oracle, "naive": naive, "truth": truth}


def _twins(samples, config) -> list[np.ndarray]:
    """Each sample's exact healthy twin: the phantom world's, or ``data_dir/healthy/``."""
    if config.data_dir:
        side = config.image_size
        found = {p.stem: p for p in list_images(Path(config.data_dir) / "healthy")} \
            if (Path(config.data_dir) / "healthy").is_dir() else {}
        samples = [s._replace(twin=resize(read_image(found[s.name]), (side, side)))
                   if s.name in found else s for s in samples]
    if any(s.twin is None for s in samples):
        raise ValueError("mask-source 'oracle' needs a healthy twin for every image "
                         "(data-dir/healthy/); the firewall (mask-source 'surrogate') does not")
    return [s.twin for s in samples]


def _stack(samples, masks) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([s.image for s in samples]), np.stack(masks)
