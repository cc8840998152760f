"""The generative-prior inverter: from a site's update to the *person*, not the pixels.

Attacks with a generative image prior (Jeon et al. 2021, "GIAS"; Li et al. 2022, "GGL")
search a face generator's latent space instead of pixel space, so that every
reconstruction is a sharp, plausible face. In the phantom world the generator is public:
the phantom renderer, whose latent is an :class:`~deid_client.phantom.Identity` (face
geometry, colours, hair, and the session's light, backdrop and clothes). The server learns
the map from an update to those parameters on the rounds it simulates
(:func:`research.learned_inversion.simulate`, the same rounds the pixel inverter learns
from), then renders what it reads: a clean phantom that a face recogniser can match.

What cannot be read is left at a fixed value: the texture seed (freckle and mole places),
jewellery and the lesion (none).
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from deid_client.phantom import (HAIR_COLOURS, IRIS_COLOURS, Identity, render_phantom, sample_identity,
                                 sample_lesion)
from research.learned_inversion import Rounds, Standardise, best_pairing, features, fit
from research.update_inversion import LocalTraining, Observed

__all__ = ["SCALARS", "CHOICES", "identity_vector", "principal_directions", "Projection", "PriorInverter",
           "train_prior_inverter", "prior_invert", "render"]

#: The identity's numbers the inverter reads (tuples: every component).
SCALARS = ("face_width", "face_height", "jaw_taper", "eye_spacing", "eye_width", "eye_height", "eye_level",
           "brow_thickness", "brow_arch", "nose_length", "nose_width", "mouth_width", "mouth_level",
           "lip_fullness", "lip_redness", "ear_size", "hairline", "beard", "flush", "light", "shadow",
           "shine", "freckles", "moles", "skin_lab", "background", "clothing")
#: Its categories, each with its values.
CHOICES = {"sex": ("female", "male"), "iris": tuple(sorted(IRIS_COLOURS)),
           "hair_style": ("short", "bald", "long", "bun"), "hair_colour": tuple(sorted(HAIR_COLOURS))}


def identity_vector(person: Identity) -> tuple[list[float], list[int]]:
    """``person``'s :data:`SCALARS` (flattened) and the index of each of its :data:`CHOICES`."""
    numbers: list[float] = []
    for name in SCALARS:
        value = getattr(person, name)
        numbers += [float(v) for v in value] if isinstance(value, tuple) else [float(value)]
    return numbers, [values.index(getattr(person, name)) for name, values in CHOICES.items()]


_SIZES = [3 if name in ("skin_lab", "background", "clothing") else 1 for name in SCALARS]


def render(numbers: np.ndarray, choices: list[int], size: int = 64) -> np.ndarray:
    """The phantom (uint8 size x size x 3) with these parameters, without a lesion."""
    fields, at = {}, 0
    for name, width in zip(SCALARS, _SIZES, strict=True):
        part = [float(v) for v in numbers[at : at + width]]
        fields[name] = tuple(part) if width > 1 else part[0]
        at += width
    fields["freckles"] = max(0, round(fields["freckles"]))
    fields["moles"] = max(0, round(fields["moles"]))
    fields.update({name: values[i] for (name, values), i in zip(CHOICES.items(), choices, strict=True)})
    person = replace(_base(fields["sex"]), **fields, jewellery=())
    return render_phantom(person, sample_lesion(np.random.default_rng(0), "none"), size).image


@functools.cache
def _base(sex: str) -> Identity:
    """The fixed person whose unread fields (the texture seed) every rendering keeps."""
    return sample_identity(np.random.default_rng(0), sex=sex, distractors=False)


