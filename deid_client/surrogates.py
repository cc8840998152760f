"""The firewall stage: patient photo -> synthetic surrogate, its healthy twin, their mask.

The *identity* edit (FlowEdit, source prompt -> target prompt) turns the
patient into a different person with the same condition. Its healthy twin is the
same synthetic person without the condition, made one of two ways (``twin_from``):

- ``"surrogate"`` (the paper's order): the *twin* edit removes the condition from
  the surrogate (target prompt -> its healthy version);
- ``"patient"``: the twin edit heals the patient's own photo (source prompt -> its
  healthy version), and the identity edit runs again on the healed photo with the
  surrogate's prompts and noise. The two identity edits then differ only by what
  the heal removed, so the twin is the same person, changed where the heal changed
  the photo. The twin edit works on a real photo rather than on a generated one,
  which it does better (README, Measured).

The erythema mask is the CIELAB a* difference of surrogate and twin
(``masks.differential_mask``). Only the surrogate, the twin and the mask ever
leave this stage; the healed patient photo stays inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from .backends import DiffusersBackend, EditSettings
from .masks import differential_mask
from .phantom import SEXES, SKIN_TYPES, Identity, sample_identity
from .phantom_flow.prompts import describe, healthy_prompt
from .seeds import image_key

__all__ = ["Surrogate", "TwinFrom", "TWIN_FROM", "check_twin_from", "make_surrogate", "twin_settings",
           "heal_settings", "surrogate_targets"]

TwinFrom = Literal["patient", "surrogate"]
TWIN_FROM: tuple[str, ...] = get_args(TwinFrom)


def check_twin_from(value: str) -> TwinFrom:
    """``value`` if it names a twin route (:data:`TWIN_FROM`), else a clear ``ValueError``."""
    if value not in TWIN_FROM:
        raise ValueError(f"twin_from must be one of {TWIN_FROM}, not {value!r}")
    return value


@dataclass(frozen=True)
class Surrogate:
    image: np.ndarray  # uint8 RGB: a synthetic person with the patient's condition
    healthy: np.ndarray  # uint8 RGB: the same synthetic person without it
    mask: np.ndarray  # bool: where the surrogate is redder than its twin by more than theta


def twin_settings(identity_edit: EditSettings, twin_edit: EditSettings) -> EditSettings:
    """The twin edit for a surrogate made with ``identity_edit``: from its target prompt
    to the healthy version of that prompt, with ``twin_edit``'s schedule and guidance."""
    return _healing(identity_edit.target_prompt, twin_edit, identity_edit.seed)


def heal_settings(identity_edit: EditSettings, twin_edit: EditSettings) -> EditSettings:
    """The twin edit for the patient's own photo: from ``identity_edit``'s source prompt
    to the healthy version of that prompt, with ``twin_edit``'s schedule and guidance."""
    return _healing(identity_edit.source_prompt, twin_edit, identity_edit.seed)


def _healing(prompt: str, twin_edit: EditSettings, seed: int) -> EditSettings:
    return twin_edit.with_overrides(source_prompt=prompt, target_prompt=healthy_prompt(prompt),
                                    seed=seed)


def make_surrogate(
    backend: DiffusersBackend,
    image: np.ndarray,
    identity_edit: EditSettings,
    twin_edit: EditSettings,
    *,
    theta: float,
    min_size: int = 0,
    twin_from: TwinFrom = "patient",
    key: str | None = None,
) -> Surrogate:
    """Surrogate, healthy twin and mask of one photo.

    ``twin_from`` says what the twin edit heals (see the module docstring): the patient's
    photo, before the identity edit is repeated on it (:func:`heal_settings`), or the
    surrogate (:func:`twin_settings`). Either way the twin edit's prompts come from
    ``identity_edit``'s, and all noise from ``identity_edit.seed`` and ``key``.
    """
    check_twin_from(twin_from)
    key = key or image_key(image)
    surrogate = backend.edit(image, identity_edit, key=key)
    if twin_from == "surrogate":
        healthy = backend.edit(surrogate, twin_settings(identity_edit, twin_edit), key=f"{key}:twin")
    else:  # the same identity edit, same noise, on the healed photo: the same synthetic person
        healed = backend.edit(image, heal_settings(identity_edit, twin_edit), key=f"{key}:twin")
        healthy = backend.edit(healed, identity_edit, key=key)
    return Surrogate(surrogate, healthy, differential_mask(surrogate, healthy, theta, min_size=min_size))


def surrogate_targets(source: Identity | None, count: int, rng: np.random.Generator, *,
                      min_change: int = 1) -> list[str]:
    """``count`` different target prompts for a phantom patient, each at least
    ``min_change`` steps from the patient: one step per Fitzpatrick skin type, one for
    the other sex class (the skin type always changes). The sex class alternates,
    starting with the other one. With ``source=None`` (nothing known of the patient) sex
    and skin type are random.

    Attributes are drawn with the phantom world's own sampler, so combinations stay
    plausible (the model never saw blond hair on skin type VI, for example). Surrogates
    of the patient's sex class one or two skin types away are the ones a
    re-identification model still recognises (README, Measured), hence ``min_change``.

    >>> from deid_client.phantom import sample_identity
    >>> person = sample_identity(np.random.default_rng(0))
    >>> targets = surrogate_targets(person, 5, np.random.default_rng(1))
    >>> len(set(targets)), all("erythema" in t for t in targets)
    (5, True)
    """
    first = SEXES[int(rng.integers(2))] if source is None else SEXES[1 - SEXES.index(source.sex)]
    order = (first, SEXES[1 - SEXES.index(first)])
    skins = {sex: [s for s in SKIN_TYPES if source is None or s != source.skin_type and (
        abs(s - source.skin_type) + (sex != source.sex) >= min_change)] for sex in SEXES}
    prompts: list[str] = []
    draws = 0
    while len(prompts) < count:
        sex = order[len(prompts) % 2]
        if not skins[sex] or draws == 100 * count:  # few allowed skin types: few distinct prompts
            raise ValueError(f"found only {len(prompts)} of {count} distinct target prompts at least "
                             f"{min_change} steps from the patient; ask for fewer or a smaller min_change")
        draws += 1
        skin = int(rng.choice(skins[sex]))
        person = sample_identity(rng, sex=sex, skin_type=skin)
        prompt = describe(sex=sex, skin_type=skin, hair_colour=person.hair_colour)
        if prompt not in prompts:
            prompts.append(prompt)
    return prompts
