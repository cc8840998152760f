"""The firewall's picture for the site's own review: the contact sheet of an output folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deid_client.figures import mask_overlay
from deid_client.io.images import read_image, read_mask, resize

__all__ = ["CONTACT_SHEET", "contact_sheet"]

CONTACT_SHEET = "contact_sheet.png"


def contact_sheet(out_dir: str | os.PathLike, names: Sequence[str], *, side: int = 128) -> np.ndarray:
    """Rows of surrogate | healthy twin | mask over the surrogate, for the site's review.

    >>> contact_sheet("no-such-folder", []).shape  # no released photo: a blank sheet
    (128, 384, 3)
    """
    rows = []
    for name in names:
        surrogate = read_image(Path(out_dir) / "surrogates" / f"{name}.png")
        twin = read_image(Path(out_dir) / "healthy" / f"{name}.png")
        overlay = mask_overlay(surrogate, read_mask(Path(out_dir) / "masks" / f"{name}.png"))
        rows.append(np.hstack([resize(im, (side, side)) for im in (surrogate, twin, overlay)]))
    return np.vstack(rows) if rows else np.full((side, 3 * side, 3), 255, np.uint8)
