"""Erythema lesions, placed relative to facial landmarks so they transfer between people."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .fields import coverage, ellipse_sd, noise_grid, sample

__all__ = ["Lesion", "LESION_KINDS", "sample_lesion", "lesion_fields"]

LESION_KINDS = ("malar", "periorbital", "perioral", "patchy")

# An ellipse of a lesion: (anchor, du, dv, ru, rv, angle) in face units.
Blob = tuple[str, float, float, float, float, float]


@dataclass(frozen=True)
class Lesion:
    """One erythema lesion. ``strength`` is its peak a* increase; ``blobs`` its shape."""

    kind: str
    strength: float
    blobs: tuple[Blob, ...]
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Lesion:
        return cls(data["kind"], data["strength"], tuple(tuple(b) for b in data["blobs"]),
                   data["seed"])


def sample_lesion(
    rng: np.random.Generator, kind: str | None = None, *, scale: float = 1.0
) -> Lesion:
    """Draw a lesion of ``kind`` (random if None; ``"none"`` for no lesion).

    ``scale`` multiplies every radius (hospitals differ in typical lesion size).
    """
    kind = kind or str(rng.choice(LESION_KINDS))
    u = rng.uniform
    if kind == "none":
        blobs: list[Blob] = []
    elif kind == "malar":
        spread, tilt = u(0.34, 0.44), u(0.2, 0.45)
        blobs = [("nose", -spread, u(0.0, 0.08), u(0.22, 0.3), u(0.14, 0.2), tilt),
                 ("nose", spread, u(0.0, 0.08), u(0.22, 0.3), u(0.14, 0.2), -tilt),
                 ("nose", 0.0, u(-0.08, -0.03), u(0.2, 0.26), u(0.05, 0.08), 0.0)]
    elif kind == "periorbital":
        sides = [("eye_l",), ("eye_r",), ("eye_l",), ("eye_r",)][: 2 if u() < 0.7 else 1]
        blobs = [(s[0], 0.0, u(0.0, 0.04), u(0.26, 0.32), u(0.1, 0.14), 0.0) for s in sides]
    elif kind == "perioral":
        blobs = [("mouth", 0.0, u(0.0, 0.05), u(0.42, 0.52), u(0.17, 0.23), 0.0)]
    elif kind == "patchy":
        blobs = []
        for _ in range(int(rng.integers(3, 7))):
            r = u(0.07, 0.15)
            blobs.append(("face", u(-0.65, 0.65), u(-0.45, 0.8), r, r * u(0.7, 1.3),
                          u(0, np.pi)))
    else:
        raise ValueError(f"lesion kind must be one of {LESION_KINDS + ('none',)}, not {kind!r}")
    blobs = [(a, du, dv, ru * scale, rv * scale, ang) for a, du, dv, ru, rv, ang in blobs]
    return Lesion(kind=kind, strength=float(u(10.0, 18.0)),
                  blobs=tuple((a, *(float(x) for x in rest)) for a, *rest in blobs),
                  seed=int(rng.integers(2**31)))


def lesion_fields(
    lesion: Lesion,
    X: np.ndarray,
    Y: np.ndarray,
    anchors: dict[str, tuple[float, float]],
    face: tuple[float, float, float, float],
    px: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (0..1, anti-aliased) and a* increase of the lesion at every pixel.

    ``anchors`` maps landmark names to face coordinates (u, v); ``face`` is
    (centre x, centre y, half-width, half-height) in image units.
    """
    if not lesion.blobs:
        zero = np.zeros(X.shape, np.float32)
        return zero, zero
    cx, cy, fw, fh = face
    U, V = (X - cx) / fw, (Y - cy) / fh
    rng = np.random.default_rng(lesion.seed)
    border, texture = noise_grid(rng, 40, 1.6), noise_grid(rng, 64, 1.2)
    sd = np.full(X.shape, np.inf, np.float32)
    for anchor, du, dv, ru, rv, angle in lesion.blobs:
        au, av = anchors[anchor]
        blob = ellipse_sd(X, Y, cx + (au + du) * fw, cy + (av + dv) * fh, ru * fw, rv * fh, angle)
        sd = np.minimum(sd, blob)
    sd = sd + 0.018 * sample(border, U, V)  # irregular, map-like border
    cover = coverage(sd, px)
    patchiness = np.clip(0.5 + 0.3 * sample(texture, U, V), 0.0, 1.0)
    return cover, (lesion.strength * (0.65 + 0.35 * patchiness) * cover).astype(np.float32)
