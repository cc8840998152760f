"""Pictures people would rather look at than read: overlays, grids, heat maps.

Overlays are plain arrays in, array out. Plots are matplotlib figures turned
into arrays and written through :func:`deid_client.io.images.write_image`, so they
carry no metadata either (matplotlib's own PNG writer adds a Software chunk).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from deid_client.io.images import write_image  # noqa: E402

__all__ = [
    "mask_overlay",
    "comparison_overlay",
    "image_grid",
    "heatmap_figure",
    "figure_to_array",
    "save_figure",
    "REFERENCE_COLOUR",
    "SYNTHETIC_COLOUR",
    "AGREEMENT_COLOUR",
]

REFERENCE_COLOUR = (0, 255, 0)  # green: only in the reference mask
SYNTHETIC_COLOUR = (255, 0, 255)  # magenta: only in the synthetic mask
AGREEMENT_COLOUR = (255, 255, 255)  # white: both agree


def mask_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    colour: tuple[int, int, int] = (0, 255, 255),
    alpha: float = 0.35,
) -> np.ndarray:
    """Tint ``mask`` on ``image`` and draw its outline; uint8 H x W x 3.

    Cyan by default: it stays visible on red, inflamed skin.

    Examples
    --------
    >>> out = mask_overlay(np.zeros((4, 4, 3), np.uint8), np.eye(4, dtype=bool))
    >>> out.shape, out.dtype
    ((4, 4, 3), dtype('uint8'))
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.asarray(image, dtype=np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    out[find_boundaries(mask, mode="inner")] = colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def comparison_overlay(
    reference: np.ndarray, synthetic: np.ndarray, image: np.ndarray | None = None
) -> np.ndarray:
    """Reference-only pixels green, synthetic-only magenta, agreement white.

    Other pixels show ``image`` dimmed to grey (black when no image is given).
    """
    reference = np.asarray(reference, dtype=bool)
    synthetic = np.asarray(synthetic, dtype=bool)
    if reference.shape != synthetic.shape:
        raise ValueError(f"masks differ in shape: {reference.shape} vs {synthetic.shape}")
    if image is None:
        out = np.zeros((*reference.shape, 3), np.uint8)
    else:
        grey = np.asarray(image, np.float32).mean(axis=2, keepdims=True) * 0.45
        out = np.repeat(grey, 3, axis=2).astype(np.uint8)
    out[reference & ~synthetic] = REFERENCE_COLOUR
    out[synthetic & ~reference] = SYNTHETIC_COLOUR
    out[reference & synthetic] = AGREEMENT_COLOUR
    return out


def image_grid(images: Sequence[np.ndarray], ncols: int, *, gap: int = 2) -> np.ndarray:
    """Tile equally sized RGB (or boolean) images into one picture, white gaps between."""
    if not images:
        raise ValueError("no images to tile")
    tiles = [_as_rgb(img) for img in images]
    h, w = tiles[0].shape[:2]
    if any(t.shape[:2] != (h, w) for t in tiles):
        raise ValueError("all grid images must have the same size")
    nrows = -(-len(tiles) // ncols)
    grid = np.full((nrows * (h + gap) - gap, ncols * (w + gap) - gap, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, ncols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return grid


def heatmap_figure(diff: np.ndarray, *, theta: float | None = None, title: str = "") -> Figure:
    """a* difference heat map (diverging, centred on 0), with the theta contour."""
    diff = np.asarray(diff, dtype=np.float32)
    limit = max(float(np.abs(diff).max()), 1e-3)
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=100, layout="constrained")
    shown = ax.imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit)
    if theta is not None and (diff > theta).any() and (diff <= theta).any():
        ax.contour(diff, levels=[theta], colors="k", linewidths=0.8)
    fig.colorbar(shown, ax=ax, label="a*(pathological) − a*(twin)")
    ax.set_title(title or ("Δa*" if theta is None else f"Δa*, contour at θ = {theta:.2f}"))
    ax.set_axis_off()
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a matplotlib figure to a uint8 RGB array and close it."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return rgba[..., :3].copy()


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write a figure as a metadata-free PNG, atomically."""
    return write_image(path, figure_to_array(fig))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image.astype(np.uint8)
