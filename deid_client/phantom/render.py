"""Render a phantom face, its healthy twin and the exact lesion mask.

The scene is painted back to front (background, hair, neck, clothes, ears,
face, features, jewellery) while a per-pixel *visible skin* weight is kept.
The lesion is then added as an a* increase on visible skin only, so the
healthy twin is the very same picture without it: the two images are equal,
pixel for pixel, wherever the lesion has no coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .fields import coverage, ellipse_sd, gaussian, grid, noise_grid, ring_sd, sample
from .identity import HAIR_COLOURS, IRIS_COLOURS, Identity
from .lesions import Lesion, lesion_fields

__all__ = ["Phantom", "render_phantom", "face_box", "anchors", "MIN_SIZE", "MAX_SIZE"]

MIN_SIZE, MAX_SIZE = 64, 1024
_FACE_CENTRE = (0.0, -0.06)


@dataclass(frozen=True)
class Phantom:
    """One rendered phantom photo with its ground truth."""

    image: np.ndarray  # uint8 H x W x 3, with the lesion
    twin: np.ndarray  # uint8 H x W x 3, the exact healthy twin
    mask: np.ndarray  # bool H x W, exact lesion ground truth
    face: np.ndarray  # bool H x W, inside the face outline (features included)
    identity: Identity
    lesion: Lesion


def face_box(identity: Identity) -> tuple[float, float, float, float]:
    """(centre x, centre y, half-width, half-height) of the face in image units."""
    return (*_FACE_CENTRE, identity.face_width, identity.face_height)


def anchors(identity: Identity) -> dict[str, tuple[float, float]]:
    """Landmarks in face coordinates (u right, v down; the face spans -1..1)."""
    nose_tip = identity.eye_level + identity.nose_length
    return {
        "face": (0.0, 0.0),
        "eye_l": (-identity.eye_spacing, identity.eye_level),
        "eye_r": (identity.eye_spacing, identity.eye_level),
        "nose": (0.0, identity.eye_level + 0.6 * identity.nose_length),
        "nose_tip": (0.0, nose_tip),
        "mouth": (0.0, identity.mouth_level),
    }


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0)


class _Canvas:
    """Float RGB picture plus the visible-skin weight of every pixel."""

    def __init__(self, background: np.ndarray):
        self.rgb = background.astype(np.float32)
        self.skin = np.zeros(background.shape[:2], np.float32)

    def paint(self, alpha: np.ndarray, colour, *, skin: bool = False) -> None:
        rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
        if rows.size == 0:
            return
        box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # blend only where it shows
        a = alpha[box][..., None]
        colour = np.asarray(colour, np.float32)
        colour = colour[box] if colour.ndim == 3 else colour
        self.rgb[box] = self.rgb[box] * (1 - a) + colour * a
        self.skin[box] = self.skin[box] * (1 - a[..., 0]) + (a[..., 0] if skin else 0.0)

    def shade(self, factor: np.ndarray, where: np.ndarray | None = None) -> None:
        """Multiply brightness (shadows), limited to ``where`` (default: skin)."""
        where = self.skin if where is None else where
        self.rgb = self.rgb * (1 + (factor[..., None] - 1) * where[..., None])

    def add_light(self, amount: np.ndarray) -> None:
        """Additive specular light on skin (shine, highlights)."""
        self.rgb = self.rgb + (amount * self.skin)[..., None]


def render_phantom(
    identity: Identity, lesion: Lesion, size: int = 256, *, camera_noise: float = 0.006
) -> Phantom:
    """Draw ``identity`` with ``lesion`` at ``size`` x ``size`` pixels (64..1024).

    Examples
    --------
    >>> from deid_client.phantom import make_phantom
    >>> p = make_phantom(seed=3, size=64)
    >>> p.image.shape, p.mask.dtype, bool((p.image != p.twin).any())
    ((64, 64, 3), dtype('bool'), True)
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"phantom size must be {MIN_SIZE}..{MAX_SIZE} px, not {size}")
    X, Y = grid(size)
    px = 2.0 / size
    cx, cy, fw, fh = face_box(identity)
    U, V = (X - cx) / fw, (Y - cy) / fh
    marks = anchors(identity)
    rng = np.random.default_rng(identity.texture_seed)
    hair_rgb = np.asarray(HAIR_COLOURS[identity.hair_colour], np.float32)
    skin_rgb = _skin_colour(identity, rng, X, Y, U, V, px)

    bg = np.asarray(identity.background, np.float32)
    canvas = _Canvas(bg * (1.05 - 0.2 * (Y[..., None] + 1) / 2))
    hair_texture = 0.8 + 0.35 * np.clip(sample(noise_grid(rng, 96, 0.8), X * 1.4, Y * 0.3), -1, 1)
    hair = hair_rgb * hair_texture[..., None]

    if identity.hair_style == "long":
        canvas.paint(coverage(ellipse_sd(X, Y, cx, cy + 0.3 * fh, 1.32 * fw, 1.32 * fh), px), hair)
    if identity.hair_style == "bun":
        canvas.paint(coverage(ellipse_sd(X, Y, cx, cy - 1.08 * fh, 0.2, 0.16), px), hair)

    # Neck (skin, in the jaw's shadow) and clothes.
    neck_sd = np.maximum(np.abs(X - cx) - 0.4 * fw, cy + 0.5 * fh - Y)
    canvas.paint(coverage(neck_sd, px), skin_rgb * (0.62 + 0.3 * np.clip((Y - cy - fh) / 0.3, 0, 1)
                                                    )[..., None], skin=True)
    canvas.paint(coverage(ellipse_sd(X, Y, cx, 1.2, 0.98, 0.38), px),
                 np.asarray(identity.clothing) * (0.85 + 0.15 * (X[..., None] * identity.light)))

    # Ears, then the face over them.
    ear_y = cy + 0.02 * fh
    for side in (-1, 1):
        ear = ellipse_sd(X, Y, cx + side * 0.96 * fw, ear_y, 0.11 * fw * identity.ear_size,
                         0.19 * fh * identity.ear_size)
        canvas.paint(coverage(ear, px), skin_rgb * 0.88, skin=True)
        inner = ellipse_sd(X, Y, cx + side * 0.99 * fw, ear_y, 0.045 * fw, 0.11 * fh)
        canvas.paint(0.5 * coverage(inner, px), skin_rgb * 0.6)
    width = 1 - identity.jaw_taper * np.clip(V, 0, None) ** 2
    r_face = np.hypot(U / width, V)
    face_cover = coverage((r_face - 1) * fw * width, px)
    canvas.paint(face_cover, skin_rgb, skin=True)

    # Round-face shading, side light and the shadow under the jaw.
    s = identity.shadow
    canvas.shade(np.clip(1 - 0.5 * s * np.clip(r_face, 0, 1.2) ** 4 + 0.3 * s * identity.light * U,
                         0.4, 1.2))
    if identity.beard > 0:
        stubble = np.clip((V - 0.3) / 0.25, 0, 1) * coverage((r_face - 0.98) * fw, px)
        stubble *= 1 - gaussian(U, V, 0, identity.mouth_level, 0.35, 0.1)
        canvas.shade(1 - 0.35 * identity.beard * stubble)

    _draw_hair_front(canvas, identity, X, Y, U, V, px, hair)
    _draw_eyes_and_brows(canvas, identity, X, Y, U, V, px, hair_rgb)
    _draw_nose(canvas, identity, X, Y, U, V, px, skin_rgb)
    _draw_mouth(canvas, identity, U, V, px, fh)

    # Shine on the forehead, nose bridge and cheekbones (stronger on the lit side).
    shine = identity.shine * (
        gaussian(U, V, 0.15 * identity.light, -0.5, 0.25, 0.12)
        + 0.8 * gaussian(U, V, 0, identity.eye_level + 0.25, 0.05, 0.12)
        + 0.6 * gaussian(U, V, 0.45 * np.sign(identity.light or 1), identity.eye_level + 0.25,
                         0.12, 0.06))
    canvas.add_light(shine)
    _draw_jewellery(canvas, identity, X, Y, px, (cx, cy, fw, fh))

    # The lesion: an a* increase on visible skin. Exact twin everywhere else.
    cover, rise = lesion_fields(lesion, X, Y, marks, (cx, cy, fw, fh), px)
    rise = rise * canvas.skin
    healthy = np.clip(canvas.rgb, 0, 1)
    sick = healthy.copy()
    where = rise > 0
    if where.any():
        lab = cv2.cvtColor(healthy[where][None], cv2.COLOR_RGB2Lab)[0]
        lab[:, 1] += rise[where]
        lab[:, 0] -= 0.25 * rise[where]  # inflamed skin is also a little darker
        sick[where] = _lab_to_rgb(lab[None])[0]
    noise = np.random.default_rng([identity.texture_seed, lesion.seed]).normal(
        0, camera_noise, healthy.shape).astype(np.float32)
    # Ground truth: more than half of the pixel is lesion on visible skin.
    mask = cover * canvas.skin > 0.5
    return Phantom(_to_uint8(sick + noise), _to_uint8(healthy + noise), mask, face_cover > 0.5,
                   identity, lesion)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _skin_colour(identity, rng, X, Y, U, V, px) -> np.ndarray:
    """Per-pixel skin colour: tone, mottling, pores, natural flush, freckles, moles."""
    L0, a0, b0 = identity.skin_lab
    mottle = sample(noise_grid(rng, 24, 1.5), U, V)
    pores = sample(noise_grid(rng, 256, 0.7), X, Y, extent=1.0)
    flush = identity.flush * (gaussian(U, V, -0.45, 0.15, 0.2, 0.14)
                              + gaussian(U, V, 0.45, 0.15, 0.2, 0.14)
                              + 0.6 * gaussian(U, V, 0, identity.eye_level + identity.nose_length,
                                               0.08, 0.06))
    lab = np.stack([L0 + 1.2 * mottle + 1.0 * pores, a0 + 0.8 * mottle + flush,
                    b0 + 0.8 * mottle], axis=-1)
    for _ in range(identity.freckles):
        fu, fv = rng.uniform(-0.7, 0.7), rng.uniform(-0.3, 0.45)
        spot = gaussian(U, V, fu, fv, 0.012, 0.009)
        lab[..., 0] -= 9 * spot
        lab[..., 2] += 5 * spot
    for _ in range(identity.moles):
        mu, mv = rng.uniform(-0.7, 0.7), rng.uniform(-0.5, 0.8)
        mole = coverage(ellipse_sd(U, V, mu, mv, 0.018, 0.014) * identity.face_width, px)
        lab[..., 0] -= 0.55 * (lab[..., 0] - 20) * mole
        lab[..., 2] += 4 * mole
    return _lab_to_rgb(lab)


