"""The firewall stage: patient photo -> synthetic surrogate, its healthy twin, their mask.

Two FlowEdit edits with one backend: the *identity* edit turns the patient
into a different person with the same condition (source prompt -> target
prompt), the *twin* edit removes the condition from that surrogate (target
prompt -> its healthy version). The erythema mask is the CIELAB a*
difference of the two (``masks.differential_mask``). Only the surrogate, the
twin and the mask ever leave this stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends import DiffusersBackend, EditSettings
from .masks import differential_mask
from .phantom import SEXES, SKIN_TYPES, Identity, sample_identity
from .phantom_flow.prompts import describe, healthy_prompt
from .seeds import image_key

__all__ = ["Surrogate", "make_surrogate", "twin_settings", "surrogate_targets"]


@dataclass(frozen=True)
class Surrogate:
    image: np.ndarray  # uint8 RGB: a synthetic person with the patient's condition
    healthy: np.ndarray  # uint8 RGB: the same synthetic person without it
    mask: np.ndarray  # bool: where the surrogate is redder than its twin by more than theta


def twin_settings(identity_edit: EditSettings, twin_edit: EditSettings) -> EditSettings:
    """The twin edit for a surrogate made with ``identity_edit``: from its target prompt
    to the healthy version of that prompt, with ``twin_edit``'s schedule and guidance."""
    target = identity_edit.target_prompt
    return twin_edit.with_overrides(source_prompt=target, target_prompt=healthy_prompt(target),
                                    seed=identity_edit.seed)


def make_surrogate(
    backend: DiffusersBackend,
    image: np.ndarray,
    identity_edit: EditSettings,
    twin_edit: EditSettings,
    *,
    theta: float,
    min_size: int = 0,
    key: str | None = None,
) -> Surrogate:
    """Surrogate, healthy twin and mask of one photo (``twin_edit``'s prompts are derived
    from ``identity_edit``'s target prompt, see :func:`twin_settings`)."""
    key = key or image_key(image)
    surrogate = backend.edit(image, identity_edit, key=key)
    healthy = backend.edit(surrogate, twin_settings(identity_edit, twin_edit), key=f"{key}:twin")
    return Surrogate(surrogate, healthy, differential_mask(surrogate, healthy, theta, min_size=min_size))


def surrogate_targets(source: Identity | None, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` different target prompts for a phantom patient, each naming another skin
    type than the patient's; the sex class alternates, starting with the other one.
    With ``source=None`` (nothing known of the patient) sex and skin type are random.

    Attributes are drawn with the phantom world's own sampler, so combinations stay
    plausible (the model never saw blond hair on skin type VI, for example).

    >>> from deid_client.phantom import sample_identity
    >>> person = sample_identity(np.random.default_rng(0))
    >>> targets = surrogate_targets(person, 5, np.random.default_rng(1))
    >>> len(set(targets)), all("erythema" in t for t in targets)
    (5, True)
    """
    first = SEXES[int(rng.integers(2))] if source is None else SEXES[1 - SEXES.index(source.sex)]
    order = (first, SEXES[1 - SEXES.index(first)])
    skins = [s for s in SKIN_TYPES if source is None or s != source.skin_type]
    prompts: list[str] = []
    while len(prompts) < count:
        sex = order[len(prompts) % 2]
        skin = int(rng.choice(skins))
        person = sample_identity(rng, sex=sex, skin_type=skin)
        prompt = describe(sex=sex, skin_type=skin, hair_colour=person.hair_colour)
        if prompt not in prompts:
            prompts.append(prompt)
    return prompts
