"""The identity gate: a surrogate is released only if a real face recogniser cannot tell
it is the patient.

The recogniser is dlib's ResNet face embedding, offline: the weights (5-point landmark
model and the ResNet embedding) come from the ``face_recognition_models`` package, the
HOG face detector is built into dlib (``dlib-bin`` wheels). Two photos show the same
person when their embeddings are closer than 0.6 (dlib's threshold for real faces).

Resolution is not de-identification: a face shrunk to 64 px and enlarged again is about
0.6 from itself. Photos are therefore compared at one resolution, the one the model made
the surrogate at (or the lower of the two), so that blur never counts as a change of
identity. Both the surrogate and its healthy twin are compared with the patient's photo,
and the nearer of the two decides. A surrogate below ``threshold`` gets new draws in the
firewall (``deid_client.firewall.firewall``); one that never passes is refused and never
written. ``docs/hospital_firewall.md`` explains the defaults.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from deid_client.io.images import resize

__all__ = ["GateConfig", "Verdict", "judge", "face_embedding", "face_distance", "AuditModelMissing",
           "SAME_PERSON", "DETECT_SIZE"]


#: dlib's same-person distance for real faces.
SAME_PERSON = 0.6
#: Faces are detected and embedded with the longer side at this many pixels.
DETECT_SIZE = 256
_PACKAGE = "face_recognition_models"


class AuditModelMissing(RuntimeError):
    """dlib or its face models are not installed; the message says how to get them."""


def _models_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ needs pkg_resources).
    spec = importlib.util.find_spec(_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" if spec else None
    if folder is None or not (folder / "dlib_face_recognition_resnet_model_v1.dat").is_file():
        raise AuditModelMissing(f"dlib's face models are missing: `pip install {_PACKAGE} dlib-bin`")
    return folder


@lru_cache(maxsize=1)
def _dlib():
    try:
        import dlib
    except ImportError:
        raise AuditModelMissing("dlib is missing: `pip install dlib-bin`") from None
    folder = _models_dir()
    return (dlib, dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")))


def _resized(image: np.ndarray, longer: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = longer / max(height, width)
    return resize(image, (max(1, round(height * scale)), max(1, round(width * scale))), method="lanczos")


def face_embedding(image: np.ndarray, *, resolution: int | None = None,
                   find_face: bool = True) -> np.ndarray | None:
    """The 128-d dlib embedding of the largest face in an RGB uint8 image, or ``None``
    when no face is found.

    ``resolution``: first bring the image to this many pixels on its longer side (the
    resolution the comparison is made at). ``find_face=False`` takes the whole image as
    the face box instead of detecting one (for aligned, centred faces: an attacker that
    never loses a face to the detector).

    >>> face_embedding(np.zeros((64, 64, 3), np.uint8)) is None
    True
    """
    dlib, detector, landmarks, resnet = _dlib()
    if resolution is not None:
        image = _resized(image, resolution)
    image = np.ascontiguousarray(_resized(image, DETECT_SIZE))
    height, width = image.shape[:2]
    if find_face:
        faces = list(detector(image, 1))
        if not faces:
            return None
        box = max(faces, key=lambda r: r.width() * r.height())
    else:
        box = dlib.rectangle(0, 0, width - 1, height - 1)
    return np.asarray(resnet.compute_face_descriptor(image, landmarks(image, box)))


def face_distance(a: np.ndarray, b: np.ndarray, *, resolution: int | None = None) -> float | None:
    """Euclidean distance of the dlib embeddings of the largest face in each RGB uint8
    image; ``None`` if either has no face. Below :data:`SAME_PERSON` (0.6) they show the
    same person.

    Both are compared at ``resolution`` pixels on the longer side, by default the smaller
    of their two sizes. A photo that was made at a lower resolution and enlarged (a
    surrogate from a 64-px model, returned at the patient photo's size) is compared at the
    resolution it was made at: pass it.

    >>> from skimage import data
    >>> face = data.astronaut()
    >>> face_distance(face, face)
    0.0
    """
    resolution = resolution or min(max(a.shape[:2]), max(b.shape[:2]))
    embeddings = [face_embedding(x, resolution=resolution) for x in (a, b)]
    if any(e is None for e in embeddings):
        return None
    return float(np.linalg.norm(embeddings[0] - embeddings[1]))


# -- the gate ---------------------------------------------------------------

@dataclass(frozen=True)
class GateConfig:
    """``threshold``: the least dlib distance between patient and surrogate (0.6: dlib's
    same-person threshold for real faces); ``no_face``: what to do when the recogniser
    finds no face in either photo (``refuse``: what cannot be audited is not released);
    ``retries``: new draws (new noise, the same target) before a surrogate is refused;
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


def judge(patient: np.ndarray, surrogate: np.ndarray, twin: np.ndarray, gate: GateConfig, *,
          resolution: int | None = None, patient_embedding: np.ndarray | None = None) -> Verdict:
    """Whether a surrogate and its twin may leave: both at least ``gate.threshold`` from
    the patient in dlib's face embedding, compared at ``resolution`` pixels on the longer
    side (the model's working size; default: the smallest of the photos' own sizes).

    ``patient_embedding``: the patient's :func:`face_embedding` at
    ``resolution``, where the caller has it already (one photo judged on several draws).

    >>> photo = np.zeros((64, 64, 3), np.uint8)  # no face at all
    >>> judge(photo, photo, photo, GateConfig(threshold=0.6)).reason
    'no face found to audit (gate.no_face=refuse)'
    """
    if not gate.enabled:
        return Verdict(True, None, "not audited (gate.enabled=false)")
    resolution = resolution or min(max(x.shape[:2]) for x in (patient, surrogate, twin))
    if patient_embedding is None:
        patient_embedding = face_embedding(patient, resolution=resolution)
    others = [face_embedding(x, resolution=resolution) for x in (surrogate, twin)]
    if patient_embedding is None or any(e is None for e in others):
        released = gate.no_face == "release"
        return Verdict(released, None, f"no face found to audit (gate.no_face={gate.no_face})")
    nearest = min(float(np.linalg.norm(e - patient_embedding)) for e in others)
    if nearest < gate.threshold:
        return Verdict(False, nearest, f"identity distance {nearest:.3f} < gate.threshold "
                                       f"{gate.threshold}: too close to the patient")
    return Verdict(True, nearest, "")
