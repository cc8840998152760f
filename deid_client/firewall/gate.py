"""The identity gate: a surrogate is released only if a real face recogniser cannot tell
it is the patient (dlib's face embedding, ``deid_client.firewall.audit``).

Both the surrogate and its healthy twin are compared with the patient's photo, at the
resolution the model made them at (blur is not a change of identity), and the nearer
of the two decides. A surrogate below ``threshold`` gets new draws in the firewall
(``deid_client.firewall.folder``); one that never passes is refused and never written.
``docs/hospital_firewall.md`` explains the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from deid_client.firewall.audit import face_embedding

__all__ = ["GateConfig", "Verdict", "judge"]


@dataclass(frozen=True)
class GateConfig:
    """``threshold``: the least dlib distance between patient and surrogate (0.6: dlib's
    same-person threshold for real faces); ``no_face``: what to do when the recogniser
    finds no face in either photo (``refuse``: what cannot be audited is not released);
    ``retries``: new draws (target prompt and noise) before a surrogate is refused;
    ``enabled``: ``False`` releases everything unaudited (research only)."""

    threshold: float  # each preset sets it: 0.6 for real faces, the phantom world its own
    no_face: Literal["refuse", "release"] = "refuse"
    retries: int = 2
    enabled: bool = True

    def __post_init__(self):
        if self.no_face not in ("refuse", "release"):
            raise ValueError(f"gate.no_face must be 'refuse' or 'release', not {self.no_face!r}")
        if self.retries < 0 or self.threshold < 0:
            raise ValueError("gate.retries and gate.threshold must not be negative")


@dataclass(frozen=True)
class Verdict:
    released: bool
    distance: float | None  # the nearer of surrogate and twin to the patient; None: no face
    reason: str


def judge(patient: np.ndarray, surrogate: np.ndarray, healthy: np.ndarray, gate: GateConfig, *,
          resolution: int | None = None, patient_embedding: np.ndarray | None = None) -> Verdict:
    """Whether a surrogate and its twin may leave: both at least ``gate.threshold`` from
    the patient in dlib's face embedding, compared at ``resolution`` pixels on the longer
    side (the model's working size; default: the smallest of the photos' own sizes).

    ``patient_embedding``: the patient's :func:`~deid_client.firewall.audit.face_embedding` at
    ``resolution``, where the caller has it already (one photo judged on several draws).

    >>> photo = np.zeros((64, 64, 3), np.uint8)  # no face at all
    >>> judge(photo, photo, photo, GateConfig(threshold=0.6)).reason
    'no face found to audit (gate.no_face=refuse)'
    """
    if not gate.enabled:
        return Verdict(True, None, "not audited (gate.enabled=false)")
    resolution = resolution or min(max(x.shape[:2]) for x in (patient, surrogate, healthy))
    if patient_embedding is None:
        patient_embedding = face_embedding(patient, resolution=resolution)
    others = [face_embedding(x, resolution=resolution) for x in (surrogate, healthy)]
    if patient_embedding is None or any(e is None for e in others):
        released = gate.no_face == "release"
        return Verdict(released, None, f"no face found to audit (gate.no_face={gate.no_face})")
    nearest = min(float(np.linalg.norm(e - patient_embedding)) for e in others)
    if nearest < gate.threshold:
        return Verdict(False, nearest, f"identity distance {nearest:.3f} < gate.threshold "
                                       f"{gate.threshold}: too close to the patient")
    return Verdict(True, nearest, "")
