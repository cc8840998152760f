"""Phantom cohorts split over hospitals with non-IID skews, and writing them to disk."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deid_client.io.files import FileReport, each_file
from deid_client.io.images import atomic_write_bytes, write_image, write_mask
from .identity import SEXES, SKIN_TYPES, sample_identity
from .lesions import LESION_KINDS, sample_lesion
from .render import Phantom, render_phantom

__all__ = ["Case", "plan_cohort", "render_case", "partition", "write_cohort", "MANIFEST"]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Case:
    """One planned phantom photo: who, where, which lesion; rendered on demand."""

    case_id: str
    hospital: int
    seed: int
    skin_type: int
    sex: str
    lesion_kind: str
    lesion_scale: float


def plan_cohort(
    n_images: int, n_hospitals: int = 1, *, seed: int = 0, non_iid: float = 0.5
) -> list[Case]:
    """Plan a cohort of ``n_images`` phantoms over ``n_hospitals`` sites.

    ``non_iid`` in [0, 1] sets how unlike each other the sites are: 0 gives
    every site the same skin-type and lesion-kind mix, lesion size and cohort
    size; 1 draws each site's mixes from a sparse Dirichlet (a few dominant
    skin types and lesion kinds), its typical lesion size from 0.7..1.3 and
    its share of the images unevenly.

    Examples
    --------
    >>> cases = plan_cohort(10, 2, seed=0)
    >>> len(cases), sorted({c.hospital for c in cases})
    (10, [0, 1])
    """
    if n_images < 1 or n_hospitals < 1:
        raise ValueError("need at least one image and one hospital")
    if n_hospitals > n_images:
        raise ValueError(f"{n_hospitals} hospitals cannot share {n_images} images")
    if not 0.0 <= non_iid <= 1.0:
        raise ValueError(f"non_iid must be in [0, 1], not {non_iid}")
    rng = np.random.default_rng([seed, 0x5EED])
    skins, kinds = np.array(sorted(SKIN_TYPES)), np.array(LESION_KINDS)

    def mix(n: int) -> np.ndarray:
        return (1 - non_iid) / n + non_iid * rng.dirichlet(np.full(n, 0.5))

    share = mix(n_hospitals)
    counts = np.ones(n_hospitals, int) + rng.multinomial(n_images - n_hospitals, share)
    cases = []
    for h, count in enumerate(counts):
        skin_p, kind_p = mix(len(skins)), mix(len(kinds))
        scale = 1.0 + non_iid * rng.uniform(-0.3, 0.3)
        for _ in range(count):
            index = len(cases)
            cases.append(Case(
                case_id=f"case_{index:05d}",
                hospital=h,
                seed=int(np.random.SeedSequence([seed, index]).generate_state(1)[0]),
                skin_type=int(rng.choice(skins, p=skin_p)),
                sex=str(rng.choice(SEXES)),
                lesion_kind=str(rng.choice(kinds, p=kind_p)),
                lesion_scale=round(float(scale * rng.uniform(0.85, 1.15)), 4),
            ))
    return cases


def render_case(case: Case, size: int = 256, *, distractors: bool = True) -> Phantom:
    """Render a planned case; the same case always gives the same pixels."""
    rng = np.random.default_rng(case.seed)
    identity = sample_identity(rng, sex=case.sex, skin_type=case.skin_type, distractors=distractors)
    lesion = sample_lesion(rng, case.lesion_kind, scale=case.lesion_scale)
    return render_phantom(identity, lesion, size)


def partition(n_images: int, n_hospitals: int, hospital: int, *, size: int = 256, seed: int = 0,
              non_iid: float = 0.5) -> list[tuple[Case, Phantom]]:
    """One hospital's share of a planned cohort (:func:`plan_cohort`), rendered: a
    simulated site's patients.

    >>> [case.hospital for case, _ in partition(6, 2, 1, size=64)]
    [1, 1, 1]
    """
    cases = plan_cohort(n_images, n_hospitals, seed=seed, non_iid=non_iid)
    return [(c, render_case(c, size)) for c in cases if c.hospital == hospital]


def write_cohort(
    cases: list[Case],
    output_dir: str | os.PathLike,
    *,
    size: int = 256,
    distractors: bool = True,
    progress: bool = True,
    keep_phantoms: bool = False,
) -> FileReport:
    """Write every case as ``hospital_<h>/{images,healthy,masks}/<case_id>.png``.

    ``manifest.json`` (written last, atomically) lists each case with its
    identity and lesion parameters. Cases whose three files already exist are
    kept, so an interrupted run resumes. The report's results pair each case
    with its manifest entry, or with its :class:`Phantom` if ``keep_phantoms``.
    """
    root = Path(output_dir)
    entries: dict[str, dict] = {}

    def write(case: Case) -> dict | Phantom:
        folder = root / f"hospital_{case.hospital}"
        paths = {k: folder / k / f"{case.case_id}.png" for k in ("images", "healthy", "masks")}
        phantom = render_case(case, size, distractors=distractors)
        if not all(p.exists() for p in paths.values()):
            write_image(paths["healthy"], phantom.twin)
            write_mask(paths["masks"], phantom.mask)
            write_image(paths["images"], phantom.image)
        entry = {**asdict(case), "size": size,
                 "files": {k: str(p.relative_to(root)) for k, p in paths.items()},
                 "lesion_fraction": float(phantom.mask.mean()),
                 "identity": phantom.identity.to_dict(), "lesion": phantom.lesion.to_dict()}
        entries[case.case_id] = entry
        return phantom if keep_phantoms else entry

    report = each_file(cases, write, desc="phantoms", progress=progress)
    manifest = {"size": size, "distractors": distractors,
                "hospitals": sorted({c.hospital for c in cases}),
                "cases": [entries[c.case_id] for c in cases if c.case_id in entries]}
    atomic_write_bytes(root / MANIFEST, json.dumps(manifest, indent=1).encode())
    return report
