"""Find (pathological, twin, reference-mask) triples on disk and read them (``deid-client calibrate``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deid_client.io.images import read_image, read_mask
from deid_client.io.images import list_images

__all__ = ["Triple", "triples_from_folders", "triples_from_cohort", "load_triple"]


@dataclass(frozen=True)
class Triple:
    key: str
    pathological: Path
    twin: Path
    reference: Path | None


def triples_from_folders(
    pathological_dir: str | os.PathLike,
    healthy_dir: str | os.PathLike,
    reference_dir: str | os.PathLike | None = None,
) -> tuple[list[Triple], list[tuple[str, str]]]:
    """Match files across folders by file stem.

    Returns the matched triples and, for every unmatched file, ``(name, why)``.
    """
    folders = [Path(pathological_dir), Path(healthy_dir)]
    if reference_dir is not None:
        folders.append(Path(reference_dir))
    by_stem = [{p.stem: p for p in list_images(f)} for f in folders]
    stems = set().union(*by_stem)
    triples, missing = [], []
    for stem in sorted(stems):
        found = [d.get(stem) for d in by_stem]
        if all(found):
            triples.append(Triple(stem, found[0], found[1], found[2] if len(found) > 2 else None))
        else:
            lacking = [str(f) for f, p in zip(folders, found, strict=True) if p is None]
            missing.append((stem, f"{stem}: no matching file in {', '.join(lacking)}"))
    return triples, missing


def triples_from_cohort(cohort_dir: str | os.PathLike) -> list[Triple]:
    """Every case of a phantom cohort written by ``deid-client phantom``."""
    root = Path(cohort_dir)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"{root}: no manifest.json (write one with `deid-client phantom`)")
    cases = json.loads(manifest.read_text())["cases"]
    return [Triple(c["case_id"], root / c["files"]["images"], root / c["files"]["healthy"],
                   root / c["files"]["masks"]) for c in cases]


def load_triple(triple: Triple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The pathological image, its twin and its reference mask (None if it has none)."""
    pathological, twin = read_image(triple.pathological), read_image(triple.twin)
    if triple.reference is None:
        return pathological, twin, None
    reference = read_mask(triple.reference)
    if reference.shape != pathological.shape[:2]:
        raise ValueError(f"{triple.reference}: mask is {reference.shape[::-1]} px, "
                         f"images are {pathological.shape[1::-1]} px")
    return pathological, twin, reference