def _draw_hair_front(canvas, identity, X, Y, U, V, px, hair) -> None:
    cx, cy, fw, fh = face_box(identity)
    if identity.hair_style == "bald":
        return
    head = ellipse_sd(X, Y, cx, cy - 0.06 * fh, 1.08 * fw, 1.06 * fh)
    hairline = identity.hairline + 0.22 * U**2
    canvas.paint(coverage(np.maximum(head, (V - hairline) * fh), px), hair)
    if identity.hair_style == "long":  # strands falling over the sides of the face
        curtain = np.maximum(0.8 - np.abs(U), (V - 0.45) * 0.6) * fw
        canvas.paint(coverage(np.maximum(head, curtain), px), hair)


def _draw_eyes_and_brows(canvas, identity, X, Y, U, V, px, hair_rgb) -> None:
    _, _, fw, fh = face_box(identity)
    ev, eh, ew = identity.eye_level, identity.eye_height, identity.eye_width
    for side in (-1, 1):
        eu = side * identity.eye_spacing
        du = (U - eu) / ew
        canvas.shade(1 - identity.shadow * 0.5 * gaussian(U, V, eu, ev - 0.02, 0.22, 0.09))
        lens = (np.abs(V - ev) - eh * (1 - du**2)) * fh
        eye = coverage(lens, px)
        canvas.paint(eye, (0.92, 0.89, 0.86))
        iris_r = 0.95 * eh * fh
        iris = coverage(np.hypot((U - eu) * fw, (V - ev) * fh) - iris_r, px)
        canvas.paint(np.minimum(iris, eye), IRIS_COLOURS[identity.iris])
        pupil = coverage(np.hypot((U - eu) * fw, (V - ev) * fh) - 0.45 * iris_r, px)
        canvas.paint(np.minimum(pupil, eye), (0.04, 0.03, 0.03))
        glint = coverage(np.hypot((U - eu + 0.3 * eh * fh / fw) * fw,
                                  (V - ev + 0.3 * eh) * fh) - 0.25 * iris_r, px)
        canvas.paint(np.minimum(glint, eye), (1.0, 1.0, 1.0))
        lid = np.maximum(np.abs((V - (ev - eh * (1 - du**2))) * fh) - 0.006, (np.abs(du) - 1.05) * ew * fw)
        canvas.paint(coverage(lid, px), (0.14, 0.09, 0.07))
        # Brow: a thick arc above the eye.
        bu, bv = eu + side * 0.02, ev - 0.15
        arc = bv - identity.brow_arch * (1 - ((U - bu) / 0.22) ** 2)
        brow = np.maximum((np.abs(V - arc) - identity.brow_thickness * (1 - 0.5 * np.clip(
            side * (U - bu) / 0.22, 0, 1))) * fh, (np.abs(U - bu) - 0.22) * fw)
        canvas.paint(coverage(brow, px), hair_rgb * 0.8)


