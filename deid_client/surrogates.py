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

Where the surrogate's lesion comes from (``lesion``):

- ``"edited"``: the identity edit carries it, editing the patient's photo itself;
- ``"carried"`` (``twin_from="patient"`` only): the identity edit runs on the healed
  photo alone, between the healthy versions of its prompts, which makes the twin, and
  the surrogate is that twin with the patient's lesion added (``masks.carry_lesion``: the
  CIELAB difference between the photo and its heal, where it is erythema). The identity
  edit never sees the lesion, so it can be as strong as privacy needs without losing it
  (docs/privacy_attackers.md).

The erythema mask is the CIELAB a* difference of surrogate and twin
(``masks.differential_mask``). Only the surrogate, the twin and the mask ever
leave this stage; the healed patient photo stays inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from tqdm.auto import tqdm

from .backends import DiffusersBackend, EditSettings
from .masks import carry_lesion, differential_mask
from .prompts import PromptTemplate
from .seeds import image_key

__all__ = ["Surrogate", "TwinFrom", "TWIN_FROM", "Lesion", "LESIONS", "check_twin_from", "check_lesion",
           "make_surrogate", "make_surrogates", "twin_settings", "heal_settings", "healthy_settings",
           "photos_per_call"]

TwinFrom = Literal["patient", "surrogate"]
TWIN_FROM: tuple[str, ...] = get_args(TwinFrom)
Lesion = Literal["edited", "carried"]
LESIONS: tuple[str, ...] = get_args(Lesion)


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


def check_lesion(value: str, twin_from: TwinFrom = "patient") -> Lesion:
    """``value`` if it names where the lesion comes from (:data:`LESIONS`) and goes with
    ``twin_from``, else a clear ``ValueError``."""
    if value not in LESIONS:
        raise ValueError(f"lesion must be one of {LESIONS}, not {value!r}")
    if value == "carried" and twin_from != "patient":
        raise ValueError("lesion=carried needs twin_from=patient: the lesion is carried from the heal")
    return value