def principal_directions(z: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` leading right singular vectors of ``z`` (samples x features), as
    columns. With fewer samples than features they come from the samples' Gram matrix,
    which is much faster than an SVD of ``z`` and the same up to each column's sign."""
    if len(z) >= z.shape[1]:
        return torch.linalg.svd(z, full_matrices=False).Vh[:rank].T
    values, vectors = torch.linalg.eigh((z @ z.T).double())
    top = values.argsort(descending=True)[:rank]
    return ((vectors[:, top].T.float() @ z) / values[top].clamp_min(1e-12).sqrt().float()[:, None]).T


class Projection(nn.Module):
    """Update features -> their principal components over the simulated rounds:
    standardised, then projected on the ``rank`` leading directions (a first layer trained
    on the rounds would only move within their span), scaled so that a component's variance
    is 1 on average."""

    def __init__(self, n_features: int, rank: int):
        super().__init__()
        self.standardise = Standardise(n_features)
        self.register_buffer("basis", torch.zeros(n_features, rank))

    @classmethod
    def fit(cls, features: np.ndarray, rank: int = 512) -> Projection:
        f = torch.from_numpy(features).float()
        rank = min(rank, len(f) - 1)
        out = cls(f.shape[1], rank)
        z = out.standardise.fit_(f)(f)
        out.basis.copy_(principal_directions(z, rank) * math.sqrt(rank / f.shape[1]))
        return out

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.standardise(f) @ self.basis


class PriorInverter(nn.Module):
    """Update features -> ``n`` people: standardised numbers and each category's logits.
    The features' principal components (:class:`Projection`),
    then an MLP."""

    def __init__(self, projection: Projection, n_images: int, n_numbers: int, *, hidden: int = 512):
        super().__init__()
        self.n_images, self.n_numbers = n_images, n_numbers
        self.width = n_numbers + sum(len(v) for v in CHOICES.values())
        self.project = projection
        self.register_buffer("y_mean", torch.zeros(n_numbers))
        self.register_buffer("y_std", torch.ones(n_numbers))
        self.net = nn.Sequential(nn.Linear(projection.rank, hidden), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_images * self.width))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """N x n x width: standardised numbers, then the categories' logits."""
        return self.head(self.project(f))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """The MLP on projected features."""
        return self.net(z).view(len(z), self.n_images, self.width)

    def loss(self, out: torch.Tensor, numbers: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        """Per sample, squared error plus cross-entropy under the best pairing of its n
        outputs with its n people (a site's photos are a set)."""
        o = out[..., : self.n_numbers]
        costs = (o.unsqueeze(2) - numbers.unsqueeze(1)).pow(2).mean(3)  # N x n outputs x n people
        at = self.n_numbers
        for j, values in enumerate(CHOICES.values()):
            logp = nn.functional.log_softmax(out[..., at : at + len(values)], dim=2)
            # output i against person k: -log p_i(choice of k)
            wanted = choices[..., j].unsqueeze(1).expand(-1, self.n_images, -1)
            costs = costs - 0.3 * logp.gather(2, wanted)
            at += len(values)
        return best_pairing(costs)


def train_prior_inverter(rounds: Rounds, *, epochs: int = 60, batch_size: int = 64, rank: int = 512,
                         seed: int = 0) -> PriorInverter:
    """Fit a :class:`PriorInverter` to simulated rounds whose people are known, on the
    features' ``rank`` principal components."""
    if rounds.people is None:
        raise ValueError("the simulated rounds do not say whose photos they are")
    torch.manual_seed(seed)
    projection = Projection.fit(rounds.features, rank)
    with torch.no_grad():
        z = projection(torch.from_numpy(rounds.features).float())  # projected once
    vectors = [[identity_vector(p) for p in row] for row in rounds.people]
    numbers = torch.tensor([[v[0] for v in row] for row in vectors]).float()
    choices = torch.tensor([[v[1] for v in row] for row in vectors]).long()
    net = PriorInverter(projection, numbers.shape[1], numbers.shape[2])
    net.y_mean.copy_(numbers.flatten(0, 1).mean(0))
    net.y_std.copy_(numbers.flatten(0, 1).std(0).clamp_min(1e-6))
    numbers = (numbers - net.y_mean) / net.y_std
    return fit(net, lambda b: net.loss(net.head(z[b]), numbers[b], choices[b]), len(z), epochs=epochs,
               batch_size=batch_size, lr=1e-3, seed=seed, weight_decay=1e-4)


@torch.no_grad()
def prior_invert(net: PriorInverter, observed: Observed, training: LocalTraining) -> np.ndarray:
    """The people the inverter reads in one observed update, rendered (uint8 n x 64 x 64 x 3)."""
    out = net(torch.from_numpy(features(observed, training)).float()[None])[0]
    images = []
    for person in out:
        numbers = (person[: net.n_numbers] * net.y_std + net.y_mean).numpy()
        at, choices = net.n_numbers, []
        for values in CHOICES.values():
            choices.append(int(person[at : at + len(values)].argmax()))
            at += len(values)
        images.append(render(numbers, choices))
    return np.stack(images)