def _draw_nose(canvas, identity, X, Y, U, V, px, skin_rgb) -> None:
    _, _, fw, fh = face_box(identity)
    tip = identity.eye_level + identity.nose_length
    nw, s = identity.nose_width, identity.shadow
    for side in (-1, 1):  # sides of the nose bridge
        canvas.shade(1 - 0.6 * s * gaussian(U, V, side * 0.6 * nw, tip - 0.12, 0.035, 0.12))
    canvas.shade(1 - 0.9 * s * gaussian(U, V, 0, tip + 0.07, 0.16, 0.03))  # cast under the nose
    for side in (-1, 1):
        nostril = ellipse_sd(U * fw, V * fh, side * 0.42 * nw * fw, (tip + 0.02) * fh,
                             0.32 * nw * fw, 0.025 * fh, side * 0.25)
        canvas.paint(0.85 * coverage(nostril, px), skin_rgb * 0.3)


def _draw_mouth(canvas, identity, U, V, px, fh) -> None:
    my, full = identity.mouth_level, identity.lip_fullness
    du = U / identity.mouth_width
    bow = 1 - 0.35 * np.exp(-((du / 0.15) ** 2))  # Cupid's bow
    top = my - 0.05 * full * (1 - du**2) * bow
    bottom = my + 0.07 * full * (1 - du**2)
    L, a, b = identity.skin_lab
    lip = _lab_to_rgb(np.array([[[L - 9, a + identity.lip_redness, b + 2]]], np.float32))[0, 0]
    canvas.shade(1 - 0.8 * identity.shadow * gaussian(U, V, 0, bottom.max() + 0.05, 0.2, 0.03))
    lips = coverage(np.maximum(top - V, V - bottom) * fh, px)
    canvas.paint(lips, lip * np.where(V < my, 0.88, 1.0)[..., None])
    line = np.maximum(np.abs(V - my) * fh - 0.005, (np.abs(du) - 0.97) * 0.3)
    canvas.paint(coverage(line, px), lip * 0.45)
    gloss = identity.shine * 1.5 * gaussian(U, V, 0.1, my + 0.04 * full, 0.12, 0.012)
    canvas.rgb = canvas.rgb + (gloss * lips)[..., None]