def photos_per_call(backend: DiffusersBackend, image: np.ndarray, identity_edit: EditSettings,
                    twin_from: TwinFrom = "patient", lesion: Lesion = "edited") -> int:
    """How many photos one model call takes (:meth:`DiffusersBackend.images_per_call`),
    halved where the identity edit runs on each photo and its healed copy at once."""
    per_call = backend.images_per_call(image, identity_edit)
    both = check_twin_from(twin_from) == "patient" and check_lesion(lesion, twin_from) == "edited"
    return max(1, per_call // (2 if both else 1))


def twin_settings(identity_edit: EditSettings, twin_edit: EditSettings,
                  prompts: PromptTemplate) -> EditSettings:
    """The twin edit for a surrogate made with ``identity_edit``: from its target prompt
    to the healthy version of that prompt, with ``twin_edit``'s schedule and guidance."""
    return _healing(identity_edit.target_prompt, twin_edit, identity_edit.seed, prompts)


def heal_settings(identity_edit: EditSettings, twin_edit: EditSettings,
                  prompts: PromptTemplate) -> EditSettings:
    """The twin edit for the patient's own photo: from ``identity_edit``'s source prompt
    to the healthy version of that prompt, with ``twin_edit``'s schedule and guidance."""
    return _healing(identity_edit.source_prompt, twin_edit, identity_edit.seed, prompts)


def healthy_settings(identity_edit: EditSettings, prompts: PromptTemplate) -> EditSettings:
    """``identity_edit`` between the healthy versions of its prompts: the identity edit of a
    healed photo (``lesion="carried"``), whose target sampling steps (``n_min``) must not
    draw the condition in."""
    return identity_edit.with_overrides(source_prompt=prompts.healthy_prompt(identity_edit.source_prompt),
                                        target_prompt=prompts.healthy_prompt(identity_edit.target_prompt))


def _healing(prompt: str, twin_edit: EditSettings, seed: int, prompts: PromptTemplate) -> EditSettings:
    return twin_edit.with_overrides(source_prompt=prompt, target_prompt=prompts.healthy_prompt(prompt),
                                    seed=seed)


def make_surrogate(
    backend: DiffusersBackend,
    image: np.ndarray,
    identity_edit: EditSettings,
    twin_edit: EditSettings,
    *,
    prompts: PromptTemplate,
    theta: float,
    min_size: int = 0,
    twin_from: TwinFrom = "patient",
    lesion: Lesion = "edited",
    key: str | None = None,
) -> Surrogate:
    """Surrogate, healthy twin and mask of one photo (:func:`make_surrogates` of one).

    ``twin_from`` says what the twin edit heals (see the module docstring): the patient's
    photo, before the identity edit is repeated on it (:func:`heal_settings`), or the
    surrogate (:func:`twin_settings`). Either way the twin edit's prompts come from
    ``identity_edit``'s, and all noise from ``identity_edit.seed`` and ``key``.
    """
    return make_surrogates(backend, [image], [identity_edit], twin_edit, prompts=prompts, theta=theta,
                           min_size=min_size, twin_from=twin_from, lesion=lesion, keys=[key])[0]


def make_surrogates(
    backend: DiffusersBackend,
    images: Sequence[np.ndarray],
    identity_edits: Sequence[EditSettings],
    twin_edit: EditSettings,
    *,
    prompts: PromptTemplate,
    theta: float,
    min_size: int = 0,
    twin_from: TwinFrom = "patient",
    lesion: Lesion = "edited",
    keys: Sequence[str | None] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> list[Surrogate]:
    """Surrogates, twins and masks of many photos, ``batch_size`` photos per model call
    (``None``: as many as the backend takes, :func:`photos_per_call`).

    Photo ``i`` is edited with ``identity_edits[i]`` and its noise comes from that edit's
    seed and ``keys[i]`` (default: a hash of its pixels), so its result is the one
    :func:`make_surrogate` gives it alone, whatever else is in its batch (up to float
    rounding of the batched kernels). With ``twin_from="patient"`` the photo and its
    healed copy go through the identity edit in the same call, with the same noise.

    >>> from deid_client.phantom_flow import PhantomFlowPipeline
    >>> from deid_client.backends import backend_for
    >>> from deid_client.config import compose_surrogate
    >>> backend = backend_for(PhantomFlowPipeline.build(), device="cpu")
    >>> edit = backend.settings("a photo of a woman, with facial erythema",
    ...                         "a photo of a man, with facial erythema", steps=4, n_max=2)
    >>> photos = [np.full((64, 64, 3), v, np.uint8) for v in (90, 160, 200)]
    >>> out = make_surrogates(backend, photos, [edit] * 3, edit, prompts=compose_surrogate().prompts,
    ...                       theta=5.0, batch_size=2)
    >>> [(r.image.shape, r.mask.dtype) for r in out][0]
    ((64, 64, 3), dtype('bool'))
    """
    check_lesion(lesion, check_twin_from(twin_from))
    images, identity_edits = list(images), list(identity_edits)
    if len(identity_edits) != len(images):
        raise ValueError(f"{len(images)} photos but {len(identity_edits)} identity edits")
    keys = [k or image_key(im) for im, k in zip(images, keys or [None] * len(images), strict=True)]
    if batch_size is None and images:
        batch_size = photos_per_call(backend, images[0], identity_edits[0], twin_from, lesion)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    out: list[Surrogate] = []
    bar = tqdm(total=len(images), desc="surrogates", unit="photo", disable=not progress)
    for start in range(0, len(images), batch_size or 1):
        batch = slice(start, start + batch_size)
        photos, edits, names = images[batch], identity_edits[batch], keys[batch]
        twin_keys = [f"{k}:twin" for k in names]
        if twin_from == "surrogate":
            surrogates = backend.edit_batch(photos, edits, keys=names)
            healthy = backend.edit_batch(surrogates, [twin_settings(e, twin_edit, prompts) for e in edits],
                                         keys=twin_keys)
        else:
            healed = backend.edit_batch(photos, [heal_settings(e, twin_edit, prompts) for e in edits],
                                        keys=twin_keys)
            if lesion == "carried":  # the identity edit makes the twin; the lesion is added to it
                healthy = backend.edit_batch(healed, [healthy_settings(e, prompts) for e in edits],
                                             keys=names)
                surrogates = [carry_lesion(p, h, t, theta) for p, h, t in zip(photos, healed, healthy)]
            else:  # the same identity edit, same noise, on the healed photo: the same synthetic person
                both = backend.edit_batch(photos + healed, edits + edits, keys=names + names)
                surrogates, healthy = both[:len(photos)], both[len(photos):]
        out += [Surrogate(s, h, differential_mask(s, h, theta, min_size=min_size))
                for s, h in zip(surrogates, healthy)]
        bar.update(len(photos))
    bar.close()
    return out

