"""The phantom world: procedurally drawn faces with exact ground truth (docs/design.md, How
it works), split into hospitals, and the small rectified-flow model trained on them.

``identity``, ``lesions``, ``render``: a phantom person and their photo, with its exact
healthy twin and lesion mask; ``cohort``: cohorts planned over hospitals (non-IID) and
written to disk; ``language``: the words that describe a phantom person, to the model and
to the firewall; ``model`` and ``pipeline``: the phantom model (diffusers, imported on
first use), whose weights ship in ``weights/``.

>>> p = make_phantom(seed=0, size=64)
>>> other = render_phantom(sample_identity(np.random.default_rng(1)), p.lesion, size=64)
>>> p.mask.shape == other.mask.shape
True
"""

from __future__ import annotations

import numpy as np

from .cohort import MANIFEST, Case, partition, plan_cohort, render_case, write_cohort
from .identity import HAIR_COLOURS, IRIS_COLOURS, SEXES, SKIN_TYPES, Identity, new_session, sample_identity
from .lesions import LESION_KINDS, Lesion, sample_lesion
from .render import MAX_SIZE, MIN_SIZE, Phantom, anchors, face_box, render_phantom

__all__ = [
    "Identity", "Lesion", "Phantom", "LESION_KINDS", "SEXES", "SKIN_TYPES", "HAIR_COLOURS",
    "IRIS_COLOURS", "MIN_SIZE",
    "MAX_SIZE", "sample_identity", "new_session", "sample_lesion", "render_phantom", "make_phantom",
    "anchors", "face_box", "Case", "plan_cohort", "render_case", "partition", "write_cohort", "MANIFEST",
]


def make_phantom(
    seed: int,
    size: int = 256,
    *,
    lesion_kind: str | None = None,
    skin_type: int | None = None,
    sex: str | None = None,
    lesion_scale: float = 1.0,
    distractors: bool = True,
) -> Phantom:
    """A random phantom, fully determined by ``seed`` and the other arguments."""
    rng = np.random.default_rng(seed)
    identity = sample_identity(rng, sex=sex, skin_type=skin_type, distractors=distractors)
    lesion = sample_lesion(rng, lesion_kind, scale=lesion_scale)
    return render_phantom(identity, lesion, size)