def _draw_jewellery(canvas, identity, X, Y, px, face) -> None:
    """Piercings and necklaces: specular metal and red stones that fool redness thresholds."""
    cx, cy, fw, fh = face
    gold, silver, red = (0.85, 0.66, 0.22), (0.78, 0.79, 0.82), (0.78, 0.04, 0.10)
    lobe_y = cy + 0.02 * fh + 0.19 * fh * identity.ear_size
    tip = identity.eye_level + identity.nose_length
    for item in identity.jewellery:
        spots = []
        if item.startswith(("hoop", "stud")):
            for side in (-1, 1):
                x = cx + side * 0.97 * fw
                if item.startswith("hoop"):
                    colour = gold if item.endswith("gold") else silver
                    canvas.paint(coverage(ring_sd(X, Y, x, lobe_y + 0.045, 0.045, 0.007), px), colour)
                    spots.append((x + side * 0.03, lobe_y + 0.015, 0.006))
                else:
                    colour = red if item.endswith("red") else (0.93, 0.91, 0.86)
                    canvas.paint(coverage(np.hypot(X - x, Y - lobe_y) - 0.02, px), colour)
                    spots.append((x - 0.006, lobe_y - 0.006, 0.006))
        elif item.startswith("nose_stud"):
            x, y = cx + 0.5 * identity.nose_width * fw, cy + (tip - 0.03) * fh
            canvas.paint(coverage(np.hypot(X - x, Y - y) - 0.012, px),
                         red if item.endswith("red") else silver)
            spots.append((x - 0.004, y - 0.004, 0.004))
        elif item.startswith("necklace"):
            curve = cy + 1.02 * fh + 0.35 * ((X - cx) / 0.45) ** 2
            chain = np.maximum(np.abs(Y - curve) - 0.009, np.abs(X - cx) - 0.4 * fw)
            colour = gold if item.endswith("gold") else red
            canvas.paint(coverage(chain, px), colour)
            spots.append((cx + 0.1, cy + 1.02 * fh + 0.35 * (0.1 / 0.45) ** 2 - 0.003, 0.006))
        for sx, sy, r in spots:  # specular highlights
            canvas.paint(0.9 * coverage(np.hypot(X - sx, Y - sy) - r, px), (1.0, 1.0, 1.0))
