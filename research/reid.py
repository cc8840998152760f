"""Phantom re-identification: can a photo still be linked to its patient?

Four attackers, each shown photos of known patients (several sessions: lighting,
backdrop, clothes, jewellery, flush, lesions) and then asked who a new photo shows:

- ``cnn``: a small CNN trained to name each patient from their photos;
- ``aware``: the same CNN trained by an attacker who knows the defence changes skin
  tone and hair colour: on grayscale photos of the patients with those colours drawn
  anew (:func:`recoloured`), so that only geometry and marks are left to learn;
- ``dlib``: a real face recogniser never trained on phantoms (dlib's ResNet embedding,
  :mod:`deid_client.firewall.gate`), nearest neighbour over a gallery of the patients' photos;
- ``mimic``: the CNN trained by an attacker who runs the firewall itself on the patients'
  photos and learns from its outputs too (:class:`MimicAttacker`; the caller makes them).

Shown a surrogate, each tells whether it still looks like the patient it came from.
Shown a photo's K surrogates together (``surrogates_per_photo``), each pools what it reads
from them (:meth:`Attacker.identify_pooled`): K drawn faces can share what survives of one
patient, and averaging lets it add up.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from deid_client.phantom import (
    HAIR_COLOURS,
    IRIS_COLOURS,
    SKIN_TYPES,
    Identity,
    Phantom,
    new_session,
    render_phantom,
    sample_identity,
    sample_lesion,
)

__all__ = ["photo_sessions", "reid_cohort", "ReIdNet", "train_reid", "log_probabilities", "identify", "top1",
           "recoloured", "pooled",
           "grayscale", "Attacker", "CnnAttacker", "AwareAttacker", "MimicAttacker",
           "DlibAttacker", "ATTACKERS"]


def photo_sessions(
    n_patients: int, photos_per_patient: int, *, size: int = 64, seed: int = 0
) -> tuple[list[list[Phantom]], list[Identity]]:
    """``photos_per_patient`` phantoms of each of ``n_patients`` people, one per photo
    session (:func:`~deid_client.phantom.new_session`), each with a fresh random lesion."""
    rng = np.random.default_rng([seed, 0x1D])
    sessions, people = [], []
    for _ in range(n_patients):
        person = sample_identity(rng)
        people.append(person)
        sessions.append([render_phantom(new_session(person, rng), sample_lesion(rng), size)
                         for _ in range(photos_per_patient)])
    return sessions, people


def reid_cohort(
    n_patients: int, photos_per_patient: int, *, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[Identity]]:
    """Photos (uint8 N x S x S x 3) of :func:`photo_sessions`; labels 0..n_patients-1,
    grouped by patient.

    >>> images, labels, people = reid_cohort(2, 3, size=64)
    >>> images.shape, labels.tolist()
    ((6, 64, 64, 3), [0, 0, 0, 1, 1, 1])
    """
    sessions, people = photo_sessions(n_patients, photos_per_patient, size=size, seed=seed)
    images = np.stack([p.image for patient in sessions for p in patient])
    return images, np.repeat(np.arange(n_patients), photos_per_patient), people


class ReIdNet(nn.Module):
    """Four conv blocks, global pooling, a linear layer naming the patient."""

    def __init__(self, n_patients: int):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                                 nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 96), block(96, 128),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, n_patients))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)


def train_reid(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 25,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = False,
) -> ReIdNet:
    """Train a patient classifier (mirror and brightness augmentation)."""
    torch.manual_seed(seed)
    model = ReIdNet(int(labels.max()) + 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    x, y = _tensor(images), torch.from_numpy(np.asarray(labels)).long()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc="re-id training", unit="epoch", disable=not progress):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            xb = x[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)  # faces are ~symmetric
            xb = xb * (0.85 + 0.3 * torch.rand(len(batch), 1, 1, 1, generator=generator))
            loss = nn.functional.cross_entropy(model(xb), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


@torch.no_grad()
def log_probabilities(model: ReIdNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """N x patients: the log-probability that each photo shows each patient."""
    model.eval()
    x = _tensor(images)
    return torch.cat([model(x[i : i + batch_size]).log_softmax(1)
                      for i in range(0, len(x), batch_size)]).numpy()


def identify(model: ReIdNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The patient each photo is attributed to."""
    return log_probabilities(model, images, batch_size).argmax(1)


