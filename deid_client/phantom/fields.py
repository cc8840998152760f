"""Drawing primitives for phantoms: anti-aliased shapes and smooth noise.

Shapes are signed-distance fields in image units (the image spans -1..1 on
each axis), turned into coverage with a one-pixel ramp, so every phantom is
anti-aliased and looks the same at any resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates X (right) and Y (down), both in -1..1, float32."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    return np.meshgrid(axis, axis)


def ellipse_sd(X, Y, cx, cy, ax, by, angle: float = 0.0) -> np.ndarray:
    """Approximate signed distance to an ellipse (negative inside; exact for circles)."""
    dx, dy = X - cx, Y - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return (np.hypot(dx / ax, dy / by) - 1.0) * min(ax, by)


def ring_sd(X, Y, cx, cy, radius, width) -> np.ndarray:
    """Signed distance to an annulus of the given centre radius and half-width."""
    return np.abs(np.hypot(X - cx, Y - cy) - radius) - width


def coverage(sd: np.ndarray, px: float) -> np.ndarray:
    """Fraction of each pixel inside ``sd < 0``: a one-pixel anti-aliasing ramp."""
    return np.clip(0.5 - sd / px, 0.0, 1.0).astype(np.float32)


def gaussian(X, Y, cx, cy, sx, sy) -> np.ndarray:
    return np.exp(-0.5 * (((X - cx) / sx) ** 2 + ((Y - cy) / sy) ** 2)).astype(np.float32)


def noise_grid(rng: np.random.Generator, n: int = 32, sigma: float = 2.0) -> np.ndarray:
    """Smooth random field on an n x n grid, zero mean and unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma, mode="wrap")
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def sample(field: np.ndarray, U: np.ndarray, V: np.ndarray, extent: float = 1.5) -> np.ndarray:
    """Bilinear samples of a noise grid spanning [-extent, extent]^2 at (U, V)."""
    n = field.shape[0]
    scale = (n - 1) / (2 * extent)
    coords = np.stack([(V + extent) * scale, (U + extent) * scale])
    return ndimage.map_coordinates(field, coords, order=1, mode="reflect").astype(np.float32)
