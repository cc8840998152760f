"""The firewall: patient photos in; per photo a synthetic surrogate, its healthy twin, their
erythema mask and the identity gate's verdict out.

:class:`Firewall` reads top to bottom, per photo:

1. **target**: another person's prompt, drawn from the photo's own key (and the draw),
   at least ``min_change`` steps from what is known of the patient;
2. **identity edit**: FlowEdit from the patient's prompt to the target's: the surrogate,
   a different person with the same condition;
3. **twin**: the same synthetic person without the condition (``twin_from``, ``lesion``);
4. **mask**: where the surrogate is redder than its twin in CIELAB a* by more than theta
   (times ``lesion_gain`` for a carried lesion: ``mask_theta``);
5. **gate**: dlib's face recogniser compares surrogate and twin with the photo; one too
   close gets new noise (the same target), up to ``gate.retries``, then is refused.

How the twin is made (``twin_from``):

- ``"surrogate"`` (the paper's order): the *twin* edit removes the condition from the
  surrogate (target prompt -> its healthy version);
- ``"patient"``: the twin edit heals the patient's own photo (source prompt -> its healthy
  version), and the identity edit runs again on the healed photo with the surrogate's
  prompts and noise. The two identity edits then differ only by what the heal removed, so
  the twin is the same person, changed where the heal changed the photo. The twin edit
  works on a real photo rather than a generated one, which it does better
  (docs/measurements.md).

Where the surrogate's lesion comes from (``lesion``):

- ``"edited"``: the identity edit carries it, editing the patient's photo itself;
- ``"carried"`` (``twin_from="patient"`` only): the identity edit runs on the healed photo
  alone, between the healthy versions of its prompts, which makes the twin, and the
  surrogate is that twin with the patient's lesion added (``masks.carry_lesion``), times
  ``lesion_gain``; the mask threshold is then ``theta`` times the gain (``mask_theta``), so
  the mask is the patient's lesion at ``theta``. The identity edit never sees the lesion,
  so it can be as strong as privacy needs (docs/privacy_attackers.md).

Only the surrogate, the twin and the mask leave; the healed patient photo stays inside.
Noise and targets come from each photo's key and the config's seed, so a photo's result
never depends on the other photos in its call (up to float rounding of batched kernels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from tqdm.auto import tqdm

from deid_client.editing.backends import DiffusersBackend, EditSettings, working_size
from deid_client.editing.seeds import image_key, image_seed
from deid_client.firewall.config import FirewallConfig
from deid_client.firewall.gate import Verdict, face_embedding, judge
from deid_client.firewall.masks import carry_lesion, differential_mask
from deid_client.editing.prompts import Attributes

__all__ = ["Firewall", "Result", "surrogate_key"]


@dataclass(frozen=True)
class Result:
    """What the firewall made of one photo. Only a released result may leave the site."""

    surrogate: np.ndarray  # uint8 RGB: a synthetic person with the patient's condition
    twin: np.ndarray  # uint8 RGB: the same synthetic person without it
    mask: np.ndarray  # bool: where the surrogate is redder than its twin by more than mask_theta
    target: str  # the target prompt the surrogate was drawn from
    seed: int  # the identity edit's run seed (mixed with the photo's key for its noise)
    verdict: Verdict | None = None  # the identity gate's; None: not judged (Firewall.synthesise)

    @property
    def released(self) -> bool:
        return self.verdict is not None and self.verdict.released


class Firewall:
    """The privacy firewall on arrays: ``Firewall(cfg, backend)(photos, attributes)``.

    Parameters
    ----------
    cfg : FirewallConfig
        Every setting (``deid_client.firewall.compose_firewall``).
    backend : DiffusersBackend
        The loaded model (``load_backend(cfg.model)``); the caller decides its device.

    Examples
    --------
    >>> from deid_client.firewall import compose_firewall
    >>> cfg = compose_firewall(["gate.enabled=false"])
    >>> from deid_client.editing.backends import load_backend
    >>> firewall = Firewall(cfg, load_backend(cfg.model))
    >>> photo = np.full((64, 64, 3), 150, np.uint8)
    >>> (result,) = firewall([photo], [{"sex": "female", "skin_type": "2", "hair_colour": "blond"}])
    >>> result.surrogate.shape, result.mask.dtype, result.released
    ((64, 64, 3), dtype('bool'), True)
    """

    def __init__(self, cfg: FirewallConfig, backend: DiffusersBackend):
        self.cfg = cfg
        self.backend = backend

    def __call__(self, images: Sequence[np.ndarray], attributes: Sequence[Attributes | None] | None = None,
                 *, keys: Sequence[str] | None = None, batch_size: int | None = None) -> list[Result]:
        """One gated result per photo, ``batch_size`` photos per model call (``None``: what
        the device takes). ``attributes[i]``: what is known of patient ``i`` (``None``:
        nothing); ``keys[i]``: photo ``i``'s key (default: a hash of its pixels)."""
        images, attributes, keys = self._inputs(images, attributes, keys)
        batch_size = batch_size or self.photos_per_call()
        out: list[Result] = []
        for start in range(0, len(images), batch_size):
            part = slice(start, start + batch_size)
            out += self._gated(images[part], attributes[part], keys[part])
        return out

    def _gated(self, images: list[np.ndarray], attributes: list, keys: list[str]) -> list[Result]:
        """Target -> surrogate, twin, mask -> gate, with new draws for the photos it stops."""
        gate = self.cfg.gate
        sides = [self.working_side(im) for im in images]
        # each patient's face embedding, made once per photo: a photo given once per
        # surrogate (``surrogates_per_photo``) has the same pixels each time
        pixels = [image_key(im) for im in images]
        patients: dict[str, np.ndarray | None] = {}  # by the photo's pixels
        results: dict[int, Result] = {}
        pending = list(range(len(images)))
        for draw in range(gate.retries + 1):
            if not pending:
                break
            noise_keys = [_noise_key(keys[i], draw) for i in pending]
            # new noise, the same target: a target the gate chose (one far enough from the
            # patient to pass) would tell the patient's attributes (docs/privacy_attackers.md)
            targets = [self.draw_target(keys[i], attributes[i]) for i in pending]
            made = self.synthesise([images[i] for i in pending], targets, [attributes[i] for i in pending],
                                   keys=noise_keys, batch_size=len(pending))
            for i, result in zip(pending, made, strict=True):
                if pixels[i] not in patients and gate.enabled:
                    patients[pixels[i]] = face_embedding(images[i], resolution=sides[i])
                verdict = judge(images[i], result.surrogate, result.twin, gate, resolution=sides[i],
                                patient_embedding=patients.get(pixels[i]))
                results[i] = replace(result, verdict=verdict)
            # a patient without a face cannot be audited on any draw: retrying only costs time
            pending = [i for i in pending
                       if not results[i].released and patients.get(pixels[i]) is not None]
        return [results[i] for i in range(len(images))]

    def draw_target(self, key: str, attributes: Attributes | None = None) -> str:
        """The target prompt for the photo whose (noise) key is ``key``: drawn from the key
        alone, so it never depends on the other photos."""
        rng = np.random.default_rng(image_seed(self.cfg.identity.seed, key))
        return self.cfg.prompts.draw_targets(attributes, 1, rng, min_change=self.cfg.min_change)[0]

    def identity_edit(self, target: str, attributes: Attributes | None = None) -> EditSettings:
        """The identity edit from the patient (as ``attributes`` describe them) to ``target``."""
        return self.cfg.identity.with_overrides(source_prompt=self.cfg.prompts.describe(attributes),
                                                target_prompt=target)

    def synthesise(self, images: Sequence[np.ndarray], targets: Sequence[str],
                   attributes: Sequence[Attributes | None] | None = None, *,
                   keys: Sequence[str] | None = None, batch_size: int | None = None,
                   progress: bool = False) -> list[Result]:
        """Surrogate, twin and mask of each photo towards a given target, without the gate
        (for research that draws its own targets). Photo ``i``'s noise comes from the
        config's seed and ``keys[i]`` (default: a hash of its pixels)."""
        images, attributes, keys = self._inputs(images, attributes, keys)
        targets = list(targets)
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} photos but {len(targets)} targets")
        edits = [self.identity_edit(t, a) for t, a in zip(targets, attributes)]
        batch_size = batch_size or self.photos_per_call()
        out: list[Result] = []
        bar = tqdm(total=len(images), desc="surrogates", unit="photo", disable=not progress)
        for start in range(0, len(images), batch_size):
            part = slice(start, start + batch_size)
            surrogates, twins = self._pairs(images[part], edits[part], keys[part])
            out += [Result(s, t, differential_mask(s, t, self.cfg.mask_theta, min_size=self.cfg.min_size),
                           e.target_prompt, e.seed)
                    for s, t, e in zip(surrogates, twins, edits[part], strict=True)]
            bar.update(len(surrogates))
        bar.close()
        return out

    def _pairs(self, images: list[np.ndarray], edits: list[EditSettings], keys: list[str]):
        """(surrogates, twins) of one model call's photos (the module docstring's routes)."""
        backend, cfg = self.backend, self.cfg
        twin_keys = [f"{k}:twin" for k in keys]
        if cfg.twin_from == "surrogate":
            surrogates = backend.edit_batch(images, edits, keys=keys)
            twin_edits = [self.twin_edit(e.target_prompt) for e in edits]
            return surrogates, backend.edit_batch(surrogates, twin_edits, keys=twin_keys)
        healed = backend.edit_batch(images, [self.twin_edit(e.source_prompt) for e in edits], keys=twin_keys)
        if cfg.lesion == "carried":  # the identity edit makes the twin; the lesion is added to it
            twins = backend.edit_batch(healed, [self._healthy(e) for e in edits], keys=keys)
            return [carry_lesion(p, h, t, cfg.theta, cfg.lesion_gain)
                    for p, h, t in zip(images, healed, twins)], twins
        # the same identity edit, same noise, on the healed photo: the same synthetic person
        both = backend.edit_batch(images + healed, edits + edits, keys=keys + keys)
        return both[:len(images)], both[len(images):]

    def twin_edit(self, prompt: str) -> EditSettings:
        """The twin edit: ``prompt`` -> its healthy version, with the identity edit's seed."""
        healthy = self.cfg.prompts.healthy_prompt(prompt)
        return self.cfg.twin.with_overrides(source_prompt=prompt, target_prompt=healthy,
                                            seed=self.cfg.identity.seed)

    def _healthy(self, edit: EditSettings) -> EditSettings:
        """``edit`` between the healthy versions of its prompts: the identity edit of a healed
        photo (``lesion="carried"``), whose sampling steps (``n_min``) must not draw the
        condition in."""
        healthy = self.cfg.prompts.healthy_prompt
        return edit.with_overrides(source_prompt=healthy(edit.source_prompt),
                                   target_prompt=healthy(edit.target_prompt))

    def working_side(self, image: np.ndarray) -> int:
        """The longer side the model works ``image`` at: the gate compares faces there."""
        return max(working_size(*image.shape[:2], self.cfg.identity.max_side))

    def photos_per_call(self) -> int:
        """How many photos one model call takes (``cfg.batch_size``, else what the device
        takes, probed at the largest size the identity edit works at), halved where the
        identity edit runs on each photo and its healed copy at once."""
        if self.cfg.batch_size:
            return self.cfg.batch_size
        side = self.cfg.identity.max_side
        per_call = self.backend.images_per_call(np.zeros((side, side, 3), np.uint8), self.cfg.identity)
        both = self.cfg.twin_from == "patient" and self.cfg.lesion == "edited"
        return max(1, per_call // (2 if both else 1))

    def _inputs(self, images, attributes, keys) -> tuple[list[np.ndarray], list, list[str]]:
        images = list(images)
        attributes = list(attributes) if attributes is not None else [None] * len(images)
        keys = list(keys) if keys is not None else [image_key(im) for im in images]
        if not len(images) == len(attributes) == len(keys):
            raise ValueError(f"{len(images)} photos, {len(attributes)} attributes and {len(keys)} keys")
        for a in attributes:
            self.cfg.prompts.check(a)  # unusable attributes are the caller's error, before any edit
        return images, attributes, keys


def surrogate_key(key: str, k: int) -> str:
    """The key of a photo's ``k``-th surrogate (``surrogates_per_photo``): its own target and
    noise; the first is the photo's own key, so K = 1 makes what it always made.

    >>> surrogate_key("ab12", 0), surrogate_key("ab12", 2)
    ('ab12', 'ab12/2')
    """
    return key if k == 0 else f"{key}/{k}"


def _noise_key(key: str, draw: int) -> str:
    """The key of a photo's ``draw``-th try: its noise (its target is the first try's)."""
    return key if draw == 0 else f"{key}:draw{draw}"