def top1(model: ReIdNet, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of photos attributed to the right patient."""
    return float((identify(model, images) == np.asarray(labels)).mean())


def recoloured(person: Identity, rng: np.random.Generator) -> Identity:
    """The same face with its colours drawn anew: skin type and tone, hair and iris colour
    (what the firewall's target prompts change). Face shape, features, hair style, hairline,
    freckles and moles stay.

    >>> person = sample_identity(np.random.default_rng(0))
    >>> other = recoloured(person, np.random.default_rng(1))
    >>> other.face_width == person.face_width and other.hair_style == person.hair_style
    True
    """
    skin = int(rng.integers(1, 7))
    lightness, a, b = SKIN_TYPES[skin]
    return replace(person, skin_type=skin,
                   skin_lab=(lightness + rng.uniform(-3, 3), a + rng.uniform(-2, 2), b + rng.uniform(-3, 3)),
                   hair_colour=str(rng.choice(sorted(HAIR_COLOURS))),
                   iris=str(rng.choice(sorted(IRIS_COLOURS))))


def grayscale(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> its luminance (ITU-R 601) in all three channels."""
    luma = np.asarray(images, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(luma + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


class Attacker:
    """Names the patient a photo shows (0..n_patients-1)."""

    name: str

    def scores(self, images: np.ndarray) -> np.ndarray:
        """N x patients: how strongly each photo points at each patient (higher: more)."""
        raise NotImplementedError

    def identify(self, images: np.ndarray) -> np.ndarray:
        return self.scores(images).argmax(1)

    def identify_pooled(self, groups: np.ndarray) -> np.ndarray:
        """One patient per group of photos known to show the same patient (G x K x H x W x 3,
        e.g. the K surrogates of one photo): the patient of the highest mean score. For
        the CNNs that is the product of the K photos' probabilities (independent evidence
        added up); for dlib, the mean distance to each patient's nearest gallery photo."""
        g, k = groups.shape[:2]
        return pooled(self.scores(groups.reshape(g * k, *groups.shape[2:])).reshape(g, k, -1))


def pooled(scores: np.ndarray) -> np.ndarray:
    """G x K x patients scores of G groups of K photos -> one patient per group, the one of
    the highest mean score (:meth:`Attacker.identify_pooled`)."""
    return scores.mean(1).argmax(1)


class CnnAttacker(Attacker):
    """:func:`train_reid` on the patients' photos."""

    name = "cnn"

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, epochs: int = 60, seed: int = 0):
        self.model = train_reid(images, labels, epochs=epochs, seed=seed)

    def scores(self, images: np.ndarray) -> np.ndarray:
        return log_probabilities(self.model, images)


class AwareAttacker(CnnAttacker):
    """Knows the defence recolours: trained on grayscale photos of the patients, each
    session also taken again with the patient's colours drawn anew; sees grayscale."""

    name = "aware"

    def __init__(self, sessions: list[list[Phantom]], people: list[Identity], *, epochs: int = 60,
                 seed: int = 0):
        rng = np.random.default_rng([seed, 0xA7])
        photos, labels = [], []
        for label, (person, photographed) in enumerate(zip(people, sessions, strict=True)):
            for phantom in photographed:
                photos.append(phantom.image)
                again = new_session(recoloured(person, rng), rng)
                photos.append(render_phantom(again, sample_lesion(rng), phantom.image.shape[0]).image)
                labels += [label, label]
        super().__init__(grayscale(np.stack(photos)), np.array(labels), epochs=epochs, seed=seed)

    def scores(self, images: np.ndarray) -> np.ndarray:
        return super().scores(grayscale(images))


class MimicAttacker(CnnAttacker):
    """Runs the defence itself: trained on the patients' photos together with what the
    firewall makes of them (``protected``: surrogates and twins of those same photos,
    ``protected_labels`` their patients), so it learns whatever of a patient survives
    the firewall, colour included."""

    name = "mimic"

    def __init__(self, images: np.ndarray, labels: np.ndarray, protected: np.ndarray,
                 protected_labels: np.ndarray, *, epochs: int = 60, seed: int = 0):
        super().__init__(np.concatenate([images, protected]), np.concatenate([labels, protected_labels]),
                         epochs=epochs, seed=seed)


class DlibAttacker(Attacker):
    """dlib's face embedding, nearest neighbour over a gallery of the patients' photos.
    A photo in which dlib finds no face is embedded with the whole image as the face box
    (phantoms are centred), against the gallery embedded the same way: no photo escapes
    by hiding its face from the detector."""

    name = "dlib"

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from deid_client.firewall.gate import face_embedding

        self._embed = face_embedding
        self.labels = np.asarray(labels)
        self.found = [face_embedding(im) for im in images]
        self.whole = np.stack([face_embedding(im, find_face=False) for im in images])
        self.no_face = 0  # probes without a detected face so far

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Minus the distance to each patient's nearest gallery photo."""
        found = [i for i, e in enumerate(self.found) if e is not None]
        gallery = np.stack([self.found[i] for i in found])
        out = np.full((len(images), int(self.labels.max()) + 1), -np.inf)
        for row, image in zip(out, images):
            embedding = self._embed(image)
            if embedding is None:
                self.no_face += 1
                distances = np.linalg.norm(self.whole - self._embed(image, find_face=False), axis=1)
                np.maximum.at(row, self.labels, -distances)
            else:
                np.maximum.at(row, self.labels[found], -np.linalg.norm(gallery - embedding, axis=1))
        return out


ATTACKERS = ("cnn", "aware", "dlib", "mimic")
