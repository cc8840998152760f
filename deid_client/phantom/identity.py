"""Identity ("biometric") parameters of a phantom person, and their sampler."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["Identity", "sample_identity", "new_session", "SKIN_TYPES", "SEXES", "JEWELLERY"]

#: Representative CIELAB (L*, a*, b*) of Fitzpatrick skin types I..VI.
SKIN_TYPES: dict[int, tuple[float, float, float]] = {
    1: (76.0, 9.0, 14.0),
    2: (69.0, 11.0, 17.0),
    3: (61.0, 12.5, 21.0),
    4: (51.0, 13.0, 23.0),
    5: (40.0, 12.5, 20.0),
    6: (30.0, 10.0, 14.0),
}
SEXES = ("female", "male")
#: Jewellery items a phantom may wear (piercings and necklaces).
JEWELLERY = ("hoop_gold", "hoop_silver", "stud_red", "stud_pearl", "nose_stud_red",
             "nose_stud_silver", "necklace_gold", "necklace_red")
HAIR_COLOURS = {  # sRGB
    "black": (0.10, 0.08, 0.07), "dark_brown": (0.24, 0.15, 0.09),
    "brown": (0.40, 0.26, 0.15), "auburn": (0.52, 0.22, 0.10),
    "blond": (0.78, 0.64, 0.38), "grey": (0.62, 0.60, 0.58),
}
IRIS_COLOURS = {"brown": (0.36, 0.22, 0.12), "dark": (0.16, 0.10, 0.07),
                "blue": (0.30, 0.48, 0.66), "green": (0.32, 0.46, 0.30),
                "hazel": (0.48, 0.38, 0.20)}


@dataclass(frozen=True)
class Identity:
    """Everything that makes a phantom a particular person.

    Lengths are fractions of the face's half-width (``u``) or half-height
    (``v``); the face itself is sized in image units (image spans -1..1).
    """

    sex: str
    skin_type: int
    skin_lab: tuple[float, float, float]
    face_width: float
    face_height: float
    jaw_taper: float
    eye_spacing: float
    eye_width: float
    eye_height: float
    eye_level: float
    iris: str
    brow_thickness: float
    brow_arch: float
    nose_length: float
    nose_width: float
    mouth_width: float
    mouth_level: float
    lip_fullness: float
    lip_redness: float
    ear_size: float
    hair_style: str
    hair_colour: str
    hairline: float
    beard: float
    flush: float
    freckles: int
    moles: int
    jewellery: tuple[str, ...]
    light: float
    shadow: float
    shine: float
    background: tuple[float, float, float]
    clothing: tuple[float, float, float]
    texture_seed: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Identity:
        data = dict(data)
        for key in ("skin_lab", "background", "clothing", "jewellery"):
            data[key] = tuple(data[key])
        return cls(**data)


def sample_identity(
    rng: np.random.Generator,
    *,
    sex: str | None = None,
    skin_type: int | None = None,
    distractors: bool = True,
) -> Identity:
    """Draw a random person. ``distractors=False`` leaves out jewellery, flush,
    strong shadows and shine (lips are always there: every face has them)."""
    sex = sex or SEXES[rng.integers(2)]
    if sex not in SEXES:
        raise ValueError(f"sex must be one of {SEXES}, not {sex!r}")
    skin_type = int(skin_type or rng.integers(1, 7))
    if skin_type not in SKIN_TYPES:
        raise ValueError(f"skin_type must be 1..6, not {skin_type}")
    male = sex == "male"
    u = rng.uniform
    L, a, b = SKIN_TYPES[skin_type]
    dark_hair = skin_type >= 4 or u() < 0.45
    hair_colour = (rng.choice(["black", "dark_brown"]) if dark_hair
                   else rng.choice(["brown", "auburn", "blond", "grey", "dark_brown"]))
    styles = ["short", "short", "bald"] if male else ["long", "long", "bun", "short"]
    jewellery = _jewellery(rng, distractors)
    return Identity(
        sex=sex,
        skin_type=skin_type,
        skin_lab=(L + u(-3, 3), a + u(-2, 2), b + u(-3, 3)),
        face_width=u(0.47, 0.53) if male else u(0.43, 0.49),
        face_height=u(0.62, 0.68) if male else u(0.58, 0.65),
        jaw_taper=u(0.05, 0.25) if male else u(0.25, 0.45),
        eye_spacing=u(0.36, 0.44),
        eye_width=u(0.15, 0.19),
        eye_height=u(0.045, 0.06) if male else u(0.055, 0.07),
        eye_level=u(-0.16, -0.08),
        iris=str(rng.choice(list(IRIS_COLOURS) if skin_type <= 3 else ["brown", "dark"])),
        brow_thickness=u(0.03, 0.045) if male else u(0.018, 0.03),
        brow_arch=u(0.01, 0.03) if male else u(0.03, 0.06),
        nose_length=u(0.30, 0.40),
        nose_width=u(0.15, 0.22) + (0.03 if skin_type >= 5 else 0),
        mouth_width=u(0.26, 0.34),
        mouth_level=u(0.52, 0.60),
        lip_fullness=u(0.7, 1.0) if male else u(0.9, 1.3),
        lip_redness=u(14, 26) if distractors else u(10, 14),
        ear_size=u(0.9, 1.15),
        hair_style=str(rng.choice(styles)),
        hair_colour=str(hair_colour),
        hairline=u(-0.72, -0.58) if male else u(-0.7, -0.6),
        beard=u(0.0, 0.5) if male else 0.0,
        flush=_flush(rng, distractors),
        freckles=int(rng.integers(10, 60)) if skin_type <= 2 and u() < 0.4 else 0,
        moles=int(rng.integers(0, 4)),
        jewellery=jewellery,
        **_session(rng, distractors),
        texture_seed=int(rng.integers(2**31)),
    )


def new_session(identity: Identity, rng: np.random.Generator, *, distractors: bool = True) -> Identity:
    """The same person photographed another day: lighting, backdrop, clothes,
    jewellery and flush are drawn anew; face, skin, features, hair, freckles
    and moles (everything that identifies them) stay."""
    return replace(identity, jewellery=_jewellery(rng, distractors), flush=_flush(rng, distractors),
                   **_session(rng, distractors))


# -- attributes of a photo session (one sampler each, shared by both functions above) --

def _jewellery(rng: np.random.Generator, distractors: bool) -> tuple[str, ...]:
    n_jewels = rng.choice([0, 1, 2, 3], p=[0.35, 0.35, 0.2, 0.1]) if distractors else 0
    jewellery = tuple(sorted(rng.choice(JEWELLERY, size=n_jewels, replace=False).tolist()))
    ear_items = [j for j in jewellery if j.startswith(("hoop", "stud"))]
    return tuple(j for j in jewellery if j not in ear_items[1:])  # one earring kind at most


def _flush(rng: np.random.Generator, distractors: bool) -> float:
    return float(rng.uniform(2.0, 7.0)) if distractors and rng.uniform() < 0.6 else 0.0


def _session(rng: np.random.Generator, distractors: bool) -> dict:
    """Lighting, backdrop and clothes, drawn in this order."""
    light = float(rng.uniform(-1, 1))
    shadow = float(rng.uniform(0.15, 0.35)) if distractors else 0.08
    shine = float(rng.uniform(0.06, 0.16)) if distractors else 0.03
    background = tuple(float(c) for c in rng.uniform(0.25, 0.85) * np.array([1, 1, 1])
                       + rng.uniform(-0.08, 0.08, 3))
    clothing = tuple(float(c) for c in rng.uniform(0.05, 0.8, 3))
    return {"light": light, "shadow": shadow, "shine": shine, "background": background,
            "clothing": clothing}
